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
        var bytes = ByteBuffer(
            string: Message.envelopeHeader(offset: 17, epoch: "00ab", time: 1_700_000_000_123, from: "abcdefghijklmno", kind: .message, name: "Ada Lovelace")
        )
        bytes.writeString("line one\nline two with v1 9 x 1\n")
        let message = try #require(Message(channel: channel, envelope: bytes))
        #expect(message.offset == 17)
        #expect(message.epoch == "00ab")
        #expect(message.time == 1_700_000_000_123)
        #expect(message.from == "abcdefghijklmno")
        #expect(message.name == "Ada Lovelace")
        #expect(message.kind == .message)
        #expect(message.text == "line one\nline two with v1 9 x 1\n")
    }

    @Test func readsChangesAndSendersWithoutIdentity() throws {
        let channel = ChannelName("channel_2")!
        for kind in [MessageKind.edit(of: 3), .delete(of: 4), .react(of: 5, on: true), .react(of: 6, on: false)] {
            var bytes = ByteBuffer(string: Message.envelopeHeader(offset: 9, epoch: "00ab", time: 1, from: nil, kind: kind))
            bytes.writeString("👍")
            let message = try #require(Message(channel: channel, envelope: bytes))
            #expect(message.kind == kind)
            #expect(message.from == nil)
            #expect(message.name == nil)
        }
    }

    @Test func readsSignalsWithNamesOfSeveralWordsAndRefusesOthers() {
        let channel = ChannelName("c")!
        #expect(
            Signal.event(channel: channel, payload: ByteBuffer(string: Signal.typing(Member(id: "abc", name: "Ada King Lovelace"))))
                == .typing(channel: channel, member: Member(id: "abc", name: "Ada King Lovelace"))
        )
        #expect(Signal.event(channel: channel, payload: ByteBuffer(string: "s1 t abc")) == .typing(channel: channel, member: Member(id: "abc", name: nil)))
        #expect(
            Signal.event(channel: channel, payload: ByteBuffer(string: "s1 r 7 abc Ada King"))
                == .read(channel: channel, member: Member(id: "abc", name: "Ada King"), offset: 7)
        )
        for text in ["s1 tx abc", "s1 r x abc", "s1 r 7", "s1 q abc", "s1 t", "v2 1 e 5 - m\nx"] {
            #expect(Signal.event(channel: channel, payload: ByteBuffer(string: text)) == nil, "\(text)")
        }
    }

    @Test func stillReadsTheEnvelopesOfInstancesNotYetUpgraded() throws {
        let message = try #require(Message(channel: ChannelName("c")!, envelope: ByteBuffer(string: "v1 3 00ab 7 Bob\nhi")))
        #expect(message.offset == 3 && message.name == "Bob" && message.from == nil && message.kind == .message && message.text == "hi")
    }

    @Test(arguments: [
        "", "v1 1 e 5", "v2 1 e 5\nx", "v1 x e 5\nx", "v1 1  5\nx", "v1 1 e\nx", "v2 1 e 5 - q\nx", "v2 1 e 5 - e0\nx", "v2 1 e 5  m\nx",
        "v2 1 e 5 - ex\nx",
    ])
    func refusesMalformedEnvelopes(text: String) {
        #expect(Message(channel: ChannelName("c")!, envelope: ByteBuffer(string: text)) == nil)
    }
}

@Suite("Memory broker")
struct MemoryBrokerTests {
    @Test func offsetsAreContiguousPerChannelAndDeliveredInOrder() async throws {
        let delivered = NIOLockedValueBox<[Message]>([])
        let broker = MemoryBroker { events in delivered.withLockedValue { $0 += events.compactMap(\.message) } }
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
        #expect(Set(all.filter { $0.channel == a }.map(\.epoch)).count == 1, "one epoch per channel")
    }

