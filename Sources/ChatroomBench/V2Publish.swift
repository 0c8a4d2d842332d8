import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `v2-publish`: P chat.v2 sockets sending `send` frames, W unacknowledged each (as fast
/// as acks come back), or paced at a fixed total rate to measure ack latency.
struct V2Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "v2-publish",
        abstract: "chat.v2 publishing: P sockets with W sends in flight each (or paced at --rate); counts acks, their latency, and checks offsets."
    )

    @OptionGroup var target: Target
    @Option(help: "chat.v2 publisher sockets.")
    var publishers = 8
    @Option(help: "Unacknowledged sends per socket.")
    var window = 64
    @Option(help: "Seconds to publish.")
    var seconds = 10.0
    @Option(help: "Messages to send in all (default: as many as fit in --seconds).")
    var messages: UInt64?
    @Option(help: "Messages per second, all sockets together, each sent when due (default: as fast as acks come back). Latency counts from when a message was due.")
    var rate: Double?
    @Option(help: "Channels the messages go to in turn (bench_v2_0, bench_v2_1, …).")
    var channels = 1
    @Option(help: "Padding bytes per message.")
    var padding = 16
    @Option(help: "Subscribers of the original protocol listening on the channels meanwhile.")
    var subscribers = 0
    @Option(help: "Seconds to wait for the last acks after publishing stopped.")
    var drain = 10.0

    func run() async throws {
        try target.validateLoopback()
        guard publishers > 0, window > 0, channels > 0, seconds > 0 else { throw ValidationError("publishers, window, channels and seconds must be positive") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let names = channels == 1 ? ["bench_v2"] : (0..<channels).map { "bench_v2_\($0)" }
        let listeners = Tally()
        var open: [any Channel] = []
        for index in 0..<subscribers {
            if let channel = try? await openSubscriber(group: group, host: target.host, port: target.port, channel: names[index % channels], tally: listeners).get() {
                open.append(channel)
            }
        }
        let plan = V2PublishPlan(channels: names, padding: padding, window: window, rate: rate, publishers: publishers, messages: messages, seconds: seconds)
        let tally = V2PublishTally(channels: channels)
        let before = BeforeRun(serverPid: target.serverPid, redisPid: target.redisPid)
        try await runV2Publishers(group: group, host: target.host, port: target.port, plan: plan, tally: tally, drain: drain) { before.mark() }
        let after = ProcessUsage(pid: target.serverPid)
        let redisAfter = ProcessUsage(pid: target.redisPid)
        let generatorCPU = (ProcessUsage(pid: getpid())?.cpuSeconds ?? 0) - (before.generator?.cpuSeconds ?? 0)
        for channel in open { channel.close(promise: nil) }
        try await group.shutdownGracefully()

        let counts = tally.snapshot
        let started = plan.start
        let elapsed = Double((counts.lastAck > started ? counts.lastAck : monotonicNanoseconds()) - started) / 1e9
        let throughput = Double(counts.acknowledged) / elapsed
        let cpu = (after?.cpuSeconds ?? 0) - (before.server?.cpuSeconds ?? 0)
        let redisCPU = (redisAfter?.cpuSeconds ?? 0) - (before.redis?.cpuSeconds ?? 0)
        let nacked = counts.nacks.values.reduce(0, +)
        let summary = tally.channelSummary
        let holes = summary.reduce(0) { $0 + $1.holes }
        let unanswered = counts.sent - counts.acknowledged - nacked
        let nacks = counts.nacks.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
        let report: [(String, String)] = [
            ("mode", "\"v2-publish\""), ("label", "\"\(target.label)\""), ("publishers", "\(publishers)"), ("window", "\(window)"),
            ("channels", "\(channels)"), ("subscribers", "\(open.count)"), ("rate", rate.map { String(format: "%.0f", $0) } ?? "null"),
            ("sent", "\(counts.sent)"), ("acknowledged", "\(counts.acknowledged)"), ("nacks", "{\(nacks)}"), ("unanswered", "\(unanswered)"),
            ("errors", "\(counts.errors)"), ("repeated_acks", "\(counts.repeatedAcks)"), ("repeated_offsets", "\(counts.repeatedOffsets)"),
            ("offset_holes", "\(holes)"), ("other_epochs", "\(counts.otherEpochs)"), ("sockets_ended_early", "\(counts.endedEarly)"),
            ("seconds", String(format: "%.3f", elapsed)), ("acks_per_second", String(format: "%.0f", throughput)),
            ("ack_p50_ms", String(format: "%.3f", counts.latency.quantile(0.5))), ("ack_p90_ms", String(format: "%.3f", counts.latency.quantile(0.9))),
            ("ack_p99_ms", String(format: "%.3f", counts.latency.quantile(0.99))), ("ack_max_ms", String(format: "%.3f", Double(counts.latency.maximum) / 1e6)),
            ("server_cpu_seconds", String(format: "%.3f", cpu)),
            ("server_cpu_us_per_ack", counts.acknowledged > 0 ? String(format: "%.2f", cpu * 1e6 / Double(counts.acknowledged)) : "null"),
            ("redis_cpu_seconds", target.redisPid == nil ? "null" : String(format: "%.3f", redisCPU)),
            ("generator_cpu_seconds", String(format: "%.3f", generatorCPU)),
            ("delivered", "\(listeners.snapshot.delivered)"),
        ]
        print("{" + report.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
        let size = "P=\(publishers) W=\(window) K=\(channels) S=\(open.count)\(rate.map { String(format: " R=%.0f/s", $0) } ?? "")"
        print(String(
            format: "ROW | %@ | v2-publish | %@ | %llu acked, %llu nacked, %llu unanswered | %.0f acks/s | %.2f / %.2f / %.2f / %.2f | %@ | %@ | %llu / %llu / %llu |",
            target.label, size, counts.acknowledged, nacked, unanswered, throughput, counts.latency.quantile(0.5), counts.latency.quantile(0.9),
            counts.latency.quantile(0.99), Double(counts.latency.maximum) / 1e6,
            counts.acknowledged > 0 ? String(format: "%.1f µs", cpu * 1e6 / Double(counts.acknowledged)) : "–",
            String(format: "%.1f s / %.1f s / %.1f s", cpu, redisCPU, generatorCPU),
            counts.repeatedAcks, counts.repeatedOffsets, holes
        ))
        if let problem = counts.firstProblem { FileHandle.standardError.write(Data("chatroom-bench: first problem: \(problem.prefix(300))\n".utf8)) }
    }
}

/// CPU counters of the server and Redis, read when the measured part of a run begins.
final class BeforeRun: Sendable {
    private let pids: (server: Int32?, redis: Int32?)
    private let usage = NIOLockedValueBox<(ProcessUsage?, ProcessUsage?, ProcessUsage?)>((nil, nil, nil))

    init(serverPid: Int32?, redisPid: Int32?) { pids = (serverPid, redisPid) }

    func mark() { usage.withLockedValue { $0 = (ProcessUsage(pid: pids.server), ProcessUsage(pid: pids.redis), ProcessUsage(pid: getpid())) } }
    var server: ProcessUsage? { usage.withLockedValue { $0.0 } }
    var redis: ProcessUsage? { usage.withLockedValue { $0.1 } }
    var generator: ProcessUsage? { usage.withLockedValue { $0.2 } }
}
