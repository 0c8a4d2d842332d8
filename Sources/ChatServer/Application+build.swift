import Chat
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import Redis
import ServiceLifecycle

/// The server could not start; `message` says why in one line.
public struct StartupError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Builds the whole chat service: broker, hub, HTTP routes and the `/wb/` pipeline.
///
/// Checks the broker before returning: with `--broker redis`, Redis must answer.
/// - Parameters:
///   - configuration: what to serve and where.
///   - logger: where everything logs.
///   - onServerRunning: called with the listening channel once the port is bound.
/// - Throws: ``StartupError`` when the broker cannot serve or the page cannot be built.
public func buildApplication(
    _ configuration: ChatConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) async throws -> some ApplicationProtocol {
    let eventLoopGroup = MultiThreadedEventLoopGroup.singleton
    let encoder: FrameEncoder
    do {
        encoder = try FrameEncoder(deflateMinimumSize: configuration.deflateMinimumSize)
    } catch {
        throw StartupError(message: "Cannot set up permessage-deflate (zlib): \(error)")
    }
    let (registry, metrics) = MetricsController.make()
    let hub = Hub(eventLoopGroup: eventLoopGroup, batchWindow: TimeAmount(configuration.batchWindow), metrics: metrics, encode: encoder.frames(of:))
    let rate = MessageRate()
    let deliver: @Sendable ([ChatEvent]) -> Void = { events in
        rate.record(events)
        hub.deliver(events)
    }
    let history = HistoryPolicy(size: configuration.historySize, timeToLive: configuration.historyTTL, dedupeWindow: configuration.dedupeWindow)
    let broker: any Broker
    switch configuration.broker {
    case .memory:
        broker = MemoryBroker(history: history, deliver: deliver)
    case .redis:
        let redis: RedisTarget
        do {
            redis = try RedisTarget(url: configuration.redisURL)
        } catch let error as RedisError {
            throw StartupError(message: "Invalid --redis-url: \(error.message)")
        }
        broker = RedisBroker(target: redis, history: history, eventLoopGroup: eventLoopGroup, logger: logger, metrics: metrics, deliver: deliver)
    }
    do {
        try await broker.start()
    } catch {
        throw StartupError(message: "\(error). Start Redis, point --redis-url at it, or run a single instance with --broker memory.")
    }

    let identitySecret: String
    do {
        if let configured = configuration.identitySecret {
            identitySecret = configured
        } else {
            identitySecret = try await broker.sharedSecret(named: "identity", proposed: Base64URL.encode(HMACSHA256.randomBytes(32)))
        }
    } catch {
        throw StartupError(message: "Cannot read the identity secret: \(error). Set --identity-secret, or check Redis.")
    }
    let instance = StatusController.makeInstanceID(port: configuration.port)
    let identities = Identities(secret: identitySecret)
    let rooms = RoomPolicy(defaultCap: configuration.maximumMembers, caps: configuration.channelCaps)

    let gatekeeper: Gatekeeper
    do {
        gatekeeper = Gatekeeper(settings: .init(
            trustedProxies: try TrustedProxies(parsing: configuration.trustedProxies),
            allowedOrigins: configuration.allowedOrigins.map(Set.init),
            publishToken: configuration.publishToken,
            connectSecret: configuration.connectSecret,
            sendRate: configuration.sendRate,
            historyRate: configuration.historyRate,
            socketMessageRate: configuration.socketMessageRate,
            newChannelRate: configuration.newChannelRate,
            maximumSocketsPerAddress: configuration.maximumSocketsPerAddress,
            maximumChannels: configuration.maximumChannels
        ))
    } catch {
        throw StartupError(message: error.description)
    }

    let refusals = Refusals(metrics: metrics)
    let catalog = AssetCatalog.embedded(publicDirectory: configuration.publicDirectory)
    // HEAD on every GET route: load balancers and uptime checks send it.
    let router = Router(context: ChatRequestContext.self, options: .autoGenerateHeadEndpoints)
    do {
        try PageController(catalog: catalog, configuration: configuration, identities: identities).addRoutes(to: router)
    } catch {
        throw StartupError(message: "The page template does not compile: \(error)")
    }
    SendController(
        broker: broker,
        maximumMessageSize: configuration.maximumMessageSize,
        maximumBodySize: configuration.maximumBodySize ?? configuration.maximumMessageSize * 3 + 16 * 1024,
        gatekeeper: gatekeeper,
        metrics: metrics,
        refusals: refusals,
        identities: identities
    ).addRoutes(to: router)
    HistoryController(broker: broker, gatekeeper: gatekeeper, refusals: refusals, identities: identities, maximumBytes: configuration.maximumHistoryBytes)
        .addRoutes(to: router)
    HealthController(broker: broker).addRoutes(to: router)

    let presence = PresenceTracker(
        broker: broker,
        instance: instance,
        interval: configuration.presenceInterval,
        heartbeat: configuration.presenceLifetime / 3,
        lifetime: configuration.presenceLifetime,
        grace: configuration.presenceGrace,
        logger: logger,
        deliver: hub.deliver
    )
    let context = ChatServerContext(
        hub: hub,
        broker: broker,
        settings: .init(
            maximumMessageSize: configuration.maximumMessageSize,
            socketQueueLimit: configuration.socketQueueLimit,
            requestTimeout: configuration.requestTimeout,
            echoRoute: configuration.testEchoRoute
        ),
        encoder: encoder,
        gatekeeper: gatekeeper,
        metrics: metrics,
        presence: presence,
        identities: identities,
        rooms: rooms,
        refusals: refusals
    )
    let budget = ConnectionBudget(
        limit: configuration.maximumConnections ?? ConnectionBudget.defaultLimit(),
        limitPerAddress: configuration.maximumConnectionsPerAddress,
        trustedProxies: gatekeeper.settings.trustedProxies,
        logger: logger
    )
    logger.info("Connections", metadata: ["at_most": "\(budget.limit)"])
    let metricsController = MetricsController(registry: registry, metrics: metrics, hub: hub, budget: budget)
    let statusController: StatusController
    do {
        statusController = try StatusController(
            template: catalog.statusTemplate, instance: instance, broker: broker, hub: hub, rate: rate,
            requiredToken: configuration.publishToken
        )
    } catch {
        throw StartupError(message: "The status page template does not compile: \(error)")
    }
    var metricsServer: [any Service] = []
    if let metricsPort = configuration.metricsPort {
        // Its own listener, e.g. on a private interface: the chat's port does not serve it.
        let metricsRouter = Router(options: .autoGenerateHeadEndpoints)
        metricsController.addRoutes(to: metricsRouter)
        statusController.addRoutes(to: metricsRouter)
        metricsServer.append(Application(
            router: metricsRouter,
            configuration: .init(address: .hostname(configuration.metricsHostname, port: metricsPort), serverName: nil),
            onServerRunning: { channel in
                logger.info("Metrics", metadata: ["address": "\(channel.localAddress?.description ?? "?")", "path": "/metrics"])
            },
            eventLoopGroupProvider: .shared(eventLoopGroup),
            logger: logger
        ))
    } else {
        metricsController.addRoutes(to: router)
        statusController.addGuardedRoutes(to: router)
    }
    let drain = SocketService(hub: hub, pingInterval: configuration.pingInterval, drainTimeout: configuration.drainTimeout, logger: logger)
    return Application(
        router: router,
        server: HTTPServerBuilder { responder in
            ChatChildChannel(responder: responder, context: context, idleTimeout: .seconds(75), budget: budget, logger: logger)
        },
        configuration: .init(address: .hostname(configuration.hostname, port: configuration.port), serverName: nil),
        services: broker.services + [presence, drain] + metricsServer,
        onServerRunning: onServerRunning,
        eventLoopGroupProvider: .shared(eventLoopGroup),
        logger: logger
    )
}
