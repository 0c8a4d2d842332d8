import Chat
import ChatArchive
import HTTPTypes
import Hummingbird
import NIOCore

/// `/healthz` and `/readyz`, for load balancers and orchestrators.
///
/// `/healthz` says the process answers (200 `ok`). `/readyz` says whether it can do its
/// job: 200 `ready` when the broker accepts publishes and every subscription is in
/// place, 503 with the reason otherwise (Redis unreachable, reconnecting, subscriptions
/// not yet confirmed, an archive that has taken nothing for 30 s). Take an instance out of rotation on 503, not on a failing
/// `/healthz`: a broker outage is the same for every instance.
struct HealthController: Sendable {
    let broker: any Broker
    /// With an archive: not ready while it has taken nothing for a while.
    var archiver: Archiver?

    func addRoutes(to router: Router<ChatRequestContext>) {
        router.get("/healthz") { _, _ in Self.text(.ok, "ok") }
        router.get("/readyz") { _, _ in
            if let reason = await broker.notReadyReason() { return Self.text(.serviceUnavailable, "not ready: \(reason)") }
            if let reason = archiver?.notReadyReason() { return Self.text(.serviceUnavailable, "not ready: \(reason)") }
            return Self.text(.ok, "ready")
        }
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status,
            headers: [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: body + "\n"))
        )
    }
}
