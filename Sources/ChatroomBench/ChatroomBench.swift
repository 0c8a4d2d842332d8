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
        subcommands: [Fanout.self, Publish.self, Connections.self, V2Publish.self, V2Storm.self, V2Idle.self]
    )
}

struct Target: ParsableArguments {
    @Option(help: "Server address (loopback only).")
    var host = "127.0.0.1"
    @Option(help: "Server port.")
    var port = 8000
    @Option(help: "Server process id, to read its CPU time and memory from /proc.")
    var serverPid: Int32?
    @Option(help: "Redis process id, to read its CPU time from /proc.")
    var redisPid: Int32?
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
    @Option(help: "Messages per second, all publishers together (default: as fast as they are answered).")
    var rate: Double?
    @Option(help: "Seconds after which the run stops, whatever it reached.")
    var timeout = 120.0
    @Option(help: "Publishers flooding another channel from another address meanwhile, as fast as they are answered (429s included).")
    var floodPublishers = 0
    @Option(help: "Loopback address the flood comes from.")
    var floodSource = "127.0.0.9"
    @Flag(help: "Subscribers offer permessage-deflate and inflate what arrives compressed.")
    var deflate = false
    @Flag(help: "Subscribers are Server-Sent Events streams (GET /events) instead of sockets.")
    var events = false
    @Option(help: "Once subscribed, create this file and wait (up to 60 s) until it is removed before publishing: lets a profiler start counting.")
    var pauseFile: String?

