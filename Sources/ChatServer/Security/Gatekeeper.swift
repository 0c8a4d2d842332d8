import Chat
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// What the server checks before it publishes a message or opens a socket: client
/// addresses behind trusted proxies, origins, tokens, rate limits, and how many sockets
/// one address and how many channels one instance may have.
///
/// Every refusal it causes has a status (or close code), a message a person can read and
/// a log line; see docs/PROTOCOL.md and the README's Security section.
final class Gatekeeper: Sendable {
    struct Settings: Sendable {
        var trustedProxies = TrustedProxies.none
        /// `nil`: any origin, as the original app allowed.
        var allowedOrigins: Set<String>?
        var publishToken: String?
        /// Trusted integrations (`--api-token`): exempt from the per-address rates.
        var apiToken: String?
        var connectSecret: String?
        /// Messages a second per client address on `/send/` (and its burst); `nil`: no limit.
        var sendRate: RateLimit?
        /// Reads a second per client address on `/history` (and its burst); `nil`: no limit.
        var historyRate: RateLimit?
        /// Messages a second one socket may send (and its burst); `nil`: no limit.
        var socketMessageRate: RateLimit?
        /// New channels a minute (not a second) per client address, and the burst; `nil`: no limit.
        var newChannelRate: RateLimit?
        var maximumSocketsPerAddress = Int.max
        var maximumChannels = Int.max
    }

    let settings: Settings
    private let sendLimiter: RateLimiter?
    private let historyLimiter: RateLimiter?
    private let newChannelLimiter: RateLimiter?
    private let sockets = NIOLockedValueBox(SocketCounts())
    /// One `typing` relayed per person per room every 2 s: the page sends one every 2 s
    /// while keys are pressed, and the frames it shows last 5 s.
    private let typingLimiter = RateLimiter(rate: 0.5, burst: 1)
    /// And at most 5 a second from one address (10 at once), however many sockets, each
    /// a person of its own, it holds.
    private let addressTypingLimiter = RateLimiter(rate: 5, burst: 10)

    /// Whether `identity`'s `typing` in `channel`, from `client`, is relayed now (else it
    /// is dropped).
    func mayRelayTyping(_ identity: String, in channel: ChannelName, from client: String) -> Bool {
        typingLimit(identity, in: channel, from: client) == nil
    }

    /// Which limit a typing notice is over, if any (the notice is relayed when none).
    enum ActivityLimit: Sendable {
        /// The person's, in that room.
        case person(wait: TimeAmount)
        /// The address's, over all its people.
        case address(wait: TimeAmount)
    }

    /// ``mayRelayTyping(_:in:from:)``, saying which limit refuses: the person's is looked
    /// at first and taken last, so that a notice the address refuses costs the person nothing.
    func typingLimit(_ identity: String, in channel: ChannelName, from client: String) -> ActivityLimit? {
        let key = identity + "|" + channel.rawValue
        guard typingLimiter.hasToken(key) else { return .person(wait: .seconds(2)) }
        if let wait = addressTypingLimiter.take(client) { return .address(wait: wait) }
        return typingLimiter.take(key).map { .person(wait: $0) }
    }

    /// Read states over HTTP (`POST /read/`): two a second per person and room, and 10
    /// a second from one address. (A socket's `read` frames count in its message rate.)
    private let readLimiter = RateLimiter(rate: 2, burst: 5)
    private let addressReadLimiter = RateLimiter(rate: 10, burst: 20)

    /// Takes one read-state change of `identity`'s in `channel`, from `client`; `nil` if
    /// allowed, else which limit refuses it.
    func takeReadMark(_ identity: String, in channel: ChannelName, from client: String) -> ActivityLimit? {
        let key = identity + "|" + channel.rawValue
        // At most a token's time: the per-person bucket is taken only once the address's is.
        if !readLimiter.hasToken(key) { return .person(wait: .milliseconds(Int64(1000 / readLimiter.rate))) }
        if let wait = addressReadLimiter.take(client) { return .address(wait: wait) }
        return readLimiter.take(key).map { .person(wait: $0) }
    }

    private struct SocketCounts {
        var perAddress: [String: Int] = [:]
        var perChannel: [ChannelName: Int] = [:]
    }

    /// Who the site signed in (JWTs), and whether anonymous people may come.
    let logins: Logins

    /// The CORS headers when any origin may post, the same for every answer: made once.
    private let anyOriginCORS: HTTPFields

    init(logins: Logins = .none, settings: Settings) {
        self.settings = settings
        self.logins = logins
        self.anyOriginCORS = [
            .accessControlAllowHeaders: settings.publishToken == nil && settings.apiToken == nil && logins.verifier == nil
                ? "x-requested-with" : "x-requested-with, authorization",
            .accessControlAllowMethods: "POST,GET,PUT,DELETE",
            .accessControlAllowOrigin: "*",
        ]
        self.sendLimiter = settings.sendRate.map { RateLimiter(rate: $0.rate, burst: $0.burst) }
        self.historyLimiter = settings.historyRate.map { RateLimiter(rate: $0.rate, burst: $0.burst) }
        self.newChannelLimiter = settings.newChannelRate.map { RateLimiter(rate: $0.rate / 60, burst: $0.burst) }
    }

