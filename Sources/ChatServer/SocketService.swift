import Chat
import Logging
import NIOCore
import ServiceLifecycle

/// Runs the sockets' heartbeat while the server runs, and on shutdown closes every
/// socket with 1001 Going Away, waiting up to the drain timeout for them to go.
///
/// It runs in the application's service group before the HTTP server, so it is shut
/// down after the server stopped accepting: no new socket can arrive meanwhile.
struct SocketService: Service {
    let hub: Hub
    let pingInterval: Duration
    let drainTimeout: Duration
    let logger: Logger

    func run() async throws {
        let heartbeats = hub.startHeartbeats(every: TimeAmount(pingInterval))
        defer { heartbeats.forEach { $0.cancel() } }
        let graceful = (try? await gracefulShutdown()) != nil
        let open = await hub.memberCounts().values.reduce(0, +)
        logger.info("Closing sockets with 1001 Going Away", metadata: ["sockets": "\(open)"])
        try? await hub.goAway().get()
        guard graceful else { return }
        let deadline = ContinuousClock.now + drainTimeout
        while ContinuousClock.now < deadline, await hub.memberCounts().values.reduce(0, +) > 0 {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let left = await hub.memberCounts().values.reduce(0, +)
        if left > 0 { logger.warning("Drain timeout reached with sockets still open", metadata: ["sockets": "\(left)"]) }
    }
}
