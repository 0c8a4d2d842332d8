import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// `v2-storm`: the reconnect storm. N chat.v2 sockets on instance A hold S of K channels
/// each; a chat.v2 publisher on instance B sends R messages a second into those channels;
/// A is killed (SIGKILL, by its PID) and restarted on its port while publishing goes on;
/// every socket reconnects at once and resumes each channel with since/epoch.
///
/// Reports the time from the restart until every socket holds every message the
/// publisher got acked (by `--tolerance-ms` before the moment checked), the losses and
/// duplicates per socket and channel, and what the storm cost Redis.
struct V2Storm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "v2-storm",
        abstract: "Reconnect storm: kill instance A under N resumable chat.v2 sockets, restart it, time until every socket holds every acked message."
    )

    @OptionGroup var target: Target
    @Option(help: "Port of instance B, where the publisher sends (same Redis as A).")
    var publishPort: Int
    @Option(help: "Redis port, for INFO commandstats (and --monitor).")
    var redisPort: Int
    @Option(help: "Shell command that starts A again on --port; it should `exec` the server so that its PID is the server's.")
    var restartCommand: String
    @Option(help: "File to write the restarted A's PID to (the caller stops it).")
    var restartedPidFile: String
    @Option(help: "chat.v2 sockets on A.")
    var sockets = 10_000
    @Option(help: "Channels.")
    var channels = 100
    @Option(help: "Channels each socket subscribes to (socket i: channels i×S … i×S+S−1, mod K).")
    var subscriptions = 5
    @Option(help: "Messages per second the publisher sends through B, over the channels in turn.")
    var rate = 200.0
    @Option(help: "Publisher sockets on B.")
    var publishers = 1
    @Option(help: "Seconds of publishing before A is killed, at least; then up to 60 s more until every socket holds every acked message.")
    var warmup = 5.0
    @Option(help: "Seconds A stays down.")
    var down = 2.0
    @Option(help: "Seconds of publishing once every socket has caught up (live delivery after the storm).")
    var after = 5.0
    @Option(help: "Seconds after the restart to give up waiting for the catch-up.")
    var catchUpTimeout = 60.0
    @Option(help: "A socket has caught up when it holds every message acked this many ms before the moment checked (live messages in flight are not missing).")
    var toleranceMs = 250.0
    @Option(help: "Spread the reconnects over this many ms at random (0: all at once).")
    var spreadMs = 0.0
    @Option(help: "Loopback source addresses to spread A's sockets over.")
    var sourceAddresses = 4
    @Flag(help: "Send no uid cookie on reconnect: every connection is a new person (a browser keeps its cookie).")
    var forgetCookies = false
    @Option(help: "Distinct people (uid cookies) among the sockets: socket i is person i mod N (default: one per socket). Rooms of at most 500 people get member lists, joins and leaves.")
    var people: Int?
    @Option(help: "Instance B's PID, to read its CPU time over the storm.")
    var publishServerPid: Int32?
    @Flag(help: "Also run a Redis MONITOR over the storm, to count calls per script (slows Redis).")
    var monitor = false

    func run() async throws {
        try target.validateLoopback()
        guard let pid = target.serverPid else { throw ValidationError("--server-pid (A's PID) is needed to kill it") }
        guard subscriptions <= channels, sockets > 0 else { throw ValidationError("--subscriptions must be at most --channels") }
        raiseFileLimit()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let nonce = String(UInt64.random(in: 0...UInt64.max), radix: 36).prefix(8)
        let names = (0..<channels).map { "storm\(nonce)_\($0)" }
        let (perSocket, channelCount) = (subscriptions, channels)
        let settings = V2SubscriberSettings(
            host: target.host, port: target.port, channels: names, keepsCookie: !forgetCookies,
            sources: target.host.hasPrefix("127.") ? (1...max(1, sourceAddresses)).map { "127.0.0.\($0)" } : []
        )
        let subscribers = try await V2SubscriberGroup.make(count: sockets, group: group, settings: settings) { index in
            (0..<perSocket).map { (index * perSocket + $0) % channelCount }
        }

        // 1. Every socket open on A with its channels subscribed.
        let ready = try await subscribers.connectAll(people: people, within: 30)
        note("\(ready) of \(sockets) sockets subscribed on A")
        guard ready == sockets else {
            let counts = try await subscribers.counts()
            throw BenchError("only \(ready) of \(sockets) sockets subscribed; first problem: \(counts.firstProblem ?? "none")")
        }

        // 2. The publisher on B, paced, until stopped (bounded by a generous time).
        let bound = warmup + down + catchUpTimeout + after + 60
        let plan = V2PublishPlan(channels: names, padding: 16, window: 64, rate: rate, publishers: publishers, messages: nil, seconds: bound)
        let acks = V2PublishTally(channels: channels, keepsTimeline: true)
        let (host, publishPort) = (target.host, self.publishPort)
        async let publishing: Void = runV2Publishers(group: group, host: host, port: publishPort, plan: plan, tally: acks, drain: 10)
        try await Task.sleep(for: .seconds(warmup))
        let tolerance = UInt64(toleranceMs * 1e6)
        guard acks.snapshot.acknowledged > 0 else {
            plan.stop()
            throw BenchError("the publisher on B had no ack in \(warmup) s; its first problem: \(acks.snapshot.firstProblem ?? "none")")
        }
        // Live delivery must be steady before the kill: setting up N sockets costs the
        // server a while (presence for every new person), and a storm on top of it
        // would measure both.
        var steady = try await progress(subscribers, acks.highest(at: monotonicNanoseconds() - tolerance))
        let steadyUntil = monotonicNanoseconds() + 60_000_000_000
        while steady.caughtUp < sockets * subscriptions, monotonicNanoseconds() < steadyUntil {
            try await Task.sleep(for: .milliseconds(200))
            steady = try await progress(subscribers, acks.highest(at: monotonicNanoseconds() - tolerance))
        }
        let warmedUp = Double(monotonicNanoseconds() - plan.start) / 1e9
        note(String(format: "before the kill (%.1f s of publishing): %d of %d subscriptions caught up, %llu acked", warmedUp, steady.caughtUp, sockets * subscriptions, acks.snapshot.acknowledged))

        // 3. Kill A, keep publishing, restart it on its port.
        let statsBefore = try await RedisProbe.commandStats(host: target.host, port: redisPort, group: group)
        let monitoring = monitor ? try await RedisProbe.monitor(host: target.host, port: redisPort, group: group) : nil
        let countsAtKill = try await subscribers.counts()
        let ackedAtKill = acks.snapshot.acknowledged
        let (bBefore, redisBefore, generatorBefore) = (ProcessUsage(pid: publishServerPid), ProcessUsage(pid: target.redisPid), ProcessUsage(pid: getpid()))
        let overflowsBefore = listenOverflows()
        let killed = monotonicNanoseconds()
        guard kill(pid, SIGKILL) == 0 else { throw BenchError("kill \(pid) failed: errno \(errno)") }
        var closedAll: Double?
        while monotonicNanoseconds() - killed < 10_000_000_000 {
            let open = try await subscribers.each { $0.reduce(0) { $0 + ($1.isOpen ? 1 : 0) } }.reduce(0, +)
            if open == 0 {
                closedAll = Double(monotonicNanoseconds() - killed) / 1e9
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        note("A killed; all sockets saw it after \(closedAll.map { String(format: "%.3f s", $0) } ?? "more than 10 s")")
        try await Task.sleep(for: .seconds(down))
        let restarted = monotonicNanoseconds()
        let restartedPid = try spawnShell(restartCommand)
        try String(restartedPid).write(toFile: restartedPidFile, atomically: true, encoding: .utf8)
        let listening = try await waitUntilListening(group: group, until: restarted + 30_000_000_000)
        note(String(format: "A restarted (PID %d), listening after %.3f s", restartedPid, Double(listening - restarted) / 1e9))

        // 4. Every socket reconnects at once (or spread) and resumes.
        let spread = Int64(spreadMs * 1e6)
        _ = try await subscribers.each { subscribers in
            for subscriber in subscribers {
                subscriber.reconnects = true
                if spread > 0 {
                    subscriber.loop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64.random(in: 0...spread))) { subscriber.connect() }
                } else {
                    subscriber.connect()
                }
            }
        }
        var allOpen: UInt64 = 0
        var allConfirmed: UInt64 = 0
        var caughtUp: UInt64 = 0
        var samples: [(Double, Int, Int, Int)] = []
        let giveUp = restarted + UInt64(catchUpTimeout * 1e9)
        while monotonicNanoseconds() < giveUp {
            let now = monotonicNanoseconds()
            let state = try await progress(subscribers, acks.highest(at: now - tolerance))
            if allOpen == 0, state.open == sockets { allOpen = now }
            if allConfirmed == 0, state.confirmed == sockets { allConfirmed = now }
            // A line when something moved (at most every 250 ms) and every 5 s regardless.
            let sinceLast = samples.last.map { now - restarted - UInt64($0.0 * 1e9) } ?? .max
            let moved = samples.last.map { $0.1 != state.open || $0.2 != state.confirmed || $0.3 != state.caughtUp } ?? true
            if (moved && sinceLast >= 250_000_000) || sinceLast >= 5_000_000_000 {
                samples.append((Double(now - restarted) / 1e9, state.open, state.confirmed, state.caughtUp))
            }
            if state.caughtUp == sockets * subscriptions {
                caughtUp = now
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        let statsAtCatchUp = try await RedisProbe.commandStats(host: target.host, port: redisPort, group: group)
        // CPU from the kill to the catch-up (A: its restarted process, from its start).
        let cpu = (
            a: ProcessUsage(pid: restartedPid)?.cpuSeconds ?? 0,
            b: (ProcessUsage(pid: publishServerPid)?.cpuSeconds ?? 0) - (bBefore?.cpuSeconds ?? 0),
            redis: (ProcessUsage(pid: target.redisPid)?.cpuSeconds ?? 0) - (redisBefore?.cpuSeconds ?? 0),
            generator: (ProcessUsage(pid: getpid())?.cpuSeconds ?? 0) - (generatorBefore?.cpuSeconds ?? 0)
        )
        let overflows = listenOverflows().map { $0 - (overflowsBefore ?? 0) }
        let stormCounts = try await subscribers.counts()
        let notOpen = try await subscribers.each { $0.reduce(0) { $0 + ($1.isOpen ? 0 : 1) } }.reduce(0, +)
        let scripts = await monitoring?.stop()
        let ackedDuringStorm = acks.snapshot.acknowledged - ackedAtKill
        for sample in samples { note(String(format: "  %6.2f s after the restart: %d open, %d all subscribed, %d subscriptions caught up", sample.0, sample.1, sample.2, sample.3)) }
        note(caughtUp > 0 ? String(format: "caught up %.3f s after the restart", Double(caughtUp - restarted) / 1e9) : "**not caught up** within \(catchUpTimeout) s")

        // 5. Live delivery for a while after, then stop and check everything.
        if caughtUp > 0 { try await Task.sleep(for: .seconds(after)) }
        plan.stop()
        try await publishing
        let final = acks.channelSummary.map(\.highest)
        var settled = false
        let settleUntil = monotonicNanoseconds() + 10_000_000_000
        while monotonicNanoseconds() < settleUntil {
            let short = try await subscribers.each { $0.reduce(0) { $0 + $1.shortfall(final).subscriptions } }.reduce(0, +)
            if short == 0 {
                settled = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let shortfall = try await subscribers.each { subscribers in
            subscribers.reduce((0, UInt64(0))) { total, subscriber in
                let part = subscriber.shortfall(final)
                return (total.0 + part.subscriptions, total.1 + part.offsets)
            }
        }.reduce((0, UInt64(0))) { ($0.0 + $1.0, $0.1 + $1.1) }
        let excess = try await subscribers.each { $0.reduce(UInt64(0)) { $0 + $1.excess(final) } }.reduce(0, +)
        let counts = try await subscribers.counts()
        let publisher = acks.snapshot
        let ackHoles = acks.channelSummary.reduce(0) { $0 + $1.holes }
        _ = try await subscribers.each { subscribers in for subscriber in subscribers { subscriber.disconnect() } }
        try await group.shutdownGracefully()

        // 6. Report.
        let storm = RedisProbe.difference(statsAtCatchUp, statsBefore)
        let seconds = { (time: UInt64) in time > 0 ? String(format: "%.3f", Double(time - restarted) / 1e9) : "null" }
        let commands = storm.map { "\"\($0.0)\":{\"calls\":\($0.1.calls),\"usec\":\($0.1.microseconds)}" }.joined(separator: ",")
        let scriptsJSON = (scripts?.scripts ?? [:]).sorted { $0.value.calls > $1.value.calls }
            .map { "\"\($0.key.prefix(12))\":{\"calls\":\($0.value.calls),\"shape\":\"\($0.value.shape)\"}" }.joined(separator: ",")
        let lost = counts.lost + counts.gapMessages + shortfall.1
        let report: [(String, String)] = [
            ("mode", "\"v2-storm\""), ("label", "\"\(target.label)\""), ("sockets", "\(sockets)"), ("channels", "\(channels)"),
            ("subscriptions_per_socket", "\(subscriptions)"), ("rate", String(format: "%.0f", rate)), ("down_seconds", String(format: "%.1f", down)),
            ("spread_ms", String(format: "%.0f", spreadMs)), ("keeps_cookies", "\(!forgetCookies)"),
            ("steady_before_kill", "\(steady.caughtUp == sockets * subscriptions)"), ("people", "\(people ?? sockets)"),
            ("listening_after_s", seconds(listening)), ("all_open_after_s", seconds(allOpen)), ("all_subscribed_after_s", seconds(allConfirmed)),
            ("caught_up_after_s", seconds(caughtUp)), ("tolerance_ms", String(format: "%.0f", toleranceMs)),
            ("not_open_at_catch_up", "\(notOpen)"), ("listen_overflows", overflows.map { "\($0)" } ?? "null"),
            ("cpu_a_s", String(format: "%.2f", cpu.a)), ("cpu_b_s", String(format: "%.2f", cpu.b)), ("cpu_redis_s", String(format: "%.2f", cpu.redis)),
            ("cpu_generator_s", String(format: "%.2f", cpu.generator)),
            ("storm_presence_frames", "\(stormCounts.presenceFrames - countsAtKill.presenceFrames)"),
            ("storm_presence_bytes", "\(stormCounts.presenceBytes - countsAtKill.presenceBytes)"),
            ("storm_upgrade_timeouts", "\(stormCounts.upgradeTimeouts - countsAtKill.upgradeTimeouts)"),
            ("published_acked", "\(publisher.acknowledged)"), ("acked_during_storm", "\(ackedDuringStorm)"),
            ("publisher_nacks", "\(publisher.nacks.values.reduce(0, +))"), ("publisher_ack_holes", "\(ackHoles)"),
            ("messages_received", "\(counts.messages)"), ("lost", "\(lost)"), ("holes", "\(counts.lost)"), ("gaps", "\(counts.gaps)"),
            ("gap_messages", "\(counts.gapMessages)"), ("short_at_end", "\(shortfall.1)"), ("subscriptions_short_at_end", "\(shortfall.0)"),
            ("settled", "\(settled)"), ("duplicates", "\(counts.duplicates)"), ("beyond_acked", "\(excess)"), ("resets", "\(counts.resets)"),
            ("epoch_changes", "\(counts.epochChanges)"), ("refused", "{\(counts.refused.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ","))}"),
            ("errors", "\(counts.errors)"), ("connects", "\(counts.connects)"), ("connect_failures", "\(counts.connectFailures)"),
            ("upgrade_refusals", "\(counts.upgradeRefusals)"), ("upgrade_timeouts", "\(counts.upgradeTimeouts)"),
            ("close_codes", "{\(counts.closeCodes.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ","))}"), ("presence_frames", "\(counts.presenceFrames)"), ("presence_bytes", "\(counts.presenceBytes)"),
            ("redis_commands_kill_to_caught_up", "{\(commands)}"), ("scripts_by_sha", monitor ? "{\(scriptsJSON)}" : "null"),
        ]
        print("{" + report.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
        let evalsha = storm.first { $0.0 == "evalsha" }?.1.calls ?? 0
        let xrange = storm.first { $0.0 == "xrange" }?.1.calls ?? 0
        print(String(
            format: "ROW | %@ | v2-storm | N=%d K=%d S=%d R=%.0f/s down %.0f s | %@ s | %@ s | %llu | %llu | %llu EVALSHA, %llu XRANGE (%llu publishes meanwhile) |",
            target.label, sockets, channels, subscriptions, rate, down, seconds(allConfirmed), seconds(caughtUp), lost, counts.duplicates,
            evalsha, xrange, ackedDuringStorm
        ))
        if let problem = counts.firstProblem { note("first problem: \(problem)") }
        if let problem = publisher.firstProblem { note("publisher's first problem: \(problem)") }
        if let scripts {
            for (command, count) in scripts.commands.sorted(by: { $0.value > $1.value }).prefix(20) { note("  monitor: \(count) \(command)") }
            for (sha, script) in scriptCalls(scripts) { note("  monitor: script \(sha.prefix(12)): \(script.calls) calls, \(script.shape)") }
        }
        for (name, stat) in storm { note("  commandstats: \(name) \(stat.calls) calls, \(stat.microseconds) µs") }
    }

    private func scriptCalls(_ counts: MonitorTally.Counts) -> [(String, MonitorTally.Script)] {
        counts.scripts.sorted { $0.value.calls > $1.value.calls }
    }

    private struct Progress: Sendable {
        var open = 0
        var confirmed = 0
        var caughtUp = 0
    }

    private func progress(_ subscribers: V2SubscriberGroup, _ targets: [UInt64]) async throws -> Progress {
        let parts = try await subscribers.each { subscribers in
            var progress = Progress()
            for subscriber in subscribers {
                if subscriber.isOpen { progress.open += 1 }
                if subscriber.confirmedAt > 0 { progress.confirmed += 1 }
                progress.caughtUp += subscriber.caughtUp(targets)
            }
            return progress
        }
        return parts.reduce(Progress()) { Progress(open: $0.open + $1.open, confirmed: $0.confirmed + $1.confirmed, caughtUp: $0.caughtUp + $1.caughtUp) }
    }

    /// Tries to connect to A's port every 5 ms; the time it first accepted.
    private func waitUntilListening(group: any EventLoopGroup, until: UInt64) async throws -> UInt64 {
        while monotonicNanoseconds() < until {
            if let channel = try? await ClientBootstrap(group: group).connectTimeout(.seconds(1)).connect(host: target.host, port: target.port).get() {
                let now = monotonicNanoseconds()
                try? await channel.close()
                return now
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw BenchError("A did not listen on \(target.port) within 30 s of the restart")
    }
}

/// Runs `command` with `/bin/sh -c`, detached from this process's signal state: the
/// child starts with no signal blocked and every signal at its default. (Foundation's
/// `Process` passes on the mask of the thread that spawns it, where SwiftNIO and the
/// runtime block most signals, and a server started so ignores SIGTERM.)
func spawnShell(_ command: String) throws -> pid_t {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let arguments: [UnsafeMutablePointer<CChar>?] = ["/bin/sh", "-c", command].map { (text: String) in strdup(text) }
    defer { for argument in arguments { free(argument) } }
    var argv = arguments + [nil]
    var pid = pid_t()
    let result = posix_spawn(&pid, "/bin/sh", nil, &attributes, &argv, environ)
    guard result == 0 else { throw BenchError("could not start `\(command)`: error \(result)") }
    return pid
}

/// The kernel's count of connections dropped because a listening socket's accept queue
/// was full (`TcpExtListenOverflows`, the whole machine), from /proc/net/netstat.
func listenOverflows() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/net/netstat", encoding: .utf8) else { return nil }
    let lines = text.split(separator: "\n").filter { $0.hasPrefix("TcpExt:") }
    guard lines.count >= 2 else { return nil }
    let names = lines[0].split(separator: " ")
    let values = lines[1].split(separator: " ")
    guard let index = names.firstIndex(of: "ListenOverflows"), index < values.count else { return nil }
    return Int(values[index])
}

/// Raises this process's open-file limit to the hard limit (10,000 sockets need it).
func raiseFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// A progress line on standard error.
func note(_ line: String) {
    FileHandle.standardError.write(Data("chatroom-bench: \(line)\n".utf8))
}
