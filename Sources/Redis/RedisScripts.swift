import Logging
import NIOConcurrencyHelpers

/// Lua scripts run by their SHA: loaded (`SCRIPT LOAD`) on each new connection, run with
/// `EVALSHA`, and sent in full with `EVAL` when Redis has lost its script cache
/// (`NOSCRIPT` after a restart or `SCRIPT FLUSH`), which caches them again.
public final class RedisScripts: Sendable {
    private let scripts: [String]
    private let shas = NIOLockedValueBox<[String: String]>([:])
    private let logger: Logger

    /// - Parameter scripts: every script that ``run(_:keys:arguments:send:)`` will be asked to run.
    public init(_ scripts: [String], logger: Logger) {
        self.scripts = scripts
        self.logger = logger
    }

    /// Loads every script on a new connection; a script that fails to load is sent in full.
    public func load(on connection: RedisConnection) async {
        for script in scripts {
            do {
                let sha = try await connection.send(RedisCommand("SCRIPT", "LOAD", .string(script)))
                shas.withLockedValue { $0[script] = sha.string }
            } catch {
                logger.warning("Could not load a script; it will be sent in full", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Runs `script` with `keys` and `arguments`, through `send`.
    /// - Throws: the ``RedisError`` of the command.
    public func run(
        _ script: String,
        keys: [String],
        arguments: [RedisArgument],
        send: (RedisCommand) async throws -> RESPValue
    ) async throws -> RESPValue {
        let tail: [RedisArgument] = [.integer(keys.count)] + keys.map { .string($0) } + arguments
        if let sha = shas.withLockedValue({ $0[script] }) {
            do {
                return try await send(RedisCommand("EVALSHA", [.string(sha)] + tail))
            } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
                // Redis lost its script cache: EVAL below caches it again.
            }
        }
        return try await send(RedisCommand("EVAL", [.string(script)] + tail))
    }
}
