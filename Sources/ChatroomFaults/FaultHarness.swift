import ArgumentParser
import Chat
import ChatClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The counting client of the fault harness.
///
/// Publishes numbered messages at a steady rate through `POST /send/` (round-robin
/// over the instances, falling over to the next when one refuses), while K chat.v1
/// subscribers spread over the instances record every frame. Subscribers behave like
/// the page: on a drop they reconnect (their own instance first, then the others) and
/// resume with since/epoch; on `gap`, or a hole in the offsets, they fetch the range
/// from /history.
///
/// Prints one JSON line and one Markdown table row, and exits non-zero when a target
/// is missed: anything acknowledged and inside the history window lost, duplicated or
/// reordered, or a reset where none was expected (or none where one was).
@main
struct FaultHarness: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatroom-faults",
        abstract: "Counts what subscribers get while faults happen (see scripts/faults.sh)."
    )

    @Option(help: "Instance ports on 127.0.0.1, comma separated.")
    var ports: String
    @Option(help: "Scenario name for the report.")
    var scenario = "unnamed"
    @Option(help: "Channel to use.")
    var channel = "faults"
    @Option(help: "chat.v1 subscribers, spread over the instances.")
    var subscribers = 6
    @Option(help: "Publishes per second.")
    var rate = 50.0
    @Option(help: "Seconds of publishing.")
    var duration = 20.0
    @Option(help: "Seconds to wait for deliveries after the last publish.")
    var grace = 8.0
    @Option(help: "Bytes of padding per message.")
    var padding = 32
    @Option(help: "Subscriber 0 stops reading this many seconds in (with a small receive buffer).")
    var slowAt: Double?
    @Option(help: "For how many seconds subscriber 0 stops reading.")
    var slowFor = 10.0
    @Option(help: "Whether a reset is expected: yes, no, or any.")
    var expectReset = "no"
    @Option(help: "The instances' archive (postgres://… or sqlite:///…): afterwards, every acknowledged message must be in it once.")
    var archiveURL: String?
    @Option(help: "Acknowledged messages the archive may lack (Redis without persistence killed: those of its last moments).")
    var archiveMayLack = 0
    @Flag(help: "Every publish must be acknowledged: nothing refused.")
    var noRefusals = false

    func run() async throws {
        let ports = self.ports.split(separator: ",").compactMap { Int($0) }
        guard !ports.isEmpty else { throw ValidationError("--ports needs at least one port") }
        let start = ContinuousClock.now
        let ledger = Ledger()
        let stop = NIOLockedValueBox(false)
        let subscriberList = (0..<subscribers).map { index in
            Subscriber(index: index, ports: ports, home: index % ports.count, channel: channel, start: start, slow: index == 0 && slowAt != nil)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for subscriber in subscriberList {
                group.addTask { await subscriber.run(until: stop) }
            }
            if let slowAt {
                let slow = subscriberList[0]
                let slowFor = self.slowFor
                group.addTask {
                    try await Task.sleep(for: .seconds(slowAt))
                    await slow.setReading(false)
                    try await Task.sleep(for: .seconds(slowFor))
                    await slow.setReading(true)
                }
            }
            // Let every subscriber connect before the first publish.
            try await Task.sleep(for: .seconds(1))
            try await publish(ports: ports, ledger: ledger, start: start)
            try await Task.sleep(for: .seconds(grace))
            stop.withLockedValue { $0 = true }
            for subscriber in subscriberList { await subscriber.disconnect() }
            try await group.waitForAll()
        }
        var report = await Report(scenario: scenario, ledger: ledger, subscribers: subscriberList, expectReset: expectReset)
        if noRefusals, report.refused > 0 { report.failures.append("\(report.refused) publish(es) refused") }
        if let archiveURL {
            guard let name = ChannelName(channel) else { throw ValidationError("--channel \(channel) is not a channel name") }
            let check = try await ArchiveCheck.run(
                url: archiveURL, channel: name, acked: Set(ledger.acked.keys), refused: ledger.refusedNumbers, wait: .seconds(60)
            )
            report.archive = check
            if check.missing > archiveMayLack { report.failures.append("\(check.missing) acknowledged message(s) not archived (\(check.someMissing.map(String.init).joined(separator: ", ")))") }
            if check.twice > 0 { report.failures.append("\(check.twice) message(s) archived twice") }
            if check.refusedYetKept > 0 { report.failures.append("\(check.refusedYetKept) refused yet archived") }
        }
        print(report.json)
        print("ROW " + report.markdownRow)
        if !report.failures.isEmpty {
            FileHandle.standardError.write(Data("chatroom-faults: \(scenario): \(report.failures.joined(separator: "; "))\n".utf8))
            throw ExitCode(1)
        }
    }

    /// One publisher, at `rate`, numbering messages 1, 2, 3 …
    ///
    /// Each message has an `Idempotency-Key`. A `504` (the server may have published it)
    /// is retried with the same key, on any instance, until it is acknowledged or 15 s
    /// pass; a message that got only definite refusals (`503`: nothing was published)
    /// counts as refused, and must then never be delivered.
    private func publish(ports: [Int], ledger: Ledger, start: ContinuousClock.Instant) async throws {
        let total = Int(duration * rate)
        let interval = Duration.seconds(1.0 / rate)
        let pad = String(repeating: "p", count: padding)
        let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        var next = ContinuousClock.now
        for number in 1...total {
            next += interval
            let sentAt = ContinuousClock.now - start
            let text = "n=\(number);t=\(Int(sentAt / .milliseconds(1)));\(pad)"
            var outcome = Ledger.Outcome.refused
            var refusals: [String] = []
            let giveUp = ContinuousClock.now + .seconds(15)
            var attempt = 0
            attempts: while true {
                let port = ports[(number + attempt) % ports.count]
                attempt += 1
                do {
                    let response = try await ChatHTTP.send(port: port, data: text, channel: channel, headers: [("Idempotency-Key", "\(run)-\(number)")])
                    if response.status == 200 && response.body == "ok" {
                        outcome = .acked
                        break attempts
                    }
                    refusals.append("\(response.status)")
                    if response.status == 504 { outcome = .unconfirmed }
                } catch {
                    refusals.append("unreachable")
                }
                // After a 504, keep trying until the answer is certain; else one try per instance.
                guard outcome == .unconfirmed ? ContinuousClock.now < giveUp : attempt < ports.count else { break }
                if outcome == .unconfirmed { try await Task.sleep(for: .milliseconds(200)) }
            }
            ledger.record(number: number, outcome: outcome, at: ContinuousClock.now - start, refusals: refusals)
            try await Task.sleep(until: max(next, .now))
        }
    }
}

