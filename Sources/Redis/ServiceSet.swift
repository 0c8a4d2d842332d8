import NIOConcurrencyHelpers
import ServiceLifecycle

/// A service that runs services added while it runs: a cluster's node connections,
/// which come and go with its topology.
///
/// Each added service runs in a child task and so shares this one's graceful shutdown;
/// a service taken out of the topology is stopped by its own `shutdown()`.
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
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await service in stream {
                    group.addTask { try? await service.run() }
                }
            }
        } onGracefulShutdown: {
            self.continuation.finish()
        }
    }
}
