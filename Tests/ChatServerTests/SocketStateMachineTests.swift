import Chat
import NIOCore
import NIOWebSocket
import Testing

@testable import ChatServer

/// The socket's machines driven event by event, without a socket.
@Suite("Socket state machines")
struct SocketStateMachineTests {
    static let room = ChannelName("room")!

    static func message(_ offset: Int64, epoch: String = "e1", bytes: Int = 4) -> Message {
        Message(channel: room, offset: offset, epoch: epoch, time: 0, data: ByteBuffer(repeating: UInt8(ascii: "x"), count: bytes))
    }

    static func delivery(_ offset: Int64, epoch: String = "e1") -> Delivery {
        Delivery(event: .message(message(offset, epoch: epoch)), frames: [nil, nil])
    }

    static func history(epoch: String? = "e1", last: Int64, first: Int64? = 1, _ offsets: ClosedRange<Int64>?) -> History {
        History(channel: room, epoch: epoch, lastOffset: last, firstOffset: first, messages: offsets.map { $0.map { message($0, epoch: epoch ?? "") } } ?? [])
    }

    static func offsets(_ deliveries: [Delivery]) -> [Int64] {
        deliveries.compactMap { $0.event.message?.offset }
    }

    /// Offers a page's messages the way the socket does; returns those written.
    static func write(_ messages: [Message], into flow: inout DeliveryFlow, writable: (Int64) -> Bool = { _ in true }) -> [Int64] {
        var written: [Int64] = []
        for message in messages where flow.offer(.message(message), writable: writable(message.offset)) == .write {
            written.append(message.offset)
        }
        return written
    }

    // MARK: - Delivery flow

    @Test func liveBatchesGoOutJoinedAndNoHistoryIsReadWithoutAResume() {
        var flow = DeliveryFlow(slowReaders: .drop)
        #expect(flow.opened(resume: nil) == nil)
        #expect(flow.batchArrived([Self.delivery(1), Self.delivery(2)]) == .writeJoined)
        #expect(!flow.isReplaying)
    }

    @Test func aResumeHoldsLiveDeliveriesUntilItsPagesAreWrittenAndSkipsWhatTheyCarried() {
        var flow = DeliveryFlow(slowReaders: .drop)
        #expect(flow.opened(resume: .init(after: 3, epoch: "e1")) == .init(after: 3, limit: DeliveryFlow.firstReplayPage))
        // Published while the history is read: 5 and 6 are in the read too (the batch window).
        #expect(flow.batchArrived([Self.delivery(5), Self.delivery(6)]) == .held)
        #expect(flow.batchArrived([Self.delivery(7)]) == .held)
        guard case .write(let page) = flow.historyRead(.success(Self.history(last: 6, 4...6))) else {
            Issue.record("expected a page to write")
            return
        }
        #expect(Self.write(page, into: &flow) == [4, 5, 6])
        guard case .release(let waiting) = flow.pageWritten() else {
            Issue.record("a short page ends the replay")
            return
        }
        #expect(Self.offsets(waiting) == [5, 6, 7])
        // No duplicate: 5 and 6 were replayed; 7 ends the skipping.
        let offered = waiting.filter { flow.offerLive($0, writable: true) == .write }
        #expect(Self.offsets(offered) == [7])
        #expect(flow.batchArrived([Self.delivery(8)]) == .writeJoined)
    }

