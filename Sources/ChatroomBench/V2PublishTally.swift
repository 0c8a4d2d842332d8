import NIOConcurrencyHelpers

/// What every chat.v2 publisher of a run got back.
final class V2PublishTally: Sendable {
    struct Counts {
        var sent: UInt64 = 0
        var acknowledged: UInt64 = 0
        /// nacks by status.
        var nacks: [Int: UInt64] = [:]
        var errors: UInt64 = 0
        /// An id acknowledged a second time.
        var repeatedAcks: UInt64 = 0
        /// An offset acknowledged for two ids of one channel.
        var repeatedOffsets: UInt64 = 0
        /// Acks whose epoch differs from the channel's first ack's.
        var otherEpochs: UInt64 = 0
        /// Send (or, paced, when due) to ack.
        var latency = LatencyHistogram()
        var lastAck: UInt64 = 0
        var endedEarly = 0
        var firstProblem: String?
    }

    /// One channel's acknowledged offsets.
    struct Ledger {
        var epoch: String?
        var seen: [UInt64] = []
        var lowest: UInt64 = .max
        var highest: UInt64 = 0
        /// (ack time, highest offset acknowledged by then), when a timeline is kept.
        var timeline: [(UInt64, UInt64)] = []
    }

    private let counts = NIOLockedValueBox(Counts())
    private let ledgers: NIOLockedValueBox<[Ledger]>
    private let keepsTimeline: Bool

    init(channels: Int, keepsTimeline: Bool = false) {
        ledgers = NIOLockedValueBox(Array(repeating: Ledger(), count: channels))
        self.keepsTimeline = keepsTimeline
    }

    var snapshot: Counts { counts.withLockedValue { $0 } }

    /// Adds one publisher's counts since its last merge; `offsets` are (channel, offset)
    /// of its acks, `epochs` the epoch of each channel it had an ack of.
    func merge(_ local: Counts, offsets: [(Int, UInt64)], epochs: [Int: String], at time: UInt64) {
        var repeated: UInt64 = 0
        var others: UInt64 = 0
        if !offsets.isEmpty {
            ledgers.withLockedValue { ledgers in
                for (channel, epoch) in epochs {
                    if ledgers[channel].epoch == nil { ledgers[channel].epoch = epoch } else if ledgers[channel].epoch != epoch { others += 1 }
                }
                var touched: [Int] = []
                for (channel, offset) in offsets {
                    let word = Int(offset / 64)
                    if word >= ledgers[channel].seen.count {
                        ledgers[channel].seen.append(contentsOf: repeatElement(0, count: word - ledgers[channel].seen.count + 1))
                    }
                    let bit = UInt64(1) << (offset % 64)
                    if ledgers[channel].seen[word] & bit != 0 { repeated += 1 } else { ledgers[channel].seen[word] |= bit }
                    ledgers[channel].lowest = min(ledgers[channel].lowest, offset)
                    if offset > ledgers[channel].highest {
                        ledgers[channel].highest = offset
                        touched.append(channel)
                    }
                }
                if keepsTimeline {
                    for channel in touched where ledgers[channel].timeline.last?.1 != ledgers[channel].highest {
                        ledgers[channel].timeline.append((time, ledgers[channel].highest))
                    }
                }
            }
        }
        counts.withLockedValue { counts in
            counts.sent += local.sent
            counts.acknowledged += local.acknowledged
            for (status, count) in local.nacks { counts.nacks[status, default: 0] += count }
            counts.errors += local.errors
            counts.repeatedAcks += local.repeatedAcks
            counts.repeatedOffsets += repeated
            counts.otherEpochs += others
            counts.latency.merge(local.latency)
            counts.lastAck = max(counts.lastAck, local.lastAck)
            counts.endedEarly += local.endedEarly
            if counts.firstProblem == nil { counts.firstProblem = local.firstProblem }
        }
    }

    /// Per channel, the highest offset acknowledged by `time` (every offset up to it, if
    /// the acks have no holes).
    func highest(at time: UInt64) -> [UInt64] {
        ledgers.withLockedValue { ledgers in
            ledgers.map { ledger in
                // The last entry at or before `time`.
                var low = 0
                var high = ledger.timeline.count
                while low < high {
                    let middle = (low + high) / 2
                    if ledger.timeline[middle].0 <= time { low = middle + 1 } else { high = middle }
                }
                return low == 0 ? 0 : ledger.timeline[low - 1].1
            }
        }
    }

    /// Per channel: the highest offset acknowledged, its epoch, and how many offsets
    /// between the lowest and the highest acknowledged were never acknowledged.
    var channelSummary: [(highest: UInt64, epoch: String?, holes: UInt64)] {
        ledgers.withLockedValue { ledgers in
            ledgers.map { ledger in
                var held: UInt64 = 0
                for word in ledger.seen { held += UInt64(word.nonzeroBitCount) }
                return (ledger.highest, ledger.epoch, held == 0 ? 0 : ledger.highest - ledger.lowest + 1 - held)
            }
        }
    }
}
