import NIOCore

extension ChannelSequencer {
    /// The sequencing rules, without I/O or time: ``ChannelSequencer`` feeds it what pub/sub
    /// and the history reads bring and carries out the returned actions.
    struct StateMachine {
        enum Action {
            /// Hand these events to the hub, in order.
            case deliver([ChatEvent])
            /// Read `channel`'s history after `offset`; its answer goes to ``historyRead(_:after:attempt:_:)``.
            case fetch(ChannelName, after: Int64, attempt: Int)
            /// Call ``retryDue(_:after:attempt:)`` after `delay`: the read failed.
            case retry(ChannelName, after: Int64, attempt: Int, delay: TimeAmount)
            /// Another message has the offset of the last one delivered (Redis lost writes
            /// and handed it out again).
            case reused(ChannelName, offset: Int64)
            /// Redis' last offset is below what was delivered here in the same epoch.
            case behind(ChannelName, epoch: String, delivered: Int64)
        }

        private struct Position {
            var epoch: String
            var next: Int64
            /// When the message at `next - 1` was published, to tell a duplicate from a
            /// different message given the same offset.
            var lastTime: Int64 = 0
        }

        /// How often a failed history read is tried before the hole is reported as a gap:
        /// after a Redis restart the pub/sub connection may be back before the command one.
        static let recoveryAttempts = 30
        static let recoveryRetryDelay = TimeAmount.milliseconds(100)

        private var listeners: [ChannelName: Int] = [:]
        private var positions: [ChannelName: Position] = [:]
        /// Where a joined channel stood when its first listener here came (its epoch, `nil`
        /// for a channel not created yet, and last offset), while no message of it came
        /// through pub/sub: a pub/sub reconnect catches it up from there, so a message
        /// published while the connection was down reaches its first listeners too.
        private var floors: [ChannelName: (epoch: String?, offset: Int64)] = [:]
        /// Channels being caught up from the history, with the live messages that wait.
        private var waiting: [ChannelName: [Message]] = [:]

        /// A listener joined `channel`; whether it is the first here.
        @discardableResult
        mutating func join(_ channel: ChannelName) -> Bool {
            listeners[channel, default: 0] += 1
            return listeners[channel] == 1
        }

        /// A listener left; when the last one goes, the channel's position is forgotten, so
        /// a later first listener is not sent what was published while nobody listened here.
        mutating func leave(_ channel: ChannelName) {
            let count = (listeners[channel] ?? 1) - 1
            listeners[channel] = count > 0 ? count : nil
            if count <= 0 {
                positions[channel] = nil
                waiting[channel] = nil
                floors[channel] = nil
            }
        }

        /// A read found where `channel` stands; kept as its floor while no message of it
        /// has come (see ``floors``).
        mutating func stands(_ channel: ChannelName, epoch: String?, lastOffset: Int64) {
            guard listeners[channel] != nil, positions[channel] == nil else { return }
            floors[channel] = (epoch, lastOffset)
        }

        /// Messages from pub/sub, in the order Redis sent them.
        mutating func receive(_ messages: [Message]) -> [Action] {
            var actions: [Action] = []
            var out: [ChatEvent] = []
            for message in messages { handle(message, into: &out, actions: &actions) }
            if !out.isEmpty { actions.append(.deliver(out)) }
            return actions
        }

        /// The pub/sub subscriptions of `channels` are back (all channels when `nil`):
        /// catch them up from their history.
        mutating func resubscribed(_ channels: Set<ChannelName>?) -> [Action] {
            var actions: [Action] = []
            // A channel no message came of yet starts from its floor ("" for an epoch not known).
            for (channel, floor) in floors where positions[channel] == nil {
                positions[channel] = Position(epoch: floor.epoch ?? "", next: floor.offset + 1)
            }
            floors = [:]
            for (channel, position) in positions where waiting[channel] == nil && channels?.contains(channel) != false {
                waiting[channel] = []
                actions.append(.fetch(channel, after: position.next - 1, attempt: 1))
            }
            return actions
        }

