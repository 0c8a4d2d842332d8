import ChatClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Monotonic nanoseconds, the same clock in every process on the machine.
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Latency counts in buckets of growing width (1 µs … ~70 s), cheap to merge.
struct LatencyHistogram {
    static let bucketCount = 200
    var buckets = [UInt64](repeating: 0, count: bucketCount)
    var count: UInt64 = 0
    var maximum: UInt64 = 0

    /// Bucket i covers up to 1 µs × 1.1^i.
    static func bucket(_ nanoseconds: UInt64) -> Int {
        let micros = max(1.0, Double(nanoseconds) / 1000)
        return min(bucketCount - 1, Int((log(micros) / log(1.1)).rounded(.up)))
    }

    mutating func record(_ nanoseconds: UInt64) {
        buckets[Self.bucket(nanoseconds)] += 1
        count += 1
        maximum = max(maximum, nanoseconds)
    }

    mutating func merge(_ other: LatencyHistogram) {
        for index in 0..<Self.bucketCount { buckets[index] += other.buckets[index] }
        count += other.count
        maximum = max(maximum, other.maximum)
    }

    /// The latency below which `fraction` of the samples fall, in milliseconds.
    func quantile(_ fraction: Double) -> Double {
        guard count > 0 else { return 0 }
        let target = UInt64((Double(count) * fraction).rounded(.up))
        var seen: UInt64 = 0
        for (index, value) in buckets.enumerated() {
            seen += value
            // The bucket's upper bound, but never above the largest sample.
            if seen >= target { return min(pow(1.1, Double(index)) / 1000, Double(maximum) / 1_000_000) }
        }
        return Double(maximum) / 1_000_000
    }
}

/// What all subscribers of one run received.
final class Tally: Sendable {
    struct Counts {
        var delivered: UInt64 = 0
        var duplicates: UInt64 = 0
        var outOfOrder: UInt64 = 0
        var connected = 0
        var failed = 0
        var latency = LatencyHistogram()
        var lastDelivery: UInt64 = 0
    }

    private let counts = NIOLockedValueBox(Counts())

    func connected() { counts.withLockedValue { $0.connected += 1 } }
    func failed() { counts.withLockedValue { $0.failed += 1 } }
    func merge(delivered: UInt64, duplicates: UInt64, outOfOrder: UInt64, latency: LatencyHistogram, at time: UInt64) {
        counts.withLockedValue { counts in
            counts.delivered += delivered
            counts.duplicates += duplicates
            counts.outOfOrder += outOfOrder
            counts.latency.merge(latency)
            counts.lastDelivery = max(counts.lastDelivery, time)
        }
    }
    var snapshot: Counts { counts.withLockedValue { $0 } }
}