    // MARK: Addresses and origins

    /// The client's address: the peer, or behind a trusted proxy the forwarded one.
    func clientAddress(peer: SocketAddress?, forwardedFor: [String]) -> String {
        settings.trustedProxies.clientAddress(peer: peer, forwardedFor: forwardedFor)
    }

    /// Whether a request with this `Origin` may publish or connect. Requests without one
    /// (not from a browser) are not origin-checked.
    func allows(origin: String?) -> Bool {
        guard let allowed = settings.allowedOrigins, let origin else { return true }
        return allowed.contains(origin)
    }

    /// The CORS headers for an answer to a request with this `Origin`.
    func corsHeaders(origin: String?) -> HTTPFields {
        // The original's headers; Authorization only when a token may be sent in it.
        guard settings.allowedOrigins != nil else { return anyOriginCORS }
        var fields = anyOriginCORS
        fields[.accessControlAllowOrigin] = nil
        fields[.vary] = "Origin"
        if let origin, allows(origin: origin) { fields[.accessControlAllowOrigin] = origin }
        return fields
    }

    // MARK: Publishing

    /// Whether `/send/` may go on: the publish token if one is configured, given as
    /// `Authorization: Bearer …` or the form field `token`.
    /// Either place may hold it (the other may hold the sender's JWT).
    func allowsPublish(bearer: String?, tokenField: String?) -> Bool {
        guard settings.publishToken != nil else { return true }
        return [bearer, tokenField].contains { presented in presented.map(isPublishToken) ?? false }
    }

    /// Whether `token` is the publish token.
    func isPublishToken(_ token: String) -> Bool {
        settings.publishToken.map { HMACSHA256.sameSecret(token, $0) } ?? false
    }

    /// Whether the request is a trusted integration's (`Authorization: Bearer` with
    /// `--api-token`): a backend that posts for many people from one address.
    func isTrustedIntegration(bearer: String?) -> Bool {
        guard let expected = settings.apiToken, let bearer else { return false }
        return HMACSHA256.sameSecret(bearer, expected)
    }

    /// Whether a request with `token` must have it checked as a sign-in (see
    /// ``Logins/mustCheck(_:othersAccepted:)``): with `--connect-secret`, a token that is
    /// no JWT is a connect token, checked apart.
    func mustCheckSignIn(_ token: String?) -> Bool {
        logins.mustCheck(token, othersAccepted: settings.connectSecret != nil)
    }

    /// The sign-in `token` makes, as ``mustCheckSignIn(_:)`` reads it.
    func checkSignIn(_ token: String?) async -> Logins.Outcome {
        await logins.check(token, othersAccepted: settings.connectSecret != nil)
    }

    /// Who an HTTP request about `channel` comes from, by its `token` (a JWT or a connect
    /// token, as on `/wb/`): the sign-in (`nil`: anonymous, allowed), or why it is
    /// refused (401, with the words to say).
    func requestSignIn(_ token: String?, channel: ChannelName) async -> Result<SignIn?, Refusal> {
        if mustCheckSignIn(token) {
            switch await checkSignIn(token) {
            case .signedIn(let person): return .success(person)
            case .refused(let problem): return .failure(Self.unauthorized(problem.description))
            case .anonymous: return .success(nil)
            }
        }
        if let refusal = checkConnectToken(token, channel: channel) { return .failure(Self.unauthorized(refusal.description)) }
        return .success(nil)
    }

