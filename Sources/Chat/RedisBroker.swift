import Logging
import NIOConcurrencyHelpers
import NIOCore
import Redis
import ServiceLifecycle

/// A broker on Redis: any number of instances share channels through it.
///
/// Publishing runs one Lua script (EVALSHA, loaded on each new connection, reloaded
/// after `NOSCRIPT`) that in one atomic step takes the channel's next offset, keeps
/// its epoch, and PUBLISHes the envelope. Each instance subscribes, on one pub/sub
/// connection, only to the channels its sockets are in.
public final class RedisBroker: Broker {
    /// The Redis URL, password masked.
    public var description: String { "redis (\(client.configuration))" }

    private let client: RedisClient
    private let subscriber: RedisSubscriber
    private let logger: Logger
    private let scriptSHA = NIOLockedValueBox<String?>(nil)

    /// The publish script.
    ///
    /// KEYS[1] the channel's meta hash; ARGV[1] the pub/sub channel, ARGV[2] the data,
    /// ARGV[3] the time in ms, ARGV[4] an epoch to use if the channel has none yet.
    /// Returns `{offset, epoch}`.
    static let publishScript = """
        redis.call('HSETNX', KEYS[1], 'epoch', ARGV[4])
        local epoch = redis.call('HGET', KEYS[1], 'epoch')
        local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
        redis.call('PUBLISH', ARGV[1], 'v1 ' .. offset .. ' ' .. epoch .. ' ' .. ARGV[3] .. '\\n' .. ARGV[2])
        return {offset, epoch}
        """

    /// Creates a broker; it connects in ``start()``.
    /// - Parameters:
    ///   - configuration: where Redis is.
    ///   - eventLoopGroup: the loops to run the two Redis connections on.
    ///   - logger: for connection changes.
    ///   - deliver: receives the messages of the channels this instance joined.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        deliver: @escaping @Sendable ([Message]) -> Void
    ) {
        self.logger = logger
        self.client = RedisClient(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger)
        self.subscriber = RedisSubscriber(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger) {
            pubsub in
            var messages: [Message] = []
            messages.reserveCapacity(pubsub.count)
            for item in pubsub {
                guard let channel = RedisKeys.channel(ofMessages: item.channel),
                    let message = Message(channel: channel, envelope: item.payload)
                else {
                    logger.warning("Ignored a malformed message from Redis", metadata: ["redis.channel": "\(item.channel)"])
                    continue
                }
                messages.append(message)
            }
            if !messages.isEmpty { deliver(messages) }
        }
        let scriptSHA = self.scriptSHA
        client.onConnect { connection in
            do {
                let sha = try await connection.send(RedisCommand("SCRIPT", "LOAD", .string(Self.publishScript)))
                scriptSHA.withLockedValue { $0 = sha.string }
            } catch {
                logger.warning("Could not load the publish script; publishing will send it in full", metadata: ["error": "\(error)"])
            }
        }
    }

    public func start() async throws {
        do {
            try await client.connect()
            try await subscriber.connect()
        } catch {
            client.shutdown()
            subscriber.shutdown()
            throw BrokerError(.unavailable, Self.reason(error))
        }
    }

    public var services: [any Service] { [client, subscriber] }

    public func publish(_ data: ByteBuffer, to channel: ChannelName) async throws -> Message {
        let time = Epoch.nowMilliseconds()
        let arguments: [RedisArgument] = [
            "1", .string(RedisKeys.meta(channel)),
            .string(RedisKeys.messages(channel)), .bytes(data), .integer(time), .string(Epoch.make()),
        ]
        do {
            let reply: RESPValue
            if let sha = scriptSHA.withLockedValue({ $0 }) {
                do {
                    reply = try await client.send(RedisCommand("EVALSHA", [.string(sha)] + arguments))
                } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
                    // Redis lost its script cache (restart, SCRIPT FLUSH): EVAL caches it again.
                    reply = try await client.send(RedisCommand("EVAL", [.string(Self.publishScript)] + arguments))
                }
            } else {
                reply = try await client.send(RedisCommand("EVAL", [.string(Self.publishScript)] + arguments))
            }
            guard let fields = reply.array, fields.count == 2, let offset = fields[0].integer, let epoch = fields[1].string else {
                throw BrokerError(.failed, "Redis answered the publish script with \(reply)")
            }
            return Message(channel: channel, offset: offset, epoch: epoch, time: time, data: data)
        } catch let error as RedisError {
            switch error.code {
            case .server:
                throw BrokerError(.failed, "Redis refused the message: \(error.message)")
            default:
                throw BrokerError(.unavailable, "Redis is unavailable (\(error.message))")
            }
        }
    }

    public func join(_ channel: ChannelName, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        subscriber.subscribe(RedisKeys.messages(channel))
            .flatMapErrorThrowing { error in
                throw BrokerError(.unavailable, "cannot subscribe to \(channel) in Redis: \(Self.reason(error))")
            }
            .hop(to: eventLoop)
    }

    public func leave(_ channel: ChannelName) {
        subscriber.unsubscribe(RedisKeys.messages(channel))
    }

    private static func reason(_ error: any Error) -> String {
        (error as? RedisError)?.message ?? "\(error)"
    }
}
