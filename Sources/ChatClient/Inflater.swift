import CompressNIO
import NIOCore

/// Inflates the messages of a server that compresses with permessage-deflate and no
/// context takeover (RFC 7692 §7.2.2), so each message inflates on its own.
///
/// Keeps its zlib stream and both buffers from message to message: once the buffers have
/// grown to fit, a message costs no allocation. Use it from one thread at a time.
package final class Inflater {
    private let decompressor: ZlibDecompressor
    private var input: ByteBuffer
    private var output: ByteBuffer

    /// - Parameter capacity: the inflated size the output buffer starts with; it grows when
    ///   a message needs more.
    package init(capacity: Int = 1 << 16) throws {
        decompressor = try ZlibDecompressor(algorithm: .deflate, windowSize: 15)
        input = ByteBufferAllocator().buffer(capacity: 1 << 12)
        output = ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// The message whose compressed payload is `payload`, or `nil` if it is corrupt. The
    /// result shares the inflater's buffer: keeping it past the next call makes that call
    /// allocate.
    package func inflate(_ payload: ByteBuffer) -> ByteBuffer? {
        input.clear()
        input.writeImmutableBuffer(payload)
        // The empty block the sender took off the end of the message (RFC 7692 §7.2.1).
        input.writeInteger(UInt32(0x0000_FFFF))
        output.clear()
        defer { try? decompressor.reset() }
        while true {
            do {
                try input.decompressStream(to: &output, with: decompressor)
                return output
            } catch let error as CompressNIOError where error == .bufferOverflow {
                output.reserveCapacity(output.capacity * 2)
            } catch {
                return nil
            }
        }
    }
}
