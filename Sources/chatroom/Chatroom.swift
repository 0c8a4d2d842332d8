import ArgumentParser
import Chat
import ChatArchive
import ChatServer
import Foundation
import Hummingbird
import Logging

/// `chatroom`: the whole chat service in one binary.
@main
struct Chatroom: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatroom",
        abstract: "A real-time chat server: the chat page, POST /send/ and the WebSocket /wb/, in one binary.",
        discussion: """
            Messages posted to /send/ (form fields data and channel) reach every socket on /wb/ \
            whose channel matches, on every instance connected to the same Redis.

            Every flag can also be set in the environment: CHATROOM_ and its name in upper snake \
            case (--max-message-size: CHATROOM_MAX_MESSAGE_SIZE; a flag: true or false). A flag on \
            the command line beats the environment, which beats the default.
            """,
        version: BuildInfo.description,
        subcommands: [Token.self, Export.self]
    )

    @Option(help: "Address to listen on.")
    var hostname = ChatConfiguration.defaults.hostname

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = ChatConfiguration.defaults.port

    @Option(help: "Where messages go: 'redis' connects instances through Redis; 'memory' serves one instance without Redis.")
    var broker = ChatConfiguration.defaults.broker

    @Option(help: ArgumentHelp("Redis URL: redis://[user:password@]host:port[/db], unix:///path/to/redis.sock, or redis+cluster://host:port,host:port for a Redis Cluster (7.0+). Also read from $REDIS_URL.", valueName: "url"))
    var redisURL: String?

    @Option(help: ArgumentHelp("Channels shown as tabs on the page, comma separated; NAME:N caps a room at N people, NAME=LABEL shows LABEL on its tab (e.g. 'general,support:50=Support desk'). Also read from $CHATROOM_CHANNELS.", valueName: "names"))
    var channels: String?

    @Option(help: ArgumentHelp("People a room may hold (distinct browsers, over every instance) unless --channels gives its own cap; 0: no limit. One-to-one rooms hold two.", valueName: "count"))
    var maxMembers = 0

    @Option(help: ArgumentHelp("Signs the uid cookies that identify browsers; every instance must share it. Also read from $CHATROOM_IDENTITY_SECRET. Without it, one is made once and kept in Redis (or in memory with --broker memory).", valueName: "secret"))
    var identitySecret: String?

    @Option(help: ArgumentHelp("Seconds someone stays listed as online after their last socket closed, so a quick reconnect shows no leave.", valueName: "seconds"))
    var presenceGrace = Int(ChatConfiguration.defaults.presenceGrace / .seconds(1))

    @Option(help: ArgumentHelp("Serve the page's files from this folder instead of the copy inside the binary (for front-end work).", valueName: "dir"))
    var publicDir: String?

    @Option(help: ArgumentHelp("Largest message in bytes, over /send/ or a socket.", valueName: "bytes"))
    var maxMessageSize = ChatConfiguration.defaults.maximumMessageSize

    @Option(help: ArgumentHelp("Seconds between the server's pings to each socket; a socket that misses one is closed at the next.", valueName: "seconds"))
    var pingInterval = Int(ChatConfiguration.defaults.pingInterval / .seconds(1))

    @Option(help: ArgumentHelp("Seconds to wait for sockets to close on shutdown.", valueName: "seconds"))
    var drainTimeout = Int(ChatConfiguration.defaults.drainTimeout / .seconds(1))

    @Option(help: ArgumentHelp("Messages kept per channel, for resume and /history.", valueName: "count"))
    var historySize = ChatConfiguration.defaults.historySize

    @Option(help: ArgumentHelp("Drop a channel (its history and offsets) after this many seconds without a message; default 30 days; 0: keep it forever.", valueName: "seconds"))
    var historyTTL = Int((ChatConfiguration.defaults.historyTTL ?? .zero) / .seconds(1))

    @Option(help: ArgumentHelp("Seconds an Idempotency-Key is remembered: a repeat within it is answered like the first and publishes nothing.", valueName: "seconds"))
    var dedupeWindow = Int(ChatConfiguration.defaults.dedupeWindow / .seconds(1))

    @Option(help: ArgumentHelp("Seconds after sending during which a person may edit their message (chat.v2 'edit').", valueName: "seconds"))
    var editWindow = Int(ChatConfiguration.defaults.editWindow / .seconds(1))

    @Option(help: ArgumentHelp("Keep every message for good in a database: postgres://user:password@host:5432/db (several instances) or sqlite:///var/lib/chatroom/archive.db (one instance). The schema is made and migrated by the server. Also read from $CHATROOM_ARCHIVE_URL.", valueName: "url"))
    var archiveURL: String?

    @Option(help: ArgumentHelp("Days the archive keeps messages (0: forever).", valueName: "days"))
    var archiveRetention = 0

    @Option(help: ArgumentHelp("Messages a channel's Redis history may hold while the archive has not taken them (it is cut back to --history-size as they are archived); past it the oldest are dropped unarchived.", valueName: "count"))
    var archiveBacklog = ChatConfiguration.defaults.archiveBacklog

    @Option(help: ArgumentHelp("Most bytes of messages in one /history answer (at least one message is sent); the client asks again for the rest.", valueName: "bytes"))
    var maxHistoryBytes = ChatConfiguration.defaults.maximumHistoryBytes

    @Option(help: ArgumentHelp("Bytes that may wait for one slow socket before its messages are dropped.", valueName: "bytes"))
    var socketQueueLimit = ChatConfiguration.defaults.socketQueueLimit

    @Option(help: ArgumentHelp("Least milliseconds between two writes to a socket under load: what arrives meanwhile goes out in one write. A message after a quiet spell goes out at once. 0: write as soon as possible.", valueName: "ms"))
    var batchWindow = Int(ChatConfiguration.defaults.batchWindow / .milliseconds(1))

    @Option(help: ArgumentHelp("permessage-deflate: compress messages of at least this many bytes for sockets that ask for it (once per message, for all of them); 0 turns the extension off.", valueName: "bytes"))
    var deflateMinSize = ChatConfiguration.defaults.deflateMinimumSize ?? 0

    @Option(help: ArgumentHelp("Connections held at once; past it a new one is answered 503 and closed. Default: the open-file limit less 100.", valueName: "count"))
    var maxConnections: Int?

    @Option(help: ArgumentHelp("Connections sockets may not take, kept for plain requests (POST /send/, /history, health, metrics) when the server is full of sockets; one more socket: 503. Default: 2% of --max-connections, at least 50.", valueName: "count"))
    var httpReserve: Int?

    @Option(help: ArgumentHelp("Largest /send/ request body in bytes. Default: three times --max-message-size plus 16 KiB.", valueName: "bytes"))
    var maxBodySize: Int?

    @Option(help: ArgumentHelp("Messages a second one client address may publish (0: no limit); over it: 429 with Retry-After.", valueName: "rate"))
    var sendRate = ChatConfiguration.defaults.sendRate?.rate ?? 0

    @Option(help: ArgumentHelp("Messages one client address may publish at once above --send-rate.", valueName: "count"))
    var sendBurst = Int(ChatConfiguration.defaults.sendRate?.burst ?? 1)

    @Option(help: ArgumentHelp("/history reads a second one client address may make (0: no limit); over it: 429 with Retry-After.", valueName: "rate"))
    var historyRate = ChatConfiguration.defaults.historyRate?.rate ?? 0

    @Option(help: ArgumentHelp("/history reads one client address may make at once above --history-rate.", valueName: "count"))
    var historyBurst = Int(ChatConfiguration.defaults.historyRate?.burst ?? 1)

    @Option(help: ArgumentHelp("Messages a second one socket may send, pings included (0: no limit); over it: close 1008.", valueName: "rate"))
    var socketMessageRate = ChatConfiguration.defaults.socketMessageRate?.rate ?? 0

    @Option(help: ArgumentHelp("Messages one socket may send at once above --socket-message-rate.", valueName: "count"))
    var socketMessageBurst = Int(ChatConfiguration.defaults.socketMessageRate?.burst ?? 1)

    @Option(help: ArgumentHelp("New channels one client address may create a minute by posting to them (0: no limit); over it: 429.", valueName: "count"))
    var newChannelsPerMinute = Int(ChatConfiguration.defaults.newChannelRate?.rate ?? 0)

    @Option(help: ArgumentHelp("Sockets one client address may hold; over it: 503.", valueName: "count"))
    var maxSocketsPerAddress = ChatConfiguration.defaults.maximumSocketsPerAddress

    @Option(help: ArgumentHelp("Plain HTTP connections (not sockets) one peer address may hold; over it: 429. Trusted proxies are exempt.", valueName: "count"))
    var maxConnectionsPerAddress = ChatConfiguration.defaults.maximumConnectionsPerAddress

    @Option(help: ArgumentHelp("Channels with sockets on this instance at once; a socket on one more: 503.", valueName: "count"))
    var maxChannels = ChatConfiguration.defaults.maximumChannels

    @Option(help: ArgumentHelp("Channels one chat.v2 socket may subscribe to; one more is refused (4429) and the socket stays open.", valueName: "count"))
    var maxSubscriptions = ChatConfiguration.defaults.maximumSubscriptions

    @Option(help: ArgumentHelp("Seconds a client may take to send a request's head and body; slower: 408 and disconnected.", valueName: "seconds"))
    var requestTimeout = Int(ChatConfiguration.defaults.requestTimeout / .seconds(1))

    @Option(help: ArgumentHelp("Proxies whose X-Forwarded-For names the client: addresses or CIDR ranges, comma separated. X-Forwarded-For from anyone else is ignored.", valueName: "list"))
    var trustedProxies = ChatConfiguration.defaults.trustedProxies

    @Option(help: ArgumentHelp("Origins allowed to open sockets and publish from a browser, comma separated (e.g. https://chat.example.com), or * for any (the original's behaviour). Others: 403.", valueName: "list"))
    var allowedOrigins = "*"

    @Option(help: ArgumentHelp("Require 'Authorization: Bearer <token>' (or the form field 'token') on /send/. Also read from $CHATROOM_PUBLISH_TOKEN.", valueName: "token"))
    var publishToken: String?

    @Option(help: ArgumentHelp("A backend that sends 'Authorization: Bearer <token>' with this token is a trusted integration: exempt from the per-address publish and history rates (and from --publish-token), and its posts need no place in a capped room.", valueName: "token"))
    var apiToken: String?

    @Option(help: ArgumentHelp("Require a token signed with this secret on /wb/ (mint one with 'chatroom token --channel'). Kept for one release: JWTs replace it. Also read from $CHATROOM_CONNECT_SECRET.", valueName: "secret"))
    var connectSecret: String?

    @Option(help: ArgumentHelp("Sign people in with HS256 JWTs signed with this secret (at least 32 bytes; mint one with 'chatroom token --sub'). Also read from $CHATROOM_JWT_SECRET.", valueName: "secret"))
    var jwtSecret: String?

    @Option(help: ArgumentHelp("Sign people in with JWTs verified by this RS256 or ES256 public key (or certificate) in PEM; may be repeated.", valueName: "file"))
    var jwtPublicKey: [String] = []

    @Option(help: ArgumentHelp("Sign people in with JWTs verified by the keys of this JSON Web Key Set, fetched and kept, fetched again for a key it does not hold. Also read from $CHATROOM_JWKS_URL.", valueName: "url"))
    var jwksURL: String?

    @Option(help: ArgumentHelp("Sign-in: the iss every JWT must have (the login's, e.g. https://login.example.com/).", valueName: "issuer"))
    var jwtIssuer: String?

    @Option(help: ArgumentHelp("Sign-in: a name every JWT's aud must hold: this server's at the login. Give it with --jwks-url: the login's keys sign the tokens of every application it serves.", valueName: "audience"))
    var jwtAudience: String?

    @Flag(help: "Refuse anonymous people: sockets, /send/ and /history need a JWT (401 without one). A --publish-token holder still posts.")
    var requireLogin = false

    @Option(help: ArgumentHelp("Turn on the moderation API (/api/delete, /api/mute, /api/ban, /api/slowmode) for 'Authorization: Bearer <token>'. Also read from $CHATROOM_ADMIN_TOKEN. Without it the API answers 404.", valueName: "token"))
    var adminToken: String?

    @Option(help: ArgumentHelp("Slow mode at start: NAME:SECONDS (one message per person every SECONDS in that room), repeatable or comma separated, for rooms that have no slow mode set by a moderator yet. Also read from $CHATROOM_SLOW_MODE.", valueName: "name:seconds"))
    var slowMode: [String] = []

    @Option(help: ArgumentHelp("Identities (uid cookie ids, as shown in 'from' and in the members list) that moderate over chat.v2: delete anyone's message, mute, ban, slow a room down. Comma separated. Also read from $CHATROOM_MODERATORS.", valueName: "ids"))
    var moderators: String?

    @Flag(help: ArgumentHelp("Serve /echo, a WebSocket that echoes messages, for conformance tests only.", visibility: .private))
    var testEchoRoute = false

    @Option(help: ArgumentHelp("Serve /metrics on this port (on --metrics-hostname) instead of the chat's port.", valueName: "port"))
    var metricsPort: Int?

    @Option(help: ArgumentHelp("Address of the separate /metrics listener (with --metrics-port).", valueName: "address"))
    var metricsHostname = ChatConfiguration.defaults.metricsHostname

    @Option(help: "Log lines as text, or as one JSON object per line (text, json).")
    var logFormat: LogLineHandler.Format = .text

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535.") }
        guard maxMessageSize > 0 else { throw ValidationError("--max-message-size must be positive.") }
        guard pingInterval > 0 else { throw ValidationError("--ping-interval must be positive.") }
        guard historySize > 0 else { throw ValidationError("--history-size must be positive.") }
        guard historyTTL >= 0 else { throw ValidationError("--history-ttl cannot be negative.") }
        guard (0...36_500).contains(archiveRetention) else { throw ValidationError("--archive-retention must be between 0 and 36500 days.") }
        guard archiveBacklog >= historySize else { throw ValidationError("--archive-backlog must be at least --history-size.") }
        if let archiveURL, !(archiveURL.hasPrefix("postgres://") || archiveURL.hasPrefix("postgresql://") || archiveURL.hasPrefix("sqlite://")) {
            throw ValidationError("--archive-url must start with postgres:// or sqlite://.")
        }
        guard (1...10_000).contains(maxSubscriptions) else { throw ValidationError("--max-subscriptions must be between 1 and 10000.") }
        guard (1...86_400).contains(dedupeWindow) else { throw ValidationError("--dedupe-window must be between 1 and 86400 seconds.") }
        guard (0...31_536_000).contains(editWindow) else { throw ValidationError("--edit-window must be between 0 and 31536000 seconds.") }
        guard maxHistoryBytes >= 1024 else { throw ValidationError("--max-history-bytes must be at least 1024.") }
        guard newChannelsPerMinute >= 0 else { throw ValidationError("--new-channels-per-minute cannot be negative.") }
        guard maxConnectionsPerAddress >= 1 else { throw ValidationError("--max-connections-per-address must be positive.") }
        guard socketQueueLimit >= 1024 else { throw ValidationError("--socket-queue-limit must be at least 1024 bytes.") }
        guard (0...1000).contains(batchWindow) else { throw ValidationError("--batch-window must be between 0 and 1000 milliseconds.") }
        guard sendRate >= 0, historyRate >= 0, socketMessageRate >= 0 else { throw ValidationError("--send-rate, --history-rate and --socket-message-rate cannot be negative.") }
        guard sendBurst >= 1, historyBurst >= 1, socketMessageBurst >= 1 else { throw ValidationError("--send-burst, --history-burst and --socket-message-burst must be at least 1.") }
        guard maxSocketsPerAddress >= 1, maxChannels >= 1 else { throw ValidationError("--max-sockets-per-address and --max-channels must be positive.") }
        guard requestTimeout >= 1 else { throw ValidationError("--request-timeout must be at least 1 second.") }
        if let maxBodySize, maxBodySize < maxMessageSize { throw ValidationError("--max-body-size must be at least --max-message-size.") }
        guard allowedOrigins == "*" || !originList.isEmpty else { throw ValidationError("--allowed-origins: give origins like https://chat.example.com, or *.") }
        guard deflateMinSize >= 0 else { throw ValidationError("--deflate-min-size cannot be negative.") }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be positive.") }
        if let httpReserve, httpReserve < 0 { throw ValidationError("--http-reserve cannot be negative.") }
        if let metricsPort {
            guard (0...65535).contains(metricsPort) else { throw ValidationError("--metrics-port must be between 0 and 65535.") }
            guard metricsPort != port || metricsPort == 0 else { throw ValidationError("--metrics-port must differ from --port.") }
        }
        guard maxMembers >= 0 else { throw ValidationError("--max-members cannot be negative.") }
        guard (0...300).contains(presenceGrace) else { throw ValidationError("--presence-grace must be between 0 and 300 seconds.") }
        guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout cannot be negative.") }
        _ = try channelNames()
        _ = try slowModes()
        if let adminToken, adminToken.count < 16 { throw ValidationError("--admin-token must be at least 16 characters: it lets its holder ban people.") }
    }

    func run() async throws {
        let logLevel = self.logLevel
        let logFormat = self.logFormat
        LoggingSystem.bootstrap { label in
            var handler = LogLineHandler.standardError(label: label, format: logFormat)
            handler.logLevel = logLevel
            return handler
        }
        let logger = Logger(label: "chatroom")
        raiseFileLimit(logger: logger)
        var configuration = ChatConfiguration()
        configuration.hostname = hostname
        configuration.port = port
        configuration.broker = broker
        configuration.redisURL = redisURL ?? ProcessInfo.processInfo.environment["REDIS_URL"] ?? configuration.redisURL
        let rooms = try channelNames()
        configuration.channels = rooms.map(\.name)
        configuration.channelCaps = Dictionary(rooms.compactMap { room in room.cap.map { (room.name, $0) } }, uniquingKeysWith: { _, last in last })
        configuration.channelLabels = Dictionary(rooms.compactMap { room in room.label.map { (room.name, $0) } }, uniquingKeysWith: { _, last in last })
        configuration.maximumMembers = maxMembers > 0 ? maxMembers : nil
        configuration.presenceGrace = .seconds(presenceGrace)
        configuration.publicDirectory = publicDir
        configuration.maximumMessageSize = maxMessageSize
        configuration.pingInterval = .seconds(pingInterval)
        configuration.drainTimeout = .seconds(drainTimeout)
        configuration.historySize = historySize
        configuration.historyTTL = historyTTL > 0 ? .seconds(historyTTL) : nil
        configuration.dedupeWindow = .seconds(dedupeWindow)
        configuration.editWindow = .seconds(editWindow)
        configuration.maximumHistoryBytes = maxHistoryBytes
        configuration.archiveURL = archiveURL
        configuration.archiveRetention = archiveRetention > 0 ? .seconds(archiveRetention * 86_400) : nil
        configuration.archiveBacklog = archiveBacklog
        configuration.newChannelRate = newChannelsPerMinute > 0 ? RateLimit(rate: Double(newChannelsPerMinute), burst: Double(newChannelsPerMinute)) : nil
        configuration.maximumConnectionsPerAddress = maxConnectionsPerAddress
        configuration.socketQueueLimit = socketQueueLimit
        configuration.batchWindow = .milliseconds(batchWindow)
        configuration.maximumConnections = maxConnections
        configuration.httpReserve = httpReserve
        configuration.deflateMinimumSize = deflateMinSize > 0 ? deflateMinSize : nil
        configuration.maximumBodySize = maxBodySize
        configuration.testEchoRoute = testEchoRoute
        configuration.metricsPort = metricsPort
        configuration.metricsHostname = metricsHostname
        configuration.sendRate = sendRate > 0 ? RateLimit(rate: sendRate, burst: Double(sendBurst)) : nil
        configuration.historyRate = historyRate > 0 ? RateLimit(rate: historyRate, burst: Double(historyBurst)) : nil
        configuration.socketMessageRate = socketMessageRate > 0 ? RateLimit(rate: socketMessageRate, burst: Double(socketMessageBurst)) : nil
        configuration.maximumSocketsPerAddress = maxSocketsPerAddress
        configuration.maximumChannels = maxChannels
        configuration.maximumSubscriptions = maxSubscriptions
        configuration.requestTimeout = .seconds(requestTimeout)
        configuration.trustedProxies = trustedProxies
        configuration.allowedOrigins = allowedOrigins == "*" ? nil : originList
        let environment = ProcessInfo.processInfo.environment
        configuration.publishToken = publishToken ?? environment["CHATROOM_PUBLISH_TOKEN"]
        configuration.apiToken = apiToken ?? environment["CHATROOM_API_TOKEN"]
        configuration.connectSecret = connectSecret ?? environment["CHATROOM_CONNECT_SECRET"]
        configuration.jwtSecret = jwtSecret ?? environment["CHATROOM_JWT_SECRET"]
        configuration.jwtPublicKeyFiles = jwtPublicKey
        configuration.jwksURL = jwksURL ?? environment["CHATROOM_JWKS_URL"]
        configuration.requireLogin = requireLogin
        configuration.jwtIssuer = jwtIssuer
        configuration.jwtAudience = jwtAudience
        configuration.identitySecret = identitySecret ?? environment["CHATROOM_IDENTITY_SECRET"]
        configuration.adminToken = adminToken ?? environment["CHATROOM_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        configuration.slowModes = try slowModes()
        if let token = configuration.adminToken, token.count < 16 {
            throw ValidationError("--admin-token (or $CHATROOM_ADMIN_TOKEN) must be at least 16 characters: it lets its holder ban people.")
        }
        configuration.moderators = Set((moderators ?? environment["CHATROOM_MODERATORS"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        // An identity id: 15 base64url characters (as `from` and the members list show it).
        let idCharacters = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        if let wrong = configuration.moderators.first(where: { $0.count != 15 || !$0.allSatisfy(idCharacters.contains) }) {
            throw ValidationError("--moderators: '\(wrong.prefix(40))' is not an identity id (15 characters of A-Z a-z 0-9 - _, as shown in 'from').")
        }

        let application: any ApplicationProtocol
        do {
            application = try await buildApplication(configuration, logger: logger) { channel in
                let address = channel.localAddress.map { "\($0.ipAddress ?? hostname):\($0.port ?? port)" } ?? "\(hostname):\(port)"
                logger.info("Chatroom is serving", metadata: ["url": "http://\(address)/", "broker": "\(broker)"])
            }
        } catch let error as StartupError {
            FileHandle.standardError.write(Data("chatroom: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        try await application.runService()
    }

    /// Every socket is a file descriptor: raise the soft limit to the hard one and say so.
    private func raiseFileLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let soft = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        let raised = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0
        logger.info(
            "Open file limit",
            metadata: ["soft_was": "\(soft)", "soft": "\(raised ? limit.rlim_max : soft)", "hard": "\(limit.rlim_max)", "connections_at_most": "\((raised ? limit.rlim_max : soft) - 100) (the rest is kept for Redis and files)"]
        )
    }

    private var originList: [String] {
        allowedOrigins.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && $0 != "*" }
    }

    /// `--slow-mode` (or `$CHATROOM_SLOW_MODE`): `NAME:SECONDS` entries, the seconds after
    /// the last colon (names may hold colons).
    private func slowModes() throws -> [ChannelName: Int] {
        let given = slowMode.isEmpty ? [ProcessInfo.processInfo.environment["CHATROOM_SLOW_MODE"] ?? ""] : slowMode
        let entries = given.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var modes: [ChannelName: Int] = [:]
        for entry in entries {
            guard let colon = entry.lastIndex(of: ":"), let seconds = Int(entry[entry.index(after: colon)...]), (1...86_400).contains(seconds),
                let name = ChannelName(String(entry[..<colon]))
            else {
                throw ValidationError("--slow-mode: '\(entry.prefix(80))' must be NAME:SECONDS, a valid channel name and 1 to 86400 seconds (e.g. support:10).")
            }
            modes[name] = seconds
        }
        return modes
    }

    /// `--channels` (or `$CHATROOM_CHANNELS`): names, each with an optional `:N` cap
    /// (digits after the last colon) and an optional `=LABEL` shown on its tab.
    private func channelNames() throws -> [(name: ChannelName, cap: Int?, label: String?)] {
        let list = channels ?? ProcessInfo.processInfo.environment["CHATROOM_CHANNELS"] ?? ChatConfiguration.defaults.channels.map(\.rawValue).joined(separator: ",")
        let entries = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !entries.isEmpty else { throw ValidationError("--channels needs at least one channel name.") }
        return try entries.map { item in
            var entry = item
            var label: String?
            if let equals = item.firstIndex(of: "=") {
                let shown = item[item.index(after: equals)...].trimmingCharacters(in: .whitespaces)
                entry = item[..<equals].trimmingCharacters(in: .whitespaces)
                guard !shown.isEmpty, shown.count <= 64, MessageText.problem(with: shown) == nil, !shown.contains(where: \.isNewline) else {
                    throw ValidationError("--channels: the label of '\(entry.prefix(80))' must be 1–64 characters without control characters.")
                }
                label = shown
            }
            var name = entry
            var cap: Int?
            if let colon = entry.lastIndex(of: ":"), let number = Int(entry[entry.index(after: colon)...]) {
                guard number > 0 else { throw ValidationError("--channels: '\(entry.prefix(80))' has a cap of \(number); a cap must be at least 1.") }
                name = String(entry[..<colon])
                cap = number
            }
            do throws(ChannelNameError) {
                return (try ChannelName(validating: name), cap, label)
            } catch {
                throw ValidationError("--channels: '\(name.prefix(80))' is not valid: \(error.reason).")
            }
        }
    }
}

extension ChatConfiguration.BrokerKind: ExpressibleByArgument {}
extension LogLineHandler.Format: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `chatroom token`: mints a sign-in JWT (`--sub`, with `--jwt-secret`), or a connect
/// token for a server started with `--connect-secret`.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a signed, expiring token: a sign-in JWT for a person (--sub), or a connect token (for servers run with --connect-secret).",
        discussion: """
            A client passes it as /wb/?token=… (or 'Authorization: Bearer …'); the page passes the token from its own address: /?token=…
            With --sub, the token is an HS256 JWT signed with the server's --jwt-secret (--secret or $CHATROOM_JWT_SECRET); \
            without, a connect token signed with --connect-secret (--secret or $CHATROOM_CONNECT_SECRET).
            """
    )

    @Option(help: ArgumentHelp("Sign-in: who the person is (the JWT's sub).", valueName: "id"))
    var sub: String?

    @Option(help: ArgumentHelp("Sign-in: the name they show (nobody else can take it).", valueName: "name"))
    var name: String?

    @Option(help: ArgumentHelp("Sign-in: 'moderator' lets them delete anyone's messages, mute, ban and slow rooms down.", valueName: "role"))
    var role: String?

    @Option(help: ArgumentHelp("Sign-in: the rooms they may use, comma separated; a name ending in * is a prefix. Without it, every room.", valueName: "names"))
    var channels: String?

    @Option(help: ArgumentHelp("Connect token: the channel it opens; without it, every channel.", valueName: "name"))
    var channel: String?

    @Option(help: ArgumentHelp("How long the token is valid: seconds, or a number with s, m, h or d (e.g. 90s, 15m, 1h, 7d).", valueName: "duration"))
    var ttl = "1h"

    @Option(help: ArgumentHelp("The server's --jwt-secret (with --sub) or --connect-secret. Also read from $CHATROOM_JWT_SECRET or $CHATROOM_CONNECT_SECRET.", valueName: "secret"))
    var secret: String?

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let seconds = Self.seconds(in: ttl), seconds > 0 else {
            throw ValidationError("--ttl: '\(ttl)' is not a duration like 90s, 15m, 1h or 7d.")
        }
        let expiry = Int64(Date().timeIntervalSince1970) + seconds
        if let sub {
            guard let secret = secret ?? environment["CHATROOM_JWT_SECRET"], secret.utf8.count >= 32 else {
                throw ValidationError("Give the server's --jwt-secret (at least 32 bytes) with --secret or $CHATROOM_JWT_SECRET.")
            }
            if let role, role != "moderator" { throw ValidationError("--role: the one role is 'moderator'.") }
            let rooms = channels.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            let token = SignInToken(subject: sub, name: name, moderator: role == "moderator", channels: rooms, expiry: expiry)
            if let problem = token.problem { throw ValidationError(problem) }
            print(token.signed(with: secret))
            return
        }
        guard name == nil, role == nil, channels == nil else { throw ValidationError("--name, --role and --channels make a sign-in token: give --sub too.") }
        guard let secret = secret ?? environment["CHATROOM_CONNECT_SECRET"], !secret.isEmpty else {
            throw ValidationError("Give the server's secret with --secret or $CHATROOM_CONNECT_SECRET (or --sub for a sign-in token).")
        }
        if let channel, ChannelName(channel) == nil {
            throw ValidationError("--channel: '\(channel)' is not a valid channel name (1-64 of A-Z a-z 0-9 _ . : -).")
        }
        print(ConnectToken(channel: channel, expiry: expiry).signed(with: secret))
    }

    static func seconds(in text: String) -> Int64? {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last.flatMap({ units[$0] }) { return Int64(text.dropLast()).map { $0 * unit } }
        return Int64(text)
    }
}

/// `chatroom export`: a channel's archived messages as a transcript.
struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a channel's archived messages, every epoch, oldest first, as JSON lines or CSV (to standard output).",
        discussion: "Each message in its final state: edited text, reactions; a deleted one without its words. Changes are not lines of their own."
    )

    @Option(help: ArgumentHelp("The archive: postgres://… or sqlite:///path, as the server's --archive-url. Also read from $CHATROOM_ARCHIVE_URL.", valueName: "url"))
    var archiveURL: String?

    @Option(help: ArgumentHelp("The channel.", valueName: "name"))
    var channel: String

    @Option(help: ArgumentHelp("Only messages from this date (2026-12-01, UTC) or time (2026-12-01T10:00:00Z) on.", valueName: "date"))
    var since: String?

    @Option(help: ArgumentHelp("jsonl (one /history message object a line) or csv.", valueName: "format"))
    var format = "jsonl"

    func run() async throws {
        guard let url = archiveURL ?? ProcessInfo.processInfo.environment["CHATROOM_ARCHIVE_URL"] else {
            throw ValidationError("Name the archive: --archive-url postgres://… or sqlite:///path (or $CHATROOM_ARCHIVE_URL).")
        }
        let name: ChannelName
        do {
            name = try ChannelName(validating: channel)
        } catch {
            throw ValidationError("--channel: \(error.reason).")
        }
        guard let format = Transcript.Format(rawValue: format) else { throw ValidationError("--format must be jsonl or csv.") }
        var from: Int64?
        if let since {
            guard let parsed = Transcript.parseSince(since) else { throw ValidationError("--since must be a date (2026-12-01) or a time (2026-12-01T10:00:00Z, or with an offset: 2026-12-01T11:00:00+01:00); '\(since)' is neither, or out of range.") }
            from = parsed
        }
        // A transcript reads: a SQLite file that is not there is not made.
        if url.hasPrefix("sqlite://"), !FileManager.default.fileExists(atPath: String(url.dropFirst("sqlite://".count))) {
            throw ValidationError("--archive-url: there is no archive at \(url.dropFirst("sqlite://".count)).")
        }
        let archive: any Archive
        do {
            archive = try Archives.open(url: url)
        } catch {
            throw ValidationError("--archive-url: \(error.description)")
        }
        struct OutputClosed: Error {}
        do {
            _ = try await Transcript.write(name, from: archive, since: from, format: format) { line in
                // A reader that went away (`| head`) ends the transcript, quietly.
                do {
                    try FileHandle.standardOutput.write(contentsOf: Data(line.utf8))
                } catch {
                    throw OutputClosed()
                }
            }
        } catch is OutputClosed {
            await archive.close()
            return
        } catch {
            await archive.close()
            FileHandle.standardError.write(Data("chatroom export: the archive could not be read: \(error)\n".utf8))
            throw ExitCode(1)
        }
        await archive.close()
    }
}
