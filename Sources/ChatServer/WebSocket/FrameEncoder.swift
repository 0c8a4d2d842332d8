import Chat
import CompressNIO
import NIOConcurrencyHelpers
import NIOCore

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

    /// Event streams open (`GET /events`): their bytes are made only while there are some.
    private let eventStreams = NIOLockedValueBox(0)

    /// Counts an event stream in, until `closed` completes.
    func countEventStream(until closed: EventLoopFuture<Void>) {
        eventStreams.withLockedValue { $0 += 1 }
        closed.whenComplete { _ in self.eventStreams.withLockedValue { $0 -= 1 } }
    }

    /// Every frame kind's frame of `event`, indexed by ``FrameKind/index``, then its event
    /// stream bytes (``EventStreamFrames/index``; `nil` while no stream is open). The
    /// deflated kinds hold the plain frame where no socket of that format negotiated
    /// compression or the payload is shorter than the minimum.
    func frames(of event: ChatEvent) -> [ByteBuffer?] {
        let plain = WireFormat.frames(of: event)
        let stream = eventStreams.withLockedValue { $0 } > 0 ? EventStreamFrames.frame(of: event, chatV1: plain[WireFormat.chatV1.rawValue]) : nil
        guard let compressor else { return plain + plain + [stream] }
        let wanted = deflateSockets.withLockedValue { $0 }
        let deflated = plain.enumerated().map { format, frame in
            frame.flatMap { frame in
                guard wanted[format] > 0, WebSocketWire.payloadLength(of: frame) >= deflateMinimumSize else { return frame }
                return compressor.deflated(frame) ?? frame
            }
        }
        return plain + deflated + [stream]
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
///
/// Sendable by proof: the compressor is private and reached only in `deflated(_:)`,
/// which holds the lock for the whole use.
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