/// One subscriber socket of the original protocol, as lean as the server's side:
/// parses server frames in place and counts `n=<number> t=<nanoseconds>` payloads. With
/// `eventStream`, a `GET /events` stream instead: counts its `data:` lines.
final class SubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let tally: Tally
    private let upgraded: EventLoopPromise<Void>
    /// Inflates permessage-deflate frames; `nil` when the socket did not offer it.
    private let inflater: Inflater?
    private var buffer = ByteBuffer()
    private var isUpgraded = false
    private var seen: [UInt64] = []  // bitmap of message numbers
    private var highest: [UInt64] = []  // per publisher: its messages must arrive in its order
    private var delivered: UInt64 = 0
    private var duplicates: UInt64 = 0
    private var outOfOrder: UInt64 = 0
    private var latency = LatencyHistogram()
    private var lastDelivery: UInt64 = 0
    private let eventStream: Bool

    init(tally: Tally, upgraded: EventLoopPromise<Void>, inflater: Inflater?, eventStream: Bool = false) {
        self.tally = tally
        self.upgraded = upgraded
        self.inflater = inflater
        self.eventStream = eventStream
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        buffer.writeBuffer(&chunk)
        if !isUpgraded {
            guard let end = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let head = buffer.readString(length: end.upperBound - buffer.readerIndex) ?? ""
            guard head.hasPrefix(eventStream ? "HTTP/1.1 200" : "HTTP/1.1 101") else {
                upgraded.fail(BenchError("upgrade refused: \(head.prefix(200)) \(buffer.readableBytes > 0 ? String(buffer: buffer) : "")"))
                context.close(promise: nil)
                return
            }
            isUpgraded = true
            upgraded.succeed()
        }
        let now = monotonicNanoseconds()
        if eventStream {
            readEvents(now: now)
            return
        }
        while let frame = ServerFrame(in: buffer) {
            if frame.opcode == ServerFrame.text, frame.compressed, let inflater {
                // Compressed (permessage-deflate): inflate, then count.
                if let message = inflater.inflate(frame.payload(in: buffer)) { count(message.readableBytesView, now: now) }
            } else if frame.opcode == ServerFrame.text, let view = buffer.viewBytes(at: frame.payloadIndex, length: frame.payloadLength) {
                count(view, now: now)
            } else if frame.opcode == ServerFrame.ping {
                // Answer pings like a browser would.
                var pong = context.channel.allocator.buffer(capacity: 6 + frame.payloadLength)
                pong.writeInteger(UInt8(0x80 | ServerFrame.pong))
                pong.writeInteger(UInt8(0x80 | UInt8(frame.payloadLength)))
                pong.writeInteger(UInt32(0))
                if frame.payloadLength > 0 { pong.writeImmutableBuffer(frame.payload(in: buffer)) }
                context.writeAndFlush(NIOAny(pong), promise: nil)
            }
            buffer.moveReaderIndex(to: frame.end)
        }
        buffer.discardReadBytes()
    }

    /// Counts each `data:` line of a message (its JSON holds the payload, and no `=` before it).
    private func readEvents(now: UInt64) {
        while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer.readableBytesView[buffer.readerIndex..<newline]
            if line.starts(with: "data: {\"type\":\"message\"".utf8) { count(line, now: now) }
            buffer.moveReaderIndex(to: newline + 1)
        }
        buffer.discardReadBytes()
    }

    private func count(_ view: ByteBufferView, now: UInt64) {
        // "n=<number> t=<nanoseconds> p=<publisher> <padding>"
        var values: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var field = 0
        for byte in view {
            if byte == UInt8(ascii: "=") {
                field += 1
            } else if byte == UInt8(ascii: " ") {
                if field >= 3 { break }
            } else if byte >= 48 && byte <= 57 {
                let digit = UInt64(byte - 48)
                switch field {
                case 1: values.0 = values.0 * 10 + digit
                case 2: values.1 = values.1 * 10 + digit
                case 3: values.2 = values.2 * 10 + digit
                default: break
                }
            }
        }
        let (number, sent, publisher) = values
        delivered += 1
        let word = Int(number / 64)
        if word >= seen.count { seen.append(contentsOf: repeatElement(0, count: word - seen.count + 1)) }
        let bit = UInt64(1) << (number % 64)
        if seen[word] & bit != 0 { duplicates += 1 } else { seen[word] |= bit }
        let lane = Int(publisher)
        if lane >= highest.count { highest.append(contentsOf: repeatElement(0, count: lane - highest.count + 1)) }
        if number < highest[lane] { outOfOrder += 1 }
        highest[lane] = max(highest[lane], number)
        if sent > 0 && now >= sent { latency.record(now - sent) }
        lastDelivery = now
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if delivered > 0 {
            tally.merge(delivered: delivered, duplicates: duplicates, outOfOrder: outOfOrder, latency: latency, at: lastDelivery)
            delivered = 0
            duplicates = 0
            outOfOrder = 0
            latency = LatencyHistogram()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        upgraded.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        upgraded.fail(BenchError("connection closed"))
    }
}

/// One inflater per event loop of a group, shared by that loop's permessage-deflate
/// subscribers; each is bound to its loop.
struct LoopInflaters: Sendable {
    private let inflaters: [ObjectIdentifier: NIOLoopBoundBox<Inflater>]

    init(group: any EventLoopGroup) throws {
        inflaters = Dictionary(
            uniqueKeysWithValues: try group.makeIterator().map { loop in
                (ObjectIdentifier(loop), NIOLoopBoundBox.makeBoxSendingValue(try Inflater(capacity: 1 << 20), eventLoop: loop))
            }
        )
    }

    /// `loop`'s inflater; its `value` may be read on `loop` only.
    func inflater(for loop: any EventLoop) -> NIOLoopBoundBox<Inflater>? { inflaters[ObjectIdentifier(loop)] }
}

/// Opens a subscriber of the original protocol on `channel` (by cookie); with
/// `inflaters` it offers permessage-deflate.
func openSubscriber(
    group: any EventLoopGroup, host: String, port: Int, channel: String, tally: Tally, source: String? = nil, inflaters: LoopInflaters? = nil,
    eventStream: Bool = false
) -> EventLoopFuture<any Channel> {
    let loop = group.next()
    let upgraded = loop.makePromise(of: Void.self)
    let inflater = inflaters?.inflater(for: loop)
    var bootstrap = ClientBootstrap(group: loop)
        .connectTimeout(.seconds(10))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(SubscriberHandler(tally: tally, upgraded: upgraded, inflater: inflater?.value, eventStream: eventStream))
            }
        }
    if let source {
        bootstrap = bootstrap.bind(to: try! SocketAddress(ipAddress: source, port: 0))
    }
    return bootstrap.connect(host: host, port: port).flatMap { socket in
        if eventStream {
            socket.writeAndFlush(ByteBuffer(string: "GET /events?channel=\(channel) HTTP/1.1\r\nHost: \(host):\(port)\r\n\r\n"), promise: nil)
            return upgraded.futureResult.map { socket }
        }
        let request = ChatWebSocket.upgradeRequest(
            host: host, port: port, path: "/wb/", extensions: inflaters == nil ? [] : ["permessage-deflate"], headers: [("Cookie", "channel=\(channel)")]
        )
        socket.writeAndFlush(request, promise: nil)
        return upgraded.futureResult.map { socket }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
