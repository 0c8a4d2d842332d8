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

    /// Checks `token` (a JWT when it has a JWT's shape and a key is configured).
    func check(_ token: String?) async -> Outcome {
        guard let verifier, let token, JWTVerifier.looksLikeJWT(token) else {
            return requireLogin ? .refused(.required) : .anonymous
        }
        switch await verifier.verify(token, now: now()) {
        case .success(let signIn): return .signedIn(signIn)
        case .failure(let refusal): return .refused(refusal)
        }
    }

    /// Whether a token of this shape would be read as a JWT (else it is some other kind).
    func reads(_ token: String?) -> Bool {
        verifier != nil && token.map(JWTVerifier.looksLikeJWT) == true
    }
}
