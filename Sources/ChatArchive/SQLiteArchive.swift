import Chat
import Logging
import SQLiteNIO

/// The archive in one SQLite file (WAL mode), for a one-node deployment: one connection,
/// used by one statement sequence at a time (SQLite has one writer anyway), full-text
/// search through FTS5.
public final class SQLiteArchive: Archive {
    let path: String
    private let logger: Logger
    /// The connection that writes: one transaction at a time (SQLite has one writer).
    private let connection = ConnectionBox()
    private let turn = AsyncMutex()
    /// The connection that reads, beside it (WAL mode: readers do not wait for the
    /// writer, nor it for them): one read at a time.
    private let readerConnection = ConnectionBox()
    private let readerTurn = AsyncMutex()

    /// The connection, opened by the first use: one opening, however many wait for it
    /// (the actor lets others in while it waits).
    private actor ConnectionBox {
        var opening: Task<SQLiteConnection, any Error>?
        var closed = false

        func get(path: String, logger: Logger) async throws -> SQLiteConnection {
            guard !closed else { throw ArchiveError("The archive is closed.") }
            if let opening { return try await opening.value }
            let opening = Task {
                let opened = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
                do {
                    // Readers do not wait for the writer; a crash loses nothing committed.
                    _ = try await opened.query("PRAGMA journal_mode=WAL")
                    _ = try await opened.query("PRAGMA synchronous=NORMAL")
                    _ = try await opened.query("PRAGMA busy_timeout=5000")
                } catch {
                    try? await opened.close()
                    throw error
                }
                return opened
            }
            self.opening = opening
            do {
                return try await opening.value
            } catch {
                // The next use tries again.
                self.opening = nil
                throw error
            }
        }

        /// The connection to close, if one was opened; no use opens another.
        func take() async -> SQLiteConnection? {
            closed = true
            defer { opening = nil }
            return try? await opening?.value
        }
    }

    public init(path: String, logger: Logger = Logger(label: "chatroom.archive")) {
        self.path = path
        self.logger = logger
    }

    /// Runs `body` on the writing connection, alone.
    private func serially<T: Sendable>(_ body: (SQLiteConnection) async throws -> T) async throws -> T {
        try await alone(on: connection, turn: turn, body)
    }

    /// Runs `body` on the reading connection, alone.
    private func reading<T: Sendable>(_ body: (SQLiteConnection) async throws -> T) async throws -> T {
        try await alone(on: readerConnection, turn: readerTurn, body)
    }

    private func alone<T: Sendable>(on box: ConnectionBox, turn: AsyncMutex, _ body: (SQLiteConnection) async throws -> T) async throws -> T {
        let connection = try await box.get(path: path, logger: logger)
        await turn.lock()
        do {
            let result = try await body(connection)
            await turn.unlock()
            return result
        } catch {
            await turn.unlock()
            throw error
        }
    }

    /// `body` in a transaction: committed if it returns, rolled back if it throws.
    private func transaction<T: Sendable>(_ body: (SQLiteConnection) async throws -> T) async throws -> T {
        try await serially { connection in
            _ = try await connection.query("BEGIN IMMEDIATE")
            do {
                let result = try await body(connection)
                _ = try await connection.query("COMMIT")
                return result
            } catch {
                _ = try? await connection.query("ROLLBACK")
                throw error
            }
        }
    }

    /// Each version's statements: an archive at version N gets those after it.
    static let migrations: [[String]] = [
        [
        """
        CREATE TABLE messages (
            channel TEXT NOT NULL,
            epoch TEXT NOT NULL,
            "offset" INTEGER NOT NULL,
            time INTEGER NOT NULL,
            kind TEXT NOT NULL,
            target INTEGER,
            sender TEXT,
            name TEXT,
            data TEXT NOT NULL,
            edited INTEGER,
            deleted INTEGER NOT NULL DEFAULT 0,
            reactions TEXT,
            PRIMARY KEY (channel, epoch, "offset")
        )
        """,
        "CREATE INDEX messages_time ON messages (time)",
        "CREATE INDEX messages_target ON messages (channel, epoch, target) WHERE target IS NOT NULL",
        "CREATE VIRTUAL TABLE messages_search USING fts5(data, content='messages', content_rowid='rowid', tokenize='unicode61')",
        """
        CREATE TRIGGER messages_search_insert AFTER INSERT ON messages WHEN new.kind = 'm' BEGIN
            INSERT INTO messages_search(rowid, data) VALUES (new.rowid, new.data);
        END
        """,
        """
        CREATE TRIGGER messages_search_delete AFTER DELETE ON messages WHEN old.kind = 'm' BEGIN
            INSERT INTO messages_search(messages_search, rowid, data) VALUES ('delete', old.rowid, old.data);
        END
        """,
        """
        CREATE TRIGGER messages_search_update AFTER UPDATE OF data ON messages WHEN old.kind = 'm' BEGIN
            INSERT INTO messages_search(messages_search, rowid, data) VALUES ('delete', old.rowid, old.data);
            INSERT INTO messages_search(rowid, data) VALUES (new.rowid, new.data);
        END
        """,
        ],
        // 2: a channel's messages by time (the epoch before another).
        ["CREATE INDEX messages_channel_time ON messages (channel, time)"],
    ]

