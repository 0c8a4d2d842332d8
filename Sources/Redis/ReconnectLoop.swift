import Logging
import ServiceLifecycle

/// Keeps one connection up until graceful shutdown: connects, waits for the connection
/// to close, waits a ``Backoff`` delay, and connects again.
///
/// The owner keeps the connection; the loop asks it for the one open now, opens a new
/// one when there is none, and stops once the owner says it is shut down. A failed
/// attempt and a lost connection each wait the next delay; a connection that came up
/// starts the backoff again from its first delay.
struct ReconnectLoop: Sendable {
    /// What the owner has now.
    enum Current<Connection> {
        /// Shut down: stop.
        case stopped
        /// A connection is open: wait for it to close.
        case open(Connection)
        /// No connection: open one.
        case none
    }

    /// What the owner wants once its connection closed.
    enum AfterClose {
        case reconnect
        case stop
    }

    /// The log lines the loop writes, in the owner's words.
    struct Messages: Sendable {
        /// A connection came up.
        var up: Logger.Message
        /// An attempt failed; retrying after a delay.
        var unreachable: Logger.Message
        /// An open connection closed; reconnecting after a delay.
        var lost: Logger.Message
    }

    var backoff: Backoff
    let logger: Logger
    let metadata: Logger.Metadata
    let messages: Messages
    /// Waits a delay; by default until it passed or graceful shutdown began.
    let sleep: @Sendable (Duration) async -> Void

    init(
        backoff: Backoff = Backoff(),
        logger: Logger,
        metadata: Logger.Metadata,
        messages: Messages,
        sleep: @escaping @Sendable (Duration) async -> Void = { delay in
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
        }
    ) {
        self.backoff = backoff
        self.logger = logger
        self.metadata = metadata
        self.messages = messages
        self.sleep = sleep
    }

    /// Runs until the owner is shut down or the task is cancelled; graceful shutdown
    /// calls `onGracefulShutdown`, which must make `current` answer ``Current/stopped``
    /// and close the connection.
    mutating func run<Connection>(
        current: () async -> Current<Connection>,
        connect: () async throws -> Connection,
        awaitClose: (Connection) async -> AfterClose,
        onGracefulShutdown: @escaping @Sendable () -> Void
    ) async {
        await withGracefulShutdownHandler {
            while !Task.isCancelled {
                let connection: Connection
                switch await current() {
                case .stopped:
                    return
                case .open(let open):
                    connection = open
                case .none:
                    do {
                        connection = try await connect()
                        logger.info(messages.up, metadata: metadata)
                    } catch {
                        let delay = backoff.next()
                        logger.warning(messages.unreachable, metadata: metadata.merging(["error": "\(error)", "retry_in": "\(delay)"]) { $1 })
                        await sleep(delay)
                        continue
                    }
                }
                backoff.reset()
                guard await awaitClose(connection) == .reconnect else { return }
                logger.warning(messages.lost, metadata: metadata)
                await sleep(backoff.next())
            }
        } onGracefulShutdown: {
            onGracefulShutdown()
        }
    }
}

extension ReconnectLoop.Current: Sendable where Connection: Sendable {}
