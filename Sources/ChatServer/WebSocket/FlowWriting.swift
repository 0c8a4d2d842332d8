import Chat
import Logging
import NIOCore

/// One channel's deliveries on a socket: the ``DeliveryFlow`` that decides what becomes
/// of them. A ``ChatSocket`` is its own; each ``Subscription`` of a ``ChatV2Socket`` is one.
protocol FlowHolder: AnyObject {
    var flow: DeliveryFlow { get set }
    var channel: ChannelName { get }
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

extension WebSocketEndpoint {
    /// Writes one event's frame, or, past the queue limit, drops it. Replays go through
    /// here, event by event, so they obey the same limit as live batches.
    /// - Returns: 1 if the socket fell behind with this event (the caller reports it), else 0.
    func offer(_ event: ChatEvent, frame: ByteBuffer?, through holder: some FlowHolder, context: ChannelHandlerContext) -> Int {
        // Writability first: finding it out may flush, and the flush may reach the flow.
        let writable = holder.flow.isDropping || isWritable(context)
        return carryOut(holder.flow.offer(event, writable: writable), frame: frame, context: context)
    }

    /// Live deliveries after a replay, one by one (the replay's messages are skipped).
    /// - Returns: how often the socket fell behind meanwhile.
    func offerLive(_ deliveries: [Delivery], frameIndex: Int, through holder: some FlowHolder, context: ChannelHandlerContext) -> Int {
        var fellBehind = 0
        for delivery in deliveries {
            let writable = holder.flow.isDropping || isWritable(context)
            fellBehind += carryOut(holder.flow.offerLive(delivery, writable: writable), frame: delivery.frames[frameIndex], context: context)
        }
        return fellBehind
    }

    private func carryOut(_ offer: DeliveryFlow.Offer, frame: ByteBuffer?, context: ChannelHandlerContext) -> Int {
        switch offer {
        case .write:
            if let frame { context.write(wrapOutboundOut(frame), promise: nil) }
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
            closing.logger.debug("Resume not covered by the history; sending reset", metadata: ["channel": "\(holder.channel)"])
            context.write(wrapOutboundOut(ChatV1.reset(channel: holder.channel, epoch: epoch)), promise: nil)
            fellBehind += offerLive(waiting, frameIndex: frameIndex, through: holder, context: context)
        case .write(let messages):
            for message in messages { fellBehind += offer(.message(message), frame: ChatV1.message(message), through: holder, context: context) }
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
