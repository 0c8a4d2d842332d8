import CoreMetrics

/// What one server instance counts, through swift-metrics.
///
/// Every metric is made with the factory given at start, not the global
/// `MetricsSystem`, so that several instances in one process (the tests) keep their
/// own numbers. The hot path only increments counters made here once; metrics with a
/// reason are made on the spot, which costs a dictionary lookup in the backend and is
/// kept for rare events (refusals, drops, reconnects).
///
/// Names follow Prometheus' conventions (`_total` for counters, base units); the list
/// with their meaning is in docs/OPERATIONS.md. A class: every socket holds it, and one
/// reference costs 8 bytes where the values would cost about 70.
public final class ChatMetrics: Sendable {
    /// Why messages did not reach a socket.
    public enum DropReason: String, Sendable {
        /// A slow reader was over its queue limit.
        case slowReader = "slow_reader"
        /// An envelope from Redis could not be read.
        case malformed
        /// Offsets no longer in the history when this instance came to fill a hole.
        case historyGap = "history_gap"
        /// A message whose offset Redis handed out again after losing writes this
        /// instance had delivered (see ``RedisBroker``'s fence).
        case offsetReused = "offset_reused"
    }

    /// The backend every metric is made with.
    public let factory: any MetricsFactory
    private let published: Counter
    private let delivered: Counter
    private let publishDuration: Timer

    /// Metrics that go nowhere.
    public static let none = ChatMetrics(factory: NOOPMetricsHandler.instance)

    /// Makes the metrics with `factory`.
    public init(factory: any MetricsFactory) {
        self.factory = factory
        published = Counter(label: "chatroom_messages_published_total", factory: factory)
        delivered = Counter(label: "chatroom_messages_delivered_total", factory: factory)
        publishDuration = Timer(label: Self.publishDurationLabel, factory: factory)
    }

    /// The name of the publish latency histogram, for backends that take buckets per name.
    public static let publishDurationLabel = "chatroom_publish_duration_seconds"

    /// Counts a message the broker accepted from this instance, and how long it took.
    public func published(inNanoseconds nanoseconds: Int64) {
        published.increment()
        publishDuration.recordNanoseconds(nanoseconds)
    }

    /// Counts messages handed to sockets: one per message and socket.
    public func delivered(_ count: Int) {
        delivered.increment(by: count)
    }

    /// Counts `count` messages that did not reach a socket.
    public func dropped(_ reason: DropReason, count: Int = 1) {
        Counter(label: "chatroom_messages_dropped_total", dimensions: [("reason", reason.rawValue)], factory: factory)
            .increment(by: count)
    }

    /// Counts messages (and changes) this instance wrote into the archive
    /// (`chatroom_archive_messages_total`).
    public func archived(_ count: Int) {
        Counter(label: "chatroom_archive_messages_total", factory: factory).increment(by: count)
    }

    /// Counts messages the broker let go before the archive took them
    /// (`chatroom_archive_lost_messages_total`): the archive was away longer than
    /// `--archive-backlog` covers, or Redis lost them.
    public func lostToArchive(_ count: Int) {
        Counter(label: "chatroom_archive_lost_messages_total", factory: factory).increment(by: count)
    }

    /// Counts a socket or subscription whose first history read was served by another's
    /// (`chatroom_history_reads_shared_total`): reads Redis did not have to do.
    public func historyReadShared() {
        Counter(label: "chatroom_history_reads_shared_total", factory: factory).increment()
    }

    /// Counts a socket that went over its queue limit.
    public func queueOverflow(protocol name: String) {
        Counter(label: "chatroom_queue_overflows_total", dimensions: [("protocol", name)], factory: factory).increment()
    }

    /// Counts a refused request, upgrade, connection or frame.
    /// - Parameters:
    ///   - route: `/send/`, `/history`, `/wb/` (upgrade), `socket` (after the upgrade) or `connection`.
    ///   - reason: one word from a short fixed list, e.g. `rate_limited`; see ``reason(status:)``.
    public func refused(route: String, reason: String) {
        Counter(label: "chatroom_refusals_total", dimensions: [("route", route), ("reason", reason)], factory: factory).increment()
    }

    /// Counts a moderation action carried out (`chatroom_moderation_actions_total`):
    /// `delete`, `mute`, `ban`, `unban` or `slowmode`.
    public func moderated(action: String) {
        Counter(label: "chatroom_moderation_actions_total", dimensions: [("action", action)], factory: factory).increment()
    }

    /// The refusal reason an HTTP status stands for.
    public static func reason(status: Int) -> String {
        switch status {
        case 400: "bad_request"
        case 401: "unauthorized"
        case 403: "forbidden"
        case 404: "not_found"
        case 408: "timeout"
        case 413: "too_large"
        case 429: "rate_limited"
        case 503: "unavailable"
        default: status >= 500 ? "failed" : "refused"
        }
    }

    /// Records a Redis connection going up or down; `reconnected` counts an up that
    /// follows a loss.
    public func redisConnection(_ name: String, node: String, connected: Bool, reconnected: Bool = false) {
        let dimensions = [("connection", name), ("node", node)]
        Gauge(label: "chatroom_redis_connected", dimensions: dimensions, factory: factory).record(connected ? 1 : 0)
        if reconnected {
            Counter(label: "chatroom_redis_reconnects_total", dimensions: dimensions, factory: factory).increment()
        }
    }

    /// Sets a gauge read at scrape time.
    public func set(_ label: String, to value: Int) {
        Gauge(label: label, factory: factory).record(value)
    }
}