    @Test func concurrentPublishesStillArriveInOffsetOrder() async throws {
        let delivered = NIOLockedValueBox<[Int64]>([])
        let broker = MemoryBroker { events in delivered.withLockedValue { $0 += events.compactMap(\.message).map(\.offset) } }
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
        /// Each batch's joined frames of format 0.
        var batches: [String] = []
        var wentAway = false
        func deliver(_ batch: Batch) { batches.append(batch.frames(format: 0).map { String(buffer: $0) } ?? "nothing") }
        func goAway() { wentAway = true }
        func heartbeat(now: NIODeadline) {}
    }

    @Test func deliversOnlyToTheChannelsMembersInOneBatchPerDrain() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { Task { try? await group.shutdownGracefully() } }
        let hub = Hub(eventLoopGroup: group) { event in [event.message.map { ByteBuffer(string: "frame:" + $0.text) }] }
        let loops = Array(group.makeIterator())
        let red = ChannelName("red")!
        let blue = ChannelName("blue")!
        let members = (0..<4).map { _ in Recorder() }
        for (index, member) in members.enumerated() {
            let loop = loops[index % 2]
            try await loop.submit { hub.loop(for: loop).add(member, to: index < 3 ? red : blue) }.get()
        }
        // Hold both loops so that the three messages wait in their inboxes together.
        let released = NIOLockedValueBox(false)
        for loop in loops { loop.execute { while !released.withLockedValue({ $0 }) { usleep(1000) } } }
        let messages = (1...3).map { Message(channel: red, offset: Int64($0), epoch: "e", time: 0, data: ByteBuffer(string: "m\($0)")) }
        for message in messages { hub.deliver([.message(message)]) }
        released.withLockedValue { $0 = true }
        // A task queued after the delivery on each loop runs after it.
        for loop in loops { try await loop.submit {}.get() }
        for (index, member) in members.enumerated() {
            let batches = try await loops[index % 2].submit { member.batches }.get()
            #expect(batches == (index < 3 ? ["frame:m1frame:m2frame:m3"] : []))
        }
        #expect(await hub.memberCounts() == [red: 3, blue: 1])
        try await hub.goAway().get()
        for (index, member) in members.enumerated() {
            #expect(try await loops[index % 2].submit { member.wentAway }.get())
        }
    }

    @Test func eventsForSomePeopleGoOnlyToThemAndInTheirPlace() async throws {
        final class Person: HubMember, @unchecked Sendable {
            let identity: String?
            var batches: [String] = []
            init(_ identity: String) { self.identity = identity }
            func deliver(_ batch: Batch) { batches.append(batch.frames(format: 0).map { String(buffer: $0) } ?? "nothing") }
            func goAway() {}
            func heartbeat(now: NIODeadline) {}
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { Task { try? await group.shutdownGracefully() } }
        let hub = Hub(eventLoopGroup: group) { event in
            switch event {
            case .message(let message): [ByteBuffer(string: "[\(message.text)]")]
            case .typing(_, let member): [ByteBuffer(string: "[\(member.id) typing]")]
            case .read(_, let member, let offset): [ByteBuffer(string: "[\(member.id) read \(offset)]")]
            case .seen(_, let member, let offset): [ByteBuffer(string: "[\(member.id) seen \(offset)]")]
            default: [nil]
            }
        }
        let loop = group.next()
        let red = ChannelName("red")!
        let (ada, bob) = (Person("ada"), Person("bob"))
        try await loop.submit {
            hub.loop(for: loop).add(ada, to: red)
            hub.loop(for: loop).add(bob, to: red)
        }.get()
        func message(_ offset: Int64) -> ChatEvent {
            .message(Message(channel: red, offset: offset, epoch: "e", time: 0, data: ByteBuffer(string: "m\(offset)"), from: "bob"))
        }
        let released = NIOLockedValueBox(false)
        loop.execute { while !released.withLockedValue({ $0 }) { usleep(1000) } }
        hub.deliver([message(1), .typing(channel: red, member: Member(id: "bob", name: nil)), message(2), message(3)])
        hub.deliver([.read(channel: red, member: Member(id: "bob", name: nil), offset: 3)])
        released.withLockedValue { $0 = true }
        try await loop.submit {}.get()
        // Bob's typing reaches Ada between his messages, not after them; never Bob.
        #expect(try await loop.submit { ada.batches }.get() == ["[m1]", "[bob typing]", "[m2][m3]", "[bob seen 3]"])
        #expect(try await loop.submit { bob.batches }.get() == ["[m1]", "[m2][m3]", "[bob read 3]"])
    }

    @Test func aMessageAfterAQuietSpellGoesAtOnceAndWhatFollowsWithinTheWindowGoesTogether() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { Task { try? await group.shutdownGracefully() } }
        // A wide window: the checks below must land inside it even on a busy machine.
        let hub = Hub(eventLoopGroup: group, batchWindow: .seconds(3)) { event in [event.message.map { ByteBuffer(string: $0.text) }] }
        let loop = group.next()
        let red = ChannelName("red")!
        let member = Recorder()
        try await loop.submit { hub.loop(for: loop).add(member, to: red) }.get()
        func message(_ offset: Int64) -> ChatEvent {
            .message(Message(channel: red, offset: offset, epoch: "e", time: 0, data: ByteBuffer(string: "m\(offset)")))
        }
        hub.deliver([message(1)])
        try await loop.submit {}.get()
        #expect(try await loop.submit { member.batches }.get() == ["m1"])
        hub.deliver([message(2)])
        hub.deliver([message(3)])
        try await loop.submit {}.get()
        #expect(try await loop.submit { member.batches }.get() == ["m1"], "within the window: waits")
        var batches: [String] = []
        for _ in 0..<500 where batches.count < 2 {
            try await Task.sleep(for: .milliseconds(20))
            batches = try await loop.submit { member.batches }.get()
        }
        #expect(batches == ["m1", "m2m3"])
    }

    @Test func aDrainOfSeveralChannelsKeepsEachChannelsOrder() {
        let red = ChannelName("red")!
        let blue = ChannelName("blue")!
        let events: [(ChannelName, Int64)] = [(red, 1), (blue, 1), (red, 2), (blue, 2), (red, 3)]
        let deliveries = events.map { channel, offset in
            Delivery(event: .message(Message(channel: channel, offset: offset, epoch: "e", time: 0, data: ByteBuffer())), frames: [])
        }
        let groups = LoopHub.byChannel(deliveries)
        #expect(groups.map(\.0) == [red, blue])
        #expect(groups[0].1.map { $0.event.message?.offset } == [1, 2, 3])
        #expect(groups[1].1.map { $0.event.message?.offset } == [1, 2])
    }

    @Test func aBatchJoinsEachFormatOnceAndSaysNothingForAFormatWithoutFrames() {
        let red = ChannelName("red")!
        let deliveries = (1...3).map { offset in
            Delivery(
                event: .message(Message(channel: red, offset: Int64(offset), epoch: "e", time: 0, data: ByteBuffer())),
                frames: [ByteBuffer(string: "<\(offset)>"), nil]
            )
        }
        let batch = Batch(channel: red, deliveries: deliveries)
        #expect(batch.frames(format: 0).map { String(buffer: $0) } == "<1><2><3>")
        #expect(batch.frames(format: 0).map { String(buffer: $0) } == "<1><2><3>")
        #expect(batch.frames(format: 1) == nil)
    }

    @Test func aMarkSaysWhatWasDrainedToTheChannelsMembersSinceTheyCame() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { Task { try? await group.shutdownGracefully() } }
        let loop = group.next()
        let hub = Hub(eventLoopGroup: group) { _ in [nil] }
        let red = ChannelName("red")!
        let member = Recorder()
        let first = try await loop.submit { () -> HubMark? in
            hub.loop(for: loop).add(member, to: red)
            return hub.loop(for: loop).mark(of: red)
        }.get()
        #expect(first?.drained == nil)
        let message = Message(channel: red, offset: 7, epoch: "e", time: 0, data: ByteBuffer(string: "m"))
        hub.deliver([.message(message)])
        try await loop.submit {}.get()
        let after = try await loop.submit { hub.loop(for: loop).mark(of: red) }.get()
        #expect(after?.generation == first?.generation && after?.drained == HubMark.Position(epoch: "e", offset: 7))
        hub.deliver([.reset(channel: red, epoch: "f")])
        // The loop rests as long as its last drain took before the next: on a busy
        // machine that drain was slow, and the reset goes out a little later.
        var drained: HubMark.Position?
        for _ in 0..<200 {
            drained = try await loop.submit { hub.loop(for: loop).mark(of: red)?.drained }.get()
            if drained?.epoch == "f" { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(drained == HubMark.Position(epoch: "f", offset: 0))
        // Everyone left and someone came back: another generation, nothing drained to it yet.
        let again = try await loop.submit { () -> HubMark? in
            hub.loop(for: loop).remove(member, from: red)
            #expect(hub.loop(for: loop).mark(of: red) == nil)
            hub.loop(for: loop).add(member, to: red)
            return hub.loop(for: loop).mark(of: red)
        }.get()
        #expect(again != nil && again?.generation != first?.generation && again?.drained == nil)
    }

    @Test func membersLeaveInAnyOrder() throws {
        var members = LoopHub.Members(generation: 1)
        let recorders = (0..<5).map { _ in Recorder() }
        for recorder in recorders { members.add(recorder) }
        members.add(recorders[0])  // twice is once
        #expect(members.list.count == 5)
        for index in [1, 4, 0] { members.remove(recorders[index]) }
        members.remove(recorders[1])  // already gone
        let left = Set(members.list.map { ObjectIdentifier($0) })
        #expect(left == Set([recorders[2], recorders[3]].map { ObjectIdentifier($0) }))
        for (place, member) in members.list.enumerated() {
            #expect(members.places[ObjectIdentifier(member)] == place)
        }
    }
}

