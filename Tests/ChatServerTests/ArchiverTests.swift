@testable import Chat
import ChatArchive
import ChatClient
@testable import ChatServer
import ChatTestSupport
import Foundation
import Logging
import NIOCore
import NIOPosix
import Redis
import Testing

/// The archive a test server writes to: the test command's PostgreSQL, or a new SQLite file.
enum ArchiveStore: String, CaseIterable, CustomTestStringConvertible {
    case postgres, sqlite
    var testDescription: String { rawValue }

    func url() throws -> String {
        switch self {
        case .postgres:
            return try #require(
                ProcessInfo.processInfo.environment["CHATROOM_TEST_POSTGRES_URL"],
                "The archive tests need CHATROOM_TEST_POSTGRES_URL: scripts/test.sh starts a PostgreSQL and sets it."
            )
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatroom-archiver-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            return "sqlite://" + directory.appendingPathComponent("archive.db").path
        }
    }
}

/// `/history` as (offset, data) pairs, and its epoch and first offset.
private func history(_ port: Int, _ query: String) async throws -> (epoch: String?, first: Int64?, messages: [(Int64, String)], previous: String?) {
    let answer = try await ChatHTTP.request("GET", port: port, path: "/history?" + query)
    #expect(answer.status == 200, "\(answer.body)")
    let json = try #require(JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])
    let messages = (json["messages"] as? [[String: Any]] ?? []).map { (($0["offset"] as? NSNumber)?.int64Value ?? -1, $0["data"] as? String ?? "") }
    return (json["epoch"] as? String, (json["firstOffset"] as? NSNumber)?.int64Value, messages, json["previousEpoch"] as? String)
}

/// Waits until `archive` holds `count` entries of `channel` (every epoch), at most 20 s.
private func archived(_ archive: any Archive, _ channel: ChannelName, epoch: String, count: Int) async throws -> [Message] {
    var kept: [Message] = []
    for _ in 0..<200 {
        kept = try await archive.messages(in: channel, epoch: epoch, after: 0, before: nil, limit: 10_000)
        if kept.count >= count { break }
        try await Task.sleep(for: .milliseconds(100))
    }
    return kept
}

