import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Lua scripts run by their SHA: loaded (`SCRIPT LOAD`) on each new connection, run with
/// `EVALSHA`, and sent in full with `EVAL` when Redis has lost its script cache
/// (`NOSCRIPT` after a restart or `SCRIPT FLUSH`), which caches them again.
public final class RedisScripts: Sendable {
    private let scripts: [String]
    /// Where each script's bytes are (see ``place(of:)``).
    private let storage: [Int]
    /// The SHA of each script in ``scripts``, once loaded.
    private let shas: NIOLockedValueBox<[String?]>
    private let logger: Logger

    /// - Parameter scripts: every script that ``run(_:keys:arguments:send:)`` will be asked to run.
    public init(_ scripts: [String], logger: Logger) {
        self.scripts = scripts
        self.storage = scripts.map(Self.storage(of:))
        self.shas = NIOLockedValueBox([String?](repeating: nil, count: scripts.count))
        self.logger = logger
    }

    /// Which script `script` is. A caller passes a copy of the string it registered,
    /// which shares its bytes: found by their address (kept alive by ``scripts``), without
    /// hashing kilobytes of Lua on every publish; any other string by its text.
    private func place(of script: String) -> Int? {
        let address = Self.storage(of: script)
        if address != 0, let index = storage.firstIndex(of: address), scripts[index].utf8.count == script.utf8.count { return index }
        return scripts.firstIndex(of: script)
    }

    /// The address of a large native string's bytes; 0 for a small or bridged one.
    private static func storage(of script: String) -> Int {
        guard script.utf8.count > 15 else { return 0 }
        return script.utf8.withContiguousStorageIfAvailable { Int(bitPattern: $0.baseAddress) } ?? 0
    }

    /// Loads every script on a new connection; a script that fails to load is sent in full.
    public func load(on connection: RedisConnection) async {
        for (index, script) in scripts.enumerated() {
            do {
                let sha = try await connection.send(RedisCommand("SCRIPT", "LOAD", .string(script)))
                shas.withLockedValue { $0[index] = sha.string }
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
        if let index = place(of: script), let sha = shas.withLockedValue({ $0[index] }) {
            do {
                return try await send(RedisCommand("EVALSHA", [.string(sha)] + tail))
            } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
                // Redis lost its script cache: EVAL below caches it again.
            }
        }
        return try await send(RedisCommand("EVAL", [.string(script)] + tail))
    }

    /// ``run(_:keys:arguments:send:)`` without a task: `send`'s futures fail as the
    /// async `send` throws.
    public func run(
        _ script: String,
        keys: [String],
        arguments: [RedisArgument],
        sendFuture send: @escaping @Sendable (RedisCommand) -> EventLoopFuture<RESPValue>
    ) -> EventLoopFuture<RESPValue> {
        let tail: [RedisArgument] = [.integer(keys.count)] + keys.map { .string($0) } + arguments
        let full = RedisCommand("EVAL", [.string(script)] + tail)
        guard let index = place(of: script), let sha = shas.withLockedValue({ $0[index] }) else { return send(full) }
        let bySHA = send(RedisCommand("EVALSHA", [.string(sha)] + tail))
        return bySHA.flatMapError { error in
            // Redis lost its script cache: EVAL caches it again.
            guard (error as? RedisError)?.serverErrorPrefix == "NOSCRIPT" else { return bySHA.eventLoop.makeFailedFuture(error) }
            return send(full)
        }
    }
}