@Suite("Memory broker history")
struct MemoryHistoryTests {
    @Test func keepsTheNewestMessagesAndSaysWhatItCovers() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 5)) { _ in }
        let channel = ChannelName("ring")!
        for index in 1...8 { _ = try await broker.publish(ByteBuffer(string: "m\(index)"), to: channel) }
        let newest = try await broker.history(of: channel, after: nil, limit: 3)
        #expect(newest.messages.map(\.text) == ["m6", "m7", "m8"])
        #expect(newest.lastOffset == 8)
        #expect(newest.firstOffset == 4)
        let after = try await broker.history(of: channel, after: 5, limit: 100)
        #expect(after.messages.map(\.offset) == [6, 7, 8])
        let epoch = try #require(after.epoch)
        #expect(after.covers(after: 5, epoch: epoch))
        #expect(after.covers(after: 3, epoch: epoch), "offset 4 onwards is kept")
        #expect(!after.covers(after: 2, epoch: epoch), "offset 3 was dropped from the ring")
        #expect(!after.covers(after: 5, epoch: "another"))
        #expect(!after.covers(after: 9, epoch: epoch), "an offset never handed out")
        #expect(after.covers(after: 8, epoch: epoch))
    }

    @Test func aChannelIdleLongerThanItsTimeToLiveStartsANewEpoch() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 10, timeToLive: .milliseconds(50))) { _ in }
        let channel = ChannelName("brief")!
        let first = try await broker.publish(ByteBuffer(string: "a"), to: channel)
        try await Task.sleep(for: .milliseconds(120))
        #expect(try await broker.history(of: channel, after: 0, limit: 10).epoch == nil)
        let second = try await broker.publish(ByteBuffer(string: "b"), to: channel)
        #expect(second.offset == 1)
        #expect(second.epoch != first.epoch)
    }
}

