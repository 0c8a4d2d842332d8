import Chat
import HTTPTypes

/// A person the site's login vouches for: what a valid JWT says (README, "Signing people
/// in"; docs/SECURITY.md).
///
/// Their identity comes from the token's `sub` (``Identities/id(ofSubject:)``), so it is
/// the same on every device and instance, and it has the shape of an anonymous one (15
/// base64url characters): one-to-one rooms, inboxes, presence and read states work alike
/// for both.
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
    /// The `exp` claim, in Unix seconds.
    var expiry: Int64

    /// The person the claims name, with the identity `identities` gives their `sub`.
    init(_ claims: CheckedClaims, identities: Identities) {
        self.identity = identities.id(ofSubject: claims.subject)
        self.subject = claims.subject
        self.name = claims.name
        self.rooms = claims.rooms
        self.isModerator = claims.isModerator
        self.expiry = claims.expiry
    }

    /// Why they may not use `channel` (`403`, close 4403), or `nil` when they may.
    func refusal(for channel: ChannelName) -> Refusal? {
        guard let rooms, !rooms.allows(channel) else { return nil }
        return Refusal(.forbidden, "Your sign-in does not open the room '\(channel)': ask the site for access.", closeCode: .privateRoom)
    }
}
