import Chat
import CompressNIO
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// permessage-deflate (RFC 7692), the lean way: the server always compresses without
/// context takeover, so one compressed copy of a message serves every socket that
/// negotiated the extension.
///
/// Outbound: a message at least `minimumSize` bytes long is deflated once per message
/// (not per socket) by ``FrameEncoder`` and sent with RSV1 set; shorter ones go as they
/// are, which the RFC allows per message. Inbound: a socket inflates a client's
/// compressed message with an inflater made the first time it needs one, so idle
/// sockets pay nothing for the extension.
enum PerMessageDeflate {
    /// The extension's name in `Sec-WebSocket-Extensions`.
    static let name = "permessage-deflate"

    /// What the server agreed with one client.
    struct Agreement: Equatable, Sendable {
        /// The client resets its compression context after each message: the server
        /// may drop its inflater between messages.
        var clientNoContextTakeover: Bool

        /// The `Sec-WebSocket-Extensions` answer.
        var responseHeader: String {
            // The server insists on server_no_context_takeover (RFC 7692 §7.1.1.1 lets
            // it add the parameter): that is what makes one compressed copy shareable.
            name + "; server_no_context_takeover" + (clientNoContextTakeover ? "; client_no_context_takeover" : "")
        }
    }

    /// Picks the first offer of permessage-deflate the server can accept from the
    /// `Sec-WebSocket-Extensions` values of a request; `nil` declines them all.
    ///
    /// Declined: offers with unknown or repeated parameters (§7.1), and offers asking for
    /// `server_max_window_bits` below 15 — the shared compressed copy uses a 32 KB window.
    static func negotiate(_ headerValues: [String]) -> Agreement? {
        for offer in headerValues.flatMap({ $0.split(separator: ",") }) {
            let parts = offer.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.first == name else { continue }
            var seen: Set<String> = []
            var acceptable = true
            var clientNoContextTakeover = false
            for parameter in parts.dropFirst() {
                let pieces = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                let key = pieces[0]
                let value = pieces.count > 1 ? pieces[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) : nil
                guard seen.insert(key).inserted else { acceptable = false; break }
                switch key {
                case "server_no_context_takeover":
                    acceptable = value == nil
                case "client_no_context_takeover":
                    acceptable = value == nil
                    clientNoContextTakeover = true
                case "server_max_window_bits":
                    acceptable = value == "15"
                case "client_max_window_bits":
                    // The client may use a smaller window; the server inflates with 15 bits,
                    // which reads any window. A value, if given, must be 8–15.
                    acceptable = value.map { Int($0).map { (8...15).contains($0) } ?? false } ?? true
                default:
                    acceptable = false
                }
                if !acceptable { break }
            }
            if acceptable { return Agreement(clientNoContextTakeover: clientNoContextTakeover) }
        }
        return nil
    }

    /// Deflates `payload` on its own (no context from earlier messages) and strips the
    /// final `00 00 FF FF` as RFC 7692 §7.2.1 asks.
    static func compress(_ payload: ByteBuffer, with compressor: ZlibCompressor) throws -> ByteBuffer {
        var input = payload
        var output = ByteBufferAllocator().buffer(capacity: compressor.maxSize(from: input) + 16)
        defer { try? compressor.reset() }
        try compressor.deflate(from: &input, to: &output, flush: .sync)
        guard input.readableBytes == 0, output.readableBytes >= 4 else { throw CompressNIOError.bufferOverflow }
        output.moveWriterIndex(to: output.writerIndex - 4)
        return output
    }

    /// A socket's inflater for the messages its client compressed.
    final class Inflater {
        private var decompressor: ZlibDecompressor?
        private let keepsContext: Bool

        /// - Parameter keepsContext: the client compresses with context takeover, so the
        ///   inflater's window must survive from one message to the next.
        init(keepsContext: Bool) {
            self.keepsContext = keepsContext
        }