/// What the publisher sent and which publishes were acknowledged.
final class Ledger: Sendable {
    /// How a publish ended.
    enum Outcome {
        /// Answered `ok`.
        case acked
        /// Only definite refusals: the server said nothing was published.
        case refused
        /// A `504` was never followed by an `ok`: it may or may not have been published.
        case unconfirmed
    }

    private struct State {
        var acked: [Int: Duration] = [:]
        var refusedNumbers: Set<Int> = []
        var unconfirmed = 0
        var refusals: [String: Int] = [:]
        var sent = 0
    }

    private let state = NIOLockedValueBox(State())

    func record(number: Int, outcome: Outcome, at time: Duration, refusals: [String]) {
        state.withLockedValue { state in
            state.sent += 1
            switch outcome {
            case .acked: state.acked[number] = time
            case .refused: state.refusedNumbers.insert(number)
            case .unconfirmed: state.unconfirmed += 1
            }
            for refusal in refusals { state.refusals[refusal, default: 0] += 1 }
        }
    }

    var acked: [Int: Duration] { state.withLockedValue { $0.acked } }
    var sent: Int { state.withLockedValue { $0.sent } }
    var refused: Int { state.withLockedValue { $0.refusedNumbers.count } }
    /// Publishes refused for certain: none of them may ever be delivered.
    var refusedNumbers: Set<Int> { state.withLockedValue { $0.refusedNumbers } }
    /// Publishes whose fate the server could not confirm, even after retries.
    var unconfirmed: Int { state.withLockedValue { $0.unconfirmed } }
    var refusals: [String: Int] { state.withLockedValue { $0.refusals } }
}