@Suite("Memory broker's archive feed")
struct MemoryArchiveFeedTests {
    @Test func handsOutEachChannelInOrderKeepsItUntilArchivedThenCutsBack() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 3, archiveBacklog: 8)) { _ in }
        let channel = ChannelName("fed")!
        for index in 1...6 { _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m\(index)"), to: channel, from: "ada")) }
        // Nothing archived yet: the ring holds all six, more than its history size.
        #expect(try await broker.history(of: channel, after: 0, limit: 100).firstOffset == 1)
        let first = try #require(try await broker.take(4, for: "here").first)
        #expect(first.channel == channel && first.messages.map(\.offset) == [1, 2, 3, 4])
        // Not acknowledged: the same batch again.
        #expect(try await broker.take(4, for: "here").first?.messages.map(\.offset) == [1, 2, 3, 4])
        try await broker.archived(first, by: "here")
        // Cut back to the history size, never past what the archive lacks (5 and 6).
        #expect(try await broker.history(of: channel, after: 0, limit: 100).firstOffset == 4)
        // An edit, and a delete of message 5 before it was archived: 5 goes out without its
        // text (its delete keeps the place), the rest as published.
        _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m4!"), to: channel, from: "ada", kind: .edit(of: 4)))
        _ = try await broker.publish(PublishRequest(ByteBuffer(), to: channel, from: "ada", kind: .delete(of: 5)))
        let second = try #require(try await broker.take(10, for: "here").first)
        #expect(second.messages.map(\.offset) == [6, 7, 8], "message 5 is gone for good")
        #expect(second.messages.map(\.kind) == [.message, .edit(of: 4), .delete(of: 5)])
        #expect(second.messages.allSatisfy { $0.state == nil }, "changes travel as their own entries")
        #expect(second.entries.count == 4)
        try await broker.archived(second, by: "here")
        #expect(try await broker.take(10, for: "here").isEmpty)
        #expect(try await broker.history(of: channel, after: 0, limit: 100).messages.map(\.offset) == [6, 7, 8])
    }

    @Test func anIdleArchiverWakesWhenAMessageIsPublishedNotAtItsNextLook() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 3, archiveBacklog: 8)) { _ in }
        let started = ContinuousClock.now
        // Nothing published: the wait lasts its time.
        await broker.waitForMessages(upTo: .milliseconds(100))
        #expect(ContinuousClock.now - started >= .milliseconds(100))
        let waiting = Task { () -> Duration in
            let from = ContinuousClock.now
            await broker.waitForMessages(upTo: .seconds(10))
            return ContinuousClock.now - from
        }
        try await Task.sleep(for: .milliseconds(50))
        _ = try await broker.publish(PublishRequest(ByteBuffer(string: "wake"), to: ChannelName("bell")!))
        #expect(await waiting.value < .seconds(2), "woken by the publish")
        // Published before the wait: it returns at once.
        _ = try await broker.take(10, for: "here")
        _ = try await broker.publish(PublishRequest(ByteBuffer(string: "again"), to: ChannelName("bell2")!))
        let before = ContinuousClock.now
        await broker.waitForMessages(upTo: .seconds(10))
        #expect(ContinuousClock.now - before < .seconds(2))
    }

    @Test func anEditOfAMessageDeletedBeforeItWasArchivedKeepsItsPlaceWithoutItsWords() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 10, archiveBacklog: 100)) { _ in }
        let channel = ChannelName("edited-gone")!
        _ = try await broker.publish(PublishRequest(ByteBuffer(string: "first"), to: channel, from: "ada"))
        _ = try await broker.publish(PublishRequest(ByteBuffer(string: "secret"), to: channel, from: "ada", kind: .edit(of: 1)))
        _ = try await broker.publish(PublishRequest(ByteBuffer(), to: channel, from: "ada", kind: .delete(of: 1)))
        let batch = try #require(try await broker.take(10, for: "here").first)
        #expect(batch.messages.map(\.offset) == [2, 3], "no hole at the edit's offset; the message itself goes with its delete")
        #expect(batch.messages.first?.text == "", "the edit without its words")
    }

    @Test func anArchiveThatIsAwayMakesTheRingHoldUpToItsBacklog() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 2, archiveBacklog: 5)) { _ in }
        let channel = ChannelName("away")!
        for index in 1...9 { _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m\(index)"), to: channel)) }
        let history = try await broker.history(of: channel, after: 0, limit: 100)
        #expect(history.messages.map(\.offset) == [5, 6, 7, 8, 9], "the backlog's bound")
        #expect(try await broker.take(100, for: "here").first?.messages.map(\.offset) == [5, 6, 7, 8, 9])
    }

    @Test func withoutAnArchiveTheRingIsTheHistorySizeAndNothingIsHandedOut() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 2)) { _ in }
        let channel = ChannelName("plain")!
        for index in 1...5 { _ = try await broker.publish(PublishRequest(ByteBuffer(string: "m\(index)"), to: channel)) }
        #expect(try await broker.history(of: channel, after: 0, limit: 100).messages.map(\.offset) == [4, 5])
        #expect(try await broker.take(100, for: "here").isEmpty)
    }

    @Test func aBatchOfAnEpochGoneSinceChangesNothing() async throws {
        let broker = MemoryBroker(history: HistoryPolicy(size: 2, timeToLive: .milliseconds(50), archiveBacklog: 10)) { _ in }
        let channel = ChannelName("gone")!
        _ = try await broker.publish(PublishRequest(ByteBuffer(string: "old"), to: channel))
        let old = try #require(try await broker.take(10, for: "here").first)
        try await Task.sleep(for: .milliseconds(120))
        for index in 1...3 { _ = try await broker.publish(PublishRequest(ByteBuffer(string: "new \(index)"), to: channel)) }
        try await broker.archived(old, by: "here")
        #expect(try await broker.take(10, for: "here").first?.messages.map(\.text) == ["new 1", "new 2", "new 3"])
    }
}

