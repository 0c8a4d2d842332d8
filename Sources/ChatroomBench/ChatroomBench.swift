import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// `chatroom-bench`: load for a chat server on loopback. Every loop is bounded in count
/// and time. Prints one JSON line and one Markdown row per run.
@main
struct ChatroomBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatroom-bench",
        abstract: "Load generator for Chatroom (and any server of the original protocol).",
        subcommands: [Fanout.self, Publish.self]
    )
}

struct Target: ParsableArguments {
    @Option(help: "Server address (loopback only).")
    var host = "127.0.0.1"
    @Option(help: "Server port.")
    var port = 8000
    @Option(help: "Server process id, to read its CPU time and memory from /proc.")
    var serverPid: Int32?
    @Option(help: "Label for the report.")
    var label = "chatroom"

    func validateLoopback() throws {
        guard host.hasPrefix("127.") || host == "::1" || host == "localhost" else {
            throw ValidationError("benchmarks talk only to loopback")
        }
    }
}

/// CPU seconds and resident memory of a process, from /proc.
struct ProcessUsage {
    var cpuSeconds: Double
    var residentBytes: Int

    init?(pid: Int32?) {
        guard let pid, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15; rss is 24.
        guard fields.count > 21, let user = Double(fields[11]), let system = Double(fields[12]), let pages = Int(fields[21]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        cpuSeconds = (user + system) / ticks
        residentBytes = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

struct Fanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "S subscribers over K channels; M messages published; counts every delivery.")

    @OptionGroup var target: Target
    @Option(help: "Subscriber sockets.")
    var subscribers = 100
    @Option(help: "Channels the subscribers are spread over.")
    var channels = 1
    @Option(help: "Messages to publish.")
    var messages = 1000
    @Option(help: "Concurrent keep-alive publishers.")
    var publishers = 8
    @Option(help: "Padding bytes per message.")
    var padding = 16
    @Option(help: "Seconds after which the run stops, whatever it reached.")
    var timeout = 120.0

    func run() async throws {
        try target.validateLoopback()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let tally = Tally()
        let names = (0..<channels).map { "bench_\($0)" }
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        // Connect in batches so the accept queue is never flooded.
        var open: [any Channel] = []
        for batchStart in stride(from: 0, to: subscribers, by: 500) {
            let batch = (batchStart..<min(batchStart + 500, subscribers)).map { index in
                openSubscriber(group: group, host: target.host, port: target.port, channel: names[index % channels], tally: tally)
            }
            for future in batch {
                do { open.append(try await future.get()); tally.connected() } catch { tally.failed(); if tally.snapshot.failed == 1 { FileHandle.standardError.write(Data("subscriber failed: \(error)\n".utf8)) } }
            }
        }
        let connected = tally.snapshot.connected
        guard connected > 0 else { throw BenchError("no subscriber could connect") }
        let perChannel = (0..<channels).map { channel in (0..<subscribers).filter { $0 % channels == channel }.count }
        let expected = (1...UInt64(messages)).reduce(UInt64(0)) { $0 + UInt64(perChannel[Int($1) % channels]) }

        let before = ProcessUsage(pid: target.serverPid)
        let started = monotonicNanoseconds()
        let plan = PublishPlan(total: UInt64(messages), channels: names, padding: padding, deadline: deadline)
        try await runPublishers(group: group, host: target.host, port: target.port, connections: publishers, plan: plan)
        let published = monotonicNanoseconds()
        // Wait until every expected delivery arrived, or 5 s of silence, or the deadline.
        var lastCount: UInt64 = 0
        var quietSince = monotonicNanoseconds()
        while monotonicNanoseconds() < deadline {
            let now = tally.snapshot.delivered
            if now >= expected { break }
            if now != lastCount { lastCount = now; quietSince = monotonicNanoseconds() }
            if monotonicNanoseconds() - quietSince > 5_000_000_000 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let after = ProcessUsage(pid: target.serverPid)
        let counts = tally.snapshot
        let elapsed = Double(max(counts.lastDelivery, published) - started) / 1e9
        let cpu = (after?.cpuSeconds ?? 0) - (before?.cpuSeconds ?? 0)
        for channel in open { channel.close(promise: nil) }
        try await group.shutdownGracefully()

        let acked = plan.snapshot.acknowledged
        let report: [(String, String)] = [
            ("mode", "\"fanout\""), ("label", "\"\(target.label)\""), ("subscribers", "\(connected)"), ("channels", "\(channels)"),
            ("messages", "\(messages)"), ("acknowledged", "\(acked)"), ("refused", "\(plan.snapshot.refused)"),
            ("expected", "\(expected)"), ("delivered", "\(counts.delivered)"), ("lost", "\(expected > counts.delivered ? expected - counts.delivered : 0)"),
            ("duplicates", "\(counts.duplicates)"), ("out_of_order", "\(counts.outOfOrder)"),
            ("seconds", String(format: "%.3f", elapsed)), ("deliveries_per_second", String(format: "%.0f", Double(counts.delivered) / elapsed)),
            ("p50_ms", String(format: "%.2f", counts.latency.quantile(0.5))), ("p90_ms", String(format: "%.2f", counts.latency.quantile(0.9))),
            ("p99_ms", String(format: "%.2f", counts.latency.quantile(0.99))), ("max_ms", String(format: "%.2f", Double(counts.latency.maximum) / 1e6)),
            ("server_cpu_seconds", String(format: "%.3f", cpu)),
            ("server_cpu_us_per_delivery", counts.delivered > 0 ? String(format: "%.3f", cpu * 1e6 / Double(counts.delivered)) : "null"),
        ]
        print("{" + report.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
        print(String(
            format: "ROW | %@ | fanout | S=%d K=%d M=%d P=%d | %llu/%llu | %llu | %llu | %.0f | %.1f / %.1f / %.1f / %.1f | %@ |",
            target.label, connected, channels, messages, publishers, counts.delivered, expected, counts.duplicates, counts.outOfOrder,
            Double(counts.delivered) / elapsed, counts.latency.quantile(0.5), counts.latency.quantile(0.9), counts.latency.quantile(0.99),
            Double(counts.latency.maximum) / 1e6, counts.delivered > 0 ? String(format: "%.2f µs", cpu * 1e6 / Double(counts.delivered)) : "–"
        ))
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "POST /send/ throughput with P keep-alive clients for T seconds.")

    @OptionGroup var target: Target
    @Option(help: "Concurrent keep-alive publishers.")
    var publishers = 32
    @Option(help: "Seconds to publish.")
    var seconds = 10.0
    @Option(help: "Subscribers listening on the channel meanwhile.")
    var subscribers = 0

    func run() async throws {
        try target.validateLoopback()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let tally = Tally()
        var open: [any Channel] = []
        for _ in 0..<subscribers {
            if let channel = try? await openSubscriber(group: group, host: target.host, port: target.port, channel: "bench_publish", tally: tally).get() {
                open.append(channel)
            }
        }
        let before = ProcessUsage(pid: target.serverPid)
        let started = monotonicNanoseconds()
        let plan = PublishPlan(total: .max, channels: ["bench_publish"], padding: 16, deadline: started + UInt64(seconds * 1e9))
        try await runPublishers(group: group, host: target.host, port: target.port, connections: publishers, plan: plan)
        let elapsed = Double(monotonicNanoseconds() - started) / 1e9
        let after = ProcessUsage(pid: target.serverPid)
        for channel in open { channel.close(promise: nil) }
        try await group.shutdownGracefully()
        let counts = plan.snapshot
        let rate = Double(counts.acknowledged) / elapsed
        let cpu = (after?.cpuSeconds ?? 0) - (before?.cpuSeconds ?? 0)
        print("{\"mode\":\"publish\",\"label\":\"\(target.label)\",\"publishers\":\(publishers),\"subscribers\":\(open.count),\"acknowledged\":\(counts.acknowledged),\"refused\":\(counts.refused),\"seconds\":\(String(format: "%.3f", elapsed)),\"requests_per_second\":\(String(format: "%.0f", rate)),\"server_cpu_seconds\":\(String(format: "%.3f", cpu))}")
        print(String(format: "ROW | %@ | publish | P=%d S=%d | %llu ok, %llu refused | %.0f req/s | %.1f s CPU |", target.label, publishers, open.count, counts.acknowledged, counts.refused, rate, cpu))
    }
}
