import ArgumentParser
import Chat
import ChatServer
import Foundation
import Hummingbird
import Logging

/// `chatroom`: the whole chat service in one binary.
@main
struct Chatroom: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatroom",
        abstract: "A real-time chat server: the chat page, POST /send/ and the WebSocket /wb/, in one binary.",
        discussion: """
            Messages posted to /send/ (form fields data and channel) reach every socket on /wb/ \
            whose channel matches, on every instance connected to the same Redis.
            """
    )

    @Option(help: "Address to listen on.")
    var hostname = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 8000

    @Option(help: "Where messages go: 'redis' connects instances through Redis; 'memory' serves one instance without Redis.")
    var broker: ChatConfiguration.BrokerKind = .redis

    @Option(help: ArgumentHelp("Redis URL: redis://[user:password@]host:port[/db] or unix:///path/to/redis.sock. Also read from $REDIS_URL.", valueName: "url"))
    var redisURL: String?

    @Option(help: ArgumentHelp("Channels shown as tabs on the page, comma separated.", valueName: "names"))
    var channels = "channel_1,channel_2"

    @Option(help: ArgumentHelp("Serve the page's files from this folder instead of the copy inside the binary (for front-end work).", valueName: "dir"))
    var publicDir: String?

    @Option(help: ArgumentHelp("Largest message in bytes, over /send/ or a socket.", valueName: "bytes"))
    var maxMessageSize = 64 * 1024

    @Option(help: ArgumentHelp("Seconds between the server's pings to each socket; a socket that misses one is closed at the next.", valueName: "seconds"))
    var pingInterval = 10

    @Option(help: ArgumentHelp("Seconds to wait for sockets to close on shutdown.", valueName: "seconds"))
    var drainTimeout = 10

    @Option(help: ArgumentHelp("Messages kept per channel, for resume and /history.", valueName: "count"))
    var historySize = 1000

    @Option(help: ArgumentHelp("Drop a channel's history after this many seconds without a message (0: keep it).", valueName: "seconds"))
    var historyTTL = 0

    @Option(help: ArgumentHelp("Bytes that may wait for one slow socket before its messages are dropped.", valueName: "bytes"))
    var socketQueueLimit = 1 << 20

    @Option(help: ArgumentHelp("Least milliseconds between two writes to a socket under load: what arrives meanwhile goes out in one write. A message after a quiet spell goes out at once. 0: write as soon as possible.", valueName: "ms"))
    var batchWindow = 2

    @Option(help: ArgumentHelp("permessage-deflate: compress messages of at least this many bytes for sockets that ask for it (once per message, for all of them); 0 turns the extension off.", valueName: "bytes"))
    var deflateMinSize = 256

    @Option(help: ArgumentHelp("Connections held at once; past it a new one is answered 503 and closed. Default: the open-file limit less 100.", valueName: "count"))
    var maxConnections: Int?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535.") }
        guard maxMessageSize > 0 else { throw ValidationError("--max-message-size must be positive.") }
        guard pingInterval > 0 else { throw ValidationError("--ping-interval must be positive.") }
        guard historySize > 0 else { throw ValidationError("--history-size must be positive.") }
        guard historyTTL >= 0 else { throw ValidationError("--history-ttl cannot be negative.") }
        guard socketQueueLimit >= 1024 else { throw ValidationError("--socket-queue-limit must be at least 1024 bytes.") }
        guard (0...1000).contains(batchWindow) else { throw ValidationError("--batch-window must be between 0 and 1000 milliseconds.") }
        guard deflateMinSize >= 0 else { throw ValidationError("--deflate-min-size cannot be negative.") }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be positive.") }
        guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout cannot be negative.") }
        _ = try channelNames()
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let logger = Logger(label: "chatroom")
        raiseFileLimit(logger: logger)
        var configuration = ChatConfiguration()
        configuration.hostname = hostname
        configuration.port = port
        configuration.broker = broker
        configuration.redisURL = redisURL ?? ProcessInfo.processInfo.environment["REDIS_URL"] ?? configuration.redisURL
        configuration.channels = try channelNames()
        configuration.publicDirectory = publicDir
        configuration.maximumMessageSize = maxMessageSize
        configuration.pingInterval = .seconds(pingInterval)
        configuration.drainTimeout = .seconds(drainTimeout)
        configuration.historySize = historySize
        configuration.historyTTL = historyTTL > 0 ? .seconds(historyTTL) : nil
        configuration.socketQueueLimit = socketQueueLimit
        configuration.batchWindow = .milliseconds(batchWindow)
        configuration.maximumConnections = maxConnections
        configuration.deflateMinimumSize = deflateMinSize > 0 ? deflateMinSize : nil

        let application: any ApplicationProtocol
        do {
            application = try await buildApplication(configuration, logger: logger) { channel in
                let address = channel.localAddress.map { "\($0.ipAddress ?? hostname):\($0.port ?? port)" } ?? "\(hostname):\(port)"
                logger.info("Chatroom is serving", metadata: ["url": "http://\(address)/", "broker": "\(broker)"])
            }
        } catch let error as StartupError {
            FileHandle.standardError.write(Data("chatroom: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        try await application.runService()
    }

    /// Every socket is a file descriptor: raise the soft limit to the hard one and say so.
    private func raiseFileLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let soft = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        let raised = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0
        logger.info(
            "Open file limit",
            metadata: ["soft_was": "\(soft)", "soft": "\(raised ? limit.rlim_max : soft)", "hard": "\(limit.rlim_max)", "connections_at_most": "\((raised ? limit.rlim_max : soft) - 100) (the rest is kept for Redis and files)"]
        )
    }

    private func channelNames() throws -> [ChannelName] {
        let names = channels.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !names.isEmpty else { throw ValidationError("--channels needs at least one channel name.") }
        return try names.map { name in
            do throws(ChannelNameError) {
                return try ChannelName(validating: name)
            } catch {
                throw ValidationError("--channels: '\(name.prefix(80))' is not valid: \(error.reason).")
            }
        }
    }
}

extension ChatConfiguration.BrokerKind: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}
