import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// `v2-idle`: N idle chat.v2 sockets holding S subscriptions each; the server's resident
/// memory (VmRSS) above its size before them, per socket. Then one message per channel
/// must reach every subscription.
struct V2Idle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "v2-idle",
        abstract: "Idle chat.v2 sockets with S subscriptions each: server VmRSS per socket, then one message per channel must reach every subscription."
    )

    @OptionGroup var target: Target
    @Option(help: "chat.v2 sockets.")
    var sockets = 10_000
    @Option(help: "Subscriptions per socket (socket i: channels i×S … i×S+S−1, mod K).")
    var subscriptions = 10
    @Option(help: "Channels.")
    var channels = 100
    @Option(help: "Seconds to let the server settle before each memory reading.")
    var settle = 3.0
    @Option(help: "Loopback source addresses to spread the sockets over.")
    var sourceAddresses = 4
    @Option(help: "Distinct people (uid cookies) among the sockets: socket i is person i mod N (default: one per socket).")
    var people: Int?

    func run() async throws {
        try target.validateLoopback()
        guard let pid = target.serverPid else { throw ValidationError("--server-pid is needed to read the server's memory") }
        guard subscriptions <= channels else { throw ValidationError("--subscriptions must be at most --channels") }
        raiseFileLimit()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let nonce = String(UInt64.random(in: 0...UInt64.max), radix: 36).prefix(8)
        let names = (0..<channels).map { "idle\(nonce)_\($0)" }
        let (perSocket, channelCount) = (subscriptions, channels)
        let settings = V2SubscriberSettings(
            host: target.host, port: target.port, channels: names,
            sources: target.host.hasPrefix("127.") ? (1...max(1, sourceAddresses)).map { "127.0.0.\($0)" } : []
        )
        let subscribers = try await V2SubscriberGroup.make(count: sockets, group: group, settings: settings) { index in
            (0..<perSocket).map { (index * perSocket + $0) % channelCount }
        }
        try await Task.sleep(for: .seconds(settle))
        guard let baseline = residentBytes(of: pid) else { throw BenchError("cannot read /proc/\(pid)/status") }
        let ready = try await subscribers.connectAll(people: people, within: 30)
        // Presence (members, joins) for every new person goes on after the last socket
        // opened: measure once it has been quiet for 2 s (at most 60 s), then settle.
        var last = try await subscribers.counts().presenceFrames
        var quietSince = monotonicNanoseconds()
        let quietLimit = monotonicNanoseconds() + 60_000_000_000
        while monotonicNanoseconds() - quietSince < 2_000_000_000, monotonicNanoseconds() < quietLimit {
            try await Task.sleep(for: .milliseconds(500))
            let now = try await subscribers.counts().presenceFrames
            if now != last {
                last = now
                quietSince = monotonicNanoseconds()
            }
        }
        try await Task.sleep(for: .seconds(settle))
        guard let resident = residentBytes(of: pid) else { throw BenchError("cannot read /proc/\(pid)/status") }
        let perSocketBytes = Double(resident - baseline) / Double(max(ready, 1))
        note("\(ready) of \(sockets) sockets open with \(subscriptions) subscriptions each; VmRSS \(resident) bytes, \(baseline) before")

        // One message per channel, through POST /send/: every subscription must get its channel's.
        let plan = PublishPlan(total: UInt64(channels), channels: names, padding: 8, deadline: monotonicNanoseconds() + 30_000_000_000)
        try await runPublishers(group: group, host: target.host, port: target.port, connections: 1, plan: plan)
        let expected = UInt64(ready * subscriptions)
        let until = monotonicNanoseconds() + 30_000_000_000
        var counts = try await subscribers.counts()
        while counts.messages < expected, monotonicNanoseconds() < until {
            try await Task.sleep(for: .milliseconds(50))
            counts = try await subscribers.counts()
        }
        _ = try await subscribers.each { subscribers in for subscriber in subscribers { subscriber.disconnect() } }
        try await group.shutdownGracefully()

        print(
            "{\"mode\":\"v2-idle\",\"label\":\"\(target.label)\",\"sockets\":\(ready),\"people\":\(people ?? sockets),\"subscriptions_per_socket\":\(subscriptions),\"channels\":\(channels),"
                + "\"server_rss_bytes\":\(resident),\"baseline_rss_bytes\":\(baseline),\"bytes_per_socket\":\(Int(perSocketBytes)),"
                + "\"published\":\(plan.snapshot.acknowledged),\"expected\":\(expected),\"delivered\":\(counts.messages),\"duplicates\":\(counts.duplicates),"
                + "\"presence_frames\":\(counts.presenceFrames),\"refused\":\(counts.refused.values.reduce(0, +)),\"errors\":\(counts.errors)}"
        )
        print(String(
            format: "ROW | %@ | v2-idle | %d sockets × %d subscriptions (K=%d) | VmRSS %.1f MiB (before %.1f MiB) | %.2f KB per socket | %llu/%llu reached |",
            target.label, ready, subscriptions, channels, Double(resident) / 1_048_576, Double(baseline) / 1_048_576, perSocketBytes / 1000,
            counts.messages, expected
        ))
        if let problem = counts.firstProblem { note("first problem: \(problem)") }
        if ready < sockets || counts.messages != expected { throw ExitCode(1) }
    }

    /// VmRSS of a process, in bytes.
    private func residentBytes(of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return nil }
        return kilobytes * 1024
    }
}
