import Chat
@testable import ChatArchive
import Foundation
import NIOCore
import PostgresNIO
import SQLiteNIO
import Testing

/// Which archive a test runs against: a fresh SQLite file, or the test command's PostgreSQL.
enum ArchiveKind: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }

    func open() async throws -> any Archive {
        let archive: any Archive
        switch self {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatroom-archive-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            archive = try Archives.open(url: "sqlite://" + directory.appendingPathComponent("archive.db").path)
        case .postgres:
            let url = try #require(
                ProcessInfo.processInfo.environment["CHATROOM_TEST_POSTGRES_URL"],
                "The PostgreSQL archive tests need CHATROOM_TEST_POSTGRES_URL: scripts/test.sh starts a PostgreSQL and sets it."
            )
            archive = try Archives.open(url: url)
        }
        try await archive.prepare()
        return archive
    }
}

/// A channel no other test (nor an earlier run against the same database) uses.
func freshChannel(_ prefix: String) -> ChannelName {
    ChannelName("\(prefix)-\(UUID().uuidString.prefix(12).lowercased())")!
}

func message(
    _ channel: ChannelName, _ offset: Int64, _ text: String, epoch: String = "e1", from: String? = "ada", kind: MessageKind = .message,
    time: Int64? = nil
) -> Message {
    Message(channel: channel, offset: offset, epoch: epoch, time: time ?? 1_800_000_000_000 + offset * 1000, data: ByteBuffer(string: text), name: from.map { $0.capitalized }, from: from, kind: kind)
}

