import HTTPTypes
import Hummingbird
import Logging

/// What a request no route takes is answered: 405 with `Allow` for a path the server
/// serves with other methods (`GET /send/`, `PUT /api/mute`), 426 for a plain `GET /wb/`,
/// 404 for a path it does not serve. Each with a sentence a person can read instead of
/// an empty body, counted and logged (throttled) like every other refusal.
struct UnmatchedRequestAnswer: RouterMiddleware {
    typealias Context = ChatRequestContext

    /// Methods by path, as the router and the connection's own routes serve them.
    let methods: [String: [HTTPRequest.Method]]
    let gatekeeper: Gatekeeper
    let refusals: Refusals

    /// `/send/` and `/wb/` are answered before the router (``ChatChildChannel``); a request
    /// to them the connection did not take arrives here like any other.
    static let connectionRoutes: [String: [HTTPRequest.Method]] = ["/send/": [.post, .options], "/wb/": [.get]]

    init(routes: [Router<ChatRequestContext>.RouteDescription], gatekeeper: Gatekeeper, refusals: Refusals) {
        var methods = Self.connectionRoutes
        for route in routes { methods[route.path.description, default: []].append(route.method) }
        self.methods = methods
        self.gatekeeper = gatekeeper
        self.refusals = refusals
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && error.body == nil {
            // The router's own answer when nothing matched (a route's 404 says why).
            throw refusal(for: request, context: context)
        }
    }

    func refusal(for request: Request, context: Context) -> Refusal {
        let shown = String(request.uri.path.unicodeScalars.prefix(200))
        // As the router and `/send/` read it: empty segments do not count (`//send/`).
        let segments = request.uri.path.split(separator: "/", omittingEmptySubsequences: true)
        let path = "/" + segments.joined(separator: "/") + (request.uri.path.hasSuffix("/") && !segments.isEmpty ? "/" : "")
        let client = gatekeeper.clientAddress(peer: context.remoteAddress, forwardedFor: request.headers[values: .xForwardedFor])
        var refusal: Refusal
        let reason: String
        if path == "/wb/" || path == "/wb", request.method == .get || request.method == .head {
            // A plain request where a WebSocket belongs.
            refusal = Refusal(.upgradeRequired, "\(shown) takes WebSocket connections only (Upgrade: websocket).")
            refusal.headers[.upgrade] = "websocket"
            reason = "not_websocket"
        } else if let allowed = methods[path] ?? methods[path.hasSuffix("/") ? String(path.dropLast()) : path + "/"], !allowed.isEmpty {
            let names = Self.names(allowed)
            refusal = Refusal(.methodNotAllowed, "\(request.method) is not served at \(shown): it answers \(names.joined(separator: ", ")).")
            refusal.headers[.allow] = names.joined(separator: ", ")
            reason = "method_not_allowed"
        } else {
            refusal = Refusal(.notFound, "There is nothing at \(shown) on this server.")
            reason = "not_found"
        }
        refusals.record(
            "Refused a request no route serves", route: "unmatched", reason: reason, client: client, logger: context.logger,
            metadata: ["method": "\(request.method)", "path": "\(shown)"]
        )
        return refusal
    }

    /// The methods, GET's HEAD with it, each once, in a fixed order.
    static func names(_ methods: [HTTPRequest.Method]) -> [String] {
        var all = Set(methods.map(\.rawValue))
        if all.contains("GET") { all.insert("HEAD") }
        let order = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]
        return order.filter(all.contains) + all.subtracting(order).sorted()
    }
}
