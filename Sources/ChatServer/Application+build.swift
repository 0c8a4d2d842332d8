import Chat
import ChatArchive
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
/// Checks the broker before returning: with `--broker redis`, Redis must answer. If a
/// later step fails, the broker's connections are closed before the error is thrown.
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
    let encoder = try Startup.makeEncoder(configuration)
    let (registry, metrics) = MetricsController.make()
    let hub = Hub(eventLoopGroup: eventLoopGroup, batchWindow: TimeAmount(configuration.batchWindow), metrics: metrics, encode: encoder.frames(of:))
    let rate = MessageRate()
    let moderations = RoomModerations()
    let broker = try Startup.makeBroker(configuration, eventLoopGroup: eventLoopGroup, metrics: metrics, logger: logger) { events in
        rate.record(events)
        moderations.observe(events)
        hub.deliver(events)
    }
    do {
        try await broker.start()
    } catch {
        throw StartupError(message: "\(error). Start Redis, point --redis-url at it, or run a single instance with --broker memory.")
    }
    do {
        let identities = Identities(secret: try await Startup.identitySecret(configuration, broker: broker))
        let gatekeeper = try Startup.makeGatekeeper(configuration, logins: try await Startup.makeLogins(configuration, identities: identities, logger: logger))
        let instance = StatusController.makeInstanceID(port: configuration.port)
        let archiver = try Startup.makeArchiver(configuration, broker: broker, instance: instance, metrics: metrics, logger: logger)
        let refusals = Refusals(metrics: metrics)
        let catalog = AssetCatalog.embedded(publicDirectory: configuration.publicDirectory)
        let rooms = RoomPolicy(defaultCap: configuration.maximumMembers, caps: configuration.channelCaps)
        let presence = PresenceTracker(
            broker: broker,
            instance: instance,
            interval: configuration.presenceInterval,
            heartbeat: configuration.presenceLifetime / 3,
            lifetime: configuration.presenceLifetime,
            grace: configuration.presenceGrace,
            logger: logger,
            encode: encoder.frames(of:),
            deliver: hub.deliver
        )
        try await Startup.applySlowModes(configuration, broker: broker, metrics: metrics, logger: logger)
        let router = try Startup.buildRouter(
            configuration, catalog: catalog, broker: broker, gatekeeper: gatekeeper, identities: identities, metrics: metrics, refusals: refusals,
            rooms: rooms, presence: presence, moderations: moderations, archiver: archiver
        )
        let context = ChatServerContext(
            hub: hub,
            broker: broker,
            reads: HistoryReads(store: HistoryStore(broker: broker, archive: archiver?.archive), eventLoopGroup: eventLoopGroup, metrics: metrics),
            readStates: ReadStates(broker: broker, eventLoopGroup: eventLoopGroup),
            settings: .init(
                maximumMessageSize: configuration.maximumMessageSize,
                socketQueueLimit: configuration.socketQueueLimit,
                requestTimeout: configuration.requestTimeout,
                echoRoute: configuration.testEchoRoute,
                maximumSubscriptions: configuration.maximumSubscriptions,
                moderators: configuration.moderators,
                eventStreamPing: TimeAmount(configuration.eventStreamPing)
            ),
            encoder: encoder,
            gatekeeper: gatekeeper,
            metrics: metrics,
            presence: presence,
            identities: identities,
            rooms: rooms,
            refusals: refusals,
            moderations: moderations
        )
        let sends = SendRoutes(
            controller: SendController(
                broker: broker,
                maximumMessageSize: configuration.maximumMessageSize,
                maximumBodySize: configuration.maximumBodySize ?? configuration.maximumMessageSize * 3 + 16 * 1024,
                gatekeeper: gatekeeper,
                metrics: metrics,
                refusals: refusals,
                identities: identities,
                rooms: rooms,
                presence: presence,
                moderators: configuration.moderators
            ),
            logger: logger
        )
        let budget = ConnectionBudget(
            limit: configuration.maximumConnections ?? ConnectionBudget.defaultLimit(),
            httpReserve: configuration.httpReserve,
            limitPerAddress: configuration.maximumConnectionsPerAddress,
            trustedProxies: gatekeeper.settings.trustedProxies,
            logger: logger
        )
        logger.info("Connections", metadata: ["at_most": "\(budget.limit)", "sockets_at_most": "\(budget.socketLimit)"])
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
        let metricsServer = Startup.makeMetricsServer(
            configuration, metrics: metricsController, status: statusController, chatRouter: router, eventLoopGroup: eventLoopGroup, logger: logger
        )
        // Last, once every route is in: it wraps only the router's answer when none matched.
        router.add(middleware: UnmatchedRequestAnswer(routes: router.routes, gatekeeper: gatekeeper, refusals: refusals))
        let sockets = SocketService(hub: hub, pingInterval: configuration.pingInterval, drainTimeout: configuration.drainTimeout, logger: logger)
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                ChatChildChannel(
                    responder: responder, context: context, sends: sends, idleTimeout: Startup.idleTimeout, budget: budget, logger: logger
                )
            },
            configuration: .init(address: .hostname(configuration.hostname, port: configuration.port), serverName: nil, backlog: configuration.listenBacklog),
            services: broker.services + [presence, sockets, HeapTrimmer(logger: logger)] + (metricsServer.map { [$0] } ?? []) + (archiver.map { [$0] } ?? []),
            onServerRunning: onServerRunning,
            eventLoopGroupProvider: .shared(eventLoopGroup),
            logger: logger
        )
    } catch {
        broker.close()
        throw error
    }
}

