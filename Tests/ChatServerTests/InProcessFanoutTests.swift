import Chat
import ChatServerBenchSupport
import NIOCore
import Testing

@Suite("In-process fan-out (the micro-benchmarks' fixture)")
struct InProcessFanoutTests {
    @Test(arguments: [false, true])
    func everySocketGetsEveryFrameOfADrain(chatV1: Bool) throws {
        let channel = ChannelName("bench")!
        let fanout = try InProcessFanout(sockets: 100, channel: channel, chatV1: chatV1)
        let messages = (1...3).map { offset in
            Message(channel: channel, offset: Int64(offset), epoch: "e", time: 0, data: ByteBuffer(string: "message \(offset)"))
        }
        fanout.deliver(messages.map(ChatEvent.message))
        let frames = messages.map { InProcessFanout.frames(of: .message($0))[chatV1 ? 1 : 0]!.readableBytes }
        #expect(try fanout.collectWrites() == 100 * frames.reduce(0, +))
        #expect(try fanout.collectWrites() == 0)
    }
}
