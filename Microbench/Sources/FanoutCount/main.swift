// Fans `messages` messages out to `sockets` in-process sockets, one drain per message,
// with no Swift concurrency, so that callgrind can count its instructions:
//
//   valgrind --tool=callgrind FanoutCount [sockets] [messages] [raw|chatv1]
//
// scripts/microbench.sh runs it and divides by sockets × messages.
import Chat
import ChatServerBenchSupport
import NIOCore

let arguments = CommandLine.arguments
let sockets = arguments.count > 1 ? Int(arguments[1]) ?? 1000 : 1000
let messages = arguments.count > 2 ? Int(arguments[2]) ?? 200 : 200
let chatV1 = arguments.count > 3 && arguments[3] == "chatv1"
let channel = ChannelName("bench")!
let fanout = try InProcessFanout(sockets: sockets, channel: channel, chatV1: chatV1)
var bytes = 0
for offset in 1...messages {
    let data = ByteBuffer(string: "message \(offset) of the callgrind run, padded to about sixty-four bytes")
    fanout.deliver([.message(Message(channel: channel, offset: Int64(offset), epoch: "e1", time: 1_764_244_800_000, data: data))])
    bytes += try fanout.collectWrites()
}
print("deliveries \(sockets * messages) bytes \(bytes)")