@Suite("Channel sequencer")
struct ChannelSequencerTests {
    /// Drives a sequencer's state machine with a scripted history, event by event, and
    /// records what it delivers. History reads wait in `pending` until ``settle(until:)``
    /// answers them, so messages can arrive while a read is out; retries are due at once.
    final class Harness {
        var machine = ChannelSequencer.StateMachine()
        var delivered: [ChatEvent] = []
        var history: [Message] = []
        var fetches: [Int64] = []
        var reused: [Int64] = []
        var failuresLeft = 0
        let channel = ChannelName("seq")!
        private var pending: [(channel: ChannelName, after: Int64, attempt: Int)] = []

        init() {
            machine.join(channel)
        }

        func message(_ offset: Int64, epoch: String = "e1", time: Int64? = nil) -> Message {
            Message(channel: channel, offset: offset, epoch: epoch, time: time ?? 1000 + offset, data: ByteBuffer(string: "m\(offset)"))
        }

        func receive(_ offsets: [Int64], epoch: String = "e1") {
            receive(offsets.map { message($0, epoch: epoch) })
        }

        func receive(_ messages: [Message]) {
            run(machine.receive(messages))
        }

        func resubscribed() {
            run(machine.resubscribed(nil))
        }

        /// Answers every history read, and the reads those answers lead to.
        func settle() {
            while !pending.isEmpty {
                let read = pending.removeFirst()
                let result: Result<History, any Error>
                if failuresLeft > 0 {
                    failuresLeft -= 1
                    result = .failure(BrokerError(.unavailable, "Redis is unavailable"))
                } else {
                    result = .success(History(
                        channel: read.channel, epoch: history.last?.epoch, lastOffset: history.last?.offset ?? 0, firstOffset: history.first?.offset,
                        messages: history.filter { $0.offset > read.after }
                    ))
                }
                run(machine.historyRead(read.channel, after: read.after, attempt: read.attempt, result))
            }
        }