    @Test func aCopyOfAFlowKeepsItsOwnStateAndASettledFlowIsLiveAgain() {
        var flow = DeliveryFlow(slowReaders: .drop)
        #expect(flow.isLive)
        #expect(flow.opened(resume: .init(after: 3, epoch: "e1")) != nil)
        #expect(!flow.isLive)
        #expect(flow.batchArrived([Self.delivery(5)]) == .held)
        // A value: what the copy is handed is not the original's, and the other way round.
        var copy = flow
        #expect(flow.batchArrived([Self.delivery(6)]) == .held)
        guard case .write(let flowPage) = flow.historyRead(.success(Self.history(last: 4, 4...4))),
            case .write(let copyPage) = copy.historyRead(.success(Self.history(last: 4, 4...4)))
        else {
            Issue.record("expected a page to write")
            return
        }
        #expect(Self.write(flowPage, into: &flow) == [4])
        #expect(Self.write(copyPage, into: &copy) == [4])
        guard case .release(let flowWaiting) = flow.pageWritten(), case .release(let copyWaiting) = copy.pageWritten() else {
            Issue.record("a short page ends the replay")
            return
        }
        #expect(Self.offsets(flowWaiting) == [5, 6])
        #expect(Self.offsets(copyWaiting) == [5])
        // Live again once a message past the replay went out: nothing is held any more.
        #expect(!flow.isLive)
        #expect(flowWaiting.filter { flow.offerLive($0, writable: true) == .write }.count == 2)
        #expect(flow.isLive)
        #expect(flow.batchArrived([Self.delivery(7)]) == .writeJoined)
        // And one that fell behind and drained is live again too.
        #expect(flow.offer(.message(Self.message(8)), writable: false) == .fellBehind)
        #expect(!flow.isLive)
        #expect(flow.drained() == DeliveryFlow.Missed(from: 8, to: 8, reset: nil))
        #expect(flow.isLive)
    }

    @Test func aDuplicateOfTheReplayInALaterBatchIsSkippedToo() {
        var flow = DeliveryFlow(slowReaders: .drop)
        _ = flow.opened(resume: .init(after: 0, epoch: "e1"))
        guard case .write(let page) = flow.historyRead(.success(Self.history(last: 2, 1...2))) else {
            Issue.record("expected a page")
            return
        }
        _ = Self.write(page, into: &flow)
        _ = flow.pageWritten()
        // The hub's next drain still holds 2; then 3 arrives.
        #expect(flow.batchArrived([Self.delivery(2), Self.delivery(3)]) == .offerEach)
        #expect(flow.offerLive(Self.delivery(2), writable: true) == .skip)
        #expect(flow.offerLive(Self.delivery(3), writable: true) == .write)
        #expect(flow.batchArrived([Self.delivery(4)]) == .writeJoined)
    }

    @Test func aLongHistoryIsReadPageByPageSizedByBytes() {
        var flow = DeliveryFlow(slowReaders: .drop)
        _ = flow.opened(resume: .init(after: 0, epoch: "e1"))
        let first = (1...20).map { Self.message($0, bytes: 64 * 1024) }
        guard case .write(let page) = flow.historyRead(.success(History(channel: Self.room, epoch: "e1", lastOffset: 500, firstOffset: 1, messages: first))) else {
            Issue.record("expected a page")
            return
        }
        #expect(Self.write(page, into: &flow).count == 20)
        // 64 KB messages: about 1 MiB a page is 16 of them.
        guard case .read(let next) = flow.pageWritten() else {
            Issue.record("a full page reads on")
            return
        }
        #expect(next == .init(after: 20, limit: 16))
        #expect(flow.isReplaying)
    }

    @Test func aPositionTheHistoryNoLongerHoldsGetsAReset() {
        var flow = DeliveryFlow(slowReaders: .drop)
        _ = flow.opened(resume: .init(after: 3, epoch: "old"))
        _ = flow.batchArrived([Self.delivery(1, epoch: "new")])
        guard case .reset(let epoch, let waiting) = flow.historyRead(.success(Self.history(epoch: "new", last: 1, 1...1))) else {
            Issue.record("expected a reset")
            return
        }
        #expect(epoch == "new")
        #expect(Self.offsets(waiting) == [1])
        #expect(!flow.isReplaying)
        // No replay carried anything: nothing is skipped.
        #expect(flow.offerLive(waiting[0], writable: true) == .write)
    }

