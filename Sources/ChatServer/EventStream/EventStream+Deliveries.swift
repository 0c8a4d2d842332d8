import Chat
import Logging
import NIOCore

/// How the hub's deliveries become an event stream's bytes, with the stream's position.
extension EventStream {
    // MARK: - Deliveries

    func deliver(_ batch: Batch, to subscription: Subscription) {
        guard isOpen, let context, subscription.state == .open else { return }
        let action = subscription.flow.isLive ? .writeJoined : subscription.flow.batchArrived(batch.deliveries)
        switch action {
        case .writeJoined:
            guard isWritable(context) else {
                subscription.flow.fellBehind(batch.deliveries.lazy.map(\.event))
                server.metrics.dropped(.slowReader, count: batch.deliveries.count)
                fellBehind()
                return
            }
            if carriesWholePosition, let joined = Self.sharedBytes(of: batch) {
                // One channel: the hub's bytes carry this stream's whole position already.
                // Live, the sequencer's events come in order, each moving it: the batch's
                // last id is where the stream stands.
                if let last = batch.deliveries.last(where: { EventStreamFrames.entry(of: $0.event) != nil }) { _ = advance(by: last.event) }
                context.writeAndFlush(wrapOutboundOut(joined), promise: nil)
                return
            }
            for delivery in batch.deliveries {
                guard let frame = Self.frame(of: delivery) else { continue }
                write(frame, of: delivery.event, for: subscription, context: context)
            }
            context.flush()
        case .offerEach:
            let behind = offerLive(batch.deliveries, frameIndex: EventStreamFrames.index, through: subscription, context: context)
            if behind > 0 { fellBehind() } else { context.flush() }
        case .held:
            break
        case .dropped:
            server.metrics.dropped(.slowReader, count: batch.deliveries.count)
        }
    }

    /// The batch's bytes as the hub joined them, when every event of it has its own and
    /// none moves the position without saying so (a `gap` carries no id of its own).
    static func sharedBytes(of batch: Batch) -> ByteBuffer? {
        for delivery in batch.deliveries {
            if case .gap = delivery.event { return nil }
            if delivery.frames.count <= EventStreamFrames.index { return nil }
            if delivery.frames[EventStreamFrames.index] == nil, delivery.frames[WireFormat.chatV1.rawValue] != nil { return nil }
        }
        return batch.frames(format: EventStreamFrames.index)
    }

    /// A delivery's stream bytes: the hub's, or made now (an event encoded while no stream
    /// was open, or by another encoder).
    static func frame(of delivery: Delivery) -> ByteBuffer? {
        if delivery.frames.count > EventStreamFrames.index, let frame = delivery.frames[EventStreamFrames.index] { return frame }
        guard delivery.frames.count > WireFormat.chatV1.rawValue else { return nil }
        return EventStreamFrames.frame(of: delivery.event, chatV1: delivery.frames[WireFormat.chatV1.rawValue])
    }

    /// A ban ends the channel (`refused`, 4403); the stream goes on with its others, or
    /// closes when it has none. A mute is told (`muted`).
    func moderated(_ delivery: Delivery, of subscription: Subscription) {
        guard isOpen, let context, subscription.state == .open else { return }
        switch delivery.event {
        case .moderation(_, .banned(_, let until)):
            endBanned(subscription, until: until, context: context)
        case .moderation(_, .muted(_, let until)):
            subscription.mutedUntil = until
            context.writeAndFlush(wrapOutboundOut(EventStreamFrames.frame(name: "muted", webSocketFrame: ChatV1.muted(channel: subscription.channel, until: until))), promise: nil)
        default:
            break
        }
    }

    // MARK: - Delivery stream

