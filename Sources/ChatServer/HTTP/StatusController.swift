import Chat
import Foundation
import Hummingbird
import Mustache
import NIOConcurrencyHelpers
import NIOCore

/// Messages reaching this instance, per second, over the last minute.
final class MessageRate: Sendable {
    private struct Buckets {
        var counts = [Int](repeating: 0, count: 60)
        var seconds = [Int64](repeating: -1, count: 60)
    }

    private let buckets = NIOLockedValueBox(Buckets())

    /// Counts the messages among `events`, at the current second.
    func record(_ events: [ChatEvent]) {
        let count = events.reduce(0) { $0 + ($1.message == nil ? 0 : 1) }
        guard count > 0 else { return }
        let second = Self.now()
        buckets.withLockedValue { buckets in
            let index = Int(second % 60)
            if buckets.seconds[index] != second {
                buckets.seconds[index] = second
                buckets.counts[index] = 0
            }
            buckets.counts[index] += count
        }
    }

    /// The 60 whole seconds before the current one, oldest first.
    func lastMinute() -> [Int] {
        let now = Self.now()
        return buckets.withLockedValue { buckets in
            ((now - 60)..<now).map { second in
                let index = Int(second % 60)
                return buckets.seconds[index] == second ? buckets.counts[index] : 0
            }
        }
    }

    private static func now() -> Int64 {
        Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000_000)
    }
}

/// `GET /status`: a small page for operators, in the chat page's style: this
/// instance, its broker and whether it is ready, sockets per channel, and messages a
/// second over the last minute. It refreshes itself every 5 s.
struct StatusController: Sendable {
    let template: MustacheTemplate
    let instance: String
    let broker: any Broker
    let hub: Hub
    let rate: MessageRate
    let started = Date()

    init(template: String, instance: String, broker: any Broker, hub: Hub, rate: MessageRate) throws {
        self.template = try MustacheTemplate(string: template)
        self.instance = instance
        self.broker = broker
        self.hub = hub
        self.rate = rate
    }

    func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.get("/status") { _, _ in await self.page() }
    }

    func page() async -> Response {
        let notReady = await broker.notReadyReason()
        let counts = await hub.memberCounts().sorted { ($0.value, $1.key.rawValue) > ($1.value, $0.key.rawValue) }
        let perSecond = rate.lastMinute()
        let html = template.render([
            "instance": instance,
            "broker": broker.description,
            "ready": notReady == nil,
            "state": notReady.map { "not ready: \($0)" } ?? "ready",
            "uptime": Self.describe(Date().timeIntervalSince(started)),
            "sockets": counts.reduce(0) { $0 + $1.value },
            "channelCount": counts.count,
            "channels": counts.prefix(100).map { ["name": $0.key.rawValue, "sockets": $0.value] },
            "moreChannels": max(0, counts.count - 100),
            "sparkline": Self.sparkline(perSecond),
            "lastSecond": perSecond.last ?? 0,
            "peak": perSecond.max() ?? 0,
            "average": String(format: "%.1f", Double(perSecond.reduce(0, +)) / 60),
        ] as [String: Any])
        return Response(
            status: .ok,
            headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: html))
        )
    }

    /// Points of an SVG polyline 300 × 60 for the values, scaled to their peak.
    static func sparkline(_ values: [Int]) -> String {
        let peak = max(1, values.max() ?? 1)
        let step = 300.0 / Double(max(1, values.count - 1))
        return values.enumerated().map { index, value in
            String(format: "%.1f,%.1f", Double(index) * step, 58 - 56 * Double(value) / Double(peak))
        }.joined(separator: " ")
    }

    static func describe(_ seconds: TimeInterval) -> String {
        let whole = Int(seconds)
        if whole < 120 { return "\(whole) s" }
        if whole < 7200 { return "\(whole / 60) min" }
        return "\(whole / 3600) h \(whole % 3600 / 60) min"
    }

    /// This instance's name on the status page: host, port and a random suffix.
    static func makeInstanceID(port: Int) -> String {
        "\(ProcessInfo.processInfo.hostName):\(port)-" + String(UInt32.random(in: .min ... .max), radix: 16)
    }
}
