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

    @Test func membersLeaveInAnyOrder() throws {
        var members = LoopHub.Members()
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

@Suite("Channel sequencer")
struct ChannelSequencerTests {
    /// Drives a sequencer with a scripted history and records what it delivers.
    final class Harness: Sendable {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let delivered: NIOLockedValueBox<[ChatEvent]>
        let history: NIOLockedValueBox<[Message]>
        let fetches: NIOLockedValueBox<[Int64]>
        let reused: NIOLockedValueBox<[Int64]>
        let failuresLeft = NIOLockedValueBox(0)
        let channel: ChannelName
        let sequencer: ChannelSequencer

        init() {
            let delivered = NIOLockedValueBox<[ChatEvent]>([])
            let history = NIOLockedValueBox<[Message]>([])
            let fetches = NIOLockedValueBox<[Int64]>([])
            let reused = NIOLockedValueBox<[Int64]>([])
            self.reused = reused
            let channel = ChannelName("seq")!
            let failuresLeft = self.failuresLeft
            self.delivered = delivered
            self.history = history
            self.fetches = fetches
            self.channel = channel
            sequencer = ChannelSequencer(
                eventLoop: loop,
                fetch: { _, after in
                    fetches.withLockedValue { $0.append(after) }
                    let fail = failuresLeft.withLockedValue { left in
                        defer { left = max(0, left - 1) }
                        return left > 0
                    }
                    if fail { throw BrokerError(.unavailable, "Redis is unavailable") }
                    let kept = history.withLockedValue { $0 }
                    return History(channel: channel, epoch: kept.last?.epoch, lastOffset: kept.last?.offset ?? 0, firstOffset: kept.first?.offset,
                                   messages: kept.filter { $0.offset > after })
                },
                deliver: { events in delivered.withLockedValue { $0 += events } },
                reused: { _, offset in reused.withLockedValue { $0.append(offset) } }
            )
            sequencer.join(channel)
        }

        func message(_ offset: Int64, epoch: String = "e1", time: Int64? = nil) -> Message {
            Message(channel: channel, offset: offset, epoch: epoch, time: time ?? 1000 + offset, data: ByteBuffer(string: "m\(offset)"))
        }

        func receive(_ offsets: [Int64], epoch: String = "e1") async throws {
            let messages = offsets.map { message($0, epoch: epoch) }
            try await loop.submit { self.sequencer.receive(messages) }.get()
        }

        /// Waits until `count` events were delivered (at most 10 s, for a busy machine),
        /// then a little longer, so that anything delivered too many would show.
        func settle(until count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while delivered.withLockedValue({ $0.count }) < count, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            try await Task.sleep(for: .milliseconds(50))
            try await loop.submit {}.get()
        }

        var summary: [String] {
            delivered.withLockedValue { events in
                events.map {
                    switch $0 {
                    case .message(let m): "\(m.offset)"
                    case .reset(_, let epoch): "reset:\(epoch)"
                    case .gap(_, let from, let to): "gap:\(from)-\(to)"
                    case .presence(_, let online): "presence:\(online)"
                    case .members(_, let online, _): "members:\(online)"
                    case .join(_, let member): "join:\(member.id)"
                    case .leave(_, let member): "leave:\(member.id)"
                    }
                }
            }
        }
    }

    @Test func tellsADuplicateFromAnotherMessageGivenTheSameOffset() async throws {
        let harness = Harness()
        try await harness.receive([1, 2, 3])
        // The same message again (pub/sub and a history read overlapping): a duplicate.
        try await harness.loop.submit { harness.sequencer.receive([harness.message(3)]) }.get()
        #expect(harness.reused.withLockedValue { $0 }.isEmpty)
        // Another message with offset 3: Redis lost the first and handed 3 out again.
        try await harness.loop.submit { harness.sequencer.receive([harness.message(3, time: 99_999)]) }.get()
        try await harness.settle(until: 3)
        #expect(harness.reused.withLockedValue { $0 } == [3])
        #expect(harness.summary == ["1", "2", "3"], "not delivered twice at one offset")
    }

    @Test func dropsDuplicatesAndFillsHolesFromHistoryInOrder() async throws {
        let harness = Harness()
        harness.history.withLockedValue { $0 = (1...6).map { harness.message($0) } }
        try await harness.receive([1, 2, 2, 1])
        try await harness.receive([5])  // 3 and 4 were lost by pub/sub
        try await harness.receive([6])  // arrives while recovering: waits its turn
        try await harness.settle(until: 6)
        #expect(harness.summary == ["1", "2", "3", "4", "5", "6"])
        #expect(harness.fetches.withLockedValue { $0 } == [2])
    }

    @Test func aFailedHistoryReadIsRetriedBeforeAnythingIsCalledAGap() async throws {
        let harness = Harness()
        harness.history.withLockedValue { $0 = (1...5).map { harness.message($0) } }
        harness.failuresLeft.withLockedValue { $0 = 3 }  // e.g. the command connection is still reconnecting
        try await harness.receive([1])
        try await harness.receive([5])
        try await harness.settle(until: 5)
        #expect(harness.summary == ["1", "2", "3", "4", "5"])
        #expect(harness.fetches.withLockedValue { $0 } == [1, 1, 1, 1])
    }

    @Test func aHoleTheHistoryNoLongerHoldsIsReportedAsAGap() async throws {
        let harness = Harness()
        harness.history.withLockedValue { $0 = [harness.message(6), harness.message(7)] }  // 3…5 trimmed
        try await harness.receive([1, 2])
        try await harness.receive([7])
        try await harness.settle(until: 5)
        #expect(harness.summary == ["1", "2", "gap:3-5", "6", "7"])
    }

    @Test func aNewEpochIsAnnouncedWithReset() async throws {
        let harness = Harness()
        harness.history.withLockedValue { $0 = [harness.message(1, epoch: "e2")] }
        try await harness.receive([1, 2])
        try await harness.receive([1], epoch: "e2")
        try await harness.settle(until: 4)
        #expect(harness.summary == ["1", "2", "reset:e2", "1"])
    }

    @Test func afterAReconnectEachChannelCatchesUpFromHistory() async throws {
        let harness = Harness()
        harness.history.withLockedValue { $0 = (1...4).map { harness.message($0) } }
        try await harness.receive([1, 2])
        harness.sequencer.resubscribed()
        try await harness.settle(until: 4)
        try await harness.receive([4, 5])
        try await harness.settle(until: 5)
        #expect(harness.summary == ["1", "2", "3", "4", "5"])
    }

    /// Redis restarted empty while pub/sub was down, and a message was published before the
    /// subscription came back: the catch-up finds a new epoch, whose messages start at 1,
    /// whatever offset the old epoch had reached.
    @Test func aCatchUpThatFindsANewEpochReadsItFromItsStart() async throws {
        let harness = Harness()
        try await harness.receive([1, 2, 3])
        harness.history.withLockedValue { $0 = [harness.message(1, epoch: "e2"), harness.message(2, epoch: "e2")] }
        harness.sequencer.resubscribed()
        try await harness.settle(until: 6)
        #expect(harness.summary == ["1", "2", "3", "reset:e2", "1", "2"])
        try await harness.receive([3], epoch: "e2")
        try await harness.settle(until: 7)
        #expect(harness.summary == ["1", "2", "3", "reset:e2", "1", "2", "3"])
    }

    @Test func aChannelNobodyListensToIsForgotten() async throws {
        let harness = Harness()
        try await harness.receive([1, 2])
        harness.sequencer.leave(harness.channel)
        try await harness.receive([3])
        harness.sequencer.join(harness.channel)
        try await harness.receive([9])
        try await harness.settle(until: 3)
        #expect(harness.summary == ["1", "2", "9"], "no catch-up of what was published while nobody listened")
        #expect(harness.fetches.withLockedValue { $0 }.isEmpty)
    }
}
