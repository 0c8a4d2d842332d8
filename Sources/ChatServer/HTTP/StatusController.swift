import Chat
import Foundation
import Hummingbird
import Mustache
import NIOConcurrencyHelpers
import NIOCore

/// `GET /status`: a small page for operators, in the chat page's style: this
/// instance, its broker and whether it is ready, sockets per channel, and messages a
/// second over the last minute. It refreshes itself every 5 s.
///
/// It names the host and the broker's address, so it is an operator's page: served on
/// the metrics listener (`--metrics-port`), or on the chat's port only to requests with
/// the publish token (`requiredToken`). One-to-one rooms and inboxes are never listed by
/// name (that would tell who talks to whom): they are counted on one line each.
struct StatusController: Sendable {
    let template: MustacheTemplate
    let instance: String
    let broker: any Broker
    let hub: Hub
    let rate: MessageRate
    /// On the chat's port: the token a request must bear; `nil` on the metrics listener.
    var requiredToken: String?
    let started = Date()

    init(template: String, instance: String, broker: any Broker, hub: Hub, rate: MessageRate, requiredToken: String? = nil) throws {
        self.requiredToken = requiredToken
        self.template = try MustacheTemplate(string: template)
        self.instance = instance
        self.broker = broker
        self.hub = hub
        self.rate = rate
    }

    /// Serves the page on a router of the metrics listener (no token needed).
    func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.get("/status") { _, _ in await self.page() }
    }

    /// Serves the page on the chat's port: only with the publish token, and not at all
    /// when there is none.
    func addGuardedRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.get("/status") { request, _ in
            guard let token = requiredToken else {
                throw Refusal(
                    .notFound,
                    "The status page is served on the metrics listener (--metrics-port), or here with the publish token (--publish-token)."
                )
            }
            guard let given = Gatekeeper.bearerToken(request.headers[.authorization]),
                HMACSHA256.constantTimeEqual(Array(given.utf8), Array(token.utf8))
            else {
                throw Refusal(
                    .unauthorized, "The status page needs the publish token: send 'Authorization: Bearer <token>'.",
                    headers: [.wwwAuthenticate: #"Bearer realm="chatroom""#]
                )
            }
            return await self.page()
        }
    }

    /// Sockets per room, private rooms folded into one line per kind.
    static func listing(_ counts: [ChannelName: Int]) -> [(name: String, sockets: Int)] {
        var rooms: [(name: String, sockets: Int)] = []
        var oneToOne = (rooms: 0, sockets: 0)
        var inboxes = (rooms: 0, sockets: 0)
        for (channel, sockets) in counts {
            if channel.rawValue.hasPrefix("dm:") {
                oneToOne.rooms += 1
                oneToOne.sockets += sockets
            } else if channel.rawValue.hasPrefix(RoomPolicy.inboxPrefix) {
                inboxes.rooms += 1
                inboxes.sockets += sockets
            } else {
                rooms.append((channel.rawValue, sockets))
            }
        }
        rooms.sort { ($0.sockets, $1.name) > ($1.sockets, $0.name) }
        if oneToOne.rooms > 0 { rooms.append(("(\(oneToOne.rooms) one-to-one room\(oneToOne.rooms == 1 ? "" : "s"))", oneToOne.sockets)) }
        if inboxes.rooms > 0 { rooms.append(("(\(inboxes.rooms) inbox\(inboxes.rooms == 1 ? "" : "es"))", inboxes.sockets)) }
        return rooms
    }

    func page() async -> Response {
        let notReady = await broker.notReadyReason()
        let counts = Self.listing(await hub.memberCounts())
        let perSecond = rate.lastMinute()
        let html = template.render([
            "instance": instance,
            "broker": broker.description,
            "ready": notReady == nil,
            "state": notReady.map { "not ready: \($0)" } ?? "ready",
            "uptime": Self.describe(Date().timeIntervalSince(started)),
            "sockets": counts.reduce(0) { $0 + $1.sockets },
            "channelCount": counts.count,
            "channels": counts.prefix(100).map { ["name": $0.name, "sockets": $0.sockets] },
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
