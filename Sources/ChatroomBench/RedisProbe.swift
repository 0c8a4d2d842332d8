import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Redis' own counts, read over a connection of the load generator's: `INFO
/// commandstats` before and after a scenario, and optionally a `MONITOR` that tells
/// script calls apart (commandstats counts every `EVALSHA` as one command).
enum RedisProbe {
    /// Calls and microseconds of one command.
    struct CommandStat: Sendable {
        var calls: UInt64 = 0
        var microseconds: UInt64 = 0
    }

    /// `INFO commandstats`, by command name (`evalsha`, `xrange`, …).
    static func commandStats(host: String, port: Int, group: any EventLoopGroup) async throws -> [String: CommandStat] {
        let text = try await info(host: host, port: port, group: group, section: "commandstats")
        var stats: [String: CommandStat] = [:]
        for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            // cmdstat_evalsha:calls=123,usec=456,usec_per_call=3.71,rejected_calls=0,failed_calls=0
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[line.index(line.startIndex, offsetBy: 8)..<colon])
            var stat = CommandStat()
            for field in line[line.index(after: colon)...].split(separator: ",") {
                let parts = field.split(separator: "=")
                guard parts.count == 2, let value = UInt64(parts[1]) else { continue }
                if parts[0] == "calls" { stat.calls = value }
                if parts[0] == "usec" { stat.microseconds = value }
            }
            stats[name] = stat
        }
        return stats
    }

    /// `after` less `before`, commands that were called only, most called first.
    static func difference(_ after: [String: CommandStat], _ before: [String: CommandStat]) -> [(String, CommandStat)] {
        after.compactMap { name, stat in
            let earlier = before[name] ?? CommandStat()
            guard stat.calls > earlier.calls else { return nil }
            return (name, CommandStat(calls: stat.calls - earlier.calls, microseconds: stat.microseconds - earlier.microseconds))
        }.sorted { $0.1.calls > $1.1.calls }
    }

    /// One `INFO` section as text.
    static func info(host: String, port: Int, group: any EventLoopGroup, section: String) async throws -> String {
        let loop = group.next()
        let answer = loop.makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(BulkReplyReader(answer: answer)) }
            }
            .connect(host: host, port: port).get()
        channel.writeAndFlush(ByteBuffer(string: "INFO \(section)\r\n"), promise: nil)
        defer { channel.close(promise: nil) }
        guard let text = try await value(of: answer.futureResult, within: 10) else { throw BenchError("Redis did not answer INFO within 10 s") }
        return text
    }

    /// Starts a `MONITOR` connection that tallies what Redis runs until ``Monitor/stop()``.
    static func monitor(host: String, port: Int, group: any EventLoopGroup) async throws -> Monitor {
        let tally = MonitorTally()
        let loop = group.next()
        let channel = try await ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MonitorReader(tally: tally)) }
            }
            .connect(host: host, port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: "MONITOR\r\n"))
        return Monitor(channel: channel, tally: tally)
    }

    /// A running `MONITOR`.
    struct Monitor: Sendable {
        let channel: any Channel
        let tally: MonitorTally

        /// Closes the connection and returns what it saw.
        func stop() async -> MonitorTally.Counts {
            try? await channel.close()
            return tally.snapshot
        }
    }
}

/// What a `MONITOR` saw: commands by name and who ran them (a client or a script), and
/// each script (by SHA) with the key names it was called with (the channel part left
/// out), so that the publish script and the history script can be told apart.
final class MonitorTally: Sendable {
    struct Script: Sendable {
        var calls: UInt64 = 0
        /// e.g. `2 keys: meta history; 4 args` (of its first call).
        var shape = ""
    }

    struct Counts: Sendable {
        /// "EVALSHA", "lua XRANGE", … (`lua` when a script ran it).
        var commands: [String: UInt64] = [:]
        var scripts: [String: Script] = [:]
    }

    private let counts = NIOLockedValueBox(Counts())

    func add(_ local: Counts) {
        counts.withLockedValue { counts in
            for (name, count) in local.commands { counts.commands[name, default: 0] += count }
            for (sha, script) in local.scripts {
                counts.scripts[sha, default: Script(calls: 0, shape: script.shape)].calls += script.calls
            }
        }
    }

    var snapshot: Counts { counts.withLockedValue { $0 } }
}

/// Reads one RESP bulk string (the answer to `INFO`).
private final class BulkReplyReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var buffer = ByteBuffer()
    private let answer: EventLoopPromise<String>

    init(answer: EventLoopPromise<String>) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        buffer.writeBuffer(&chunk)
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else { return }
        var header = String(decoding: view[view.startIndex..<newline], as: UTF8.self)
        if header.hasSuffix("\r") { header.removeLast() }
        guard header.hasPrefix("$"), let length = Int(header.dropFirst()) else {
            answer.fail(BenchError("Redis answered INFO with \(header)"))
            return
        }
        let start = newline + 1 - view.startIndex
        guard buffer.readableBytes >= start + length else { return }
        answer.succeed(buffer.getString(at: buffer.readerIndex + start, length: length) ?? "")
    }

    func channelInactive(context: ChannelHandlerContext) {
        answer.fail(BenchError("Redis closed the connection"))
    }
}

/// Tallies `MONITOR` lines: `+1701450000.123456 [0 127.0.0.1:5555] "EVALSHA" "sha" "2" "chatroom:{c}:meta" …`.
private final class MonitorReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var buffer = ByteBuffer()
    private let tally: MonitorTally
    private var local = MonitorTally.Counts()

    init(tally: MonitorTally) { self.tally = tally }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        buffer.writeBuffer(&chunk)
        while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer.readString(length: newline - buffer.readerIndex + 1) ?? ""
            count(line)
        }
        buffer.discardReadBytes()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        tally.add(local)
        local = MonitorTally.Counts()
    }

    private func count(_ line: String) {
        guard line.hasPrefix("+"), let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]") else { return }
        let client = line[line.index(after: open)..<close]
        let byScript = client.hasSuffix("lua")
        let words = Self.quoted(line[line.index(after: close)...], limit: 6)
        guard let command = words.first?.uppercased() else { return }
        local.commands[(byScript ? "lua " : "") + command, default: 0] += 1
        guard command == "EVALSHA" || command == "EVAL", words.count >= 3 else { return }
        let sha = command == "EVAL" ? "EVAL (script text)" : words[1]
        if local.scripts[sha] == nil {
            let keys = Int(words[2]) ?? 0
            // chatroom:{storm_7}:meta → chatroom:{…}:meta: the script's shape, not its channel.
            let names = words.dropFirst(3).prefix(keys).map { key in
                let general = key.replacing(/\{[^}]*\}/, with: "{…}")
                return general.count > 40 ? general.prefix(40) + "…" : general
            }
            local.scripts[sha] = MonitorTally.Script(calls: 0, shape: "\(keys) keys: \(names.joined(separator: " "))\(keys > 3 ? " …" : "")")
        }
        local.scripts[sha]!.calls += 1
    }

    /// The first `limit` double-quoted words of a MONITOR line (escapes kept as written).
    private static func quoted(_ text: Substring, limit: Int) -> [String] {
        var words: [String] = []
        var current = ""
        var inside = false
        var escaped = false
        for character in text {
            if inside {
                if escaped {
                    current.append(character)
                    escaped = false
                } else if character == "\\" {
                    escaped = true
                } else if character == "\"" {
                    words.append(current)
                    current = ""
                    inside = false
                    if words.count == limit { break }
                } else {
                    current.append(character)
                }
            } else if character == "\"" {
                inside = true
            }
        }
        return words
    }
}
