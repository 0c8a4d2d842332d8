import Logging
import NIOCore
import NIOPosix

/// One connection to Redis that pipelines commands: each command is written as soon
/// as it is sent, and replies are matched to commands in order.
///
/// A command that gets no reply within the configuration's `commandTimeout` fails with
/// `.timeout`, and the connection is closed: a Redis that stops answering is treated as
/// gone, so callers learn of it quickly instead of waiting on a dead socket.
public final class RedisConnection: Sendable {
    /// The NIO channel under this connection.
    public let channel: any Channel
    private let configuration: RedisConfiguration

    private init(channel: any Channel, configuration: RedisConfiguration) {
        self.channel = channel
        self.configuration = configuration
    }

    /// Connects, logs in and selects the database.
    public static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        logger: Logger
    ) async throws -> RedisConnection {
        let channel = try await RedisConnection.bootstrap(configuration: configuration, eventLoop: eventLoop) { channel in
            try channel.pipeline.syncOperations.addHandler(RedisCommandHandler(commandTimeout: TimeAmount(configuration.commandTimeout)))
        }
        let connection = RedisConnection(channel: channel, configuration: configuration)
        do {
            for command in configuration.handshake {
                _ = try await connection.send(command)
            }
        } catch {
            try? await channel.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply.
    /// - Throws: ``RedisError``: `.server` when Redis answered with an error, `.timeout`,
    ///   `.connectionClosed` or `.protocolError` when the connection failed.
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        let reply = try await sendFuture(command).get()
        if case .error(let message) = reply { throw RedisError(.server, message) }
        return reply
    }

    /// Sends one command; the future fails as ``send(_:)`` throws, on the connection's loop.
    public func sendChecked(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
        sendFuture(command).flatMapThrowing { reply in
            if case .error(let message) = reply { throw RedisError(.server, message) }
            return reply
        }
    }

    /// Sends one command; the future holds its reply, error replies included.
    public func sendFuture(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in
            promise.fail(RedisError(.connectionClosed, "the connection to Redis is closed", underlying: error))
        }
        channel.writeAndFlush(RedisCommandHandler.Request(command: command, promise: promise), promise: written)
        return promise.futureResult
    }

    /// Sends `ASKING` and then `command` with nothing between them (a cluster's ASK
    /// redirection during a slot migration), and waits for the command's reply.
    public func sendAsking(_ command: RedisCommand) async throws -> RESPValue {
        let asking = channel.eventLoop.makePromise(of: RESPValue.self)
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let channel = self.channel
        channel.eventLoop.execute {
            let written = channel.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenFailure { error in
                asking.fail(RedisError(.connectionClosed, "the connection to Redis is closed", underlying: error))
                promise.fail(RedisError(.connectionClosed, "the connection to Redis is closed", underlying: error))
            }
            channel.write(RedisCommandHandler.Request(command: RedisCommand("ASKING"), promise: asking), promise: nil)
            channel.writeAndFlush(RedisCommandHandler.Request(command: command, promise: promise), promise: written)
        }
        asking.futureResult.whenFailure { _ in }
        let reply = try await promise.futureResult.get()
        if case .error(let message) = reply { throw RedisError(.server, message) }
        return reply
    }

    /// Completes when the connection has closed.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Closes the connection; commands still waiting fail with `.connectionClosed`.
    public func close() {
        channel.close(promise: nil)
    }

    /// Opens a TCP or unix-socket connection to Redis with the given handlers.
    static func bootstrap(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        handlers: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> any Channel {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try handlers(channel) }
            }
        do {
            switch configuration.endpoint {
            case .tcp(let host, let port):
                return try await bootstrap
                    .channelOption(.socketOption(.so_keepalive), value: 1)
                    .connect(host: host, port: port).get()
            case .unix(let path):
                return try await bootstrap.connect(unixDomainSocketPath: path).get()
            }
        } catch let error as RedisError {
            throw error
        } catch let error as NIOConnectionError {
            let cause = error.connectionErrors.last.map { "\($0.error)" } ?? error.dnsAError.map { "\($0)" } ?? "\(error)"
            throw RedisError(.unavailable, "cannot connect to Redis at \(configuration) (\(cause))", underlying: error)
        } catch {
            throw RedisError(.unavailable, "cannot connect to Redis at \(configuration) (\(error))", underlying: error)
        }
    }
}

/// Writes commands and completes their promises with replies, in order.
///
/// Flushes are coalesced: commands written in one turn of the event loop (many callers
/// publishing at once) go to Redis in one write. One timer watches the oldest command
/// for the timeout, instead of one timer per command.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Request
    typealias OutboundOut = ByteBuffer

    struct Request: Sendable {
        var command: RedisCommand
        var promise: EventLoopPromise<RESPValue>
    }

    private struct Waiting {
        var promise: EventLoopPromise<RESPValue>
        var deadline: NIODeadline
        var command: RedisCommand
    }

    private let replies = NIOSingleStepByteToMessageProcessor(RESPReader())
    private let commandTimeout: TimeAmount
    private var waiting = CircularBuffer<Waiting>()
    private var flushScheduled = false
    private var timer: Scheduled<Void>?

    init(commandTimeout: TimeAmount) {
        self.commandTimeout = commandTimeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        request.command.encode(into: &buffer)
        let deadline = NIODeadline.now() + commandTimeout
        waiting.append(Waiting(promise: request.promise, deadline: deadline, command: request.command))
        if timer == nil { watch(deadline, context: context) }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        // Runs after the writes already queued on the loop: they share this flush.
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            context.flush()
        }
    }

    /// Fails everything and closes if the oldest command is still unanswered at `deadline`.
    private func watch(_ deadline: NIODeadline, context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timer = nil
            guard let oldest = self.waiting.first else { return }
            if oldest.deadline <= .now() {
                self.failAll(RedisError(.timeout, "Redis did not answer \(oldest.command) within \(self.commandTimeout)"))
                context.close(promise: nil)
            } else {
                self.watch(oldest.deadline, context: context)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try replies.process(buffer: unwrapInboundIn(data)) { reply in
                guard let waiter = waiting.popFirst() else {
                    throw RedisError(.protocolError, "Redis sent a reply nobody asked for")
                }
                waiter.promise.succeed(reply)
            }
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError(.connectionClosed, "the connection to Redis closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(RedisError(.connectionClosed, "the connection to Redis failed: \(error)", underlying: error))
        context.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        timer?.cancel()
        timer = nil
        while let waiter = waiting.popFirst() {
            waiter.promise.fail(error)
        }
    }
}