@Suite("The archive: every message kept once, changes applied, read back, searched")
struct ArchiveTests {
    @Test(arguments: ArchiveKind.allCases)
    func eachMessageIsKeptOnceAndReadInPagesEitherWay(kind: ArchiveKind) async throws {
        let archive = try await kind.open()
        let channel = freshChannel("pages")
        try await archive.keep((1...10).map { message(channel, $0, "m\($0)") })
        // A batch replayed after a crash, overlapping what was kept, with more after it.
        try await archive.keep((5...12).map { message(channel, $0, "replayed \($0)") })
        let all = try await archive.messages(in: channel, epoch: "e1", after: 0, before: nil, limit: 100)
        #expect(all.map(\.offset) == Array(1...12))
        #expect(all[4].text == "m5", "what was kept first stays")
        #expect(all[11].text == "replayed 12" && all[11].from == "ada" && all[11].name == "Ada" && all[11].time == 1_800_000_012_000)
        #expect(try await archive.messages(in: channel, epoch: "e1", after: nil, before: 8, limit: 3).map(\.offset) == [5, 6, 7], "backwards from an offset")
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 3, before: 6, limit: 100).map(\.offset) == [4, 5])
        #expect(try await archive.messages(in: channel, epoch: "e1", after: nil, before: nil, limit: 2).map(\.offset) == [11, 12], "the newest")
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 12, before: nil, limit: 10).isEmpty)
        #expect(try await archive.messages(in: channel, epoch: "other", after: 0, before: nil, limit: 10).isEmpty)
        #expect(try await archive.messages(in: freshChannel("none"), epoch: "e1", after: 0, before: nil, limit: 10).isEmpty)
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 0, before: nil, limit: 0).isEmpty)
        // Preparing again (another instance starting) keeps everything.
        try await archive.prepare()
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 0, before: nil, limit: 100).count == 12)
        await archive.close()
    }

    @Test(arguments: ArchiveKind.allCases)
    func aChangeChangesItsMessageOnceEvenWhenKeptAgain(kind: ArchiveKind) async throws {
        let archive = try await kind.open()
        let channel = freshChannel("changes")
        let batch = [
            message(channel, 1, "helo"),
            message(channel, 2, "second", from: "bob"),
            message(channel, 3, "hello", kind: .edit(of: 1), time: 1_900_000_000_000),
            message(channel, 4, "👍", from: "bob", kind: .react(of: 1, on: true)),
            message(channel, 5, "👍", from: "cy", kind: .react(of: 1, on: true)),
            message(channel, 6, "🎉", from: "bob", kind: .react(of: 1, on: true)),
        ]
        try await archive.keep(batch)
        try await archive.keep(batch)  // replayed: nothing changes twice
        var first = try #require(try await archive.messages(in: channel, epoch: "e1", after: 0, before: 2, limit: 1).first)
        #expect(first.text == "hello" && first.kind == .message)
        #expect(first.state == MessageState(edited: 1_900_000_000_000, deleted: false, reactions: [.init(emoji: "👍", from: ["bob", "cy"]), .init(emoji: "🎉", from: ["bob"])]))
        let changes = try await archive.messages(in: channel, epoch: "e1", after: 2, before: nil, limit: 10)
        #expect(changes.map(\.kind) == [.edit(of: 1), .react(of: 1, on: true), .react(of: 1, on: true), .react(of: 1, on: true)], "changes are kept as published too")
        #expect(changes.allSatisfy { $0.state == nil })
        // Bob takes his 👍 back; a reaction to a message that is not there changes nothing.
        try await archive.keep([message(channel, 7, "👍", from: "bob", kind: .react(of: 1, on: false)), message(channel, 8, "👍", from: "bob", kind: .react(of: 99, on: true))])
        first = try #require(try await archive.messages(in: channel, epoch: "e1", after: 0, before: 2, limit: 1).first)
        #expect(first.state?.reactions == [.init(emoji: "👍", from: ["cy"]), .init(emoji: "🎉", from: ["bob"])])
        // A delete: the text is gone, the message's and its edit's; its reactions too.
        try await archive.keep([message(channel, 9, "", kind: .delete(of: 1))])
        let after = try await archive.messages(in: channel, epoch: "e1", after: 0, before: nil, limit: 20)
        #expect(after[0].text == "" && after[0].state == MessageState(edited: 1_900_000_000_000, deleted: true, reactions: []))
        #expect(after[2].kind == .edit(of: 1) && after[2].text == "", "the edit's words are gone too")
        #expect(after[1].text == "second" && after[1].state == nil, "others' messages untouched")
        // A message deleted before the archive got it keeps its place, without words.
        try await archive.keep([message(channel, 12, "", from: "bob", kind: .delete(of: 11), time: 1_950_000_000_000)])
        let placeholder = try #require(try await archive.messages(in: channel, epoch: "e1", after: 10, before: 12, limit: 1).first)
        #expect(placeholder.offset == 11 && placeholder.kind == .message && placeholder.text == "" && placeholder.state?.deleted == true && placeholder.from == nil)
        #expect(placeholder.time == 1_950_000_000_000)
        // An edit after the delete brings nothing back.
        try await archive.keep([message(channel, 10, "back again", kind: .edit(of: 1))])
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 0, before: 2, limit: 1).first?.text == "")
        await archive.close()
    }

    @Test(arguments: ArchiveKind.allCases)
    func everyEpochOfAChannelStaysReadable(kind: ArchiveKind) async throws {
        let archive = try await kind.open()
        let channel = freshChannel("epochs")
        try await archive.keep((1...3).map { message(channel, $0, "old \($0)", epoch: "old", time: 1_000 + $0) })
        try await archive.keep((1...2).map { message(channel, $0, "new \($0)", epoch: "new", time: 5_000 + $0) })
        #expect(try await archive.epochs(of: channel) == [ArchivedEpoch(epoch: "old", first: 1, last: 3, since: 1_001), ArchivedEpoch(epoch: "new", first: 1, last: 2, since: 5_001)])
        #expect(try await archive.messages(in: channel, epoch: "old", after: 0, before: nil, limit: 10).map(\.text) == ["old 1", "old 2", "old 3"])
        #expect(try await archive.epochs(of: freshChannel("empty")).isEmpty)
        #expect(try await archive.epoch("old", of: channel) == ArchivedEpoch(epoch: "old", first: 1, last: 3, since: 1_001))
        #expect(try await archive.epoch("new", of: channel) == ArchivedEpoch(epoch: "new", first: 1, last: 2, since: 5_001))
        #expect(try await archive.epoch("none", of: channel) == nil)
        try await archive.keep([message(channel, 7, "alone", epoch: "single", time: 9_000)])
        #expect(try await archive.epoch("single", of: channel) == ArchivedEpoch(epoch: "single", first: 7, last: 7, since: 9_000))
        // The epoch kept before another: the newest other one with an older message.
        #expect(try await archive.epoch(before: "single", startedAt: 9_000, of: channel) == "new")
        #expect(try await archive.epoch(before: "new", startedAt: 5_001, of: channel) == "old")
        #expect(try await archive.epoch(before: "old", startedAt: 1_001, of: channel) == nil)
        #expect(try await archive.epoch(before: "", startedAt: 100_000, of: channel) == "single", "the newest of all")
        #expect(try await archive.epoch(before: "", startedAt: 100_000, of: freshChannel("none")) == nil)
        await archive.close()
    }

    @Test(arguments: ArchiveKind.allCases)
    func searchFindsEveryWordNewestFirstInOneChannelAndNeverTheDeleted(kind: ArchiveKind) async throws {
        let archive = try await kind.open()
        let (channel, other) = (freshChannel("search"), freshChannel("elsewhere"))
        try await archive.keep([
            message(channel, 1, "My order number is 12345, please help"),
            message(channel, 2, "The order arrived broken"),
            message(channel, 3, "order 12345 shipped today"),
            message(channel, 4, "deleted order 12345"),
            message(channel, 5, "", kind: .delete(of: 4)),
            message(channel, 6, "order 12345 edited", kind: .edit(of: 2)),
        ])
        try await archive.keep([message(other, 1, "order 12345 in another room")])
        let found = try await archive.search("order 12345", in: channel, limit: 10)
        #expect(found.map(\.offset) == [3, 2, 1], "every word, newest first; the edit counts as the message's text; the deleted one is gone")
        #expect(found.last?.text == "My order number is 12345, please help")
        #expect(try await archive.search("ORDER", in: channel, limit: 10).count == 3, "case does not matter")
        #expect(try await archive.search("order", in: channel, limit: 1).map(\.offset) == [3])
        #expect(try await archive.search("   ", in: channel, limit: 10).isEmpty)
        #expect(try await archive.search("nothing-like-it", in: channel, limit: 10).isEmpty)
        // The person's words, never the query language.
        for hostile in [#"order" OR "x"#, "order*", "NEAR(order 12345)", "order AND", "'; DROP TABLE messages; --", "\\", "\"", "order:12345", "(", "-order"] {
            _ = try await archive.search(hostile, in: channel, limit: 10)
        }
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 0, before: nil, limit: 10).count == 6, "nothing was dropped")
        await archive.close()
    }

    @Test(arguments: ArchiveKind.allCases)
    func forgettingTakesOnlyWhatIsOlder(kind: ArchiveKind) async throws {
        let archive = try await kind.open()
        let channel = freshChannel("retention")
        // Forgetting is for every channel at once: times far below every other test's, so
        // that it takes nothing of theirs from the shared PostgreSQL.
        try await archive.keep([message(channel, 1, "old", time: 100), message(channel, 2, "new", time: 300)])
        #expect(try await archive.forget(before: 200) >= 1)
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 0, before: nil, limit: 10).map(\.text) == ["new"])
        await archive.close()
    }

    @Test func archiveURLsSayWhatIsWrong() {
        func problem(_ url: String) -> String? {
            do {
                _ = try Archives.open(url: url)
                return nil
            } catch {
                return error.description
            }
        }
        #expect(problem("mysql://x")?.contains("postgres:// or sqlite://") == true)
        #expect(problem("sqlite://")?.contains("names no file") == true)
        #expect(problem("postgres://")?.contains("Invalid PostgreSQL archive URL") == true)
        #expect(problem("postgres://host/db")?.contains("names no user") == true)
        #expect(problem("postgres://u@host/db?sslmode=sometimes")?.contains("Unknown sslmode") == true)
        let configuration = try? PostgresArchive.configuration(url: "postgres://ch%40t:p%2Fss@db.example:6543/chat?sslmode=disable")
        #expect(configuration?.username == "ch@t" && configuration?.password == "p/ss" && configuration?.database == "chat" && configuration?.port == 6543)
    }
}

