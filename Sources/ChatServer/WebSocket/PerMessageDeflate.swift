import CompressNIO
import NIOCore

/// permessage-deflate's compression: see ``PerMessageDeflate``.
extension PerMessageDeflate {
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