/// The steps of ``buildApplication(_:logger:onServerRunning:)``, each with the refusal
/// an operator reads when it fails.
enum Startup {
    /// How long a keep-alive HTTP connection may stay idle.
    static let idleTimeout: Duration = .seconds(75)

    static func makeEncoder(_ configuration: ChatConfiguration) throws -> FrameEncoder {
        do {
            return try FrameEncoder(deflateMinimumSize: configuration.deflateMinimumSize)
        } catch {
            throw StartupError(message: "Cannot set up permessage-deflate (zlib): \(error)")
        }
    }

    /// The broker `--broker` names, not started yet; `deliver` takes what it receives.
    static func makeBroker(
        _ configuration: ChatConfiguration, eventLoopGroup: any EventLoopGroup, metrics: ChatMetrics, logger: Logger,
        deliver: @escaping @Sendable ([ChatEvent]) -> Void
    ) throws -> any Broker {
        var history = HistoryPolicy(size: configuration.historySize, timeToLive: configuration.historyTTL, dedupeWindow: configuration.dedupeWindow,
            editWindow: configuration.editWindow, archiveBacklog: configuration.archiveURL == nil ? nil : configuration.archiveBacklog
        )
        history.archiveHold = configuration.archiveHold
        switch configuration.broker {
        case .memory:
            return MemoryBroker(history: history, deliver: deliver)
        case .redis:
            let redis: RedisTarget
            do {
                redis = try RedisTarget(url: configuration.redisURL)
            } catch let error as RedisError {
                throw StartupError(message: "Invalid --redis-url: \(error.message)")
            }
            return RedisBroker(target: redis, history: history, eventLoopGroup: eventLoopGroup, logger: logger, metrics: metrics, deliver: deliver)
        }
    }

    /// The archive `--archive-url` names and the archiver that fills it from `broker`;
    /// `nil` without one.
    static func makeArchiver(_ configuration: ChatConfiguration, broker: any Broker, instance: String, metrics: ChatMetrics, logger: Logger) throws -> Archiver? {
        guard let url = configuration.archiveURL else { return nil }
        guard let feed = broker as? any ArchiveFeed else {
            throw StartupError(message: "--archive-url: the broker \(broker) does not feed an archive.")
        }
        let archive: any Archive
        do {
            archive = try Archives.open(url: url)
        } catch {
            throw StartupError(message: "Invalid --archive-url: \(error.description)")
        }
        return Archiver(feed: feed, archive: archive, name: instance, retention: configuration.archiveRetention, metrics: metrics, logger: logger)
    }

    /// `--identity-secret`, or the one every instance on the broker shares (the first
    /// instance makes it).
    static func identitySecret(_ configuration: ChatConfiguration, broker: any Broker) async throws -> String {
        if let configured = configuration.identitySecret { return configured }
        do {
            return try await broker.sharedSecret(named: "identity", proposed: Base64URL.encode(HMACSHA256.randomBytes(32)))
        } catch {
            throw StartupError(message: "Cannot read the identity secret: \(error). Set --identity-secret, or check Redis.")
        }
    }

