import Chat

/// Everything the server can be told at start.
public struct ChatConfiguration: Sendable {
    /// Which broker carries messages.
    public enum BrokerKind: String, Sendable, CaseIterable {
        /// Redis: any number of instances share channels (the default).
        case redis
        /// In-process: one instance, no Redis.
        case memory
    }

    /// Address to listen on.
    public var hostname = "127.0.0.1"
    /// Port to listen on; 0 picks a free one.
    public var port = 8000
    /// Which broker carries messages.
    public var broker = BrokerKind.redis
    /// Where Redis is, for the Redis broker.
    public var redisURL = "redis://127.0.0.1:6379"
    /// The channels shown as tabs on the page.
    public var channels: [ChannelName] = [ChannelName("channel_1")!, ChannelName("channel_2")!]
    /// Serve Public/ from this folder instead of the copy in the binary.
    public var publicDirectory: String?
    /// Largest message, in bytes of UTF-8, over `/send/` or a socket.
    public var maximumMessageSize = 64 * 1024
    /// How often the server pings each socket; a socket that misses a ping is closed at the next.
    public var pingInterval: Duration = .seconds(10)
    /// How long shutdown waits for sockets to close after telling them to go away.
    public var drainTimeout: Duration = .seconds(10)
    /// Messages kept per channel for resume and `/history`.
    public var historySize = HistoryPolicy.defaultSize
    /// Drop a channel (its history and offsets, in Redis or in memory) after this long
    /// without a message; `nil` keeps it forever.
    public var historyTTL: Duration? = HistoryPolicy.defaultTimeToLive
    /// How long a publish's `Idempotency-Key` is remembered.
    public var dedupeWindow = HistoryPolicy.defaultDedupeWindow
    /// How long after sending a person may edit their message (`--edit-window`).
    public var editWindow = HistoryPolicy.defaultEditWindow
    /// Where every message is kept for good (`--archive-url`): `postgres://…` or
    /// `sqlite:///path`; `nil`: only the broker's history.
    public var archiveURL: String?
    /// How long the archive keeps messages; `nil`: forever.
    public var archiveRetention: Duration?
    /// Messages a channel's broker history may hold while the archive has not taken them.
    public var archiveBacklog = HistoryPolicy.defaultArchiveBacklog
    /// How long an instance holds a channel it archives (tests shorten it).
    var archiveHold: Duration = .seconds(15)
    /// Most bytes of messages in one `/history` answer (at least one message is sent).
    public var maximumHistoryBytes = HistoryController.defaultMaximumBytes
    /// Bytes that may wait for one slow socket before its messages are dropped.
    public var socketQueueLimit = 1 << 20
    /// The least time between two writes to a socket under load: messages that arrive
    /// within it go out together, in one write per socket. A message that finds the
    /// hub idle for this long goes out at once. Zero writes as soon as possible.
    public var batchWindow: Duration = .milliseconds(2)
    /// permessage-deflate: messages at least this many bytes long are compressed (once,
    /// for every socket that negotiated it); `nil` turns the extension off.
    public var deflateMinimumSize: Int? = 256
    /// Connections held at once; past it a new one is answered 503 and closed. `nil`:
    /// the open-file limit less 100, so that the server refuses clearly instead of
    /// running out of descriptors.
    public var maximumConnections: Int?
    /// Connections sockets may not take, kept for plain HTTP (`POST /send/`, health,
    /// metrics) when the server is full of sockets; `nil`: 2% of the limit, at least 50.
    public var httpReserve: Int?
    /// Largest `/send/` request body; `nil`: room for the largest message percent-encoded
    /// (three times `maximumMessageSize`) plus 16 KiB for the other fields.
    public var maximumBodySize: Int?
    /// Addresses and CIDR ranges of proxies whose `X-Forwarded-For` names the client,
    /// e.g. `10.0.0.0/8, ::1`. Empty: the peer address is the client.
    public var trustedProxies = ""
    /// Origins (`https://chat.example.com`) allowed to open sockets and to publish from a
    /// browser; `nil`: any origin, as the original app allowed.
    public var allowedOrigins: [String]?
    /// When set, `/send/` needs `Authorization: Bearer <token>` (or the form field `token`).
    public var publishToken: String?
    /// A request with `Authorization: Bearer <api token>` is a trusted integration: exempt
    /// from the per-address publish and history rates, and from `--publish-token`.
    public var apiToken: String?
    /// When set, `/wb/` needs a token signed with this secret (`chatroom token
    /// --channel`). Kept for one release: JWTs (``jwtSecret``) replace it.
    public var connectSecret: String?
    /// Verifies HS256 JWTs from the site's login (at least 32 bytes); `chatroom token --sub` mints them.
    public var jwtSecret: String?
    /// PEM files of RS256 or ES256 public keys (or certificates) that verify JWTs.
    public var jwtPublicKeyFiles: [String] = []
    /// A JSON Web Key Set of the login's public keys, fetched and kept.
    public var jwksURL: String?
    /// The `iss` every JWT must have (the login's), if given.
    public var jwtIssuer: String?
    /// A name every JWT's `aud` must hold (this server's, at the login), if given.
    public var jwtAudience: String?
    /// Refuse anonymous people: every socket, `/send/` and `/history` needs a JWT.
    public var requireLogin = false
    /// Messages a second one client address may publish, and the burst above that rate;
    /// `nil`: no limit.
    public var sendRate: RateLimit? = RateLimit(rate: 20, burst: 40)
    /// `/history` reads a second one client address may make, and the burst above that
    /// rate; `nil`: no limit. The page reads one per other tab every 5 s, and more to
    /// fill a gap or load earlier messages.
    public var historyRate: RateLimit? = RateLimit(rate: 20, burst: 100)
    /// Messages a second one socket may send (chat.v1 pings included), and the burst;
    /// `nil`: no limit.
    public var socketMessageRate: RateLimit? = RateLimit(rate: 10, burst: 20)
    /// New channels one client address may create a minute (`rate` counts a minute here,
    /// not a second) by publishing, and the burst above that; `nil`: no limit.
    public var newChannelRate: RateLimit? = RateLimit(rate: 30, burst: 30)
    /// Sockets one client address may hold open.
    public var maximumSocketsPerAddress = 256
    /// Plain HTTP connections (not sockets) one client address may hold open.
    public var maximumConnectionsPerAddress = ConnectionBudget.defaultLimitPerAddress
    /// Channels with sockets on this instance at once.
    public var maximumChannels = 10_000
    /// Channels one chat.v2 socket (or one event stream) may subscribe to at once.
    public var maximumSubscriptions = 100
    /// How often an idle event stream (`GET /events`) gets a `: ping` comment, so that
    /// proxies keep its connection.
    public var eventStreamPing: Duration = .seconds(15)
    /// Connections the kernel may queue before the server accepts them (`listen(2)`'s
    /// backlog; Linux caps it at `net.core.somaxconn`). When every socket of an instance
    /// reconnects at once, 256 (the usual default) overflows, and the connections past
    /// it wait for the client's SYN to be sent again, 1 s, 3 s, 7 s … later.
    public var listenBacklog = 4096
    /// How long a client may take to send a request's head and body.
    public var requestTimeout: Duration = .seconds(10)
    /// Serve `/echo`, a WebSocket that sends every message back, for conformance tests
    /// (scripts/autobahn.sh). Never in production.
    public var testEchoRoute = false
    /// Serve `/metrics` on this port (on ``metricsHostname``) instead of the chat's port;
    /// `nil`: on the chat's port. 0 picks a free one.
    public var metricsPort: Int?
    /// Address of the separate metrics listener.
    public var metricsHostname = "127.0.0.1"
    /// Rooms with a cap of their own (`--channels support:50`): distinct identities, over every instance.
    public var channelCaps: [ChannelName: Int] = [:]
    /// What the page's tabs show for configured channels (`--channels name=label`); the
    /// id everywhere else.
    public var channelLabels: [ChannelName: String] = [:]
    /// The cap of every other room; `nil`: no limit. One-to-one rooms hold two.
    public var maximumMembers: Int?
    /// Signs the `uid` cookies; every instance must share it. `nil`: one kept in the
    /// broker (made by the first instance), so instances on one Redis agree.
    public var identitySecret: String?
    /// How long someone stays listed after their last socket closed.
    public var presenceGrace: Duration = .seconds(10)
    /// How often each channel's people are counted and told to chat.v1 sockets.
    public var presenceInterval: Duration = .seconds(1)
    /// How long a person counts without a refresh from their instance (a crashed
    /// instance's people stop counting after it); refreshed every third of it.
    public var presenceLifetime: Duration = .seconds(30)
    /// When set, the moderation API (`/api/delete`, `/api/mute`, `/api/ban`,
    /// `/api/slowmode`) takes `Authorization: Bearer <token>`; `nil`: it answers 404.
    public var adminToken: String?
    /// Slow mode (seconds) of rooms that have no setting of their own yet, set at start
    /// (`--slow-mode support:10`).
    public var slowModes: [ChannelName: Int] = [:]
    /// Identities (the ids of `uid` cookies) that moderate over chat.v2 (`--moderators`).
    public var moderators: Set<String> = []
    /// The page title.
    public var title = "Chatroom"

    /// The defaults.
    public init() {}

    /// The defaults, for those who state them (the command line's help).
    public static let defaults = ChatConfiguration()
}
