import Chat
import Crypto
import HTTPTypes

/// A person the site's login vouches for: what a valid JWT says (README, "Signing people
/// in"; docs/SECURITY.md).
///
/// Their identity comes from the token's `sub`, so it is the same on every device and
/// instance, and it has the shape of an anonymous one (15 base64url characters): one-to-one
/// rooms, inboxes, presence and read states work alike for both.
struct SignIn: Sendable, Equatable {
    /// Who they are in rooms, `from` fields and presence.
    var identity: String
    /// The token's `sub`, as the site's login names them.
    var subject: String
    /// The `name` claim: the only name they show; a name the client gives is ignored.
    var name: String?
    /// The rooms the `channels` claim opens; `nil`: every room.
    var rooms: RoomScope?
    /// `role: "moderator"`.
    var isModerator: Bool
    /// The `exp` claim, in Unix seconds, if any.
    var expiry: Int64?

    init(_ claims: CheckedClaims) {
        self.init(
            identity: Self.identity(ofSubject: claims.subject), subject: claims.subject, name: claims.name, rooms: claims.rooms,
            isModerator: claims.isModerator, expiry: claims.expiry
        )
    }

    init(identity: String, subject: String, name: String?, rooms: RoomScope?, isModerator: Bool, expiry: Int64?) {
        self.identity = identity
        self.subject = subject
        self.name = name
        self.rooms = rooms
        self.isModerator = isModerator
        self.expiry = expiry
    }

    /// The identity of a `sub`: the first 15 characters of base64url(SHA-256("chatroom sub\n" + sub)).
    /// Unkeyed, so a site's backend can work out a person's id (to name a one-to-one room,
    /// say) without any secret of the server's.
    static func identity(ofSubject subject: String) -> String {
        let digest = SHA256.hash(data: Array("chatroom sub\n\(subject)".utf8))
        return String(Base64URL.encode(Array(digest)).prefix(15))
    }

    /// Why they may not use `channel` (`403`, close 4403), or `nil` when they may.
    func refusal(for channel: ChannelName) -> Refusal? {
        guard let rooms, !rooms.allows(channel) else { return nil }
        return Refusal(.forbidden, "Your sign-in does not open the room '\(channel)': ask the site for access.", closeCode: .privateRoom)
    }
}