/// One chat.v1 subscriber that reconnects and resumes like the page.
actor Subscriber {
    let index: Int
    let ports: [Int]
    let home: Int
    let channel: String
    let start: ContinuousClock.Instant
    let slow: Bool

    private var socket: ChatWebSocket?
    private var epoch: String?
    private var last: Int64 = 0
    private(set) var delivered: [Int] = []
    private(set) var recovered: Set<Int> = []
    private(set) var resets: [Duration] = []
    private(set) var gaps = 0
    private(set) var gapsRecovered = 0
    private(set) var reconnects = 0
    private(set) var latencies: [Duration] = []

    init(index: Int, ports: [Int], home: Int, channel: String, start: ContinuousClock.Instant, slow: Bool) {
        self.index = index
        self.ports = ports
        self.home = home
        self.channel = channel
        self.start = start
        self.slow = slow
    }

    func run(until stop: NIOLockedValueBox<Bool>) async {
        var attempt = 0
        while !stop.withLockedValue({ $0 }) {
            let port = ports[(home + attempt) % ports.count]
            var path = "/wb/?channel=\(channel)"
            if let epoch { path += "&since=\(last)&epoch=\(epoch)" }
            do {
                let socket = try await ChatWebSocket.connect(
                    port: port, path: path, subprotocols: ["chat.v1"], receiveBufferSize: slow ? 4096 : nil, timeout: .seconds(3)
                )
                self.socket = socket
                if attempt > 0 || !delivered.isEmpty || epoch != nil { reconnects += 1 }
                attempt = 0
                await read(socket, stop: stop)
                self.socket = nil
            } catch {
                attempt += 1
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    func setReading(_ reading: Bool) async {
        try? await socket?.setReading(reading)
    }

    func disconnect() async {
        await socket?.disconnect()
    }

    private func read(_ socket: ChatWebSocket, stop: NIOLockedValueBox<Bool>) async {
        while !stop.withLockedValue({ $0 }) {
            guard let event = await socket.next(timeout: .seconds(1)) else { continue }
            switch event {
            case .text(let text):
                await handle(text)
            case .close, .disconnected:
                await socket.disconnect()
                return
            default:
                continue
            }
        }
    }

    private func handle(_ text: String) async {
        guard let frame = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], let type = frame["type"] as? String else { return }
        switch type {
        case "message":
            guard let data = frame["data"] as? String, let offset = (frame["offset"] as? NSNumber)?.int64Value, let epoch = frame["epoch"] as? String,
                let (number, sentAt) = Self.parse(data)
            else { return }
            if epoch == self.epoch, offset > last + 1 {
                // A hole (e.g. after a reset, the new epoch began before this socket joined):
                // fill it from /history as the page does.
                gaps += 1
                if await fetch(from: last + 1, to: offset - 1) { gapsRecovered += 1 }
            }
            self.epoch = epoch
            last = offset
            delivered.append(number)
            latencies.append((ContinuousClock.now - start) - sentAt)
        case "reset":
            resets.append(ContinuousClock.now - start)
            epoch = frame["epoch"] as? String
            last = 0
        case "gap":
            guard let from = (frame["from"] as? NSNumber)?.int64Value, let to = (frame["to"] as? NSNumber)?.int64Value else { return }
            gaps += 1
            if await fetch(from: from, to: to) { gapsRecovered += 1 }
            last = max(last, to)
        default:
            break
        }
    }

    /// Fetches offsets from…to from /history, as the page does after a `gap`.
    private func fetch(from: Int64, to: Int64) async -> Bool {
        var since = from - 1
        while since < to {
            var page: [String: Any]?
            for port in ports {
                guard let response = try? await ChatHTTP.request("GET", port: port, path: "/history?channel=\(channel)&since=\(since)&limit=1000"),
                    response.status == 200
                else { continue }
                page = try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
                break
            }
            guard let messages = page?["messages"] as? [[String: Any]], !messages.isEmpty else { return false }
            for message in messages {
                guard let offset = (message["offset"] as? NSNumber)?.int64Value, offset <= to else { continue }
                if let data = message["data"] as? String, let (number, _) = Self.parse(data) { recovered.insert(number) }
            }
            since = (messages.last?["offset"] as? NSNumber)?.int64Value ?? to
        }
        return true
    }

    static func parse(_ data: String) -> (Int, Duration)? {
        let fields = data.split(separator: ";")
        guard fields.count >= 2, fields[0].hasPrefix("n="), fields[1].hasPrefix("t="),
            let number = Int(fields[0].dropFirst(2)), let millis = Int(fields[1].dropFirst(2))
        else { return nil }
        return (number, .milliseconds(millis))
    }
}

/// The counts of one scenario.
struct Report {
    var scenario: String
    var sent = 0
    var acked = 0
    var refused = 0
    /// Refused for certain, and delivered all the same: a wrong answer (target 0).
    var refusedYetDelivered = 0
    var unconfirmed = 0
    var retried504 = 0
    var delivered = 0
    var lost = 0
    var lostWithHistory = 0
    var duplicates = 0
    var reordered = 0
    var resets = 0
    var gaps = 0
    var gapsRecovered = 0
    var reconnects = 0
    var p50 = 0.0
    var p99 = 0.0
    var failures: [String] = []
    /// What the archive kept, with one.
    var archive: ArchiveCheck?

    init(scenario: String, ledger: Ledger, subscribers: [Subscriber], expectReset: String) async {
        self.scenario = scenario
        sent = ledger.sent
        let acked = ledger.acked
        self.acked = acked.count
        refused = ledger.refused
        unconfirmed = ledger.unconfirmed
        retried504 = ledger.refusals["504"] ?? 0
        let refusedNumbers = ledger.refusedNumbers
        var deliveredAnywhere = Set<Int>()
        var latencies: [Duration] = []
        for subscriber in subscribers {
            let delivered = await subscriber.delivered
            let recovered = await subscriber.recovered
            let resets = await subscriber.resets
            self.delivered += delivered.count + recovered.count
            var seen = Set<Int>()
            var highest = 0
            for number in delivered {
                if !seen.insert(number).inserted { duplicates += 1 }
                if number < highest { reordered += 1 }
                highest = max(highest, number)
            }
            seen.formUnion(recovered)
            deliveredAnywhere.formUnion(seen)
            let lastReset = resets.last
            for (number, ackedAt) in acked where !seen.contains(number) {
                // Acknowledged before a reset and never seen: it went with the lost history.
                if let lastReset, ackedAt < lastReset { lostWithHistory += 1 } else { lost += 1 }

            }
            self.resets += resets.count
            gaps += await subscriber.gaps
            gapsRecovered += await subscriber.gapsRecovered
            reconnects += await subscriber.reconnects
            if !subscriber.slow { latencies += await subscriber.latencies }
        }
        refusedYetDelivered = refusedNumbers.intersection(deliveredAnywhere).count
        latencies.sort()
        if !latencies.isEmpty {
            p50 = latencies[latencies.count / 2] / .milliseconds(1)
            p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)] / .milliseconds(1)
        }
        if self.acked == 0 { failures.append("nothing was acknowledged") }
        if lost > 0 { failures.append("\(lost) acknowledged message(s) lost") }
        if refusedYetDelivered > 0 { failures.append("\(refusedYetDelivered) refused yet delivered") }
        if duplicates > 0 { failures.append("\(duplicates) duplicate(s)") }
        if reordered > 0 { failures.append("\(reordered) out of order") }
        if gapsRecovered < gaps { failures.append("\(gaps - gapsRecovered) gap(s) not recovered") }
        if expectReset == "yes" && resets == 0 { failures.append("expected a reset, saw none") }
        if expectReset == "no" && resets > 0 { failures.append("\(resets) unexpected reset(s)") }
    }

    var json: String {
        let fields: [(String, String)] = [
            ("scenario", "\"\(scenario)\""), ("sent", "\(sent)"), ("acked", "\(acked)"), ("refused", "\(refused)"),
            ("refused_yet_delivered", "\(refusedYetDelivered)"), ("unconfirmed", "\(unconfirmed)"), ("answers_504", "\(retried504)"),
            ("delivered", "\(delivered)"), ("lost", "\(lost)"), ("lost_with_history", "\(lostWithHistory)"),
            ("duplicates", "\(duplicates)"), ("reordered", "\(reordered)"), ("resets", "\(resets)"), ("gaps", "\(gaps)"),
            ("gaps_recovered", "\(gapsRecovered)"), ("reconnects", "\(reconnects)"),
            ("latency_p50_ms", String(format: "%.1f", p50)), ("latency_p99_ms", String(format: "%.1f", p99)),
        ] + (archive.map { [("archived", "\($0.kept)"), ("archive_missing", "\($0.missing)"), ("archived_twice", "\($0.twice)"), ("refused_yet_archived", "\($0.refusedYetKept)")] } ?? []) + [
            ("passed", failures.isEmpty ? "true" : "false")
        ]
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    var markdownRow: String {
        "| \(scenario) | \(acked) | \(refused) | \(refusedYetDelivered) | \(retried504) | \(delivered) | \(lost) | \(lostWithHistory) | \(duplicates) | \(reordered) | \(resets) | \(gapsRecovered)/\(gaps) | \(reconnects) | "
            + String(format: "%.0f / %.0f", p50, p99) + " | " + (archive.map { "\($0.kept) / \($0.missing) / \($0.twice)" } ?? "—") + " | \(failures.isEmpty ? "yes" : "**no**: " + failures.joined(separator: "; ")) |"
    }
}