    /// `--slow-mode`: each room's slow mode, unless a moderator set one already (it
    /// outlives restarts in Redis).
    static func applySlowModes(_ configuration: ChatConfiguration, broker: any Broker, metrics: ChatMetrics, logger: Logger) async throws {
        for (channel, seconds) in configuration.slowModes.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            do {
                let outcome = try await broker.moderate(.defaultSlowMode(seconds: seconds), in: channel)
                logger.info("Slow mode", metadata: ["channel": "\(channel)", "seconds": "\(outcome.room.slowMode ?? 0)", "set_now": "\(outcome.change != nil)"])
            } catch {
                throw StartupError(message: "Cannot set the slow mode of \(channel): \(error).")
            }
        }
    }

    /// The JWT keys and whether anonymous people are let in.
    static func makeLogins(_ configuration: ChatConfiguration, identities: Identities, logger: Logger) async throws -> Logins {
        let verifier: JWTVerifier?
        do {
            verifier = try await JWTVerifier.make(
                secret: configuration.jwtSecret, publicKeyFiles: configuration.jwtPublicKeyFiles, jwksURL: configuration.jwksURL,
                expectations: .init(issuer: configuration.jwtIssuer, audience: configuration.jwtAudience), identities: identities
            )
        } catch let error as ConfigurationError {
            throw StartupError(message: error.description)
        }
        if configuration.jwksURL != nil, configuration.jwtAudience == nil {
            // A login's key set signs the tokens of every application it serves.
            logger.warning("--jwks-url without --jwt-audience: tokens the login issued for other applications sign in here too")
        }
        if configuration.requireLogin, verifier == nil {
            throw StartupError(message: "--require-login needs a key to check sign-ins with: --jwt-secret, --jwt-public-key or --jwks-url.")
        }
        return Logins(verifier: verifier, requireLogin: configuration.requireLogin)
    }

    static func makeGatekeeper(_ configuration: ChatConfiguration, logins: Logins = .none) throws -> Gatekeeper {
        do {
            return Gatekeeper(logins: logins, settings: .init(
                trustedProxies: try TrustedProxies(parsing: configuration.trustedProxies),
                allowedOrigins: configuration.allowedOrigins.map(Set.init),
                publishToken: configuration.publishToken,
                apiToken: configuration.apiToken,
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
    }

    /// The chat's HTTP routes: the page, `/history`, moderation, `/typing/` and `/read/`, health. (`/wb/` and
    /// `/send/` are no routes: ``ChatChildChannel`` serves them before the router sees them.)
    static func buildRouter(
        _ configuration: ChatConfiguration, catalog: AssetCatalog, broker: any Broker, gatekeeper: Gatekeeper, identities: Identities,
        metrics: ChatMetrics, refusals: Refusals, rooms: RoomPolicy, presence: PresenceTracker, moderations: RoomModerations, archiver: Archiver?
    ) throws -> Router<ChatRequestContext> {
        // HEAD on every GET route: load balancers and uptime checks send it.
        let router = Router(context: ChatRequestContext.self, options: .autoGenerateHeadEndpoints)
        do {
            try PageController(catalog: catalog, configuration: configuration, identities: identities, logins: gatekeeper.logins).addRoutes(to: router)
        } catch {
            throw StartupError(message: "The page template does not compile: \(error)")
        }
        HistoryController(
            broker: broker, gatekeeper: gatekeeper, refusals: refusals, identities: identities, maximumBytes: configuration.maximumHistoryBytes,
            moderations: moderations, archive: archiver?.archive
        ).addRoutes(to: router)
        ModerationController(
            moderating: Moderating(broker: broker, metrics: metrics),
            authorizer: ModeratorAuthorizer(
                ways: (configuration.adminToken.map { [ModeratorAuthorizer.adminToken($0)] } ?? [])
                    + (gatekeeper.logins.verifier != nil ? [ModeratorAuthorizer.signedIn(gatekeeper.logins)] : [])
                    // Anonymous identities moderate only where anonymous people may come.
                    + (configuration.moderators.isEmpty || configuration.requireLogin
                        ? [] : [ModeratorAuthorizer.moderatorCookie(identities, configuration.moderators, allowedOrigins: gatekeeper.settings.allowedOrigins)])
            ),
            gatekeeper: gatekeeper, refusals: refusals, identities: identities
        ).addRoutes(to: router)
        ActivityController(
            broker: broker, gatekeeper: gatekeeper, refusals: refusals, identities: identities, moderations: moderations, rooms: rooms, presence: presence
        ).addRoutes(to: router)
        HealthController(broker: broker, archiver: archiver).addRoutes(to: router)
        return router
    }

    /// `/metrics` and `/status` on a listener of their own (`--metrics-port`), e.g. on a
    /// private interface; without one they go on the chat's router, `/status` guarded
    /// by the publish token.
    static func makeMetricsServer(
        _ configuration: ChatConfiguration, metrics: MetricsController, status: StatusController, chatRouter: Router<ChatRequestContext>,
        eventLoopGroup: any EventLoopGroup, logger: Logger
    ) -> (any Service)? {
        guard let metricsPort = configuration.metricsPort else {
            metrics.addRoutes(to: chatRouter)
            status.addGuardedRoutes(to: chatRouter)
            return nil
        }
        let router = Router(options: .autoGenerateHeadEndpoints)
        metrics.addRoutes(to: router)
        status.addRoutes(to: router)
        return Application(
            router: router,
            configuration: .init(address: .hostname(configuration.metricsHostname, port: metricsPort), serverName: nil),
            onServerRunning: { channel in
                logger.info("Metrics", metadata: ["address": "\(channel.localAddress?.description ?? "?")", "path": "/metrics"])
            },
            eventLoopGroupProvider: .shared(eventLoopGroup),
            logger: logger
        )
    }
}
