import Chat
import NIOCore

/// How far people have read a channel, asked for as their subscriptions start: one
/// broker read per channel at a time on each event loop, for everyone waiting.
///
/// Ten thousand sockets that reconnect at once would otherwise ask the broker once per
/// subscription. Here the first to ask for a channel on a loop reads alone; whoever asks
/// while that read is out waits, and the next read carries them all (one `HMGET`).
final class ReadStates: Sendable {
    private let broker: any Broker
    private let loops: [ObjectIdentifier: NIOLoopBoundBox<LoopStates>]

    init(broker: any Broker, eventLoopGroup: any EventLoopGroup) {
        self.broker = broker
        var loops: [ObjectIdentifier: NIOLoopBoundBox<LoopStates>] = [:]
        for loop in eventLoopGroup.makeIterator() {
            loops[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeBoxSendingValue(LoopStates(), eventLoop: loop)
        }
        self.loops = loops
    }

    private struct Waiter {
        var ids: [String]
        var answer: (Result<[String: Int64], any Error>) -> Void
    }

    private struct Channel {
        var reading = false
        var waiting: [Waiter] = []
    }

    private struct LoopStates {
        var channels: [ChannelName: Channel] = [:]
    }

    /// Reads how far each of `ids` has read `channel` (0: nothing yet); `answer` is called
    /// on `eventLoop`, never before this returns.
    func read(_ ids: [String], of channel: ChannelName, on eventLoop: any EventLoop, answer: @escaping (Result<[String: Int64], any Error>) -> Void) {
        guard let box = loops[ObjectIdentifier(eventLoop)] else {
            let broker = self.broker
            eventLoop.makeFutureWithTask { try await Self.states(of: ids, in: broker.readStates(of: ids, in: channel)) }
                .assumeIsolated().whenComplete(answer)
            return
        }
        box.value.channels[channel, default: Channel()].waiting.append(Waiter(ids: ids, answer: answer))
        if box.value.channels[channel]?.reading == false { start(channel, box: box, eventLoop: eventLoop) }
    }

    private func start(_ channel: ChannelName, box: NIOLoopBoundBox<LoopStates>, eventLoop: any EventLoop) {
        guard let waiting = box.value.channels[channel]?.waiting, !waiting.isEmpty else {
            box.value.channels[channel] = nil
            return
        }
        box.value.channels[channel] = Channel(reading: true, waiting: [])
        let broker = self.broker
        let ids = Array(Set(waiting.flatMap(\.ids)))
        eventLoop.makeFutureWithTask {
            try await broker.readStates(of: ids, in: channel)
        }.assumeIsolated().whenComplete { result in
            for waiter in waiting {
                waiter.answer(result.map { Self.states(of: waiter.ids, in: $0) })
            }
            box.value.channels[channel]?.reading = false
            self.start(channel, box: box, eventLoop: eventLoop)
        }
    }

    /// `ids`' states, 0 for those not in `stored`.
    private static func states(of ids: [String], in stored: [String: Int64]) -> [String: Int64] {
        var states: [String: Int64] = [:]
        for id in ids { states[id] = stored[id] ?? 0 }
        return states
    }
}
