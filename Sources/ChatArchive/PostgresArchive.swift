import Chat
import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// The archive in PostgreSQL, for deployments of many instances: a pool of connections,
/// a batch kept with one multi-row `INSERT`, full-text search through a `tsvector` column
/// with a GIN index.
public final class PostgresArchive: Archive {
    private let client: PostgresClient
    private let running: Task<Void, Never>
    private let logger: Logger

    /// `postgres://user:password@host:port/database?sslmode=disable|prefer|require`.
    public convenience init(url: String, logger: Logger = Logger(label: "chatroom.archive")) throws(ArchiveError) {
        self.init(configuration: try Self.configuration(url: url), logger: logger)
    }

    public init(configuration: PostgresClient.Configuration, logger: Logger = Logger(label: "chatroom.archive")) {
        self.logger = logger
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.running = Task { await client.run() }
    }

    /// Reads an archive URL into the client's configuration.
    static func configuration(url text: String) throws(ArchiveError) -> PostgresClient.Configuration {
        guard let url = URLComponents(string: text), url.scheme == "postgres" || url.scheme == "postgresql", let host = url.host, !host.isEmpty else {
            throw ArchiveError("Invalid PostgreSQL archive URL: write postgres://user:password@host:5432/database.")
        }
        let database = String(url.path.drop { $0 == "/" })
        guard let user = url.user, !user.isEmpty else { throw ArchiveError("The PostgreSQL archive URL names no user: write postgres://user:password@host/database.") }
        let mode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        let tls: PostgresClient.Configuration.TLS
        switch mode {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw ArchiveError("Unknown sslmode \(mode): use disable, prefer or require.")
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: url.port ?? 5432, username: user.removingPercentEncoding ?? user,
            password: url.password.map { $0.removingPercentEncoding ?? $0 }, database: database.isEmpty ? nil : database, tls: tls
        )
        configuration.options.maximumConnections = 8
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }

    /// Each version's statements: an archive at version N gets those after it.
    static let migrations: [[PostgresQuery]] = [
        [
        """
        CREATE TABLE messages (
            channel text NOT NULL,
            epoch text NOT NULL,
            "offset" bigint NOT NULL,
            time bigint NOT NULL,
            kind text NOT NULL,
            target bigint,
            sender text,
            name text,
            data text NOT NULL,
            edited bigint,
            deleted boolean NOT NULL DEFAULT false,
            reactions text,
            search tsvector GENERATED ALWAYS AS (CASE WHEN kind = 'm' THEN to_tsvector('simple', data) END) STORED,
            PRIMARY KEY (channel, epoch, "offset")
        )
        """,
        "CREATE INDEX messages_search ON messages USING GIN (search)",
        "CREATE INDEX messages_time ON messages (time)",
        "CREATE INDEX messages_target ON messages (channel, epoch, target) WHERE target IS NOT NULL",
        ],
        // 2: a channel's messages by time (the epoch before another; search's newest first).
        ["CREATE INDEX messages_channel_time ON messages (channel, time)"],
    ]

