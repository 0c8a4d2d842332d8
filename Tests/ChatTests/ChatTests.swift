import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Chat

@Suite("Channel names")
struct ChannelNameTests {
    @Test(arguments: ["channel_1", "a", "Room-42", "team.eng:general", String(repeating: "x", count: 64)])
    func valid(name: String) {
        #expect(ChannelName(name)?.rawValue == name)
    }

    @Test(arguments: ["", " ", "has space", "semi;colon", "ünïcode", "<script>", String(repeating: "x", count: 65), "a/b", "{tag}"])
    func invalid(name: String) {
        #expect(ChannelName(name) == nil)
        #expect(throws: ChannelNameError.self) { try ChannelName(validating: name) }
    }

    @Test func refusalSaysWhy() {
        do {
            _ = try ChannelName(validating: String(repeating: "x", count: 70))
            Issue.record("accepted a 70-character name")
        } catch {
            #expect(error.reason.contains("64"))
        }
    }
}

@Suite("Envelope between instances")
struct EnvelopeTests {
    @Test func readsWhatThePublishScriptWrites() throws {
        let channel = ChannelName("channel_2")!
        var bytes = ByteBuffer(string: Message.envelopeHeader(offset: 17, epoch: "00ab", time: 1_700_000_000_123))
        bytes.writeString("line one\nline two with v1 9 x 1\n")
        let message = try #require(Message(channel: channel, envelope: bytes))
        #expect(message.offset == 17)
        #expect(message.epoch == "00ab")
        #expect(message.time == 1_700_000_000_123)
        #expect(message.text == "line one\nline two with v1 9 x 1\n")
    }

    @Test(arguments: ["", "v1 1 e 5", "v2 1 e 5\nx", "v1 x e 5\nx", "v1 1  5\nx", "v1 1 e\nx"])
    func refusesMalformedEnvelopes(text: String) {
        #expect(Message(channel: ChannelName("c")!, envelope: ByteBuffer(string: text)) == nil)
    }
}

@Suite("Memory broker")
struct MemoryBrokerTests {
    @Test func offsetsAreContiguousPerChannelAndDeliveredInOrder() async throws {
        let delivered = NIOLockedValueBox<[Message]>([])
        let broker = MemoryBroker { messages in delivered.withLockedValue { $0 += messages } }
        let a = ChannelName("a")!
        let b = ChannelName("b")!
        for index in 1...5 {
            let message = try await broker.publish(ByteBuffer(string: "a\(index)"), to: a)
            #expect(message.offset == Int64(index))
        }
        let first = try await broker.publish(ByteBuffer(string: "b1"), to: b)
        #expect(first.offset == 1)
        let all = delivered.withLockedValue { $0 }
        #expect(all.map(\.text) == ["a1", "a2", "a3", "a4", "a5", "b1"])
        #expect(Set(all.map(\.epoch)).count == 1)
    }

    @Test func concurrentPublishesStillArriveInOffsetOrder() async throws {
        let delivered = NIOLockedValueBox<[Int64]>([])
        let broker = MemoryBroker { messages in delivered.withLockedValue { $0 += messages.map(\.offset) } }
        let channel = ChannelName("busy")!
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask { _ = try? await broker.publish(ByteBuffer(string: "\(index)"), to: channel) }
            }
        }
        #expect(delivered.withLockedValue { $0 } == Array(1...200))
    }

    @Test func eachStartIsANewEpoch() async throws {
        let one = try await MemoryBroker { _ in }.publish(ByteBuffer(string: "x"), to: ChannelName("c")!)
        let two = try await MemoryBroker { _ in }.publish(ByteBuffer(string: "x"), to: ChannelName("c")!)
        #expect(one.epoch != two.epoch)
    }
}

@Suite("Hub fan-out")
struct HubTests {
    final class Recorder: HubMember, @unchecked Sendable {
        var received: [String] = []
        var flushes = 0
        var wentAway = false
        func enqueue(_ delivery: Delivery) { received.append(String(buffer: delivery.frames[0])) }
        func flush() { flushes += 1 }
        func goAway() { wentAway = true }
        func heartbeat(now: NIODeadline) {}
    }

    @Test func deliversOnlyToTheChannelsMembersAndFlushesOncePerBatch() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { Task { try? await group.shutdownGracefully() } }
        let hub = Hub(eventLoopGroup: group) { [ByteBuffer(string: "frame:" + $0.text)] }
        let loops = Array(group.makeIterator())
        let red = ChannelName("red")!
        let blue = ChannelName("blue")!
        let members = (0..<4).map { _ in Recorder() }
        for (index, member) in members.enumerated() {
            let loop = loops[index % 2]
            try await loop.submit { hub.loop(for: loop).add(member, to: index < 3 ? red : blue) }.get()
        }
        let messages = (1...3).map { Message(channel: red, offset: Int64($0), epoch: "e", time: 0, data: ByteBuffer(string: "m\($0)")) }
        hub.deliver(messages)
        // A task queued after the delivery on each loop runs after it.
        for loop in loops { try await loop.submit {}.get() }
        for (index, member) in members.enumerated() {
            let (received, flushes) = try await loops[index % 2].submit { (member.received, member.flushes) }.get()
            if index < 3 {
                #expect(received == ["frame:m1", "frame:m2", "frame:m3"])
                #expect(flushes == 1)
            } else {
                #expect(received.isEmpty)
                #expect(flushes == 0)
            }
        }
        #expect(await hub.memberCounts() == [red: 3, blue: 1])
        try await hub.goAway().get()
        for (index, member) in members.enumerated() {
            #expect(try await loops[index % 2].submit { member.wentAway }.get())
        }
    }
}
