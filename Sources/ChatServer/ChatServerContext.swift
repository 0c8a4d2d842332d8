import Chat
import NIOCore

/// Everything a connection needs from the running server.
struct ChatServerContext: Sendable {
    struct Settings: Sendable {
        /// Largest message, in bytes, over `/send/` or a socket.
        var maximumMessageSize: Int
        /// Bytes that may wait for a slow reader before its messages are dropped.
        var socketQueueLimit: Int
        /// How long a client may take to send a request's head and body.
        var requestTimeout: Duration
        /// Serve the echo route `/echo` for WebSocket conformance tests.
        var echoRoute = false
        /// Channels one chat.v2 socket may subscribe to.
        var maximumSubscriptions = ChatConfiguration.defaults.maximumSubscriptions
        /// Identities that moderate over chat.v2.
        var moderators: Set<String> = []
        /// How often an idle event stream (`GET /events`) gets a `: ping` comment.
        var eventStreamPing: TimeAmount = .seconds(15)

        /// Largest chat.v2 frame: a `send` carries its text JSON-escaped, and an escape
        /// (`\u0041`) is at most six bytes for one byte of text; plus the other fields.
        var maximumChatV2FrameSize: Int { maximumMessageSize * 6 + 4096 }
    }

    var hub: Hub
    var broker: any Broker
    /// The first history reads of sockets and subscriptions, shared where exact.
    var reads: HistoryReads
    /// How far people have read channels, read together as subscriptions start.
    var readStates: ReadStates
    var settings: Settings
    /// Makes each event's frames once; knows whether permessage-deflate is on.
    var encoder: FrameEncoder
    /// Origins, tokens, rate limits and socket counts.
    var gatekeeper: Gatekeeper
    /// What the server counts.
    var metrics: ChatMetrics = .none
    /// Who is in each channel.
    var presence: PresenceTracker
    /// Who a browser is.
    var identities: Identities
    /// Room caps and private rooms.
    var rooms: RoomPolicy
    /// Counts refusals and logs them, throttled per address and reason.
    var refusals: Refusals
    /// Each room's mutes, bans and slow mode, as this instance knows them.
    var moderations = RoomModerations()
}
