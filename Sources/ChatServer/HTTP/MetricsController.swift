import Chat
import Hummingbird
import NIOCore
import Prometheus

/// `GET /metrics`: the instance's metrics in Prometheus' text format.
///
/// Counters and the publish histogram are kept as things happen; the gauges of what is
/// open now (sockets, channels, connections) are read when scraped, so keeping them
/// costs nothing on the delivery path.
struct MetricsController: Sendable {
    let registry: PrometheusCollectorRegistry
    let metrics: ChatMetrics
    let hub: Hub
    let budget: ConnectionBudget

    /// The registry and metrics of one server, publish latency in buckets from 0.25 ms to 2.5 s.
    static func make() -> (PrometheusCollectorRegistry, ChatMetrics) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[ChatMetrics.publishDurationLabel] = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .milliseconds(2500),
        ]
        return (registry, ChatMetrics(factory: factory))
    }

    func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.get("/metrics") { _, _ in await self.scrape() }
    }

    func scrape() async -> Response {
        let counts = await hub.memberCounts()
        metrics.set("chatroom_websockets_open", to: counts.values.reduce(0, +))
        metrics.set("chatroom_channels_served", to: counts.count)
        metrics.set("chatroom_connections_open", to: budget.open)
        metrics.set("chatroom_connections_limit", to: budget.limit)
        metrics.set("chatroom_websockets_limit", to: budget.socketLimit)
        var bytes: [UInt8] = []
        registry.emit(into: &bytes)
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes))
        )
    }
}