        /// Answers the reads; `count` events should have been delivered by then.
        func settle(until count: Int) {
            settle()
            #expect(delivered.count == count)
        }

        private func run(_ actions: [ChannelSequencer.StateMachine.Action]) {
            for action in actions {
                switch action {
                case .deliver(let events): delivered += events
                case .fetch(let channel, let after, let attempt):
                    fetches.append(after)
                    pending.append((channel, after, attempt))
                case .retry(let channel, let after, let attempt, _): run(machine.retryDue(channel, after: after, attempt: attempt))
                case .reused(_, let offset): reused.append(offset)
                case .behind: break
                }
            }
        }

        var summary: [String] {
            delivered.map {
                switch $0 {
                case .message(let m): "\(m.offset)"
                case .reset(_, let epoch): "reset:\(epoch)"
                case .gap(_, let from, let to): "gap:\(from)-\(to)"
                case .presence(_, let online): "presence:\(online)"
                case .members(_, let online, _): "members:\(online)"
                case .join(_, let member): "join:\(member.id)"
                case .leave(_, let member): "leave:\(member.id)"
                case .typing(_, let member): "typing:\(member.id)"
                case .read(_, let member, let offset): "read:\(member.id):\(offset)"
                case .seen(_, let member, let offset): "seen:\(member.id):\(offset)"
                case .moderation(_, let change): "moderation:\(change)"
                }
            }
        }
    }