    @Test func anEpochChangeBetweenPagesEndsTheReplay() {
        var flow = DeliveryFlow(slowReaders: .drop)
        _ = flow.opened(resume: .init(after: 0, epoch: "e1"))
        guard case .write(let page) = flow.historyRead(.success(Self.history(last: 100, 1...20))) else {
            Issue.record("expected a page")
            return
        }
        _ = Self.write(page, into: &flow)
        guard case .read = flow.pageWritten() else {
            Issue.record("expected a second read")
            return
        }
        _ = flow.batchArrived([Self.delivery(1, epoch: "e2")])
        guard case .release(let waiting) = flow.historyRead(.success(Self.history(epoch: "e2", last: 1, 1...1))) else {
            Issue.record("a new epoch's messages come live")
            return
        }
        #expect(Self.offsets(waiting) == [1])
        #expect(flow.offerLive(waiting[0], writable: true) == .write)
    }

    @Test func anUnreadableHistoryFailsTheReplayOnceAndLaterAnswersAreIgnored() {
        struct Down: Error {}
        var flow = DeliveryFlow(slowReaders: .drop)
        _ = flow.opened(resume: .init(after: 0, epoch: "e1"))
        guard case .fail = flow.historyRead(.failure(Down())) else {
            Issue.record("expected a failure")
            return
        }
        guard case .ignore = flow.historyRead(.success(Self.history(last: 1, 1...1))) else {
            Issue.record("a stray answer after the failure is ignored")
            return
        }
    }

    @Test func aSlowReaderIsToldOneGapForEverythingItMissed() {
        var flow = DeliveryFlow(slowReaders: .drop)
        #expect(flow.batchArrived([Self.delivery(1)]) == .writeJoined)
        flow.fellBehind([ChatEvent.message(Self.message(2)), .message(Self.message(3))])
        #expect(flow.batchArrived([Self.delivery(4), Self.delivery(5)]) == .dropped)
        #expect(flow.offer(.message(Self.message(6)), writable: true) == .skip)
        #expect(flow.drained() == .init(from: 2, to: 6, reset: nil))
        #expect(flow.drained() == nil)
        #expect(flow.batchArrived([Self.delivery(7)]) == .writeJoined)
    }

    @Test func aResetWhileDroppingReplacesTheOldEpochsRange() {
        var flow = DeliveryFlow(slowReaders: .drop)
        flow.fellBehind([ChatEvent.message(Self.message(8))])
        _ = flow.batchArrived([Delivery(event: .reset(channel: Self.room, epoch: "e2"), frames: [nil, nil]), Self.delivery(1, epoch: "e2")])
        #expect(flow.drained() == .init(from: 1, to: 1, reset: "e2"))
    }

    @Test func aReaderTooSlowForItsReplayGetsTheRestAsAGap() {
        var flow = DeliveryFlow(slowReaders: .drop)
        _ = flow.opened(resume: .init(after: 0, epoch: "e1"))
        _ = flow.batchArrived([Self.delivery(501)])
        guard case .write(let page) = flow.historyRead(.success(Self.history(last: 500, 1...20))) else {
            Issue.record("expected a page")
            return
        }
        // The kernel takes no more after message 10.
        #expect(Self.write(page, into: &flow, writable: { $0 <= 10 }) == Array(1...10))
        guard case .release(let waiting) = flow.pageWritten() else {
            Issue.record("a reader that fell behind reads no more pages")
            return
        }
        for delivery in waiting { #expect(flow.offerLive(delivery, writable: true) == .skip) }
        #expect(flow.drained() == .init(from: 11, to: 501, reset: nil))
    }

    @Test func anOriginalProtocolReaderThatFallsBehindIsLeftToClose() {
        var flow = DeliveryFlow(slowReaders: .close)
        #expect(flow.offer(.message(Self.message(1)), writable: false) == .fellBehind)
        #expect(flow.missed == nil)
    }

    // MARK: - WebSocket connection

    static func frame(_ opcode: WebSocketOpcode, _ text: String = "", fin: Bool = true) -> WebSocketFrame {
        var data = ByteBuffer(string: text)
        let mask = WebSocketMaskingKey([1, 2, 3, 4])!
        data.webSocketMask(mask)
        return WebSocketFrame(fin: fin, opcode: opcode, maskKey: mask, data: data)
    }

    static func closeFrame(code: UInt16) -> WebSocketFrame {
        var data = ByteBuffer()
        data.writeInteger(code)
        let mask = WebSocketMaskingKey([1, 2, 3, 4])!
        data.webSocketMask(mask)
        return WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: mask, data: data)
    }

