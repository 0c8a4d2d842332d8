import NIOConcurrencyHelpers

/// The highest offset an instance has seen per channel (published or delivered), with
/// its epoch. Bounded: past 100,000 channels it starts over, which only weakens the
/// fence for channels this instance neither serves nor publishes to lately.
final class HighestSeenOffsets: Sendable {
    private let marks = NIOLockedValueBox([ChannelName: (epoch: String, offset: Int64)]())
    static let limit = 100_000

    func fence(of channel: ChannelName) -> (epoch: String, offset: Int64)? {
        marks.withLockedValue { $0[channel] }
    }

    func record(_ channel: ChannelName, epoch: String, offset: Int64) {
        marks.withLockedValue { Self.raise(&$0, channel, epoch: epoch, offset: offset) }
    }

    /// Records a batch of delivered events under one lock.
    func record(_ events: [ChatEvent]) {
        marks.withLockedValue { marks in
            for event in events {
                switch event {
                case .message(let message): Self.raise(&marks, message.channel, epoch: message.epoch, offset: message.offset)
                case .reset(let channel, let epoch): marks[channel] = (epoch, 0)
                default: break
                }
            }
        }
    }

    private static func raise(_ marks: inout [ChannelName: (epoch: String, offset: Int64)], _ channel: ChannelName, epoch: String, offset: Int64) {
        if let mark = marks[channel], mark.epoch == epoch, mark.offset >= offset { return }
        if marks.count >= limit { marks.removeAll(keepingCapacity: true) }
        marks[channel] = (epoch, offset)
    }
}