        /// A retry's delay passed: read again, unless the channel no longer waits.
        func retryDue(_ channel: ChannelName, after offset: Int64, attempt: Int) -> [Action] {
            waiting[channel] == nil ? [] : [.fetch(channel, after: offset, attempt: attempt)]
        }

        /// A history read asked for by ``Action/fetch(_:after:attempt:)`` answered:
        /// delivers what was missing, then what waited.
        mutating func historyRead(_ channel: ChannelName, after offset: Int64, attempt: Int, _ result: Result<History, any Error>) -> [Action] {
            if case .failure = result, attempt < Self.recoveryAttempts, waiting[channel] != nil {
                return [.retry(channel, after: offset, attempt: attempt + 1, delay: Self.recoveryRetryDelay)]
            }
            guard waiting[channel] != nil, var position = positions[channel] else { return [] }
            // A floor read before the channel existed: its epoch is the one it got since.
            if position.epoch.isEmpty, case .success(let history) = result, let epoch = history.epoch { position.epoch = epoch }
            if case .success(let history) = result, let epoch = history.epoch, epoch != position.epoch, offset > 0 {
                // A new epoch (Redis lost the channel, e.g. restarted empty): its offsets
                // start again at 1, so "after the old offset" skipped its first messages.
                return [.fetch(channel, after: 0, attempt: attempt)]
            }
            var actions: [Action] = []
            let buffered = waiting.removeValue(forKey: channel) ?? []
            var out: [ChatEvent] = []
            if case .success(let history) = result, let epoch = history.epoch {
                if epoch == position.epoch, history.lastOffset < position.next - 1 {
                    // Redis is behind what was delivered here: it lost writes. Say so
                    // before anyone is handed those offsets again.
                    actions.append(.behind(channel, epoch: epoch, delivered: position.next - 1))
                }
                if epoch != position.epoch {
                    out.append(.reset(channel: channel, epoch: epoch))
                    position = Position(epoch: epoch, next: 1)
                }
                for message in history.messages where message.offset >= position.next {
                    if message.offset > position.next {
                        out.append(.gap(channel: channel, from: position.next, to: message.offset - 1))
                    }
                    out.append(.message(message))
                    position.next = message.offset + 1
                    position.lastTime = message.time
                }
            }
            // Whatever waited was stored before this read, so a hole still open here is
            // one the history no longer holds (or could not be read): say so, never wait on it.
            if let first = buffered.first(where: { $0.epoch == position.epoch }), first.offset > position.next {
                out.append(.gap(channel: channel, from: position.next, to: first.offset - 1))
                position.next = first.offset
            }
            positions[channel] = position
            for message in buffered { handle(message, into: &out, actions: &actions) }
            if !out.isEmpty { actions.append(.deliver(out)) }
            return actions
        }

        private mutating func handle(_ message: Message, into out: inout [ChatEvent], actions: inout [Action]) {
            let channel = message.channel
            guard listeners[channel] != nil else { return }
            if waiting[channel] != nil {
                waiting[channel]!.append(message)
                return
            }
            guard var position = positions[channel] else {
                floors[channel] = nil
                positions[channel] = Position(epoch: message.epoch, next: message.offset + 1, lastTime: message.time)
                out.append(.message(message))
                return
            }
            if message.epoch != position.epoch {
                out.append(.reset(channel: channel, epoch: message.epoch))
                position = Position(epoch: message.epoch, next: 1)
                positions[channel] = position
            }
            if message.offset < position.next {
                // Already delivered — unless it is another message with the last offset.
                if message.offset == position.next - 1, position.lastTime != 0, message.time != position.lastTime {
                    actions.append(.reused(channel, offset: message.offset))
                }
                return
            }
            if message.offset == position.next {
                positions[channel]!.next += 1
                positions[channel]!.lastTime = message.time
                out.append(.message(message))
                return
            }
            waiting[channel] = [message]
            actions.append(.fetch(channel, after: position.next - 1, attempt: 1))
        }
    }
}
