import Logging
import Redis
import ServiceLifecycle

extension RedisBroker {
    /// Fences channels whose last writes Redis lost (a failover, a restart without fsync):
    /// their offsets go on after the highest this instance delivered, so no offset is
    /// handed out twice. The sequencer finds them on its loop; this service runs the
    /// fence script, one at a time, and stops with the broker's other services.
    final class FenceQueue: Service, Sendable {
        private struct Fence {
            var channel: ChannelName
            var epoch: String
            var offset: Int64
        }

        private let commands: Commands
        private let scripts: RedisScripts
        private let logger: Logger
        private let stream: AsyncStream<Fence>
        private let continuation: AsyncStream<Fence>.Continuation

        init(commands: Commands, scripts: RedisScripts, logger: Logger) {
            self.commands = commands
            self.scripts = scripts
            self.logger = logger
            // A fence per channel that lost writes: few, and each supersedes nothing, so
            // none is dropped; the bound only guards against a runaway.
            (stream, continuation) = AsyncStream.makeStream(of: Fence.self, bufferingPolicy: .bufferingNewest(10_000))
        }

        /// Asks for `channel`'s offsets in `epoch` to go on after `offset`.
        func fence(_ channel: ChannelName, epoch: String, after offset: Int64) {
            continuation.yield(Fence(channel: channel, epoch: epoch, offset: offset))
        }

        func run() async throws {
            await cancelWhenGracefulShutdown {
                for await fence in self.stream { await self.run(fence) }
            }
        }

        private func run(_ fence: Fence) async {
            do {
                let before = try await RedisBroker.run(
                    RedisBroker.fenceScript, keys: [RedisKeys.meta(fence.channel)], arguments: [.string(fence.epoch), .integer(fence.offset)],
                    commands: commands, scripts: scripts
                )
                if let before = before.integer, before >= 0 {
                    logger.warning(
                        "Redis had lost the channel's last writes; its offsets now continue after the highest delivered here",
                        metadata: ["channel": "\(fence.channel)", "redis_offset": "\(before)", "continued_after": "\(fence.offset)"]
                    )
                }
            } catch {
                logger.warning("Could not fence a channel whose last writes Redis lost", metadata: ["channel": "\(fence.channel)", "error": "\(error)"])
            }
        }
    }
}