    func run() async throws {
        try target.validateLoopback()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let tally = Tally()
        let inflaters = deflate ? try LoopInflaters(group: group) : nil
        let names = (0..<channels).map { "bench_\($0)" }
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        // Connect in batches so the accept queue is never flooded.
        var open: [any Channel] = []
        for batchStart in stride(from: 0, to: subscribers, by: 500) {
            let batch = (batchStart..<min(batchStart + 500, subscribers)).map { index in
                openSubscriber(
                    group: group, host: target.host, port: target.port, channel: names[index % channels], tally: tally, inflaters: inflaters, eventStream: events
                )
            }
            for future in batch {
                do { open.append(try await future.get()); tally.connected() } catch { tally.failed(); if tally.snapshot.failed == 1 { FileHandle.standardError.write(Data("subscriber failed: \(error)\n".utf8)) } }
            }
        }
        let connected = tally.snapshot.connected
        guard connected > 0 else { throw BenchError("no subscriber could connect") }
        let perChannel = (0..<channels).map { channel in (0..<subscribers).filter { $0 % channels == channel }.count }
        let expected = (1...UInt64(messages)).reduce(UInt64(0)) { $0 + UInt64(perChannel[Int($1) % channels]) }

        if let pauseFile {
            guard FileManager.default.createFile(atPath: pauseFile, contents: nil) else { throw BenchError("cannot create the pause file \(pauseFile)") }
            let until = monotonicNanoseconds() + 60_000_000_000
            while FileManager.default.fileExists(atPath: pauseFile), monotonicNanoseconds() < until {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let before = ProcessUsage(pid: target.serverPid)
        let generatorBefore = ProcessUsage(pid: getpid())
        let redisBefore = ProcessUsage(pid: target.redisPid)
        let started = monotonicNanoseconds()
        let plan = PublishPlan(total: UInt64(messages), channels: names, padding: padding, deadline: deadline, rate: rate)
        let flood = PublishPlan(total: UInt64.max, channels: ["bench_flood"], padding: padding, deadline: deadline)
        let (floodCount, floodFrom, server) = (floodPublishers, floodSource, target)
        @Sendable func floodIfAsked() async throws {
            guard floodCount > 0 else { return }
            try await runPublishers(group: group, host: server.host, port: server.port, connections: floodCount, plan: flood, source: floodFrom, firstID: 1000)
        }
        async let flooding: Void = floodIfAsked()
        try await runPublishers(group: group, host: target.host, port: target.port, connections: publishers, plan: plan)
        flood.stop()
        try await flooding
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
        let generatorCPU = (ProcessUsage(pid: getpid())?.cpuSeconds ?? 0) - (generatorBefore?.cpuSeconds ?? 0)
        let redisCPU = (ProcessUsage(pid: target.redisPid)?.cpuSeconds ?? 0) - (redisBefore?.cpuSeconds ?? 0)
        let counts = tally.snapshot
        let elapsed = Double(max(counts.lastDelivery, published) - started) / 1e9
        let cpu = (after?.cpuSeconds ?? 0) - (before?.cpuSeconds ?? 0)
        for channel in open { channel.close(promise: nil) }
        try await group.shutdownGracefully()

        let acked = plan.snapshot.acknowledged
        let report: [(String, String)] = [
            ("mode", "\"fanout\""), ("label", "\"\(target.label)\""), ("subscribers", "\(connected)"), ("channels", "\(channels)"),
            ("rate", rate.map { String(format: "%.0f", $0) } ?? "null"),
            ("messages", "\(messages)"), ("acknowledged", "\(acked)"), ("refused", "\(plan.snapshot.refused)"),
            ("expected", "\(expected)"), ("delivered", "\(counts.delivered)"), ("lost", "\(expected > counts.delivered ? expected - counts.delivered : 0)"),
            ("duplicates", "\(counts.duplicates)"), ("out_of_order", "\(counts.outOfOrder)"),
            ("seconds", String(format: "%.3f", elapsed)), ("deliveries_per_second", String(format: "%.0f", Double(counts.delivered) / elapsed)),
            ("p50_ms", String(format: "%.2f", counts.latency.quantile(0.5))), ("p90_ms", String(format: "%.2f", counts.latency.quantile(0.9))),
            ("p99_ms", String(format: "%.2f", counts.latency.quantile(0.99))), ("max_ms", String(format: "%.2f", Double(counts.latency.maximum) / 1e6)),
            ("server_cpu_seconds", String(format: "%.3f", cpu)),
            ("server_cpu_us_per_delivery", counts.delivered > 0 ? String(format: "%.3f", cpu * 1e6 / Double(counts.delivered)) : "null"),
            ("generator_cpu_seconds", String(format: "%.3f", generatorCPU)),
            ("generator_cpu_us_per_delivery", counts.delivered > 0 ? String(format: "%.3f", generatorCPU * 1e6 / Double(counts.delivered)) : "null"),
            ("redis_cpu_seconds", target.redisPid == nil ? "null" : String(format: "%.3f", redisCPU)),
            ("flood_acknowledged", "\(flood.snapshot.acknowledged)"), ("flood_refused", "\(flood.snapshot.refused)"),
        ]
        print("{" + report.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
        print(String(
            format: "ROW | %@ | fanout | S=%d K=%d M=%d P=%d%@%@ | %llu/%llu | %llu | %llu | %.0f | %.1f / %.1f / %.1f / %.1f | %@ | %@ |",
            target.label, connected, channels, messages, publishers, rate.map { String(format: " R=%.0f/s", $0) } ?? "",
            floodPublishers > 0 ? " + flood: \(flood.snapshot.acknowledged) ok, \(flood.snapshot.refused) refused" : "", counts.delivered, expected, counts.duplicates, counts.outOfOrder,
            Double(counts.delivered) / elapsed, counts.latency.quantile(0.5), counts.latency.quantile(0.9), counts.latency.quantile(0.99),
            Double(counts.latency.maximum) / 1e6, counts.delivered > 0 ? String(format: "%.2f µs", cpu * 1e6 / Double(counts.delivered)) : "–",
            counts.delivered > 0 ? String(format: "%.2f µs", generatorCPU * 1e6 / Double(counts.delivered)) : "–"
        ))
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "POST /send/ throughput with P keep-alive clients for T seconds.")

    @OptionGroup var target: Target
    @Option(help: "Concurrent keep-alive publishers.")
    var publishers = 32
    @Option(help: "Requests each publisher keeps in flight: more than 1 pipelines them.")
    var pipeline = 1
    @Option(help: "Seconds to publish.")
    var seconds = 10.0
    @Option(help: "Subscribers listening on the channel meanwhile.")
    var subscribers = 0
    @Option(help: "Where to post: another server's publish URL path (e.g. nchan's /pub?id=bench_publish).")
    var path = "/send/"
    @Option(help: "More server process ids whose CPU time counts as the server's (e.g. nginx workers), comma-separated.")
    var morePids = ""

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
        let serverPids = [target.serverPid].compactMap { $0 } + morePids.split(separator: ",").compactMap { Int32($0) }
        func serverCPU() -> Double { serverPids.compactMap { ProcessUsage(pid: $0)?.cpuSeconds }.reduce(0, +) }
        let before = serverCPU()
        let redisBefore = ProcessUsage(pid: target.redisPid)?.cpuSeconds ?? 0
        let generatorBefore = ProcessUsage(pid: getpid())?.cpuSeconds ?? 0
        let started = monotonicNanoseconds()
        let plan = PublishPlan(total: .max, channels: ["bench_publish"], padding: 16, deadline: started + UInt64(seconds * 1e9))
        try await runPublishers(group: group, host: target.host, port: target.port, connections: publishers, plan: plan, path: path, depth: pipeline)
        let elapsed = Double(monotonicNanoseconds() - started) / 1e9
        let cpu = serverCPU() - before
        let redisCPU = (ProcessUsage(pid: target.redisPid)?.cpuSeconds ?? 0) - redisBefore
        let generatorCPU = (ProcessUsage(pid: getpid())?.cpuSeconds ?? 0) - generatorBefore
        for channel in open { channel.close(promise: nil) }
        try await group.shutdownGracefully()
        let counts = plan.snapshot
        let rate = Double(counts.acknowledged) / elapsed
        let perRequest = { (seconds: Double) in counts.acknowledged > 0 ? seconds * 1e6 / Double(counts.acknowledged) : 0 }
        print(
            "{\"mode\":\"publish\",\"label\":\"\(target.label)\",\"publishers\":\(publishers),\"pipeline\":\(pipeline),\"subscribers\":\(open.count),"
                + "\"acknowledged\":\(counts.acknowledged),\"refused\":\(counts.refused),\"seconds\":\(String(format: "%.3f", elapsed)),"
                + "\"requests_per_second\":\(String(format: "%.0f", rate)),\"server_cpu_seconds\":\(String(format: "%.3f", cpu)),"
                + "\"server_cpu_us_per_request\":\(String(format: "%.2f", perRequest(cpu))),\"redis_cpu_us_per_request\":\(String(format: "%.2f", perRequest(redisCPU))),"
                + "\"generator_cpu_us_per_request\":\(String(format: "%.2f", perRequest(generatorCPU)))}"
        )
        print(
            String(
                format: "ROW | %@ | publish | P=%d%@ S=%d | %llu ok, %llu refused | %.0f req/s | %.1f µs server CPU per request |", target.label, publishers,
                pipeline > 1 ? " pipelined \(pipeline)" : "", open.count, counts.acknowledged, counts.refused, rate, perRequest(cpu)
            )
        )
    }
}

struct Connections: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Opens idle sockets in steps, reads the server's RSS per socket at each, then checks one broadcast reaches them all."
    )

