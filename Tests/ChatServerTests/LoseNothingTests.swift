import ChatClient
import NIOCore
import ChatServer
import ChatTestSupport
import Foundation
import Testing

/// Resume, history, reset, gap and recovery: nothing acknowledged goes missing unseen.
@Suite("Lose nothing")
struct LoseNothingTests {
    /// A chat.v1 frame, decoded.
    struct Frame {
        var type: String
        var offset: Int
        var epoch: String?
        var data: String?
        var from: Int
        var to: Int

        init(_ text: String) {
            let json = text.jsonObject
            type = json["type"] as? String ?? "?"
            offset = json["offset"] as? Int ?? -1
            epoch = json["epoch"] as? String
            data = json["data"] as? String
            from = json["from"] as? Int ?? -1
            to = json["to"] as? Int ?? -1
        }
    }

    /// The next frame that is not about presence.
    func nextFrame(_ socket: ChatWebSocket, timeout: Duration = .seconds(5)) async -> Frame? {
        let deadline = ContinuousClock.now + timeout
        while let frame = await socket.nextText(timeout: deadline - ContinuousClock.now).map(Frame.init) {
            if frame.type != "presence" { return frame }
        }
        return nil
    }

    /// Publishes `count` messages of about `size` bytes with 8 publishers at once.
    func publish(count: Int, size: Int, to channel: String, port: Int) async throws {
        let payload = String(repeating: "x", count: size)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<8 {
                group.addTask {
                    for index in stride(from: lane + 1, through: count, by: 8) {
                        let response = try await ChatHTTP.send(port: port, data: "\(index):\(payload)", channel: channel)
                        #expect(response.body == "ok")
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func resumeReplaysWhatWasMissedWithNoHoleAndNoDuplicateWhilePublishesRace(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            let first = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            for index in 1...5 { _ = try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: channel) }
            var seen: [Frame] = []
            for _ in 1...5 { seen.append(try #require(await nextFrame(first))) }
            await first.disconnect()
            let epoch = try #require(seen.last?.epoch)

            // Publish 6…60 while the client is away and while it resumes.
            let publisher = Task {
                for index in 6...60 {
                    _ = try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: channel)
                    if index == 20 { try await Task.sleep(for: .milliseconds(20)) }
                }
            }
            try await Task.sleep(for: .milliseconds(30))
            let resumed = try await ChatWebSocket.connect(
                port: server.port, path: "/wb/?channel=\(channel)&since=\(seen.last!.offset)&epoch=\(epoch)", subprotocols: ["chat.v1"]
            )
            try await publisher.value
            var offsets: [Int] = []
            while offsets.last != 60, let frame = await nextFrame(resumed) {
                #expect(frame.type == "message")
                #expect(frame.data == "m\(frame.offset)")
                offsets.append(frame.offset)
            }
            #expect(offsets == Array(6...60))
            #expect(await nextFrame(resumed, timeout: .milliseconds(200)) == nil, "nothing twice")
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func aResumeTheHistoryCannotCoverGetsResetAndThenGoesLive(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            _ = try await ChatHTTP.send(port: server.port, data: "one", channel: channel)
            let history = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)").body.jsonObject
            let epoch = try #require(history["epoch"] as? String)

            let wrongEpoch = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&since=1&epoch=ffff0000", subprotocols: ["chat.v1"])
            let reset = try #require(await nextFrame(wrongEpoch))
            #expect(reset.type == "reset")
            #expect(reset.epoch == epoch)

            let future = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&since=99&epoch=\(epoch)", subprotocols: ["chat.v1"])
            #expect(await nextFrame(future)?.type == "reset", "an offset never handed out is from another history")

            _ = try await ChatHTTP.send(port: server.port, data: "two", channel: channel)
            #expect(await nextFrame(wrongEpoch)?.data == "two")
            #expect(await nextFrame(future)?.data == "two")
        }
    }

    /// A message can be in the history the replay reads and still wait in the loop's
    /// inbox for the next drain (the batch window). The replay must not be followed by
    /// that message again.
    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func aMessageStillWaitingForTheDrainIsNotSentAgainAfterTheReplay(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker, { $0.batchWindow = .milliseconds(500) }) { server in
            let channel = uniqueChannel()
            // Keeps the channel served on this instance, so its messages reach the hub.
            let listener = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            _ = try await ChatHTTP.send(port: server.port, data: "m1", channel: channel)
            #expect(await nextFrame(listener)?.offset == 1)
            // The loops drained for m1 a moment ago: m2 waits for the next drain.
            let sent = try await ChatHTTP.send(port: server.port, data: "m2", channel: channel)
            let epoch = try #require(sent.header("Chat-Epoch"))
            let resumed = try await ChatWebSocket.connect(
                port: server.port, path: "/wb/?channel=\(channel)&since=0&epoch=\(epoch)", subprotocols: ["chat.v1"]
            )
            #expect(await nextFrame(resumed)?.offset == 1)
            #expect(await nextFrame(resumed)?.offset == 2)
            #expect(await nextFrame(listener)?.offset == 2)
            #expect(await nextFrame(resumed, timeout: .milliseconds(800)) == nil, "m2 once, not again after the drain")
        }
    }

    @Test func resumeOutsideTheHistoryWindowIsAResetNotAPretence() async throws {
        try await withServer(broker: .memory, { $0.historySize = 3 }) { server in
            let channel = uniqueChannel()
            for index in 1...6 { _ = try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: channel) }
            let epoch = try #require(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)").body.jsonObject["epoch"] as? String)
            let tooOld = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&since=1&epoch=\(epoch)", subprotocols: ["chat.v1"])
            #expect(await nextFrame(tooOld)?.type == "reset")
            let recent = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)&since=3&epoch=\(epoch)", subprotocols: ["chat.v1"])
            var offsets: [Int] = []
            for _ in 0..<3 { offsets.append(await nextFrame(recent)?.offset ?? -1) }
            #expect(offsets == [4, 5, 6])
        }
    }

