import Chat
import ChatArchive

/// What the archive kept of a scenario's messages, read from the database itself once the
/// archivers have caught up: every acknowledged message once, nothing refused.
struct ArchiveCheck {
    /// Acknowledged messages the archive holds.
    var kept = 0
    /// Acknowledged messages it does not hold (after waiting for it).
    var missing = 0
    /// The first few of them, for the report.
    var someMissing: [Int] = []
    /// Messages it holds more than once (in one epoch or across epochs).
    var twice = 0
    /// Refused for certain (503s only) and archived all the same.
    var refusedYetKept = 0

    /// Reads every epoch of `channel` until it holds every one of `acked`, or `wait` passes.
    static func run(url: String, channel: ChannelName, acked: Set<Int>, refused: Set<Int>, wait: Duration) async throws -> ArchiveCheck {
        let archive = try Archives.open(url: url)
        defer { Task { await archive.close() } }
        let deadline = ContinuousClock.now + wait
        var numbers: [Int: Int] = [:]
        while true {
            numbers = try await keptNumbers(of: channel, in: archive)
            if acked.isSubset(of: Set(numbers.keys)) || ContinuousClock.now >= deadline { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        var check = ArchiveCheck()
        for number in acked {
            if numbers[number] != nil { check.kept += 1 } else { check.missing += 1 }
        }
        check.someMissing = Array(acked.filter { numbers[$0] == nil }.sorted().prefix(10))
        check.twice = numbers.values.filter { $0 > 1 }.count
        check.refusedYetKept = refused.filter { numbers[$0] != nil }.count
        await archive.close()
        return check
    }

    /// How many rows hold each message number, over every epoch.
    private static func keptNumbers(of channel: ChannelName, in archive: any Archive) async throws -> [Int: Int] {
        var numbers: [Int: Int] = [:]
        for epoch in try await archive.epochs(of: channel) {
            var after: Int64 = 0
            while true {
                let page = try await archive.messages(in: channel, epoch: epoch.epoch, after: after, before: nil, limit: 1000)
                for message in page where message.kind == .message {
                    if let (number, _) = Subscriber.parse(message.text) { numbers[number, default: 0] += 1 }
                }
                guard let last = page.last, page.count == 1000 else { break }
                after = last.offset
            }
        }
        return numbers
    }
}