    @OptionGroup var target: Target
    @Option(help: "Socket counts to stop at, comma separated (this process can hold about 19,900 on these machines).")
    var steps = "1000,5000,10000,19000"
    @Option(help: "Seconds to let the server settle at each step before reading its memory.")
    var settle = 2.0
    @Option(help: "Spread the sockets over this many loopback source addresses (127.0.0.1, .2, …): each has its own ~28,000 ephemeral ports.")
    var sourceAddresses = 4

    func run() async throws {
        try target.validateLoopback()
        guard target.serverPid != nil else { throw ValidationError("--server-pid is needed to read the server's memory") }
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let stops = steps.split(separator: ",").compactMap { Int($0) }.sorted()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let tally = Tally()
        try await Task.sleep(for: .seconds(settle))
        guard let baseline = ProcessUsage(pid: target.serverPid) else { throw BenchError("cannot read /proc for the server") }
        var open: [any Channel] = []
        var rows: [String] = []
        for stop in stops {
            while open.count < stop {
                let batch = (open.count..<min(open.count + 500, stop)).map { index in
                    openSubscriber(
                        group: group, host: target.host, port: target.port, channel: "bench_idle", tally: tally,
                        source: target.host.hasPrefix("127.") ? "127.0.0.\(1 + index % max(1, sourceAddresses))" : nil
                    )
                }
                var failures = 0
                for future in batch {
                    if let channel = try? await future.get() { open.append(channel) } else { failures += 1 }
                }
                if failures > 0 {
                    FileHandle.standardError.write(Data("chatroom-bench: \(failures) socket(s) refused at \(open.count)\n".utf8))
                    break
                }
            }
            try await Task.sleep(for: .seconds(settle))
            let usage = ProcessUsage(pid: target.serverPid)!
            let perSocket = Double(usage.residentBytes - baseline.residentBytes) / Double(max(open.count, 1))
            print("{\"mode\":\"connections\",\"label\":\"\(target.label)\",\"sockets\":\(open.count),\"server_rss_bytes\":\(usage.residentBytes),\"baseline_rss_bytes\":\(baseline.residentBytes),\"bytes_per_socket\":\(Int(perSocket))}")
            rows.append(String(format: "ROW | %@ | connections | %d sockets | RSS %.1f MiB (idle server %.1f MiB) | %.2f KB per socket |",
                               target.label, open.count, Double(usage.residentBytes) / 1_048_576, Double(baseline.residentBytes) / 1_048_576, perSocket / 1000))
            if open.count < stop { break }
        }
        // One broadcast must reach every socket.
        let plan = PublishPlan(total: 1, channels: ["bench_idle"], padding: 8, deadline: monotonicNanoseconds() + 30_000_000_000)
        try await runPublishers(group: group, host: target.host, port: target.port, connections: 1, plan: plan)
        let deadline = monotonicNanoseconds() + 30_000_000_000
        while tally.snapshot.delivered < UInt64(open.count) && monotonicNanoseconds() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let reached = tally.snapshot.delivered
        for row in rows { print(row) }
        print("ROW | \(target.label) | broadcast | \(open.count) sockets | \(reached) reached | \(reached == UInt64(open.count) ? "all" : "**not all**") |")
        for channel in open { channel.close(promise: nil) }
        try await group.shutdownGracefully()
        if reached != UInt64(open.count) { throw ExitCode(1) }
    }
}
