import Benchmark
import Chat
import ChatServerBenchSupport
import NIOCore
import Redis

/// The per-message work of the hot path, without the network: what Redis hands the
/// server for one message, the envelope read from it, the frames made from that, and
/// one message fanned out to 1,000 sockets in-process.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .retainCount, .releaseCount, .throughput],
        maxDuration: .seconds(3),
        maxIterations: 100_000
    )
    let channel = ChannelName("bench")!
    let data = ByteBuffer(string: "hello from the benchmark, a message of about sixty-four bytes!!")
    let envelope = ByteBuffer(string: "v1 12345 k3x9a0 1764244800000\n") .merging(data)
    // A pub/sub message as Redis sends it: *3 $7 message $<n> channel $<n> envelope.
    let pubsubChannel = "chatroom:{bench}:messages"
    var wire = ByteBuffer()
    wire.writeString("*3\r\n$7\r\nmessage\r\n$\(pubsubChannel.utf8.count)\r\n\(pubsubChannel)\r\n$\(envelope.readableBytes)\r\n")
    wire.writeImmutableBuffer(envelope)
    wire.writeString("\r\n")
    let message = Message(channel: channel, envelope: envelope)!

    // What the harness itself counts per sample: subtract it from the rows below.
    Benchmark("Nothing (the harness's own counts)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(benchmark) }
    }

    Benchmark("RESP parse of a pub/sub message (hiredis reader)") { benchmark in
        let reader = RESPReader()
        for _ in benchmark.scaledIterations {
            try reader.feed(wire)
            blackHole(try reader.next())
        }
    }

    Benchmark("Envelope read (v1 header + data slice)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Message(channel: channel, envelope: envelope))
        }
    }

    Benchmark("Frames of one message (raw + chat.v1 JSON)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(InProcessFanout.frames(of: .message(message)))
        }
    }

    for chatV1 in [false, true] {
        Benchmark(
            "Fan-out of one message to 1,000 in-process sockets (\(chatV1 ? "chat.v1" : "raw"))",
            configuration: .init(scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 2_000)
        ) { benchmark, fanout in
            // Reading the writes back stands in for the kernel; it is measured too.
            for _ in benchmark.scaledIterations {
                fanout.deliver([.message(message)])
                blackHole(try fanout.collectWrites())
            }
        } setup: {
            try InProcessFanout(sockets: 1_000, channel: channel, chatV1: chatV1)
        }
    }
}

extension ByteBuffer {
    fileprivate func merging(_ other: ByteBuffer) -> ByteBuffer {
        var copy = self
        copy.writeImmutableBuffer(other)
        return copy
    }
}