    public func prepare() async throws {
        try await client.withTransaction(logger: logger) { connection in
            // Instances starting together migrate one after the other.
            try await connection.query("SELECT pg_advisory_xact_lock(7291640117)", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS archive_schema (version integer NOT NULL)", logger: logger)
            var version = 0
            for try await found in try await connection.query("SELECT version FROM archive_schema", logger: logger).decode(Int.self) { version = found }
            if version > ArchiveRows.schemaVersion {
                throw ArchiveError("The archive's schema is version \(version), newer than this server knows (\(ArchiveRows.schemaVersion)): run a newer chatroom.")
            }
            guard version < ArchiveRows.schemaVersion else { return }
            for migration in Self.migrations[version...] {
                for statement in migration { try await connection.query(statement, logger: logger) }
            }
            try await connection.query("DELETE FROM archive_schema", logger: logger)
            try await connection.query("INSERT INTO archive_schema (version) VALUES (\(ArchiveRows.schemaVersion))", logger: logger)
        }
    }

    public func keep(_ messages: [Message]) async throws {
        guard !messages.isEmpty else { return }
        // Columns as arrays, for one INSERT of the whole batch; 0 and "" stand for NULL.
        let channels = messages.map(\.channel.rawValue)
        let epochs = messages.map(\.epoch)
        let offsets = messages.map(\.offset)
        let times = messages.map(\.time)
        let kinds = messages.map(\.kind.token)
        let targets = messages.map { $0.kind.target ?? 0 }
        let senders = messages.map { ArchiveRows.storable($0.from ?? "") }
        let names = messages.map { ArchiveRows.storable($0.name ?? "") }
        let texts = messages.map { ArchiveRows.storable($0.text) }
        try await client.withTransaction(logger: logger) { connection in
            let rows = try await connection.query(
                """
                INSERT INTO messages (channel, epoch, "offset", time, kind, target, sender, name, data)
                SELECT c, e, o, t, k, NULLIF(g, 0), NULLIF(s, ''), NULLIF(n, ''), d
                FROM unnest(\(channels)::text[], \(epochs)::text[], \(offsets)::int8[], \(times)::int8[], \(kinds)::text[],
                            \(targets)::int8[], \(senders)::text[], \(names)::text[], \(texts)::text[]) AS m(c, e, o, t, k, g, s, n, d)
                ON CONFLICT DO NOTHING
                RETURNING channel, epoch, "offset"
                """,
                logger: logger
            )
            var inserted = Set<String>()
            for try await (channel, epoch, offset) in rows.decode((String, String, Int64).self) { inserted.insert("\(channel)\u{0}\(epoch)\u{0}\(offset)") }
            // What the new changes do, in the batch's order.
            for message in messages where message.kind != .message {
                guard inserted.contains("\(message.channel.rawValue)\u{0}\(message.epoch)\u{0}\(message.offset)"),
                    let effect = ArchiveRows.effect(of: message)
                else { continue }
                let (channel, epoch) = (message.channel.rawValue, message.epoch)
                switch effect {
                case .edit(let of, let text, let time):
                    try await connection.query(
                        #"UPDATE messages SET data = \#(text), edited = \#(time) WHERE channel = \#(channel) AND epoch = \#(epoch) AND "offset" = \#(of) AND kind = 'm' AND NOT deleted"#,
                        logger: logger
                    )
                case .delete(let of):
                    let time = message.time
                    // Deleted before it was archived: its words never come; its place does.
                    try await connection.query(
                        #"""
                        WITH deleted AS (
                            UPDATE messages SET data = '', deleted = true, reactions = NULL
                            WHERE channel = \#(channel) AND epoch = \#(epoch) AND "offset" = \#(of) AND kind = 'm' RETURNING 1
                        )
                        INSERT INTO messages (channel, epoch, "offset", time, kind, data, deleted)
                        SELECT \#(channel), \#(epoch), \#(of), \#(time), 'm', '', true WHERE NOT EXISTS (SELECT 1 FROM deleted)
                        ON CONFLICT DO NOTHING
                        """#,
                        logger: logger
                    )
                    try await connection.query(
                        "UPDATE messages SET data = '' WHERE channel = \(channel) AND epoch = \(epoch) AND target = \(of) AND kind LIKE 'e%'", logger: logger
                    )
                case .react(let of, let emoji, let from, let on):
                    var current: String?
                    var found = false
                    let rows = try await connection.query(
                        #"SELECT reactions FROM messages WHERE channel = \#(channel) AND epoch = \#(epoch) AND "offset" = \#(of) AND kind = 'm' AND NOT deleted FOR UPDATE"#,
                        logger: logger
                    )
                    for try await reactions in rows.decode(String?.self) {
                        current = reactions
                        found = true
                    }
                    guard found else { continue }
                    let reactions = ArchiveRows.encode(ArchiveRows.setting(ArchiveRows.decode(current), emoji: emoji, from: from, on: on))
                    try await connection.query(
                        #"UPDATE messages SET reactions = \#(reactions) WHERE channel = \#(channel) AND epoch = \#(epoch) AND "offset" = \#(of)"#,
                        logger: logger
                    )
                }
            }
        }
    }

    private typealias Row = (String, Int64, Int64, String, String?, String?, String, Int64?, Bool, String?)

    private static func message(_ row: Row, channel: ChannelName) -> Message? {
        let (epoch, offset, time, kind, sender, name, data, edited, deleted, reactions) = row
        return ArchiveRows.message(
            channel: channel, epoch: epoch, offset: offset, time: time, kind: kind, sender: sender, name: name, data: data, edited: edited,
            deleted: deleted, reactions: reactions
        )
    }

    private func read(_ query: PostgresQuery, channel: ChannelName) async throws -> [Message] {
        var messages: [Message] = []
        let rows = try await client.query(query, logger: logger)
        for try await row in rows.decode(Row.self) {
            if let message = Self.message(row, channel: channel) { messages.append(message) }
        }
        return messages
    }

    public func messages(in channel: ChannelName, epoch: String, after: Int64?, before: Int64?, limit: Int) async throws -> [Message] {
        let (name, limit) = (channel.rawValue, max(0, limit))
        if let after {
            let below = before ?? Int64.max
            return try await read(
                #"""
                SELECT epoch, "offset", time, kind, sender, name, data, edited, deleted, reactions FROM messages
                WHERE channel = \#(name) AND epoch = \#(epoch) AND "offset" > \#(after) AND "offset" < \#(below) ORDER BY "offset" LIMIT \#(limit)
                """#,
                channel: channel
            )
        }
        let below = before ?? Int64.max
        return try await read(
            #"""
            SELECT epoch, "offset", time, kind, sender, name, data, edited, deleted, reactions FROM messages
            WHERE channel = \#(name) AND epoch = \#(epoch) AND "offset" < \#(below) ORDER BY "offset" DESC LIMIT \#(limit)
            """#,
            channel: channel
        ).reversed()
    }

    public func epochs(of channel: ChannelName) async throws -> [ArchivedEpoch] {
        var epochs: [ArchivedEpoch] = []
        let rows = try await client.query(
            #"SELECT epoch, MIN("offset"), MAX("offset"), MIN(time) AS since FROM messages WHERE channel = \#(channel.rawValue) GROUP BY epoch ORDER BY since"#,
            logger: logger
        )
        for try await (epoch, first, last, since) in rows.decode((String, Int64, Int64, Int64).self) {
            epochs.append(ArchivedEpoch(epoch: epoch, first: first, last: last, since: since))
        }
        return epochs
    }

    public func epoch(_ epoch: String, of channel: ChannelName) async throws -> ArchivedEpoch? {
        let name = channel.rawValue
        let rows = try await client.query(
            #"""
            (SELECT "offset", time FROM messages WHERE channel = \#(name) AND epoch = \#(epoch) ORDER BY "offset" LIMIT 1)
            UNION ALL
            (SELECT "offset", time FROM messages WHERE channel = \#(name) AND epoch = \#(epoch) ORDER BY "offset" DESC LIMIT 1)
            """#,
            logger: logger
        )
        var ends: [(offset: Int64, time: Int64)] = []
        for try await (offset, time) in rows.decode((Int64, Int64).self) { ends.append((offset, time)) }
        return ArchiveRows.epoch(epoch, ends: ends)
    }

    public func epoch(before epoch: String, startedAt time: Int64, of channel: ChannelName) async throws -> String? {
        let rows = try await client.query(
            #"SELECT epoch FROM messages WHERE channel = \#(channel.rawValue) AND time < \#(time) AND epoch <> \#(epoch) ORDER BY time DESC LIMIT 1"#,
            logger: logger
        )
        for try await found in rows.decode(String.self) { return found }
        return nil
    }

    public func search(_ words: String, in channel: ChannelName, limit: Int) async throws -> [Message] {
        guard let words = SearchWords.parse(words) else { return [] }
        let text = words.joined(separator: " ")
        return try await read(
            #"""
            SELECT epoch, "offset", time, kind, sender, name, data, edited, deleted, reactions FROM messages
            WHERE channel = \#(channel.rawValue) AND kind = 'm' AND NOT deleted AND search @@ plainto_tsquery('simple', \#(text))
            ORDER BY time DESC, "offset" DESC LIMIT \#(max(0, limit))
            """#,
            channel: channel
        )
    }

    public func forget(before time: Int64) async throws -> Int {
        var count = 0
        let rows = try await client.query(#"DELETE FROM messages WHERE time < \#(time) RETURNING "offset""#, logger: logger)
        for try await _ in rows.decode(Int64.self) { count += 1 }
        return count
    }

    public func close() async {
        running.cancel()
        _ = await running.value
    }
}
