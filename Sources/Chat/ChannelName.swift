/// The name of a chat channel: 1–64 characters of `A–Z a–z 0–9 _ . : -`.
///
/// The rule keeps names safe in cookies, URLs, Redis keys and logs alike.
public struct ChannelName: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The longest name accepted.
    public static let maximumLength = 64
    /// The channel a client gets when it names none (the original page's first tab).
    public static let fallback = ChannelName(unchecked: "channel_1")

    /// The name as given.
    public let rawValue: String

    /// Validates `rawValue`; `nil` if it breaks the rule.
    public init?(_ rawValue: String) {
        guard Self.validationError(rawValue) == nil else { return nil }
        self.rawValue = rawValue
    }

    /// Validates `rawValue`.
    /// - Throws: ``ChannelNameError`` with a message saying what is wrong.
    public init(validating rawValue: String) throws(ChannelNameError) {
        if let error = Self.validationError(rawValue) { throw error }
        self.rawValue = rawValue
    }

    init(unchecked rawValue: String) {
        self.rawValue = rawValue
    }

    private static func validationError(_ name: String) -> ChannelNameError? {
        let count = name.utf8.count
        if count == 0 { return ChannelNameError(name: name, reason: "a channel name cannot be empty") }
        if count > maximumLength {
            return ChannelNameError(name: name, reason: "a channel name has at most \(maximumLength) characters, this one has \(count)")
        }
        for byte in name.utf8 where !isAllowed(byte) {
            return ChannelNameError(name: name, reason: "a channel name may hold only letters, digits and _ . : -")
        }
        return nil
    }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."),
            UInt8(ascii: ":"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }

    public var description: String { rawValue }
    public static func < (lhs: ChannelName, rhs: ChannelName) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A channel name that breaks the naming rule.
public struct ChannelNameError: Error, Sendable, CustomStringConvertible {
    /// The name that was refused (possibly long or odd: quote it with care).
    public let name: String
    /// Why it was refused, for a person.
    public let reason: String
    public var description: String { "invalid channel name: \(reason)" }
}
