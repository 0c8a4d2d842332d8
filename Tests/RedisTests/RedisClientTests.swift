import ChatTestSupport
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import Redis

@Suite("Redis client against redis-server")
struct RedisClientTests {
    let logger = Logger(label: "test")

    func connect() async throws -> RedisConnection {
        try await RedisConnection.connect(
            configuration: RedisConfiguration(url: try TestRedis.url()),
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            logger: logger
        )
    }

    @Test func commandsArePipelinedAndRepliesMatchInOrder() async throws {
        let connection = try await connect()
        defer { connection.close() }
        let key = "test:pipeline:\(UInt64.random(in: 0...UInt64.max))"
        let futures = (1...200).map { _ in connection.sendFuture(RedisCommand("INCR", .string(key))) }
        var replies: [Int64] = []
        for future in futures { replies.append(try await future.get().integer ?? -1) }
        #expect(replies == Array(1...200))
        _ = try await connection.send(RedisCommand("DEL", .string(key)))
    }

    @Test func aRedisThatStopsAnsweringFailsCommandsWithATimeoutAndClosesTheConnection() async throws {
        try await PrivateRedis.with { redis in
            var configuration = try RedisConfiguration(url: redis.url)
            configuration.commandTimeout = .milliseconds(300)
            let connection = try await RedisConnection.connect(configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
            #expect(try await connection.send(RedisCommand("PING")) == .simpleString("PONG"))
            redis.pause(true)
            defer { redis.pause(false) }
            let started = ContinuousClock.now
            let replies = (1...3).map { _ in connection.sendFuture(RedisCommand("PING")) }
            for reply in replies {
                await #expect {
                    _ = try await reply.get()
                } throws: { error in
                    (error as? RedisError)?.code == .timeout
                }
            }
            #expect(ContinuousClock.now - started < .seconds(5))
            try await connection.closeFuture.get()
        }
    }

    @Test func serverErrorsAreTypedWithTheServersMessage() async throws {
        let connection = try await connect()
        defer { connection.close() }
        let key = "test:wrongtype:\(UInt64.random(in: 0...UInt64.max))"
        _ = try await connection.send(RedisCommand("SET", .string(key), "x"))
        await #expect {
            _ = try await connection.send(RedisCommand("LPUSH", .string(key), "y"))
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .server && error.serverErrorPrefix == "WRONGTYPE"
        }
        _ = try await connection.send(RedisCommand("DEL", .string(key)))
    }

    @Test func wrongPasswordIsRefusedClearly() async throws {
        var configuration = try RedisConfiguration(url: try TestRedis.url())
        configuration.password = "not-the-password"
        await #expect {
            _ = try await RedisConnection.connect(configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
        } throws: { error in
            (error as? RedisError)?.code == .server
        }
    }

    @Test func unreachableRedisFailsFastWithTheURL() async throws {
        let configuration = try RedisConfiguration(url: "redis://127.0.0.1:1")
        let client = RedisClient(configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
        await #expect {
            try await client.connect()
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .unavailable && error.message.contains("redis://127.0.0.1:1")
        }
        await #expect {
            _ = try await client.send(RedisCommand("PING"))
        } throws: { error in
            (error as? RedisError)?.code == .unavailable
        }
    }

    @Test func aRefusedConnectionKeepsItsCause() async throws {
        let configuration = try RedisConfiguration(url: "redis://127.0.0.1:1")
        await #expect {
            _ = try await RedisConnection.connect(configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
        } throws: { error in
            guard let error = error as? RedisError, let cause = error.underlying else { return false }
            return error.code == .unavailable && !(cause is RedisError) && error.description.hasPrefix("Redis unavailable: cannot connect")
        }
    }

    @Test func aDescriptionNamesTheCauseOnce() {
        struct Cause: Error, CustomStringConvertible { var description: String { "socket reset" } }
        #expect(RedisError(.connectionClosed, "the connection to Redis is closed", underlying: Cause()).description == "Redis connectionClosed: the connection to Redis is closed (socket reset)")
        #expect(RedisError(.unavailable, "cannot connect (socket reset)", underlying: Cause()).description == "Redis unavailable: cannot connect (socket reset)")
        #expect(RedisError(.timeout, "no answer").description == "Redis timeout: no answer")
    }

    @Test func anIdleSubscriberKeepsItsConnection() async throws {
        // With no subscription Redis answers PING with +PONG, not the pub/sub ["pong", ""].
        let configuration = try RedisConfiguration(url: try TestRedis.url())
        let subscriber = RedisSubscriber(
            configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger,
            pingInterval: .milliseconds(400)
        ) { _ in }
        try await subscriber.connect()
        defer { subscriber.shutdown() }
        // Several pings; each must be answered within the interval, even on a busy machine.
        for _ in 0..<12 {
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await subscriber.notReadyReason.get() == nil, "still connected after several pings")
        }
    }

    @Test func subscriptionsAreReferenceCounted() async throws {
        let configuration = try RedisConfiguration(url: try TestRedis.url())
        let received = MessageBox()
        let subscriber = RedisSubscriber(configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger) {
            received.append($0)
        }
        try await subscriber.connect()
        defer { subscriber.shutdown() }
        let publisher = try await connect()
        defer { publisher.close() }
        let name = "test:refcount:\(UInt64.random(in: 0...UInt64.max))"

        try await subscriber.subscribe(name).get()
        try await subscriber.subscribe(name).get()
        #expect(try await numberOfSubscribers(name, publisher) == 1)

        subscriber.unsubscribe(name)
        #expect(try await numberOfSubscribers(name, publisher) == 1)
        _ = try await publisher.send(RedisCommand("PUBLISH", .string(name), "still here"))
        try await received.waitFor(count: 1)
        #expect(received.payloads == ["still here"])

        subscriber.unsubscribe(name)
        try await waitUntil { try await numberOfSubscribers(name, publisher) == 0 }
        #expect(try await subscriber.subscribedChannels.get().isEmpty)
    }

    func numberOfSubscribers(_ name: String, _ connection: RedisConnection) async throws -> Int64 {
        let reply = try await connection.send(RedisCommand("PUBSUB", "NUMSUB", .string(name)))
        return reply.array?[1].integer ?? -1
    }
}