        /// Inflates one whole message.
        /// - Throws: `CompressNIOError.bufferOverflow` when it would inflate past
        ///   `maximumSize` bytes, or another error for corrupt data.
        func inflate(_ message: ByteBuffer, maximumSize: Int) throws -> ByteBuffer {
            let decompressor = try self.decompressor ?? ZlibDecompressor(algorithm: .deflate, windowSize: 15)
            var input = message
            input.writeBytes([0x00, 0x00, 0xFF, 0xFF])
            defer {
                if keepsContext {
                    self.decompressor = decompressor
                } else {
                    self.decompressor = nil  // freed between messages: nothing held while idle
                }
            }
            if input.readableBytes == 4 { return ByteBuffer() }
            // One byte over the limit tells "too big" from "exactly the limit".
            let output = try input.decompressStream(with: decompressor, maxSize: maximumSize + 1)
            guard output.readableBytes <= maximumSize else { throw CompressNIOError.bufferOverflow }
            return output
        }
    }
}

/// Makes an event's frames once, for every wire format and for sockets with and
/// without permessage-deflate: the hub's `encode`.
final class FrameEncoder: Sendable {
    /// Messages shorter than this are sent uncompressed even to sockets that
    /// negotiated permessage-deflate.
    let deflateMinimumSize: Int
    private let compressor: SharedCompressor?
    /// Sockets open with permessage-deflate, per wire format: a format is compressed
    /// only while some socket of that format asked for it.
    private let deflateSockets = NIOLockedValueBox([Int](repeating: 0, count: WireFormat.allCases.count))

    /// - Parameter deflateMinimumSize: `nil` turns permessage-deflate off.
    init(deflateMinimumSize: Int?) throws {
        self.deflateMinimumSize = deflateMinimumSize ?? .max
        self.compressor = try deflateMinimumSize.map { _ in try SharedCompressor() }
    }

    /// Whether the server offers permessage-deflate at all.
    var deflateEnabled: Bool { compressor != nil }

    /// Counts a socket of `format` with permessage-deflate in, until `closed` completes.
    func countDeflateSocket(format: WireFormat, until closed: EventLoopFuture<Void>) {
        deflateSockets.withLockedValue { $0[format.rawValue] += 1 }
        closed.whenComplete { _ in self.deflateSockets.withLockedValue { $0[format.rawValue] -= 1 } }
    }

    /// Every frame kind's frame of `event`, indexed by ``FrameKind/index``. The deflated
    /// kinds hold the plain frame where no socket of that format negotiated compression
    /// or the payload is shorter than the minimum.
    func frames(of event: ChatEvent) -> [ByteBuffer?] {
        let plain = WireFormat.frames(of: event)
        guard let compressor else { return plain + plain }
        let wanted = deflateSockets.withLockedValue { $0 }
        let deflated = plain.enumerated().map { format, frame in
            frame.flatMap { frame in
                guard wanted[format] > 0, WebSocketWire.payloadLength(of: frame) >= deflateMinimumSize else { return frame }
                return compressor.deflated(frame) ?? frame
            }
        }
        return plain + deflated
    }
}

/// Which of an event's frames a socket gets: its wire format, compressed or not.
struct FrameKind: Sendable {
    var format: WireFormat
    var deflate: PerMessageDeflate.Agreement?

    /// The index into ``FrameEncoder/frames(of:)``.
    var index: Int { format.rawValue + (deflate == nil ? 0 : WireFormat.allCases.count) }
}

/// One zlib compressor for every thread that encodes events; used under a lock (it holds
/// zlib's state, about 256 KB, so one is kept rather than one per message).
private final class SharedCompressor: @unchecked Sendable {
    private let lock = NIOLock()
    private let compressor: ZlibCompressor

    init() throws {
        // Level 6 and a 32 KB window, zlib's defaults.
        compressor = try ZlibCompressor(algorithm: .deflate, configuration: .init(windowSize: 15))
    }

    /// `frame` with its payload deflated; `nil` if zlib failed.
    func deflated(_ frame: ByteBuffer) -> ByteBuffer? {
        lock.withLock { try? WebSocketWire.deflated(frame, with: compressor) }
    }
}
