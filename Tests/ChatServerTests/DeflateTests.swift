import ChatClient
import CompressNIO
import NIOCore
import Testing

@testable import ChatServer

@Suite("permessage-deflate")
struct DeflateTests {
    @Test func negotiationAcceptsWhatTheServerCanKeepAndDeclinesTheRest() {
        typealias Agreement = PerMessageDeflate.Agreement
        #expect(PerMessageDeflate.negotiate(["permessage-deflate"]) == Agreement(clientNoContextTakeover: false))
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; client_max_window_bits"]) == Agreement(clientNoContextTakeover: false))
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; client_no_context_takeover; server_no_context_takeover"]) == Agreement(clientNoContextTakeover: true))
        // A smaller server window than the shared copy's is declined; the next offer is taken.
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_max_window_bits=10, permessage-deflate"]) == Agreement(clientNoContextTakeover: false))
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_max_window_bits=10"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; client_max_window_bits=7"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; mystery"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; client_no_context_takeover; client_no_context_takeover"]) == nil)
        #expect(PerMessageDeflate.negotiate(["x-webkit-deflate-frame"]) == nil)
        #expect(PerMessageDeflate.negotiate([]) == nil)
        #expect(Agreement(clientNoContextTakeover: true).responseHeader == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    }

    @Test(arguments: [["chat.v1"], []])
    func longMessagesArriveCompressedOnceForEverySocketThatAskedAndPlainForTheOthers(subprotocols: [String]) async throws {
        try await withServer(broker: .memory, { $0.deflateMinimumSize = 64 }) { server in
            let channel = uniqueChannel()
            let path = "/wb/?channel=\(channel)"
            let compressing = try await (0..<3).asyncMap { _ in
                try await ChatWebSocket.connect(port: server.port, path: path, subprotocols: subprotocols, extensions: ["permessage-deflate; client_max_window_bits"])
            }
            let plain = try await ChatWebSocket.connect(port: server.port, path: path, subprotocols: subprotocols)
            #expect(compressing[0].extensions == "permessage-deflate; server_no_context_takeover")
            #expect(plain.extensions == nil)
            let long = String(repeating: "a long message that compresses well; ", count: 40)
            for text in [long, "short", long + "again"] {
                #expect(try await ChatHTTP.send(port: server.port, data: text, channel: channel).status == 200)
            }
            for socket in compressing + [plain] {
                var texts: [String] = []
                for _ in 0..<3 {
                    let frame = try #require(await socket.nextText())
                    texts.append(subprotocols.isEmpty ? frame : try #require(frame.jsonObject["data"] as? String))
                }
                #expect(texts == [long, "short", long + "again"])
            }
            // The minimum counts the frame's payload: chat.v1's JSON around "short" is over 64 bytes.
            for socket in compressing { #expect(socket.compressedMessages == (subprotocols.isEmpty ? 2 : 3)) }
            #expect(plain.compressedMessages == 0)
        }
    }

    @Test func compressedClientMessagesAreInflatedAndAnInflatedOversizeIsRefused() async throws {
        try await withServer(broker: .memory, { $0.maximumMessageSize = 1000 }) { server in
            let compressor = try ZlibCompressor(algorithm: .deflate, configuration: .init(windowSize: 15))
            let socket = try await ChatWebSocket.connect(port: server.port, subprotocols: ["chat.v1"], extensions: ["permessage-deflate"])
            let ping = try PerMessageDeflate.compress(ByteBuffer(string: #"{"type":"ping"}"#), with: compressor)
            try await socket.sendFrame(opcode: 0x1, payload: Array(ping.readableBytesView), rsv: 0x4)
            #expect(await socket.nextText() == #"{"type":"pong"}"#)
            // Small on the wire, 100 KB inflated: over the 1000-byte limit.
            let bomb = try PerMessageDeflate.compress(ByteBuffer(repeating: UInt8(ascii: "a"), count: 100_000), with: compressor)
            #expect(bomb.readableBytes < 1000)
            try await socket.sendFrame(opcode: 0x1, payload: Array(bomb.readableBytesView), rsv: 0x4)
            #expect(await closeCode(of: socket) == 1009)

            let garbage = try await ChatWebSocket.connect(port: server.port, subprotocols: ["chat.v1"], extensions: ["permessage-deflate"])
            try await garbage.sendFrame(opcode: 0x1, payload: [0xFF, 0xFF, 0xFF, 0xFF], rsv: 0x4)
            #expect(await closeCode(of: garbage) == 1007)

            let unnegotiated = try await ChatWebSocket.connect(port: server.port, subprotocols: ["chat.v1"])
            try await unnegotiated.sendFrame(opcode: 0x1, payload: Array(ping.readableBytesView), rsv: 0x4)
            #expect(await closeCode(of: unnegotiated) == 1002)
        }
    }

    @Test func turnedOffTheServerDeclinesTheOffer() async throws {
        try await withServer(broker: .memory, { $0.deflateMinimumSize = nil }) { server in
            let socket = try await ChatWebSocket.connect(port: server.port, extensions: ["permessage-deflate"])
            #expect(socket.extensions == nil)
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