    /// Writes one event, with the stream's position after it when the event moves it.
    func write(_ frame: ByteBuffer, of event: ChatEvent, for holder: some FlowHolder, context: ChannelHandlerContext) {
        let moved = advance(by: event)
        guard moved else {
            if EventStreamFrames.entry(of: event) == nil {
                context.write(wrapOutboundOut(frame), promise: nil)
            } else {
                // Its id would take the position back (or name one channel alone).
                context.write(wrapOutboundOut(EventStreamFrames.withoutID(frame)), promise: nil)
                context.write(wrapOutboundOut(ByteBuffer(string: "\n")), promise: nil)
            }
            return
        }
        if carriesWholePosition, EventStreamFrames.entry(of: event) != nil {
            // Its own id is the stream's whole position.
            context.write(wrapOutboundOut(frame), promise: nil)
            return
        }
        context.write(wrapOutboundOut(EventStreamFrames.withoutID(frame)), promise: nil)
        context.write(wrapOutboundOut(EventStreamFrames.idLine(currentPosition)), promise: nil)
    }

    func replayFrame(_ message: Message) -> ByteBuffer {
        EventStreamFrames.message(message)
    }

    func resetFrame(channel: ChannelName, epoch: String?) -> ByteBuffer {
        EventStreamFrames.frame(
            name: "reset", webSocketFrame: ChatV1.reset(channel: channel, epoch: epoch),
            id: EventStreamPosition.Entry(channel: channel, epoch: epoch ?? "", offset: 0)
        )
    }

    /// Moves the position by `event`; whether it moved.
    func advance(by event: ChatEvent) -> Bool {
        guard let next = self.next(after: event) else { return false }
        position[next.channel] = next
        return true
    }

    /// Where the position goes with `event`, if it moves: within an epoch only forward;
    /// a new epoch, or a reset, starts it again.
    private func next(after event: ChatEvent) -> EventStreamPosition.Entry? {
        let next: EventStreamPosition.Entry
        switch event {
        case .gap(let channel, _, let to):
            guard let now = position[channel], now.offset < to else { return nil }
            next = EventStreamPosition.Entry(channel: channel, epoch: now.epoch, offset: to)
        default:
            guard let entry = EventStreamFrames.entry(of: event) else { return nil }
            if let now = position[entry.channel], now.epoch == entry.epoch, now.offset >= entry.offset, !isReset(event) { return nil }
            next = entry
        }
        return subscriptions[next.channel] == nil ? nil : next
    }

    private func isReset(_ event: ChatEvent) -> Bool {
        if case .reset = event { return true }
        return false
    }

    // MARK: - Slow readers

    /// The stream could not take more: a final `gap` for each channel that lost
    /// events (with no id: the position stays at the last event written, so the
    /// reconnecting client is sent them again), then the connection closes.
    func fellBehind() {
        guard isOpen, let context else { return }
        server.metrics.queueOverflow(protocol: "sse")
        var missed: [(ChannelName, DeliveryFlow.Missed)] = []
        for channel in order {
            guard let subscription = subscriptions[channel], let lost = subscription.flow.drained() else { continue }
            missed.append((channel, lost))
        }
        let ranges = missed.compactMap { channel, lost in lost.from.map { "\(channel) \($0)–\(lost.to ?? $0)" } }.joined(separator: ", ")
        server.refusals.record(
            "Closing an event stream that fell behind", route: "/events", reason: "slow_reader", client: client, logger: logger,
            metadata: ["limit": "\(settings.queueLimit)", "missed": "\(ranges)"]
        )
        for (channel, lost) in missed {
            guard let from = lost.from, let to = lost.to else { continue }
            context.write(wrapOutboundOut(EventStreamFrames.frame(name: "gap", webSocketFrame: ChatV1.gap(channel: channel, from: from, to: to))), promise: nil)
        }
        // The final words may wait behind what the reader has not taken: not forever.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: settings.closeTimeout) { channel.close(promise: nil) }
        let flushed = context.writeAndFlush(wrapOutboundOut(ByteBuffer()))
        leave()
        flushed.whenComplete { _ in channel.close(promise: nil) }
    }
}
