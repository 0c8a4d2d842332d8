#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import NIOCore

/// Who a request comes from, for rate limits and per-address socket counts.
///
/// The peer address of the connection, except when the peer is a proxy the operator
/// trusts (`--trusted-proxies`): then the last address in `X-Forwarded-For` that is not
/// itself a trusted proxy. `X-Forwarded-For` from anyone else is ignored — a client
/// could otherwise claim any address and escape its limits.
struct TrustedProxies: Sendable {
    /// Address ranges, as (network bytes, prefix length).
    private let ranges: [(bytes: [UInt8], prefix: Int)]

    static let none = TrustedProxies(ranges: [])

    private init(ranges: [(bytes: [UInt8], prefix: Int)]) {
        self.ranges = ranges
    }

    /// Parses `10.0.0.1, 192.168.0.0/16, ::1` style lists.
    /// - Throws: a message naming the entry that is not an address or range.
    init(parsing list: String) throws(ConfigurationError) {
        var ranges: [(bytes: [UInt8], prefix: Int)] = []
        for entry in list.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !entry.isEmpty {
            let parts = entry.split(separator: "/", maxSplits: 1)
            guard let bytes = Self.bytes(of: String(parts[0])) else {
                throw ConfigurationError("--trusted-proxies: '\(entry)' is not an IP address or CIDR range")
            }
            let prefix = parts.count == 2 ? Int(parts[1]) : bytes.count * 8
            guard let prefix, (0...bytes.count * 8).contains(prefix) else {
                throw ConfigurationError("--trusted-proxies: '\(entry)' has an invalid prefix length")
            }
            ranges.append((bytes, prefix))
        }
        self.ranges = ranges
    }

    func contains(_ address: String) -> Bool {
        guard let bytes = Self.bytes(of: address) else { return false }
        return ranges.contains { range in
            guard range.bytes.count == bytes.count else { return false }
            var bits = range.prefix
            for index in 0..<bytes.count where bits > 0 {
                let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
                if bytes[index] & mask != range.bytes[index] & mask { return false }
                bits -= 8
            }
            return true
        }
    }

    /// The client's address: `peer`, or for a trusted peer the last untrusted hop of
    /// `X-Forwarded-For` (its header values, in order).
    func clientAddress(peer: SocketAddress?, forwardedFor: [String]) -> String {
        clientAddress(peerAddress: peer?.ipAddress ?? "unknown", forwardedFor: forwardedFor)
    }

    /// The same, for a peer whose address was read already (once per connection).
    func clientAddress(peerAddress: String, forwardedFor: [String]) -> String {
        guard !ranges.isEmpty, contains(peerAddress) else { return peerAddress }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        for hop in hops.reversed() where !contains(hop) {
            return Self.bytes(of: hop) != nil ? hop : peerAddress
        }
        return hops.first ?? peerAddress
    }

    /// The address's bytes (4 for IPv4, 16 for IPv6), or `nil` if it is not one.
    static func bytes(of address: String) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, address, &buffer) == 1 { return Array(buffer.prefix(4)) }
        if inet_pton(AF_INET6, address, &buffer) == 1 { return buffer }
        return nil
    }
}

/// A configuration value the server cannot use, with a message for the operator.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