    /// A 401 with `WWW-Authenticate: Bearer`.
    static func unauthorized(_ message: String) -> Refusal {
        Refusal(.unauthorized, message, headers: [.wwwAuthenticate: #"Bearer realm="chatroom""#])
    }

    /// The token of an `Authorization: Bearer <token>` header, if that is what it holds.
    static func bearerToken(_ authorization: String?) -> String? {
        guard let authorization, authorization.lowercased().hasPrefix("bearer ") else { return nil }
        return String(authorization.dropFirst(7).trimmingSpaces)
    }

    /// Takes one message from `address`'s allowance; `nil` if allowed, else how long to wait.
    func takeSend(from address: String) -> TimeAmount? {
        sendLimiter?.take(address)
    }

    /// Takes one history read from `address`'s allowance; `nil` if allowed, else how long to wait.
    func takeHistoryRead(from address: String) -> TimeAmount? {
        historyLimiter?.take(address)
    }

    /// Whether `address` may create another channel now (its allowance is taken by
    /// ``tookNewChannel(from:)`` once the broker says it did).
    func mayCreateChannel(from address: String) -> Bool {
        newChannelLimiter?.hasToken(address) ?? true
    }

    /// Takes one new channel from `address`'s allowance.
    /// How many channels `address` may create now (`Int.max` without a limit): a batch
    /// of messages to new channels must not take more than one would one by one.
    func newChannelAllowance(from address: String) -> Int {
        newChannelLimiter?.tokens(address) ?? .max
    }

    func tookNewChannel(from address: String) {
        _ = newChannelLimiter?.take(address)
    }

    /// The 429 for a client out of new channels: how many a minute, and when to retry.
    func tooManyNewChannels() -> (message: String, retryAfter: String) {
        let perMinute = settings.newChannelRate?.described ?? "unlimited"
        let seconds = settings.newChannelRate.map { max(1, Int((60 / $0.rate).rounded(.up))) } ?? 1
        return ("Too many new channels from your address: at most \(perMinute) a minute. Post to an existing channel, or retry in \(seconds) s.", String(seconds))
    }

    /// The 429 of a rate limit: "Too many `what` from your address: at most R a second.
    /// Retry in S s.", and S for Retry-After (whole seconds, at least 1).
    static func tooMany(_ what: String, rate: RateLimit?, wait: TimeAmount) -> (message: String, retryAfter: String) {
        let seconds = max(1, Int((Double(wait.nanoseconds) / 1e9).rounded(.up)))
        let limit = rate?.described ?? "unlimited"
        return ("Too many \(what) from your address: at most \(limit) a second. Retry in \(seconds) s.", String(seconds))
    }

    // MARK: Sockets

    /// Checks a socket's token for `channel` (with `--connect-secret`); for a `nil`
    /// channel, only its signature and expiry.
    func checkConnectToken(_ token: String?, channel: ChannelName?) -> ConnectToken.Refusal? {
        guard let secret = settings.connectSecret else { return nil }
        let now = Int64(Date().timeIntervalSince1970)
        if case .failure(let refusal) = ConnectToken.verify(token, channel: channel?.rawValue, secret: secret, now: now) {
            return refusal
        }
        return nil
    }

    /// Why a new socket from `address` on `channel` is refused (`503`), or `nil` when it
    /// is counted in (until `closed` completes): ``admitSocket(from:until:)`` and
    /// ``admitChannel(_:until:)`` at once.
    func admitSocket(from address: String, on channel: ChannelName, until closed: EventLoopFuture<Void>) -> Refusal? {
        // Both under one lock: a refused upgrade may leave its connection open, and must
        // not hold a count meanwhile.
        let refusal: Refusal? = sockets.withLockedValue { counts in
            if let refusal = addressRefusal(counts, address) ?? channelRefusal(counts, channel) { return refusal }
            counts.perAddress[address, default: 0] += 1
            counts.perChannel[channel, default: 0] += 1
            return nil
        }
        guard refusal == nil else { return refusal }
        closed.whenComplete { _ in
            self.sockets.withLockedValue { counts in
                Self.release(&counts.perAddress, address)
                Self.release(&counts.perChannel, channel)
            }
        }
        return nil
    }

    /// Why a new socket from `address` is refused (`503`: the address holds
    /// `--max-sockets-per-address`), or `nil` when it is counted in until `closed` completes.
    func admitSocket(from address: String, until closed: EventLoopFuture<Void>) -> Refusal? {
        let refusal: Refusal? = sockets.withLockedValue { counts in
            if let refusal = addressRefusal(counts, address) { return refusal }
            counts.perAddress[address, default: 0] += 1
            return nil
        }
        guard refusal == nil else { return refusal }
        closed.whenComplete { _ in
            self.sockets.withLockedValue { Self.release(&$0.perAddress, address) }
        }
        return nil
    }

    /// Why a chat.v2 subscription on `channel` is refused (`503`: the server serves
    /// `--max-channels` others), or `nil` when it is counted in; balance with
    /// ``releaseChannel(_:)``.
    func admitChannel(_ channel: ChannelName) -> Refusal? {
        sockets.withLockedValue { counts in
            if let refusal = channelRefusal(counts, channel) { return refusal }
            counts.perChannel[channel, default: 0] += 1
            return nil
        }
    }

    /// A subscription counted by ``admitChannel(_:)`` ended.
    func releaseChannel(_ channel: ChannelName) {
        sockets.withLockedValue { Self.release(&$0.perChannel, channel) }
    }

    private func addressRefusal(_ counts: SocketCounts, _ address: String) -> Refusal? {
        guard counts.perAddress[address, default: 0] >= settings.maximumSocketsPerAddress else { return nil }
        return Refusal(.serviceUnavailable, "Too many sockets from your address (at most \(settings.maximumSocketsPerAddress)); close some and retry.")
    }

    private func channelRefusal(_ counts: SocketCounts, _ channel: ChannelName) -> Refusal? {
        guard counts.perChannel[channel] == nil, counts.perChannel.count >= settings.maximumChannels else { return nil }
        return Refusal(.serviceUnavailable, "This server serves as many channels as it may (\(settings.maximumChannels)); retry later or use another server.")
    }

    private static func release<Key>(_ counts: inout [Key: Int], _ key: Key) {
        counts[key, default: 1] -= 1
        if counts[key] == 0 { counts[key] = nil }
    }
}

extension HTTPField.Name {
    /// `X-Forwarded-For`: trusted only from `--trusted-proxies`.
    static let xForwardedFor = Self("X-Forwarded-For")!
}