    @Test func tellsADuplicateFromAnotherMessageGivenTheSameOffset() {
        let harness = Harness()
        harness.receive([1, 2, 3])
        // The same message again (pub/sub and a history read overlapping): a duplicate.
        harness.receive([harness.message(3)])
        #expect(harness.reused.isEmpty)
        // Another message with offset 3: Redis lost the first and handed 3 out again.
        harness.receive([harness.message(3, time: 99_999)])
        harness.settle(until: 3)
        #expect(harness.reused == [3])
        #expect(harness.summary == ["1", "2", "3"], "not delivered twice at one offset")
    }

    @Test func dropsDuplicatesAndFillsHolesFromHistoryInOrder() {
        let harness = Harness()
        harness.history = (1...6).map { harness.message($0) }
        harness.receive([1, 2, 2, 1])
        harness.receive([5])  // 3 and 4 were lost by pub/sub
        harness.receive([6])  // arrives while recovering: waits its turn
        harness.settle(until: 6)
        #expect(harness.summary == ["1", "2", "3", "4", "5", "6"])
        #expect(harness.fetches == [2])
    }

    @Test func aFailedHistoryReadIsRetriedBeforeAnythingIsCalledAGap() {
        let harness = Harness()
        harness.history = (1...5).map { harness.message($0) }
        harness.failuresLeft = 3  // e.g. the command connection is still reconnecting
        harness.receive([1])
        harness.receive([5])
        harness.settle(until: 5)
        #expect(harness.summary == ["1", "2", "3", "4", "5"])
        #expect(harness.fetches == [1, 1, 1, 1])
    }

    @Test func aHoleTheHistoryNoLongerHoldsIsReportedAsAGap() {
        let harness = Harness()
        harness.history = [harness.message(6), harness.message(7)]  // 3…5 trimmed
        harness.receive([1, 2])
        harness.receive([7])
        harness.settle(until: 5)
        #expect(harness.summary == ["1", "2", "gap:3-5", "6", "7"])
    }

