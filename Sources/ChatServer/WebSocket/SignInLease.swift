import Logging
import NIOCore

/// A signed-in socket's token, from its upgrade or its last `refresh`: the socket is
/// closed (4401 `Token expired`) once the token has expired — its `exp` plus the leeway
/// every check allows — unless a newer token of the same person came first.
///
/// Used on the socket's event loop only.
final class SignInLease {
    private(set) var signIn: SignIn
    private var expiry: Scheduled<Void>?
    private var expired: (() -> Void)?
    private let logins: Logins

    init(_ signIn: SignIn, logins: Logins) {
        self.signIn = signIn
        self.logins = logins
    }

    /// Calls `expired` when the token expires (at once if it has).
    func start(on eventLoop: any EventLoop, expired: @escaping () -> Void) {
        self.expired = expired
        schedule(on: eventLoop)
    }

    private func schedule(on eventLoop: any EventLoop) {
        expiry?.cancel()
        expiry = nil
        guard let expired else { return }
        let seconds = max(0, signIn.expiry + JWTRules.leeway - logins.now())
        expiry = eventLoop.assumeIsolated().scheduleTask(in: .seconds(seconds)) { expired() }
    }

    /// Checks a newer token; the same person's replaces the old one (and its expiry).
    func refresh(_ token: String, on eventLoop: any EventLoop) -> EventLoopFuture<Result<SignIn, TokenRefusal>>.Isolated {
        let logins = self.logins
        return eventLoop.makeFutureWithTask { await logins.check(token) }.assumeIsolated().map { outcome in
            switch outcome {
            case .signedIn(let newer) where newer.identity == self.signIn.identity:
                self.signIn = newer
                self.schedule(on: eventLoop)
                return .success(newer)
            case .signedIn:
                return .failure(.malformed("it is for someone else than this socket's person"))
            case .refused(let refusal):
                return .failure(refusal)
            case .anonymous:
                return .failure(.malformed("it is not a JWT"))
            }
        }
    }

    /// The socket closed: no expiry is called.
    func end() {
        expiry?.cancel()
        expiry = nil
        expired = nil
    }
}

extension WebSocketEndpoint {
    /// The socket's token expired: 4401 `Token expired`, counted and logged.
    func closeForExpiredToken(context: ChannelHandlerContext) {
        close(.identityRequired, "Token expired", context: context, refusal: "token_expired", log: "Closing a WebSocket whose token expired")
    }

    /// Tells the client how its `refresh` went: `refreshed`, or an `error` saying why not
    /// (and logged, throttled, as a refusal).
    func answer(refresh result: Result<SignIn, TokenRefusal>, context: ChannelHandlerContext) {
        switch result {
        case .success(let signIn):
            context.writeAndFlush(wrapOutboundOut(ChatV1.refreshed(expires: signIn.expiry)), promise: nil)
        case .failure(let refusal):
            closing.refusals.record(
                "Refused a token refresh", route: "socket", reason: "unauthorized", client: closing.client, logger: closing.logger,
                metadata: ["reason": "\(refusal.description)"]
            )
            context.writeAndFlush(wrapOutboundOut(ChatV1.error(refusal.description + " The socket keeps its old token.")), promise: nil)
        }
    }
}
