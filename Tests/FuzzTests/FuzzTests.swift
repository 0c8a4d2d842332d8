import Chat
import ChatClient
import Foundation
import NIOCore
import NIOWebSocket
import PropertyBased
import Testing

@testable import ChatServer
@testable import Redis

/// Property-based fuzzing of the parsers that read what the network sends: the RESP glue
/// around hiredis' reader, the form and multipart parsers of `/send/`, and the chat.v1
/// frame parser with the WebSocket message assembler.
///
/// Each property runs on random inputs and on mutations (bit flips, cut, duplicated and
/// spliced bytes) of the seeds in Seeds/. The test command runs a short pass
/// (`CHATROOM_FUZZ_COUNT`, default 300 inputs per property); a longer one:
///
///     CHATROOM_FUZZ_COUNT=100000 scripts/test.sh --filter Fuzz
///
/// A failure prints the input and a `.fixedSeed(…)` that replays it.
@Suite("Fuzzing the parsers")
struct FuzzTests {
    static let count = ProcessInfo.processInfo.environment["CHATROOM_FUZZ_COUNT"].flatMap(Int.init) ?? 300

    static func seeds(_ folder: String) -> [[UInt8]] {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Seeds/\(folder)")
        let files = (try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)) ?? []
        return files.sorted { $0.path < $1.path }.compactMap { try? Array(Data(contentsOf: $0)) }
    }

    /// A seed changed by a few random edits, each encoded in one UInt32: the operation,
    /// where, and the byte.
    static func mutate(_ seed: [UInt8], _ edits: [UInt32]) -> [UInt8] {
        var bytes = seed
        for edit in edits {
            let position = bytes.isEmpty ? 0 : Int(edit >> 8) % bytes.count
            let byte = UInt8(truncatingIfNeeded: edit)
            switch edit % 6 {
            case 0: if !bytes.isEmpty { bytes[position] ^= 1 << (byte % 8) }  // flip a bit
            case 1: bytes.insert(byte, at: position)  // insert a byte
            case 2: if !bytes.isEmpty { bytes.remove(at: position) }  // drop a byte
            case 3: bytes = Array(bytes.prefix(position))  // cut short
            case 4: bytes.insert(contentsOf: bytes[position...].prefix(Int(byte % 16)), at: position)  // repeat a run
            default: if !bytes.isEmpty { bytes[position] = [0x0D, 0x0A, 0x24, 0x2A, 0x3A, 0x2D, 0x25, 0x3D, 0x26, 0x22, 0x7B][Int(byte) % 11] }  // a structural byte
            }
        }
        return bytes
    }

    static let bytes = Gen<UInt8>.value().array(of: 0...300)
    static let edits = Gen<UInt32>.value().array(of: 1...8)

    // MARK: RESP (hiredis' reader and its Swift glue)

    /// Feeds `input` in pieces split at `cuts`; returns the replies, stopping at an error.
    static func parse(_ input: [UInt8], cuts: [Int] = []) -> (replies: [RESPValue], failed: Bool) {
        let reader = RESPReader()
        var replies: [RESPValue] = []
        var start = 0
        for cut in (cuts.map { $0 % (input.count + 1) } + [input.count]).sorted() where cut >= start {
            do {
                try reader.feed(ByteBuffer(bytes: input[start..<cut]))
                while let reply = try reader.next() {
                    replies.append(reply)
                    if replies.count > 10_000 { return (replies, true) }
                }
            } catch {
                return (replies, true)
            }
            start = cut
        }
        return (replies, false)
    }

    @Test func respReaderSurvivesAnyBytes() async {
        await propertyCheck(count: Self.count, input: Self.bytes) { input in
            _ = Self.parse(input, cuts: [input.count / 3, input.count / 2])
        }
    }

    @Test func respReaderSurvivesMutatedReplies() async {
        let seeds = Self.seeds("resp")
        #expect(seeds.count >= 4)
        await propertyCheck(count: Self.count, input: Gen.int(in: 0...(seeds.count - 1)), Self.edits) { index, edits in
            _ = Self.parse(Self.mutate(seeds[index], edits), cuts: [Int(edits[0] % 64)])
        }
    }

    @Test func validRepliesParseTheSameHoweverTheyAreCut() async {
        let stream = Self.seeds("resp").filter { !$0.starts(with: Array("-".utf8)) }.flatMap { $0 }
        let whole = Self.parse(stream)
        #expect(!whole.failed)
        await propertyCheck(count: Self.count, input: Gen.int(in: 0...stream.count).array(of: 1...6)) { cuts in
            let pieces = Self.parse(stream, cuts: cuts)
            #expect(!pieces.failed)
            #expect(pieces.replies == whole.replies)
        }
    }

    @Test func commandsTheClientEncodesParseBackToTheirArguments() async {
        let argument = Gen<UInt8>.value().array(of: 0...40)
        await propertyCheck(count: Self.count, input: argument.array(of: 0...6)) { arguments in
            let command = RedisCommand("ECHO", arguments.map { RedisArgument.bytes(ByteBuffer(bytes: $0)) })
            var wire = ByteBuffer()
            command.encode(into: &wire)
            let parsed = Self.parse(Array(wire.readableBytesView))
            #expect(!parsed.failed)
            #expect(parsed.replies == [.array(([Array("ECHO".utf8)] + arguments).map { .bulkString(ByteBuffer(bytes: $0)) })])
        }
    }

    // MARK: Forms (`POST /send/`)

    @Test func formParserSurvivesAnyText() async {
        let seeds = Self.seeds("form")
        await propertyCheck(count: Self.count, input: Gen.int(in: 0...(seeds.count - 1)), Self.edits, Self.bytes) { index, edits, noise in
            for input in [Self.mutate(seeds[index], edits), noise] {
                let text = String(decoding: input, as: UTF8.self)
                _ = try? FormData.pairs(text[...])
                _ = try? FormData.pairs(utf8: input)
                let fields = try? Multipart.fields(input, boundary: "XyZ")
                #expect((fields?.count ?? 0) <= FormData.maximumFields)
                if let boundary = Multipart.boundary(in: "multipart/form-data; boundary=" + text.prefix(80)) {
                    #expect((1...Multipart.maximumBoundaryLength).contains(boundary.utf8.count))
                    _ = try? Multipart.fields(input, boundary: boundary)
                }
            }
        }
    }

    @Test func formFieldsRoundTripThroughPercentEncoding() async {
        let text = Gen<Character?>.element(of: Array("aZ09 +%&=;/?\"'<>é✓\u{0}\n😀")).compactMap { $0 }.string(of: 0...20)
        await propertyCheck(count: Self.count, input: text, text) { name, value in
            let body = "\(ChatHTTP.formEncode(name))=\(ChatHTTP.formEncode(value))&x=1"
            let pairs = try FormData.pairs(body[...])
            if name.isEmpty {
                #expect(pairs.last?.name == "x")
            } else {
                #expect(pairs.first?.name == name)
                #expect(pairs.first?.value == value)
            }
        }
    }

    @Test func multipartFieldsRoundTrip() async {
        let value = Gen<Character?>.element(of: Array("ab -\r\n=é✓\"")).compactMap { $0 }.string(of: 0...30)
        await propertyCheck(count: Self.count, input: value, value) { data, channel in
            var body = ""
            for (name, content) in [("data", data), ("channel", channel)] {
                body += "--BoUnDaRy7\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(content)\r\n"
            }
            body += "--BoUnDaRy7--\r\n"
            let fields = try Multipart.fields(Array(body.utf8), boundary: "BoUnDaRy7")
            #expect(fields.map(\.name) == ["data", "channel"])
            #expect(fields.map(\.value) == [data, channel])
        }
    }

    // MARK: chat.v1 frames and WebSocket messages

    @Test func chatV1ParserSurvivesAnyText() async {
        let seeds = Self.seeds("chatv1")
        #expect(ChatV1Request(#"{"type":"ping"}"#) == .ping)
        #expect(ChatV1Request(#"{"type":"who"}"#) == .who)
        #expect(ChatV1Request(#"{"type":"refresh","token":"a.b.c"}"#) == .refresh(token: "a.b.c"))
        await propertyCheck(count: Self.count, input: Gen.int(in: 0...(seeds.count - 1)), Self.edits) { index, edits in
            let text = String(decoding: Self.mutate(seeds[index], edits), as: UTF8.self)
            switch ChatV1Request(text) {
            case .ping, .who, .refresh:
                #expect(text.contains("{"), "a request is a JSON object: \(text)")
            case .invalid(let reason):
                #expect(!reason.isEmpty && reason.utf8.count < 200, "the error says why, briefly")
            }
        }
    }

    @Test func eventStreamPositionsReadBackWhatTheyWriteAndRefuseTheRestBriefly() async {
        let seeds = Self.seeds("position")
        let two = try? EventStreamPosition(parsing: "general=5b9a17af82b799ae:57,dm:a:b=e1:3")
        #expect(two?.entries.map(\.channel.rawValue) == ["general", "dm:a:b"] && two?.entries.map(\.offset) == [57, 3], "a channel's ':' is no offset's")
        #expect((try? EventStreamPosition(parsing: ""))?.entries.isEmpty == true)
        #expect((try? EventStreamPosition(parsing: "c=:0"))?.entries.first?.epoch == "")
        for bad in ["c", "c=e", "c=:1", "c=e:-1", "c=e:9007199254740992", "c=e:1,c=e:2", "c=e!:1", "=e:1", "c=e:1,"] {
            #expect((try? EventStreamPosition(parsing: bad)) == nil, "\(bad)")
        }
        // Written positions read back as they were.
        let entry = Gen.int(in: 0...Int(Offset.maximum)).map { offset in
            EventStreamPosition.Entry(channel: ChannelName("c\(offset % 97)")!, epoch: offset % 5 == 0 ? "" : "e\(offset % 13)", offset: offset % 5 == 0 ? 0 : Int64(offset))
        }
        await propertyCheck(count: Self.count, input: entry.array(of: 0...8)) { entries in
            var distinct: [EventStreamPosition.Entry] = []
            for entry in entries where !distinct.contains(where: { $0.channel == entry.channel }) { distinct.append(entry) }
            let position = EventStreamPosition(entries: distinct)
            #expect((try? EventStreamPosition(parsing: position.description)) == position, "\(position.description)")
        }
        await propertyCheck(count: Self.count, input: Gen.int(in: 0...(seeds.count - 1)), Self.edits) { index, edits in
            let text = String(decoding: Self.mutate(seeds[index], edits), as: UTF8.self)
            do throws(EventStreamPosition.Problem) {
                let position = try EventStreamPosition(parsing: text)
                for entry in position.entries {
                    #expect((0...Offset.maximum).contains(entry.offset) && (!entry.epoch.isEmpty || entry.offset == 0), "\(text)")
                }
                #expect((try? EventStreamPosition(parsing: position.description)) == position, "\(text)")
            } catch {
                #expect(!error.description.isEmpty && error.description.utf8.count <= 160, "the error says why, briefly")
            }
        }
    }

    @Test func chatV2ParserSurvivesAnyTextAndChecksWhatItLetsThrough() async {
        let seeds = Self.seeds("chatv2")
        #expect(ChatV2Request(#"{"type":"subscribe","channel":"c","since":3,"epoch":"e1"}"#) == .subscribe(channel: "c", resume: .init(since: 3, epoch: "e1")))
        #expect(ChatV2Request(#"{"type":"send","id":"a","channel":"c","data":"d"}"#) == .send(id: "a", channel: "c", data: "d", name: nil))
        #expect(ChatV2Request(#"{"type":"edit","id":"e","channel":"c","of":3,"data":"d"}"#) == .change(id: "e", channel: "c", change: .edit(data: "d"), of: 3))
        #expect(ChatV2Request(#"{"type":"react","id":"r","channel":"c","of":3,"emoji":"👍"}"#) == .change(id: "r", channel: "c", change: .react(emoji: "👍"), of: 3))
        #expect(ChatV2Request(#"{"type":"delete","id":"d","channel":"c","of":0}"#) == .badSend(id: "d", channel: "c", reason: #""of" must be the offset of a message: a whole number from 1 to 9007199254740991."#))
        #expect(ChatV2Request(#"{"type":"read","channel":"c","offset":7}"#) == .read(channel: "c", offset: 7))
        #expect(ChatV2Request(#"{"type":"typing","channel":"c"}"#) == .typing(channel: "c"))
        #expect(ChatV2Request(#"{"type":"refresh","token":"a.b.c"}"#) == .refresh(token: "a.b.c"))
        #expect(ChatV2Request(#"{"type":"mute","id":"m","channel":"c","user":"u","seconds":60}"#) == .moderate(id: "m", channel: "c", action: .mute(user: "u", seconds: 60)))
        #expect(ChatV2Request(#"{"type":"ban","channel":"c","user":"u","seconds":0}"#) == .moderate(id: nil, channel: "c", action: .ban(user: "u", seconds: 0)))
        #expect(ChatV2Request(#"{"type":"unban","channel":"c","user":"u"}"#) == .moderate(id: nil, channel: "c", action: .unban(user: "u")))
        #expect(ChatV2Request(#"{"type":"slowmode","id":"s","channel":"c","seconds":10}"#) == .moderate(id: "s", channel: "c", action: .slowMode(seconds: 10)))
        #expect(ChatV2Request(#"{"type":"slowmode","id":"s","channel":"c","seconds":-1}"#) == .badSend(id: "s", channel: "c", reason: #"a "slowmode" frame needs "seconds": a whole number from 0 to 31536000"#))
        #expect(ChatV2Request(#"{"type":"mute","channel":"c","seconds":5}"#) == .invalid(#"a "mute" frame needs "user""#))
        await propertyCheck(count: Self.count, input: Gen.int(in: 0...(seeds.count - 1)), Self.edits) { index, edits in
            let text = String(decoding: Self.mutate(seeds[index], edits), as: UTF8.self)
            switch ChatV2Request(text) {
            case .invalid(let reason), .badSubscribe(_, let reason), .badSend(_, _, let reason):
                #expect(!reason.isEmpty && reason.utf8.count < 240, "the error says why, briefly")
            case .subscribe(_, let resume?):
                #expect((0...ChatV2Request.maximumOffset).contains(resume.since) && ChatV2Request.isEpoch(resume.epoch), "\(text)")
            case .change(_, _, let change, let of):
                #expect((1...ChatV2Request.maximumOffset).contains(of), "\(text)")
                if case .react(let emoji) = change, MessageText.isOneEmoji(emoji) {
                    #expect(emoji.count == 1 && emoji.utf8.count <= 64, "\(text)")
                }
            case .read(_, let offset):
                #expect((0...ChatV2Request.maximumOffset).contains(offset), "\(text)")
            case .moderate(_, _, .mute(_, let seconds)), .moderate(_, _, .ban(_, let seconds)), .moderate(_, _, .slowMode(let seconds)):
                #expect((0...ChatV2Request.longestModeration).contains(seconds), "\(text)")
            default:
                #expect(text.contains("{"), "a request is a JSON object: \(text)")
            }
        }
    }

    // MARK: Sign-in tokens

    /// The JWT reader takes any text an attacker puts in `?token=`: it refuses with a
    /// reason or reads a token whose claims keep their bounds; it never trusts more.
    @Test func jwtReaderSurvivesAnyTokenAndBoundsWhatItReads() async {
        let seeds = Self.seeds("jwt")
        let now = Int64(Date().timeIntervalSince1970)
        await propertyCheck(count: Self.count, input: Gen.int(in: 0...(seeds.count - 1)), Self.edits) { index, edits in
            let text = String(decoding: Self.mutate(seeds[index], edits), as: UTF8.self)
            switch ReadToken.parse(text) {
            case .failure(let refusal):
                #expect(refusal.description.utf8.count < 300, "the reason is brief")
            case .success(let token):
                #expect(JWTRules.algorithms.contains(token.algorithm) && !token.signature.isEmpty)
                #expect((token.keyID?.unicodeScalars.count ?? 0) <= 128)
                if case .success(let claims) = token.claims.check(now: now) {
                    #expect(!claims.subject.isEmpty && claims.subject.utf8.count <= 255)
                    #expect(claims.name.map { SenderName.problem(with: $0) == nil } ?? true)
                    #expect((claims.rooms.map { $0.names.count + $0.prefixes.count } ?? 0) <= RoomScope.maximumEntries)
                    #expect(now <= claims.expiry + JWTRules.leeway)
                }
            }
        }
    }

    @Test func messageAssemblerSurvivesAnyFrameSequenceAndKeepsItsLimit() async {
        // opcode (0-15), fin, rsv bits, masked, payload
        let frame = Gen.int(in: 0...15)
        let flags = Gen<UInt8>.value()
        let payload = Gen<UInt8>.value().array(of: 0...80)
        let frames = Gen.int(in: 0...1000).array(of: 1...12)
        await propertyCheck(count: Self.count, input: frames, frame, flags, payload) { seeds, opcode, flag, data in
            for deflate in [false, true] {
                var assembler = MessageAssembler(
                    maximumMessageSize: 64,
                    inflater: deflate ? PerMessageDeflate.Inflater(keepsContext: seeds[0] % 2 == 0) : nil
                )
                for (index, seed) in seeds.enumerated() {
                    let code = UInt8((opcode + seed) % 16)
                    let bits = flag &+ UInt8(truncatingIfNeeded: seed)
                    guard let wsOpcode = WebSocketOpcode(encodedWebSocketOpcode: code) else { continue }
                    let frame = WebSocketFrame(
                        fin: bits & 1 == 0 || index == seeds.count - 1,
                        rsv1: bits & 2 != 0, rsv2: bits & 64 != 0 && bits & 128 != 0, rsv3: false,
                        opcode: wsOpcode,
                        maskKey: bits & 4 == 0 ? WebSocketMaskingKey([1, 2, 3, UInt8(truncatingIfNeeded: seed)]) : nil,
                        data: ByteBuffer(bytes: data.prefix(seed % (data.count + 1)))
                    )
                    switch assembler.receive(frame) {
                    case .text(let text): #expect(text.utf8.count <= 64)
                    case .binary(let bytes): #expect(bytes.readableBytes <= 64)
                    case .fail: break
                    default: break
                    }
                }
            }
        }
    }
}