@Suite("The archiver: every acknowledged message into the archive, once, in order; the history reads past Redis")
struct ArchiverTests {
    @Test(arguments: ArchiveStore.allCases)
    func everyMessageOfTwoInstancesIsArchivedOnceInOrderAndTheHistoryReadsPastRedis(store: ArchiveStore) async throws {
        // A Redis of its own: an archiver takes every channel it finds there (and cuts
        // their history back to its --history-size), not only this test's.
        let url = try store.url()
        try await PrivateRedis.with { redis in
        let configure: (inout ChatConfiguration) -> Void = { configuration in
            configuration.redisURL = redis.url
            configuration.archiveURL = url
            configuration.historySize = 10
        }
        let a = try await TestServer.start(broker: .redis, configure)
        let b = try await TestServer.start(broker: .redis, configure)
        let name = uniqueChannel("archived")
        let channel = ChannelName(name)!
        let ada = Person()
        for number in 1...30 {
            let server = number.isMultiple(of: 2) ? b : a
            #expect(try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: name, headers: [ada.header]).status == 200)
        }
        // An edit and a reaction of message 28, a delete of message 29 (changes need their
        // message in Redis' window: the newest 10 here).
        let form = [ada.header, ("Content-Type", "application/x-www-form-urlencoded")]
        let edit = try await ChatHTTP.request("POST", port: a.port, path: "/send/", headers: form, body: "channel=\(name)&type=edit&of=28&data=m28%2C%20edited")
        #expect(edit.status == 200, "\(edit.body)")
        #expect(try await ChatHTTP.request("POST", port: b.port, path: "/send/", headers: form, body: "channel=\(name)&type=react&of=28&emoji=%F0%9F%91%8D").status == 200)
        #expect(try await ChatHTTP.request("POST", port: a.port, path: "/send/", headers: form, body: "channel=\(name)&type=delete&of=29").status == 200)
        let epoch = try #require(try await history(a.port, "channel=\(name)&limit=1").epoch)
        let archive = try Archives.open(url: url)
        let kept = try await archived(archive, channel, epoch: epoch, count: 33)
        #expect(kept.map(\.offset) == Array(1...33), "each once, in order: \(kept.map(\.offset))")
        #expect(kept[27].text == "m28, edited" && kept[27].state?.reactions.first?.from == [ada.id])
        #expect(kept[28].text == "" && kept[28].state?.deleted == true, "a deleted message's text is not archived")
        // Redis is cut back to the history size once the archive has it.
        var length: Int64 = 0
        for _ in 0..<50 {
            let connection = try await connectToRedis(redis.url)
            length = try await connection.send(RedisCommand("XLEN", .string(RedisKeys.history(channel)))).integer ?? -1
            connection.close()
            if length <= 12 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(length <= 12, "the stream holds \(length)")
        // The history reads past Redis: from the first message, with no hole at the seam.
        let all = try await history(b.port, "channel=\(name)&since=0&limit=100")
        #expect(all.messages.map(\.0) == Array(1...33), "\(all.messages.map(\.0))")
        #expect(all.messages.first?.1 == "m1" && all.first == 1)
        let backwards = try await history(a.port, "channel=\(name)&before=26&limit=5")
        #expect(backwards.messages.map(\.0) == [21, 22, 23, 24, 25])
        let seam = try await history(a.port, "channel=\(name)&before=28&limit=10")
        #expect(seam.messages.map(\.0) == Array(18...27), "across the seam: \(seam.messages.map(\.0))")
        let between = try await history(a.port, "channel=\(name)&since=5&before=9")
        #expect(between.messages.map(\.0) == [6, 7, 8])
        await a.stop()
        await b.stop()
        await archive.close()
        }
    }

    @Test func whatAnArchiverTookAndDidNotAcknowledgeIsTakenOverOnceItsHoldLapses() async throws {
        let url = try ArchiveStore.postgres.url()
        let name = uniqueChannel("takeover")
        let channel = ChannelName(name)!
        // An archiver that takes a batch and dies with it: the broker's feed, by hand.
        let logger = Logger(label: "test")
        var policy = HistoryPolicy(size: 5, archiveBacklog: 1000)
        policy.archiveHold = .milliseconds(500)
        try await PrivateRedis.with { redis in
        let broker = RedisBroker(target: try RedisTarget(url: redis.url), history: policy, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger) { _ in }
        try await broker.start()
        for number in 1...8 { _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m\(number)"), to: channel)) }
        let taken = try await broker.take(3, for: "doomed")
        #expect(taken.first { $0.channel == channel }?.messages.map(\.offset) == [1, 2, 3])
        broker.close()
        // A server's archiver finds the channel (its scan), waits out the hold, and takes all.
        let server = try await TestServer.start(broker: .redis) { configuration in
            configuration.redisURL = redis.url
            configuration.archiveURL = url
            configuration.archiveHold = .milliseconds(500)
        }
        let epoch = try #require(try await history(server.port, "channel=\(name)&limit=1").epoch)
        let archive = try Archives.open(url: url)
        let kept = try await archived(archive, channel, epoch: epoch, count: 8)
        #expect(kept.map(\.offset) == Array(1...8) && kept.map(\.text) == (1...8).map { "m\($0)" }, "\(kept.map(\.offset))")
        await server.stop()
        await archive.close()
        }
    }

    @Test(arguments: [ChatConfiguration.BrokerKind.memory, .redis])
    func messagesLetGoBeforeTheArchiveTookThemAreToldOnce(broker kind: ChatConfiguration.BrokerKind) async throws {
        let channel = ChannelName(uniqueChannel("overflow"))!
        // Two kept, five held for the archive: it is away while 300 are published.
        let policy = HistoryPolicy(size: 2, archiveBacklog: 5)
        try await PrivateRedis.with { redis in
            let broker: any Broker & ArchiveFeed
            if kind == .redis {
                let redisBroker = RedisBroker(
                    target: try RedisTarget(url: redis.url), history: policy, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test")
                ) { _ in }
                try await redisBroker.start()
                broker = redisBroker
            } else {
                broker = MemoryBroker(history: policy) { _ in }
            }
            defer { broker.close() }
            for number in 1...3 { _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m\(number)"), to: channel)) }
            let first = try #require(try await broker.take(10, for: "archiver").first { $0.channel == channel })
            #expect(first.messages.map(\.offset) == [1, 2, 3] && first.lost == 0)
            // Not acknowledged yet (the archiver is still writing it): what was handed out
            // is the archiver's, not lost, whatever the broker lets go of meanwhile.
            for number in 4...303 { _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m\(number)"), to: channel)) }
            let after = try #require(try await broker.take(1000, for: "archiver").first { $0.channel == channel })
            let resumed = try #require(after.messages.first?.offset)
            // Redis cuts its stream in whole nodes (MAXLEN ~), so where it resumes varies;
            // every offset between is counted.
            #expect(resumed > 4 && after.lost == Int(resumed - 4), "resumed at \(resumed), lost \(after.lost)")
            #expect(after.messages.last?.offset == 303)
            try await broker.archived(after, by: "archiver")
            _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m304"), to: channel))
            let next = try #require(try await broker.take(10, for: "archiver").first { $0.channel == channel })
            #expect(next.messages.map(\.offset) == [304] && next.lost == 0, "told once")
        }
    }

    @Test func anEpochRedisLostStaysReadableFromTheArchive() async throws {
        let url = try ArchiveStore.postgres.url()
        try await PrivateRedis.with { redis in
            let server = try await TestServer.start(broker: .redis) { configuration in
                configuration.redisURL = redis.url
                configuration.archiveURL = url
            }
            let name = uniqueChannel("lost")
            for number in 1...5 { _ = try await ChatHTTP.send(port: server.port, data: "old \(number)", channel: name) }
            let old = try #require(try await history(server.port, "channel=\(name)&limit=1").epoch)
            let archive = try Archives.open(url: url)
            #expect(try await archived(archive, ChannelName(name)!, epoch: old, count: 5).count == 5)
            let metrics = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
            #expect((metrics["chatroom_archive_messages_total"] ?? 0) >= 5)
            _ = try await ChatHTTP.exchange(host: "127.0.0.1", port: redis.port, bytes: .init(string: "FLUSHALL\r\nQUIT\r\n"), timeout: .seconds(2))
            // Nothing now: the answer names the epoch kept before, where "Load earlier" goes.
            let empty = try await history(server.port, "channel=\(name)")
            #expect(empty.epoch == nil && empty.messages.isEmpty && empty.previous == old)
            _ = try await ChatHTTP.send(port: server.port, data: "new 1", channel: name)
            let now = try await history(server.port, "channel=\(name)&since=0")
            #expect(now.epoch != old && now.messages.map(\.1) == ["new 1"])
            #expect(now.previous == old, "a page from the epoch's first message names the one before")
            #expect(try await history(server.port, "channel=\(name)&limit=1").previous == old)
            #expect(try await history(server.port, "channel=\(name)&epoch=\(old)&since=0").previous == nil, "nothing before the first epoch")
            #expect(try await history(server.port, "channel=\(name)&epoch=\(old)&limit=2").previous == nil, "not at its first message")
            let earlier = try await history(server.port, "channel=\(name)&epoch=\(old)&since=0")
            #expect(earlier.epoch == old && earlier.messages.map(\.1) == (1...5).map { "old \($0)" } && earlier.first == 1)
            let newest = try await history(server.port, "channel=\(name)&epoch=\(old)&limit=2")
            #expect(newest.messages.map(\.0) == [4, 5])
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(name)&epoch=no!").status == 400)
            await server.stop()
            await archive.close()
        }
    }

    /// A resume older than the broker's window: served from the archive, chat.v1 and
    /// chat.v2 alike, in order and each once, where without an archive it is a `reset`.
    @Test(arguments: [(ChatConfiguration.BrokerKind.memory, ArchiveStore.sqlite), (.redis, .postgres)])
    func aResumeOlderThanTheWindowIsServedFromTheArchive(broker: ChatConfiguration.BrokerKind, store: ArchiveStore) async throws {
        let url = try store.url()
        try await PrivateRedis.with { redis in
            let server = try await TestServer.start(broker: broker) { configuration in
                configuration.redisURL = redis.url
                configuration.archiveURL = url
                configuration.historySize = 5
            }
            let name = uniqueChannel("resumed")
            for number in 1...40 { #expect(try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: name).status == 200) }
            let epoch = try #require(try await history(server.port, "channel=\(name)&limit=1").epoch)
            let archive = try Archives.open(url: url)
            #expect(try await archived(archive, ChannelName(name)!, epoch: epoch, count: 40).count == 40)
            await archive.close()
            // The broker is cut back to its five once the archive has them: offset 4 is
            // only in the archive.
            if broker == .redis {
                var length: Int64 = 0
                for _ in 0..<50 {
                    let connection = try await connectToRedis(redis.url)
                    length = try await connection.send(RedisCommand("XLEN", .string(RedisKeys.history(ChannelName(name)!)))).integer ?? -1
                    connection.close()
                    if length <= 7 { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(length <= 7, "the stream holds \(length)")
            } else {
                // The ring is cut back as soon as the archiver acknowledges the batch it kept.
                try await Task.sleep(for: .seconds(1))
            }

            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(name)&since=3&epoch=\(epoch)", subprotocols: ["chat.v1"])
            var offsets: [Int64] = []
            while offsets.count < 37, let text = await v1.nextText(timeout: .seconds(5)) {
                let frame = text.jsonObject
                if frame["type"] as? String == "presence" { continue }
                #expect(frame["type"] as? String == "message", "\(text)")
                offsets.append((frame["offset"] as? NSNumber)?.int64Value ?? -1)
            }
            #expect(offsets == Array(4...40))
            await v1.disconnect()

            let v2 = try await V2Client.connect(server)
            try await v2.subscribe(name, since: 10, epoch: epoch)
            var texts: [String] = []
            while texts.count < 30, let frame = await v2.nextEvent() {
                if frame.type == "subscribed" { continue }
                #expect(frame.type == "message", "\(frame)")
                texts.append(frame.data ?? "?")
            }
            #expect(texts == (11...40).map { "m\($0)" })
            await v2.disconnect()
            await server.stop()
        }
    }

    @Test func oneNodeWithTheMemoryBrokerArchivesIntoSQLite() async throws {
        let url = try ArchiveStore.sqlite.url()
        let server = try await TestServer.start(broker: .memory) { configuration in
            configuration.archiveURL = url
            configuration.historySize = 5
        }
        let name = uniqueChannel("memory-archived")
        let ada = Person()
        for number in 1...20 {
            #expect(try await ChatHTTP.send(port: server.port, data: "m\(number)", channel: name, headers: [ada.header]).status == 200)
        }
        let form = [ada.header, ("Content-Type", "application/x-www-form-urlencoded")]
        #expect(try await ChatHTTP.request("POST", port: server.port, path: "/send/", headers: form, body: "channel=\(name)&type=delete&of=19").status == 200)
        let epoch = try #require(try await history(server.port, "channel=\(name)&limit=1").epoch)
        let archive = try Archives.open(url: url)
        let kept = try await archived(archive, ChannelName(name)!, epoch: epoch, count: 21)
        #expect(kept.map(\.offset) == Array(1...21), "each once, in order: \(kept.map(\.offset))")
        #expect(kept[18].text == "" && kept[18].state?.deleted == true)
        // "Load earlier" goes back past the ring's five to the first message.
        let all = try await history(server.port, "channel=\(name)&since=0&limit=100")
        #expect(all.messages.map(\.0) == Array(1...21) && all.first == 1, "\(all.messages.map(\.0))")
        #expect(try await history(server.port, "channel=\(name)&before=10&limit=3").messages.map(\.1) == ["m7", "m8", "m9"])
        // What a client names is bounded: offsets 1 … 2^53 − 1, epochs of letters and digits.
        for bad in ["before=0", "before=-1", "before=9223372036854775808", "before=1e3", "epoch=a%27b", "epoch=\(String(repeating: "a", count: 65))"] {
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(name)&\(bad)").status == 400, "\(bad)")
        }
        #expect(try await history(server.port, "channel=\(name)&before=9007199254740991&limit=2").messages.map(\.0) == [20, 21])
        #expect(try await history(server.port, "channel=\(name)&since=10&before=5").messages.isEmpty, "nothing between")
        #expect(try await history(server.port, "channel=\(name)&before=1").messages.isEmpty)
        let unknown = try await history(server.port, "channel=\(name)&epoch=ffffffffffffffff&since=0")
        #expect(unknown.epoch == "ffffffffffffffff" && unknown.messages.isEmpty, "an epoch never kept has nothing")
        await server.stop()
        await archive.close()
    }
}

@Suite("Search and transcripts of the archive")
struct ArchiveReadingTests {
    @Test func searchFindsArchivedWordsWithTheRulesOfHistory() async throws {
        let url = try ArchiveStore.sqlite.url()
        try await PrivateRedis.with { redis in
            let server = try await TestServer.start(broker: .redis) { configuration in
                configuration.redisURL = redis.url
                configuration.archiveURL = url
            }
            let name = uniqueChannel("search")
            for text in ["my order 12345 is late", "hello", "order 12345 found"] {
                _ = try await ChatHTTP.send(port: server.port, data: text, channel: name)
            }
            var found: [String] = []
            for _ in 0..<100 {
                let answer = try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)&q=order%2012345")
                #expect(answer.status == 200, "\(answer.body)")
                let json = try #require(JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])
                found = (json["messages"] as? [[String: Any]] ?? []).compactMap { $0["data"] as? String }
                if found.count == 2 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(found == ["order 12345 found", "my order 12345 is late"], "newest first")
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)").status == 400)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)&q=x&limit=0").status == 400)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=bad!&q=x").status == 400)
            // Bounds: q at most 256 bytes, limit capped at 100, query syntax taken as words.
            let long = try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)&q=\(String(repeating: "a", count: 257))")
            #expect(long.status == 400 && long.body.contains("256"))
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)&q=\(String(repeating: "a", count: 256))").status == 200)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)&q=order&limit=100000000000000000000").status == 400)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)&q=order&limit=5000").status == 200)
            for hostile in ["%22", "NEAR(order", "order%20OR%20hello", "order:*", "!order%20%26", "*", "%00order", "%FF%FE"] {
                let answer = try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(name)&q=\(hostile)")
                #expect(answer.status == 200 || answer.status == 400, "\(hostile): \(answer.status) \(answer.body)")
            }
            let other = "dm:\([Person().id, Person().id].sorted().joined(separator: ":"))"
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=\(other)&q=x").status == 403, "a one-to-one room of others")
            // A transcript of it.
            var lines: [String] = []
            let archive = try Archives.open(url: url)
            let count = try await Transcript.write(ChannelName(name)!, from: archive, since: nil, format: .csv) { lines.append($0) }
            #expect(count == 3 && lines.count == 4 && lines[0] == "time,epoch,offset,from,name,text,edited,deleted\r\n")
            #expect(lines[1].contains(",1,,,my order 12345 is late,,false"), "\(lines[1])")
            await archive.close()
            await server.stop()
        }
        // Without an archive, search says how to have one.
        try await withServer(broker: .memory) { server in
            let answer = try await ChatHTTP.request("GET", port: server.port, path: "/search?channel=general&q=x")
            #expect(answer.status == 404 && answer.body.contains("--archive-url"))
        }
    }

    @Test func aTranscriptsFieldsAreQuotedAndFormulasDisarmed() {
        #expect(Transcript.csvField("plain") == "plain")
        #expect(Transcript.csvField("\t=HYPERLINK(1)").hasPrefix("'\t"), "a tab before a formula is disarmed too")
        #expect(Transcript.csvField("\r=1+1").hasPrefix("\"'\r"))
        #expect(Transcript.csvField("a, b") == "\"a, b\"")
        #expect(Transcript.csvField("say \"hi\"") == "\"say \"\"hi\"\"\"")
        #expect(Transcript.csvField("two\nlines") == "\"two\nlines\"")
        #expect(Transcript.csvField("=HYPERLINK(\"x\")") == "\"'=HYPERLINK(\"\"x\"\")\"")
        #expect(Transcript.csvField("-5") == "-5", "a number stays a number")
        #expect(Transcript.parseSince("2026-12-01") == 1_796_083_200_000)
        #expect(Transcript.parseSince("2026-12-01T10:00:00Z") == 1_796_119_200_000)
        #expect(Transcript.parseSince("yesterday") == nil)
        #expect(Transcript.parseSince("2026-12-01T10:00:00.25+01:00") == 1_796_115_600_250)
        #expect(Transcript.parseSince("2024-02-29") == 1_709_164_800_000, "a leap day")
        #expect(Transcript.parseSince("1969-12-31T23:59:59.999Z") == -1)
        // Out of range or left over: refused, never rolled over into another time.
        for typo in [
            "2026-12-01T25:00:00Z", "2026-12-01T10:61:00Z", "2026-12-01T10:00:60Z", "2026-02-30", "2023-02-29", "2026-13-01",
            "2026-12-01T10:00:00+25:00", "2026-12-01T10:00:00-00:99", "2026-12-01T10:00:00", "2026-12-01T10:00:00.Z", "2026-12-01 ", "2026-12-1",
        ] {
            #expect(Transcript.parseSince(typo) == nil, "\(typo)")
        }
    }
}
