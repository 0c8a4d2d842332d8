import NIOConcurrencyHelpers
import ServiceLifecycle

/// A service that runs services added while it runs: a cluster's node connections,
/// which come and go with its topology.
///
/// Each added service runs in a child task and so shares this one's graceful shutdown;
/// a service taken out of the topology is stopped by its own `shutdown()`. The first
/// error a service throws cancels the others and is thrown from ``run()``, as a
/// `ServiceGroup` expects; a service ending by cancellation is not an error.
final class ServiceSet: Service, Sendable {
    private let stream: AsyncStream<any Service>
    private let continuation: AsyncStream<any Service>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: (any Service).self)
    }

    /// Runs `service` beside the others (at once if running, else from ``run()`` on).
    func add(_ service: any Service) {
        continuation.yield(service)
    }

    func run() async throws {
        let continuation = self.continuation
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for await service in stream {
                    group.addTask {
                        do {
                            try await service.run()
                        } catch is CancellationError where Task.isCancelled {
                            // Stopped by cancellation: shutting down, not failing.
                        } catch {
                            // The group cancels the other services; ending the stream lets it end.
                            continuation.finish()
                            throw error
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            continuation.finish()
        }
    }
}
