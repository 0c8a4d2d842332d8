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