    public func prepare() async throws {
        try await transaction { connection in
            _ = try await connection.query("CREATE TABLE IF NOT EXISTS archive_schema (version INTEGER NOT NULL)")
            let version = try await connection.query("SELECT version FROM archive_schema").first?.column("version")?.integer ?? 0
            guard version < ArchiveRows.schemaVersion else {
                if version > ArchiveRows.schemaVersion {
                    throw ArchiveError("The archive's schema is version \(version), newer than this server knows (\(ArchiveRows.schemaVersion)): run a newer chatroom.")
                }
                return
            }
            for migration in Self.migrations[Int(version)...] {
                for statement in migration { _ = try await connection.query(statement) }
            }
            _ = try await connection.query("DELETE FROM archive_schema")
            _ = try await connection.query("INSERT INTO archive_schema (version) VALUES (?)", [.integer(ArchiveRows.schemaVersion)])
        }
    }

    public func keep(_ messages: [Message]) async throws {
        guard !messages.isEmpty else { return }
        try await transaction { connection in
            for message in messages {
                let key: [SQLiteData] = [.text(message.channel.rawValue), .text(message.epoch)]
                let inserted = try await connection.query(
                    """
                    INSERT INTO messages (channel, epoch, "offset", time, kind, target, sender, name, data)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING "offset"
                    """,
                    key + [
                        .integer(Int(message.offset)), .integer(Int(message.time)), .text(message.kind.token),
                        message.kind.target.map { .integer(Int($0)) } ?? .null, message.from.map { .text($0) } ?? .null,
                        message.name.map { .text($0) } ?? .null, .text(message.text),
                    ]
                )
                guard !inserted.isEmpty, let effect = ArchiveRows.effect(of: message) else { continue }
                switch effect {
                case .edit(let of, let text, let time):
                    _ = try await connection.query(
                        #"UPDATE messages SET data = ?, edited = ? WHERE channel = ? AND epoch = ? AND "offset" = ? AND kind = 'm' AND deleted = 0"#,
                        [.text(text), .integer(Int(time))] + key + [.integer(Int(of))]
                    )
                case .delete(let of):
                    let deleted = try await connection.query(
                        #"UPDATE messages SET data = '', deleted = 1, reactions = NULL WHERE channel = ? AND epoch = ? AND "offset" = ? AND kind = 'm' RETURNING "offset""#,
                        key + [.integer(Int(of))]
                    )
                    if deleted.isEmpty {
                        // Deleted before it was archived: its words never come; its place does.
                        _ = try await connection.query(
                            #"INSERT INTO messages (channel, epoch, "offset", time, kind, data, deleted) VALUES (?, ?, ?, ?, 'm', '', 1) ON CONFLICT DO NOTHING"#,
                            key + [.integer(Int(of)), .integer(Int(message.time))]
                        )
                    }
                    _ = try await connection.query(
                        "UPDATE messages SET data = '' WHERE channel = ? AND epoch = ? AND target = ? AND kind LIKE 'e%'", key + [.integer(Int(of))]
                    )
                case .react(let of, let emoji, let from, let on):
                    let rows = try await connection.query(
                        #"SELECT reactions FROM messages WHERE channel = ? AND epoch = ? AND "offset" = ? AND kind = 'm' AND deleted = 0"#,
                        key + [.integer(Int(of))]
                    )
                    guard let row = rows.first else { continue }
                    let reactions = ArchiveRows.setting(ArchiveRows.decode(row.column("reactions")?.string), emoji: emoji, from: from, on: on)
                    _ = try await connection.query(
                        #"UPDATE messages SET reactions = ? WHERE channel = ? AND epoch = ? AND "offset" = ?"#,
                        [ArchiveRows.encode(reactions).map { .text($0) } ?? .null] + key + [.integer(Int(of))]
                    )
                }
            }
        }
    }

    private static let columns = #"channel, epoch, "offset", time, kind, sender, name, data, edited, deleted, reactions"#

    private static func message(_ row: SQLiteRow, channel: ChannelName) -> Message? {
        guard let epoch = row.column("epoch")?.string, let offset = row.column("offset")?.integer, let time = row.column("time")?.integer,
            let kind = row.column("kind")?.string
        else { return nil }
        return ArchiveRows.message(
            channel: channel, epoch: epoch, offset: Int64(offset), time: Int64(time), kind: kind, sender: row.column("sender")?.string,
            name: row.column("name")?.string, data: row.column("data")?.string ?? "", edited: row.column("edited")?.integer.map(Int64.init),
            deleted: (row.column("deleted")?.integer ?? 0) != 0, reactions: row.column("reactions")?.string
        )
    }