    @Test func aNewEpochIsAnnouncedWithReset() {
        let harness = Harness()
        harness.history = [harness.message(1, epoch: "e2")]
        harness.receive([1, 2])
        harness.receive([1], epoch: "e2")
        harness.settle(until: 4)
        #expect(harness.summary == ["1", "2", "reset:e2", "1"])
    }

    @Test func afterAReconnectEachChannelCatchesUpFromHistory() {
        let harness = Harness()
        harness.history = (1...4).map { harness.message($0) }
        harness.receive([1, 2])
        harness.resubscribed()
        harness.settle(until: 4)
        harness.receive([4, 5])
        harness.settle(until: 5)
        #expect(harness.summary == ["1", "2", "3", "4", "5"])
    }

    /// No message came yet: the catch-up starts where the channel stood when its first
    /// listener came (its floor), so nothing older is delivered and nothing newer is lost.
    @Test func aCatchUpBeforeAnyMessageStartsFromTheFloor() {
        let harness = Harness()
        harness.machine.stands(harness.channel, epoch: "e1", lastOffset: 2)
        harness.history = (1...4).map { harness.message($0) }
        harness.resubscribed()
        #expect(harness.fetches == [2])
        harness.settle(until: 2)
        #expect(harness.summary == ["3", "4"])
        // A channel not created yet when its listener came: its first epoch is no reset.
        let fresh = Harness()
        fresh.machine.stands(fresh.channel, epoch: nil, lastOffset: 0)
        fresh.history = [fresh.message(1, epoch: "e9")]
        fresh.resubscribed()
        fresh.settle(until: 1)
        #expect(fresh.summary == ["1"])
        // Once a message came, the floor is forgotten: the position is what counts.
        let live = Harness()
        live.machine.stands(live.channel, epoch: "e1", lastOffset: 0)
        live.receive([1])
        live.machine.stands(live.channel, epoch: "e1", lastOffset: 0)
        live.resubscribed()
        #expect(live.fetches == [1])
    }

    /// Redis restarted empty while pub/sub was down, and a message was published before the
    /// subscription came back: the catch-up finds a new epoch, whose messages start at 1,
    /// whatever offset the old epoch had reached.
    @Test func aCatchUpThatFindsANewEpochReadsItFromItsStart() {
        let harness = Harness()
        harness.receive([1, 2, 3])
        harness.history = [harness.message(1, epoch: "e2"), harness.message(2, epoch: "e2")]
        harness.resubscribed()
        harness.settle(until: 6)
        #expect(harness.summary == ["1", "2", "3", "reset:e2", "1", "2"])
        harness.receive([3], epoch: "e2")
        harness.settle(until: 7)
        #expect(harness.summary == ["1", "2", "3", "reset:e2", "1", "2", "3"])
    }

    @Test func aReadThatNeverSucceedsEndsInAGapAfterTheLastAttempt() {
        let harness = Harness()
        harness.failuresLeft = 1000
        harness.receive([1])
        harness.receive([5])
        harness.settle(until: 3)
        #expect(harness.summary == ["1", "gap:2-4", "5"])
        #expect(harness.fetches.count == ChannelSequencer.StateMachine.recoveryAttempts)
    }

    @Test func theAnswerOfAReadForAChannelLeftMeanwhileIsDropped() {
        let harness = Harness()
        harness.history = (1...5).map { harness.message($0) }
        harness.receive([1])
        harness.receive([5])
        harness.machine.leave(harness.channel)
        harness.settle(until: 1)
        #expect(harness.summary == ["1"])
    }

    @Test func aChannelNobodyListensToIsForgotten() {
        let harness = Harness()
        harness.receive([1, 2])
        harness.machine.leave(harness.channel)
        harness.receive([3])
        harness.machine.join(harness.channel)
        harness.receive([9])
        harness.settle(until: 3)
        #expect(harness.summary == ["1", "2", "9"], "no catch-up of what was published while nobody listened")
        #expect(harness.fetches.isEmpty)
    }
}
