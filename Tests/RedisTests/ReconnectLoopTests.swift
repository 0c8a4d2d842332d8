import Logging
import NIOConcurrencyHelpers
import Testing

@testable import Redis

@Suite("Reconnect loop")
struct ReconnectLoopTests {
    struct Refused: Error {}

    /// Three refused attempts, a connection that drops, one more that drops at shutdown.
    @Test func failuresBackOffAndAConnectionStartsTheBackoffAgain() async {
        let delays = NIOLockedValueBox<[Duration]>([])
        var loop = ReconnectLoop(
            backoff: Backoff(initial: .milliseconds(100), maximum: .seconds(5)),
            logger: Logger(label: "test"),
            metadata: [:],
            messages: .init(up: "up", unreachable: "unreachable", lost: "lost"),
            sleep: { delay in delays.withLockedValue { $0.append(delay) } }
        )
        var attempts = 0
        var connections: [Int] = []
        var open: Int?
        await loop.run(
            current: { connections.count == 2 ? .stopped : open.map { .open($0) } ?? .none },
            connect: {
                attempts += 1
                guard attempts > 3 else { throw Refused() }
                open = attempts
                return attempts
            },
            awaitClose: { connection in
                connections.append(connection)
                open = nil
                return connections.count == 2 ? .stop : .reconnect
            },
            onGracefulShutdown: {}
        )
        #expect(attempts == 5)
        #expect(connections == [4, 5])
        let waited = delays.withLockedValue { $0 }
        try? #require(waited.count == 4)
        #expect(waited[0] >= .milliseconds(50) && waited[0] <= .milliseconds(100))
        #expect(waited[1] >= .milliseconds(100) && waited[1] <= .milliseconds(200))
        #expect(waited[2] >= .milliseconds(200) && waited[2] <= .milliseconds(400))
        // Connected: the delay after the drop starts from the first again.
        #expect(waited[3] >= .milliseconds(50) && waited[3] <= .milliseconds(100))
    }

    @Test func anOpenConnectionIsWaitedOnNotReplaced() async {
        var loop = ReconnectLoop(logger: Logger(label: "test"), metadata: [:], messages: .init(up: "up", unreachable: "unreachable", lost: "lost"), sleep: { _ in })
        var closes = 0
        await loop.run(
            current: { closes == 0 ? .open("existing") : .stopped },
            connect: { () throws -> String in
                Issue.record("connected although a connection was open")
                return "new"
            },
            awaitClose: { connection in
                #expect(connection == "existing")
                closes += 1
                return .reconnect
            },
            onGracefulShutdown: {}
        )
        #expect(closes == 1)
    }
}