    public func messages(in channel: ChannelName, epoch: String, after: Int64?, before: Int64?, limit: Int) async throws -> [Message] {
        let limit = max(0, limit)
        let rows: [SQLiteRow] = try await reading { connection in
            let key: [SQLiteData] = [.text(channel.rawValue), .text(epoch)]
            if let after {
                var sql = #"SELECT \#(Self.columns) FROM messages WHERE channel = ? AND epoch = ? AND "offset" > ?"#
                var binds = key + [.integer(Int(after))]
                if let before {
                    sql += #" AND "offset" < ?"#
                    binds.append(.integer(Int(before)))
                }
                return try await connection.query(sql + #" ORDER BY "offset" LIMIT ?"#, binds + [.integer(limit)])
            }
            let below = before ?? Int64.max
            return try await connection.query(
                #"SELECT \#(Self.columns) FROM messages WHERE channel = ? AND epoch = ? AND "offset" < ? ORDER BY "offset" DESC LIMIT ?"#,
                key + [.integer(Int(below)), .integer(limit)]
            ).reversed()
        }
        return rows.compactMap { Self.message($0, channel: channel) }
    }

    public func epochs(of channel: ChannelName) async throws -> [ArchivedEpoch] {
        let rows = try await reading { connection in
            try await connection.query(
                #"SELECT epoch, MIN("offset") AS first, MAX("offset") AS last, MIN(time) AS since FROM messages WHERE channel = ? GROUP BY epoch ORDER BY since"#,
                [.text(channel.rawValue)]
            )
        }
        return rows.compactMap { row in
            guard let epoch = row.column("epoch")?.string, let first = row.column("first")?.integer, let last = row.column("last")?.integer,
                let since = row.column("since")?.integer
            else { return nil }
            return ArchivedEpoch(epoch: epoch, first: Int64(first), last: Int64(last), since: Int64(since))
        }
    }

    public func epoch(_ epoch: String, of channel: ChannelName) async throws -> ArchivedEpoch? {
        let rows = try await reading { connection in
            try await connection.query(
                #"""
                SELECT * FROM (SELECT "offset", time FROM messages WHERE channel = ?1 AND epoch = ?2 ORDER BY "offset" LIMIT 1)
                UNION ALL
                SELECT * FROM (SELECT "offset", time FROM messages WHERE channel = ?1 AND epoch = ?2 ORDER BY "offset" DESC LIMIT 1)
                """#,
                [.text(channel.rawValue), .text(epoch)]
            )
        }
        let ends = rows.compactMap { row -> (offset: Int64, time: Int64)? in
            guard let offset = row.column("offset")?.integer, let time = row.column("time")?.integer else { return nil }
            return (Int64(offset), Int64(time))
        }
        return ArchiveRows.epoch(epoch, ends: ends)
    }

    public func epoch(before epoch: String, startedAt time: Int64, of channel: ChannelName) async throws -> String? {
        let rows = try await reading { connection in
            try await connection.query(
                "SELECT epoch FROM messages WHERE channel = ? AND time < ? AND epoch <> ? ORDER BY time DESC LIMIT 1",
                [.text(channel.rawValue), .integer(Int(time)), .text(epoch)]
            )
        }
        return rows.first?.column("epoch")?.string
    }

    public func search(_ words: String, in channel: ChannelName, limit: Int) async throws -> [Message] {
        guard let words = SearchWords.parse(words) else { return [] }
        // Each word a quoted FTS5 string: the person's words, never the query syntax.
        let match = words.map { "\"\($0)\"" }.joined(separator: " ")
        let rows = try await reading { connection in
            try await connection.query(
                """
                SELECT m.channel, m.epoch, m."offset", m.time, m.kind, m.sender, m.name, m.data, m.edited, m.deleted, m.reactions
                FROM messages_search JOIN messages m ON m.rowid = messages_search.rowid
                WHERE messages_search MATCH ? AND m.channel = ? AND m.kind = 'm' AND m.deleted = 0
                ORDER BY m.time DESC, m."offset" DESC LIMIT ?
                """,
                [.text(match), .text(channel.rawValue), .integer(max(0, limit))]
            )
        }
        return rows.compactMap { Self.message($0, channel: channel) }
    }

    public func forget(before time: Int64) async throws -> Int {
        try await transaction { connection in
            let gone = try await connection.query(#"DELETE FROM messages WHERE time < ? RETURNING "offset""#, [.integer(Int(time))])
            return gone.count
        }
    }

    public func close() async {
        for (box, turn) in [(readerConnection, readerTurn), (connection, turn)] {
            guard let opened = await box.take() else { continue }
            await turn.lock()
            try? await opened.close()
            await turn.unlock()
        }
    }
}