    @Test func badResumeParametersAreRefused() async throws {
        try await withServer(broker: .memory) { server in
            for query in ["since=5", "epoch=abc", "since=-1&epoch=abc", "since=x&epoch=abc", "since=1&epoch=a%20b"] {
                await #expect {
                    _ = try await ChatWebSocket.connect(port: server.port, path: "/wb/?\(query)", subprotocols: ["chat.v1"])
                } throws: { error in
                    (error as? ChatWebSocket.Refused)?.status == 400
                }
            }
        }
    }

    @Test(arguments: ChatConfiguration.BrokerKind.allCases)
    func historyReturnsTheSameEnvelopes(broker: ChatConfiguration.BrokerKind) async throws {
        try await withServer(broker: broker) { server in
            let channel = uniqueChannel()
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)").body.jsonObject["epoch"] is NSNull)
            for index in 1...12 { _ = try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: channel) }
            let newest = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&limit=3")
            #expect(newest.status == 200)
            #expect(newest.header("Content-Type") == "application/json")
            let json = newest.body.jsonObject
            #expect(json["lastOffset"] as? Int == 12)
            #expect(json["firstOffset"] as? Int == 1)
            let messages = json["messages"] as? [[String: Any]] ?? []
            #expect(messages.map { $0["data"] as? String } == ["m10", "m11", "m12"])
            #expect(messages.allSatisfy { $0["type"] as? String == "message" && $0["channel"] as? String == channel })
            let since = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=4&limit=2").body.jsonObject
            #expect((since["messages"] as? [[String: Any]])?.map { $0["offset"] as? Int } == [5, 6])
            for bad in ["channel=bad%20name", "since=-3", "limit=0", "limit=x"] {
                #expect(try await ChatHTTP.request("GET", port: server.port, path: "/history?\(bad)").status == 400)
            }
        }
    }

    @Test func aSlowChatV1ReaderGetsAGapAndTheOthersAreUnaffected() async throws {
        // A reader that stops reading also stops answering pings: keep the heartbeat out of the way.
        try await withServer(broker: .memory, { $0.socketQueueLimit = 16 * 1024; $0.pingInterval = .seconds(300) }) { server in
            let channel = uniqueChannel()
            let slow = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"], receiveBufferSize: 4096)
            let brisk = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            try await slow.setReading(false)
            // 8 MB: past the kernel's buffers (up to 4 MB to send, 4 KiB to receive here) and the 16 KiB queue.
            let count = 1000
            try await publish(count: count, size: 8000, to: channel, port: server.port)
            var briskOffsets: [Int] = []
            while briskOffsets.count < count, let frame = await nextFrame(brisk) { briskOffsets.append(frame.offset) }
            #expect(briskOffsets == Array(1...count), "the slow reader does not slow the others")

            try await slow.setReading(true)
            var delivered: [Int] = []
            var gaps: [(Int, Int)] = []
            while let frame = await nextFrame(slow, timeout: .seconds(5)) {
                if frame.type == "gap" { gaps.append((frame.from, frame.to)) } else { delivered.append(frame.offset) }
            }
            #expect(gaps.count == 1)
            let gap = try #require(gaps.first)
            // What it got plus the gap is every offset exactly once, in order.
            let covered = delivered.filter { $0 < gap.0 } + Array(gap.0...gap.1) + delivered.filter { $0 > gap.1 }
            #expect(covered == Array(1...covered.count))
            #expect(delivered == delivered.sorted())
            // And the gap can be fetched.
            let fetched = try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&since=\(gap.0 - 1)&limit=1000").body.jsonObject
            #expect((fetched["messages"] as? [[String: Any]])?.first?["offset"] as? Int == gap.0)
        }
    }

    @Test func aResumeReplayIsBoundedByTheQueueLimitToo() async throws {
        try await withServer(broker: .memory, { $0.socketQueueLimit = 16 * 1024; $0.pingInterval = .seconds(300) }) { server in
            let channel = uniqueChannel()
            let count = 600  // 4.8 MB of history: more than the kernel's buffers and the queue
            try await publish(count: count, size: 8000, to: channel, port: server.port)
            let epoch = try #require(try await ChatHTTP.request("GET", port: server.port, path: "/history?channel=\(channel)&limit=1").body.jsonObject["epoch"] as? String)
            let resumed = try await ChatWebSocket.connect(
                port: server.port, path: "/wb/?channel=\(channel)&since=0&epoch=\(epoch)", subprotocols: ["chat.v1"], receiveBufferSize: 4096
            )
            try await resumed.setReading(false)
            try await Task.sleep(for: .seconds(1))
            try await resumed.setReading(true)
            var delivered: [Int] = []
            var gaps: [(Int, Int)] = []
            while let frame = await nextFrame(resumed, timeout: .seconds(5)) {
                if frame.type == "gap" { gaps.append((frame.from, frame.to)) } else { delivered.append(frame.offset) }
            }
            let gap = try #require(gaps.first, "the replay outgrew the queue, so part of it must come as a gap")
            #expect(gaps.count == 1)
            let covered = delivered.filter { $0 < gap.0 } + Array(gap.0...gap.1) + delivered.filter { $0 > gap.1 }
            #expect(covered == Array(1...count))
        }
    }

    @Test func aSlowReaderOfTheOriginalProtocolIsClosedWithAReason() async throws {
        // A reader that stops reading also stops answering pings: keep the heartbeat out of the way.
        try await withServer(broker: .memory, { $0.socketQueueLimit = 16 * 1024; $0.pingInterval = .seconds(300) }) { server in
            let slow = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=slowraw")], receiveBufferSize: 4096)
            try await slow.setReading(false)
            // Publish until the server gives up on the reader, then read again: the close
            // frame waits behind what the reader left unread, and only for so long.
            for _ in 0..<100 {
                try await publish(count: 40, size: 8000, to: "slowraw", port: server.port)
                let metrics = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
                if metrics[#"chatroom_queue_overflows_total{protocol="original"}"#] == 1 { break }
            }
            try await slow.setReading(true)
            var close: ChatWebSocket.Event?
            while let event = await slow.next(timeout: .seconds(10)) {
                if case .close = event { close = event; break }
                if case .disconnected = event { break }
            }
            guard case .close(let code, let reason) = close else {
                Issue.record("no close frame, got \(String(describing: close))")
                return
            }
            #expect(code == 1008)
            #expect(reason.contains("too slow"))
        }
    }

    @Test func losingRedisDataIsANewEpochAndSocketsAreToldWithReset() async throws {
        try await PrivateRedis.with { redis in
        try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
            let channel = uniqueChannel()
            let socket = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            for index in 1...3 { _ = try await ChatHTTP.send(port: server.port, data: "old \(index)", channel: channel) }
            var old: [Frame] = []
            for _ in 1...3 { old.append(try #require(await nextFrame(socket))) }
            _ = try await ChatHTTP.exchange(host: "127.0.0.1", port: redis.port, bytes: .init(string: "FLUSHALL\r\nQUIT\r\n"), timeout: .seconds(2))
            _ = try await ChatHTTP.send(port: server.port, data: "new 1", channel: channel)
            let reset = try #require(await nextFrame(socket))
            #expect(reset.type == "reset")
            #expect(reset.epoch != nil && reset.epoch != old[0].epoch)
            let first = try #require(await nextFrame(socket))
            #expect(first.offset == 1 && first.data == "new 1" && first.epoch == reset.epoch)
        }
        }
    }

    @Test func messagesPublishedWhilePubSubWasDownAreRecoveredFromHistory() async throws {
        try await PrivateRedis.with { redis in
        try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
            let channel = uniqueChannel()
            let raw = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(channel)")])
            let v1 = try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])
            _ = try await ChatHTTP.send(port: server.port, data: "m1", channel: channel)
            #expect(await raw.nextText() == "m1")
            #expect(await nextFrame(v1)?.offset == 1)
            // Cut only the pub/sub connection; publishing goes on through the other one.
            _ = try await ChatHTTP.exchange(host: "127.0.0.1", port: redis.port, bytes: .init(string: "CLIENT KILL TYPE pubsub\r\nQUIT\r\n"), timeout: .seconds(2))
            for index in 2...20 {
                #expect(try await ChatHTTP.send(port: server.port, data: "m\(index)", channel: channel).body == "ok")
            }
            var texts: [String] = []
            while texts.count < 19, let text = await raw.nextText(timeout: .seconds(5)) { texts.append(text) }
            #expect(texts == (2...20).map { "m\($0)" })
            var offsets: [Int] = []
            while offsets.count < 19, let frame = await nextFrame(v1) { offsets.append(frame.offset) }
            #expect(offsets == Array(2...20))
        }
        }
    }

    /// Before any message of the channel came through pub/sub here, the instance knew no
    /// offset of it to catch up from: a message published while the connection was down
    /// reached nobody. Where the channel stood when its first listener came is the floor.
    @Test(arguments: [false, true])
    func aMessagePublishedWhilePubSubWasDownReachesListenersThatHadSeenNoneYet(channelExisted: Bool) async throws {
        try await PrivateRedis.with { redis in
        try await withServer(broker: .redis, { $0.redisURL = redis.url }) { server in
            let channel = uniqueChannel()
            if channelExisted {
                for index in 1...3 { _ = try await ChatHTTP.send(port: server.port, data: "old\(index)", channel: channel) }
            }
            // The original protocol: no read of its own, what it gets is the instance's.
            let raw = try await ChatWebSocket.connect(port: server.port, headers: [("Cookie", "channel=\(channel)")])
            // The first listener's read of where the channel stands.
            try await Task.sleep(for: .milliseconds(500))
            _ = try await ChatHTTP.exchange(host: "127.0.0.1", port: redis.port, bytes: .init(string: "CLIENT KILL TYPE pubsub\r\nQUIT\r\n"), timeout: .seconds(2))
            #expect(try await ChatHTTP.send(port: server.port, data: "while down", channel: channel).body == "ok")
            #expect(await raw.nextText(timeout: .seconds(5)) == "while down", "nothing older is replayed")
        }
        }
    }
}
