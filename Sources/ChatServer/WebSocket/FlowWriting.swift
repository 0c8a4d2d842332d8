import Chat
import Logging
import NIOCore

/// One channel's deliveries on a socket: the ``DeliveryFlow`` that decides what becomes
/// of them. A ``ChatSocket`` is its own; each ``Subscription`` of a ``ChatV2Socket`` is one.
protocol FlowHolder: AnyObject {
    var flow: DeliveryFlow { get set }
    var channel: ChannelName { get }
}

/// The connection a ``DeliveryFlow`` writes to: a WebSocket (``WebSocketEndpoint``), or
/// an event stream (``EventStream``). What differs is the bytes: each writes the hub's
/// shared frames its own way, and makes its own of what a replay reads.
protocol DeliveryStream: ChannelInboundHandler where OutboundOut == ByteBuffer {
    /// Writes the frame of `event`, one event of `holder`'s channel (not flushed).
    func write(_ frame: ByteBuffer, of event: ChatEvent, for holder: some FlowHolder, context: ChannelHandlerContext)
    /// The frame of a message a replay read from the history.
    func replayFrame(_ message: Message) -> ByteBuffer
    /// The frame of a `reset`: the channel's history does not reach the resume.
    func resetFrame(channel: ChannelName, epoch: String?) -> ByteBuffer
    /// Where the flow's log lines go.
    var flowLogger: Logger { get }
}

extension DeliveryStream {
    /// Whether the connection can take more. Unflushed writes count too: flush them to the
    /// socket first. Only a reader the kernel cannot take more from is slow.
    ///
    /// The flush may tell the handler it drained (`channelWritabilityChanged`), so call
    /// this before handing a ``DeliveryFlow`` an event, never while changing one.
    func isWritable(_ context: ChannelHandlerContext) -> Bool {
        if context.channel.isWritable { return true }
        context.flush()
        return context.channel.isWritable
    }
}

extension WebSocketEndpoint {
    func write(_ frame: ByteBuffer, of event: ChatEvent, for holder: some FlowHolder, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    func replayFrame(_ message: Message) -> ByteBuffer { ChatV1.message(message) }

    func resetFrame(channel: ChannelName, epoch: String?) -> ByteBuffer { ChatV1.reset(channel: channel, epoch: epoch) }

    var flowLogger: Logger { closing.logger }
}

/// What a history page leaves the socket to do.
enum ReplayOutcome {
    /// Nothing more (the replay is over, or the answer was stale).
    case done
    /// Read the next page.
    case readNext(DeliveryFlow.HistoryRead)
    /// The history cannot be read.
    case failed(any Error)
}

extension DeliveryStream {
    /// Writes one event's frame, or, past the queue limit, drops it. Replays go through
    /// here, event by event, so they obey the same limit as live batches.
    /// - Returns: 1 if the socket fell behind with this event (the caller reports it), else 0.
    func offer(_ event: ChatEvent, frame: ByteBuffer?, through holder: some FlowHolder, context: ChannelHandlerContext) -> Int {
        // Writability first: finding it out may flush, and the flush may reach the flow.
        let writable = holder.flow.isDropping || isWritable(context)
        return carryOut(holder.flow.offer(event, writable: writable), event, frame: frame, through: holder, context: context)
    }

    /// Live deliveries after a replay, one by one (the replay's messages are skipped).
    /// - Returns: how often the socket fell behind meanwhile.
    func offerLive(_ deliveries: [Delivery], frameIndex: Int, through holder: some FlowHolder, context: ChannelHandlerContext) -> Int {
        var fellBehind = 0
        for delivery in deliveries {
            let writable = holder.flow.isDropping || isWritable(context)
            let frame = frameIndex < delivery.frames.count ? delivery.frames[frameIndex] : nil
            fellBehind += carryOut(holder.flow.offerLive(delivery, writable: writable), delivery.event, frame: frame, through: holder, context: context)
        }
        return fellBehind
    }

    private func carryOut(
        _ offer: DeliveryFlow.Offer, _ event: ChatEvent, frame: ByteBuffer?, through holder: some FlowHolder, context: ChannelHandlerContext
    ) -> Int {
        switch offer {
        case .write:
            if let frame { write(frame, of: event, for: holder, context: context) }
            return 0
        case .skip:
            return 0
        case .fellBehind:
            return 1
        }
    }

    /// Carries out what the flow makes of a history page: a `reset`, the page's messages,
    /// the deliveries that waited. Flushes, unless another page is to be read.
    /// - Parameter fellBehind: how often the socket fell behind meanwhile, added to.
    func replay(
        _ result: Result<History, any Error>, frameIndex: Int, through holder: some FlowHolder, context: ChannelHandlerContext, fellBehind: inout Int
    ) -> ReplayOutcome {
        switch holder.flow.historyRead(result) {
        case .ignore:
            return .done
        case .fail(let error):
            return .failed(error)
        case .reset(let epoch, let waiting):
            flowLogger.debug("Resume not covered by the history; sending reset", metadata: ["channel": "\(holder.channel)"])
            write(resetFrame(channel: holder.channel, epoch: epoch), of: .reset(channel: holder.channel, epoch: epoch ?? ""), for: holder, context: context)
            fellBehind += offerLive(waiting, frameIndex: frameIndex, through: holder, context: context)
        case .write(let messages):
            for message in messages { fellBehind += offer(.message(message), frame: replayFrame(message), through: holder, context: context) }
            switch holder.flow.pageWritten() {
            case .read(let next):
                context.flush()
                return .readNext(next)
            case .release(let waiting):
                fellBehind += offerLive(waiting, frameIndex: frameIndex, through: holder, context: context)
            }
        case .release(let waiting):
            fellBehind += offerLive(waiting, frameIndex: frameIndex, through: holder, context: context)
        }
        context.flush()
        return .done
    }
}