@Suite("What neither database would take")
struct ArchiveOddTextTests {
    @Test(arguments: ArchiveKind.allCases)
    func aNulNeverStopsABatchAndSearchTakesAnyBytes(kind: ArchiveKind) async throws {
        let archive = try await kind.open()
        let channel = freshChannel("odd")
        try await archive.keep([message(channel, 1, "before\u{0}after"), message(channel, 2, "fine\u{0}", kind: .edit(of: 1))])
        #expect(try await archive.messages(in: channel, epoch: "e1", after: 0, before: nil, limit: 10).count == 2)
        for words in ["\u{0}fine", "\"", "NEAR(fine", "fine OR x", "fine:*", "!fine &", "*", "\u{1}\u{7F}", "'; DROP TABLE messages; --"] {
            _ = try await archive.search(words, in: channel, limit: 10)
        }
        #expect(try await archive.search("\u{0}fine", in: channel, limit: 10).count == 1)
        await archive.close()
    }
}

@Suite("The archive's schema")
struct ArchiveSchemaTests {
    @Test func eachArchiveKnowsEveryVersion() {
        #expect(SQLiteArchive.migrations.count == ArchiveRows.schemaVersion)
        #expect(PostgresArchive.migrations.count == ArchiveRows.schemaVersion)
    }

    @Test func anArchiveOfTheFirstVersionIsBroughtUpToDateAndKeepsWhatItHad() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatroom-migrate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("archive.db").path
        // An archive as the first version made it, with one message.
        let old = try await SQLiteConnection.open(storage: .file(path: path))
        _ = try await old.query("CREATE TABLE archive_schema (version INTEGER NOT NULL)")
        for statement in SQLiteArchive.migrations[0] { _ = try await old.query(statement) }
        _ = try await old.query("INSERT INTO archive_schema (version) VALUES (1)")
        _ = try await old.query(#"INSERT INTO messages (channel, epoch, "offset", time, kind, data) VALUES ('kept', 'e1', 1, 1000, 'm', 'still here')"#)
        try await old.close()

        let archive = SQLiteArchive(path: path)
        try await archive.prepare()
        #expect(try await archive.messages(in: ChannelName("kept")!, epoch: "e1", after: 0, before: nil, limit: 10).map(\.text) == ["still here"])
        #expect(try await archive.search("still", in: ChannelName("kept")!, limit: 10).count == 1)
        await archive.close()
        let check = try await SQLiteConnection.open(storage: .file(path: path))
        #expect(try await check.query("SELECT version FROM archive_schema").first?.column("version")?.integer == ArchiveRows.schemaVersion)
        #expect(try await check.query("SELECT name FROM sqlite_master WHERE name = 'messages_channel_time'").count == 1)
        try await check.close()
    }
}