/// Collects pub/sub messages across threads.
final class MessageBox: Sendable {
    private let messages = NIOLockedValueBox<[RedisSubscriber.Message]>([])
    func append(_ batch: [RedisSubscriber.Message]) { messages.withLockedValue { $0 += batch } }
    var payloads: [String] { messages.withLockedValue { $0.map { String(buffer: $0.payload) } } }
    func waitFor(count: Int) async throws {
        try await waitUntil { self.messages.withLockedValue { $0.count } >= count }
    }
}

func waitUntil(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

import NIOConcurrencyHelpers

@Suite("Lua scripts run by their SHA")
struct RedisScriptsTests {
    @Test func aRegisteredScriptRunsByItsSHAWhetherPassedAsItselfOrAsEqualText() async throws {
        let connection = try await RedisConnection.connect(
            configuration: RedisConfiguration(url: try TestRedis.url()), eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Logger(label: "test")
        )
        defer { connection.close() }
        let script = "return 'scripts test " + String(UInt64.random(in: 0...UInt64.max)) + "'"
        let other = "return 'the other one'"
        let scripts = RedisScripts([other, script], logger: Logger(label: "test"))
        await scripts.load(on: connection)
        let rebuilt = String(decoding: Array(script.utf8), as: UTF8.self)
        for text in [script, rebuilt] {
            var sent: [String] = []
            let reply = try await scripts.run(text, keys: [], arguments: []) { command in
                sent.append(String(buffer: command.arguments[0]))
                return try await connection.send(command)
            }
            #expect(reply.string?.hasPrefix("scripts test") == true)
            #expect(sent == ["EVALSHA"], "\(text == script ? "the same string" : "equal text")")
        }
        var sent: [String] = []
        _ = try await scripts.run("return 1", keys: [], arguments: []) { command in
            sent.append(String(buffer: command.arguments[0]))
            return try await connection.send(command)
        }
        #expect(sent == ["EVAL"], "a script it was not given is sent in full")
    }
}
