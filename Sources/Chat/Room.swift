/// One person in a room: who they are (their identity), and the name they show.
public struct Member: Sendable, Hashable {
    /// The identity: a verified `uid`, or a socket's own id for a client without one.
    public var id: String
    /// The display name, if they gave one.
    public var name: String?

    public init(id: String, name: String?) {
        self.id = id
        self.name = name
    }
}

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
