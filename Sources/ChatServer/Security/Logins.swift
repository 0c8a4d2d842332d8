import Foundation

/// Whether a request or socket is a person the site signed in, from the token it
/// brought: a JWT checked by ``JWTVerifier``, else anonymous (its `uid` cookie), unless
/// `--require-login`.
struct Logins: Sendable {
    /// `nil`: no JWT key configured; every token is some other kind (connect, publish).
    var verifier: JWTVerifier?
    /// Anonymous people are refused (401).
    var requireLogin = false
    /// For tests: the clock, in Unix seconds.
    var now: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }

    static let none = Logins()

    enum Outcome: Sendable, Equatable {
        case anonymous
        case signedIn(SignIn)
        case refused(TokenRefusal)

        var signIn: SignIn? {
            if case .signedIn(let signIn) = self { return signIn }
            return nil
        }
    }

    /// Checks `token`: with a JWT key configured, a token is a JWT, or refused as
    /// malformed unless `othersAccepted` (a connect token is read there too).
    func check(_ token: String?, othersAccepted: Bool = false) async -> Outcome {
        guard let verifier, let token else { return requireLogin ? .refused(.required) : .anonymous }
        guard JWTVerifier.looksLikeJWT(token) else {
            if othersAccepted { return requireLogin ? .refused(.required) : .anonymous }
            return .refused(.malformed("it is not a JWT (three base64url parts separated by dots)"))
        }
        switch await verifier.verify(token, now: now()) {
        case .success(let signIn): return .signedIn(signIn)
        case .failure(let refusal): return .refused(refusal)
        }
    }

    /// Whether a request with `token` must go through ``check(_:othersAccepted:)``: it
    /// is refused, or signs someone in, or is anonymous only where anonymous is allowed.
    func mustCheck(_ token: String?, othersAccepted: Bool) -> Bool {
        requireLogin || (verifier != nil && token.map { JWTVerifier.looksLikeJWT($0) || !othersAccepted } == true)
    }

    /// Whether a token of this shape would be read as a JWT (else it is some other kind).
    func reads(_ token: String?) -> Bool {
        verifier != nil && token.map(JWTVerifier.looksLikeJWT) == true
    }
}