    static func connection(rate: RateLimit? = nil, now: NIODeadline = .uptimeNanoseconds(0)) -> WebSocketStateMachine {
        WebSocketStateMachine(assembler: MessageAssembler(maximumMessageSize: 1024), messageRate: rate, now: now)
    }

    @Test func fragmentsBecomeOneMessageAndPingsArePonged() {
        var connection = Self.connection()
        #expect(connection.received(Self.frame(.text, "hel", fin: false)) == .ignore)
        #expect(connection.received(Self.frame(.ping, "p")) == .pong(ByteBuffer(string: "p")))
        #expect(connection.received(Self.frame(.continuation, "lo")) == .text("hello"))
        #expect(connection.received(Self.frame(.binary, "b")) == .binary(ByteBuffer(string: "b")))
    }

    @Test func theClientsCloseIsEchoedOnceThenOnlyAHangUpIsLeft() {
        var connection = Self.connection()
        #expect(connection.received(Self.closeFrame(code: 1000)) == .echoClose(code: 1000))
        #expect(connection.state == .closing)
        #expect(connection.close() == false)
        #expect(connection.received(Self.frame(.text, "late")) == .ignore)
        #expect(connection.received(Self.frame(.ping)) == .ignore)
        #expect(connection.received(Self.closeFrame(code: 1000)) == .hangUp)
    }

    @Test func theServersCloseGoesOutOnceAndTheClientsAnswerHangsUp() {
        var connection = Self.connection()
        #expect(connection.close() == true)
        #expect(connection.close() == false)
        #expect(connection.heartbeat() == .none)
        #expect(connection.received(Self.frame(.text, "late")) == .ignore)
        #expect(connection.received(Self.closeFrame(code: 1000)) == .hangUp)
    }

    @Test func anUnansweredPingHangsUpAndAPongKeepsTheSocket() {
        var connection = Self.connection()
        #expect(connection.heartbeat() == .ping)
        #expect(connection.received(Self.frame(.pong)) == .ignore)
        #expect(connection.heartbeat() == .ping)
        #expect(connection.heartbeat() == .hangUp)
        #expect(connection.state == .closed)
        #expect(connection.heartbeat() == .none)
    }

    @Test func everyFrameCountsAgainstTheRateButNotAfterClosing() {
        let start = NIODeadline.uptimeNanoseconds(0)
        var connection = Self.connection(rate: RateLimit(rate: 1, burst: 2), now: start)
        #expect(connection.received(Self.frame(.pong), now: start) == .ignore)
        #expect(connection.received(Self.frame(.text, "a", fin: false), now: start) == .ignore)
        #expect(connection.received(Self.frame(.continuation, "b"), now: start) == .tooFast)
        #expect(connection.received(Self.frame(.continuation, "c"), now: start + .seconds(1)) == .text("ac"))
        #expect(connection.close() == true)
        // Closing: the client's close frame is taken however fast it comes.
        #expect(connection.received(Self.closeFrame(code: 1000), now: start + .seconds(1)) == .hangUp)
    }

    @Test func aProtocolErrorAsksToCloseWithItsCode() {
        var connection = Self.connection()
        let unmasked = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "x"))
        #expect(connection.received(unmasked) == .fail(.protocolError, "client frames must be masked"))
        #expect(connection.received(Self.frame(.text, String(repeating: "x", count: 2000))) == .fail(.messageTooBig, "messages are limited to 1024 bytes"))
    }
}
