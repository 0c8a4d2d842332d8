/// Who is in a room now, over every instance.
public struct RoomSnapshot: Sendable, Equatable {
    /// Distinct identities online (their grace period included).
    public var online: Int
    /// The people, when there are at most the list limit of them.
    public var members: [Member]?

    public init(online: Int, members: [Member]?) {
        self.online = online
        self.members = members
    }
}
