import Chat
import ChatArchive
import ChatClient
import ChatServer
import ChatTestSupport
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import Redis
import Testing

/// Against the Redis Cluster the test command starts: three primaries, three replicas.
/// Serialized: the failover changes which node is primary for the tests after it.
@Suite("Redis Cluster, sharded pub/sub", .serialized)
struct RedisClusterTests {
    @Test func channelsOnEveryShardReachEverySocketOfTwoInstancesOnceAndInOrder() async throws {
        let admin = try ClusterAdmin()
        let channels = try await admin.channelPerPrimary()
        #expect(channels.count == 3, "one channel on each primary")
        let servers = try await (0..<2).asyncMap { _ in
            try await TestServer.start(broker: .redis) { $0.redisURL = admin.url }
        }
        do {
            var sockets: [(socket: ChatWebSocket, channel: Int)] = []
            for (index, channel) in channels.enumerated() {
                for server in servers {
                    for _ in 0..<2 {
                        sockets.append((try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channel)"), index))
                    }
                }
            }
            let perChannel = 10
            for number in 0..<perChannel {
                for (index, channel) in channels.enumerated() {
                    let server = servers[(number + index) % servers.count]
                    #expect(try await ChatHTTP.send(port: server.port, data: "\(index)-\(number)", channel: channel).body == "ok")
                }
            }
            for (socket, channel) in sockets {
                var received: [String] = []
                while received.count < perChannel, let text = await socket.nextText(timeout: .seconds(10)) { received.append(text) }
                #expect(received == (0..<perChannel).map { "\(channel)-\($0)" })
                #expect(await socket.nextText(timeout: .milliseconds(1)) == nil, "no duplicate, nothing of another channel")
            }
            for server in servers {
                #expect(try await ChatHTTP.request("GET", port: server.port, path: "/readyz").body == "ready\n")
                let metrics = Scrape(try await ChatHTTP.request("GET", port: server.port, path: "/metrics").body)
                let pubsub = metrics.values.filter { $0.key.hasPrefix(#"chatroom_redis_connected{connection="pubsub""#) && $0.value == 1 }
                #expect(pubsub.count == 3, "one sharded pub/sub connection per primary")
            }
            let history = try await ChatHTTP.request("GET", port: servers[0].port, path: "/history?channel=\(channels[2])")
            #expect(history.body.contains(#""lastOffset":\#(perChannel)"#))
            for (socket, _) in sockets { await socket.disconnect() }
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }

    /// An instance archives what it never published: its scan of every primary finds the
    /// channels others wrote to (and did not archive).
    @Test func anArchiverFindsTheChannelsOfEveryShard() async throws {
        let admin = try ClusterAdmin()
        let channels = try await admin.channelPerPrimary()
        let writer = try await TestServer.start(broker: .redis) { $0.redisURL = admin.url }
        for channel in channels {
            for number in 1...5 { #expect(try await ChatHTTP.send(port: writer.port, data: "\(channel) \(number)", channel: channel).body == "ok") }
        }
        await writer.stop()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chatroom-cluster-archive-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = "sqlite://" + directory.appendingPathComponent("archive.db").path
        let archiving = try await TestServer.start(broker: .redis) { configuration in
            configuration.redisURL = admin.url
            configuration.archiveURL = url
        }
        let archive = try Archives.open(url: url)
        var kept: [String: Int] = [:]
        for _ in 0..<200 {
            for channel in channels {
                let epochs = (try? await archive.epochs(of: ChannelName(channel)!)) ?? []
                kept[channel] = epochs.reduce(0) { $0 + Int($1.last - $1.first + 1) }
            }
            if kept.values.allSatisfy({ $0 >= 5 }) && kept.count == channels.count { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(kept.count == 3 && kept.values.allSatisfy { $0 == 5 }, "\(kept)")
        await archiving.stop()
        await archive.close()
    }

    @Test func moderationOnEveryShardHoldsOnBothInstances() async throws {
        let admin = try ClusterAdmin()
        let channels = try await admin.channelPerPrimary()
        let token = "cluster-admin-token-0123456789"
        let servers = try await (0..<2).asyncMap { _ in
            try await TestServer.start(broker: .redis) { configuration in
                configuration.redisURL = admin.url
                configuration.adminToken = token
            }
        }
        do {
            let ada = Person()
            for channel in channels {
                let socket = try await ChatWebSocket.connect(port: servers[1].port, path: "/wb/?channel=\(channel)", headers: [ada.header], subprotocols: ["chat.v1"])
                #expect(try await ChatHTTP.send(port: servers[1].port, data: "before", channel: channel, headers: [ada.header]).status == 200)
                let banned = try await ChatHTTP.request(
                    "POST", port: servers[0].port, path: "/api/ban",
                    headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/x-www-form-urlencoded")],
                    body: "channel=\(channel)&user=\(ada.id)&seconds=0"
                )
                #expect(banned.status == 200, "\(banned.body)")
                #expect(await closeCode(of: socket, within: .seconds(10)) == 4403, "the signal crossed the shard's pub/sub")
                #expect(try await ChatHTTP.send(port: servers[1].port, data: "after", channel: channel, headers: [ada.header]).status == 403)
            }
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }

    @Test func aFailoverLosesNothingAcknowledgedAndMessagesKeepFlowing() async throws {
        let admin = try ClusterAdmin()
        let channel = try await admin.channelPerPrimary()[0]
        let publisher = try await TestServer.start(broker: .redis) { $0.redisURL = admin.url }
        let reader = try await TestServer.start(broker: .redis) { $0.redisURL = admin.url }
        do {
            let original = try await ChatWebSocket.connect(port: reader.port, path: "/wb/?channel=\(channel)")
            let chatV1 = try await ChatWebSocket.connect(port: publisher.port, path: "/wb/?channel=\(channel)", subprotocols: ["chat.v1"])

            // One publisher, so that the order of acknowledgements is the order of the channel.
            let ledger = NIOLockedValueBox((acked: [Int](), refused: 0, failedOver: false, ackedAfter: 0))
            let publishing = Task {
                var number = 0
                let deadline = ContinuousClock.now + .seconds(40)
                while ContinuousClock.now < deadline {
                    number += 1
                    let response = try? await ChatHTTP.send(port: publisher.port, data: "\(number)", channel: channel)
                    let done = ledger.withLockedValue { ledger -> Bool in
                        if response?.body == "ok" {
                            ledger.acked.append(number)
                            if ledger.failedOver { ledger.ackedAfter += 1 }
                        } else {
                            ledger.refused += 1
                        }
                        return ledger.ackedAfter >= 200
                    }
                    if done { break }
                    try? await Task.sleep(for: .milliseconds(2))
                }
            }
            while ledger.withLockedValue({ $0.acked.count }) < 200 { try await Task.sleep(for: .milliseconds(20)) }
            let (old, new) = try await admin.failover(channel: channel)
            ledger.withLockedValue { $0.failedOver = true }
            _ = await publishing.result
            let (acked, refused, ackedAfter) = ledger.withLockedValue { ($0.acked, $0.refused, $0.ackedAfter) }
            #expect(ackedAfter >= 200, "messages keep flowing after the failover from \(old) to \(new)")
            #expect(refused <= 50, "few publishes refused while the primary changed (\(refused))")

            // The original protocol: every acknowledged message once, in order.
            var texts: [Int] = []
            while let text = await original.nextText(timeout: .seconds(5)) {
                texts.append(Int(text) ?? -1)
                if texts.last == acked.last { break }
            }
            #expect(Set(acked).isSubset(of: Set(texts)), "every acknowledged message arrived (missing: \(Set(acked).subtracting(texts).sorted().prefix(10)))")
            #expect(texts == texts.sorted() && Set(texts).count == texts.count, "in order, no duplicate")

            // chat.v1: offsets without a hole, no gap announced.
            var offsets: [Int] = []
            var data: [Int] = []
            var types: Set<String> = []
            while let text = await chatV1.nextText(timeout: .seconds(5)) {
                let json = text.jsonObject
                let type = json["type"] as? String ?? "?"
                if type != "presence" { types.insert(type) }
                guard type == "message" else { continue }
                offsets.append(json["offset"] as? Int ?? -1)
                data.append(Int(json["data"] as? String ?? "") ?? -1)
                if data.last == acked.last { break }
            }
            #expect(types == ["message"], "no gap and no reset: \(types)")
            #expect(offsets == Array((offsets.first ?? 1)..<((offsets.first ?? 1) + offsets.count)), "consecutive offsets")
            #expect(Set(acked).isSubset(of: Set(data)))

            var ready = ""
            for _ in 0..<100 {
                ready = try await ChatHTTP.request("GET", port: reader.port, path: "/readyz").body
                if ready == "ready\n" { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(ready == "ready\n")
            await original.disconnect()
            await chatV1.disconnect()
        } catch {
            await publisher.stop()
            await reader.stop()
            throw error
        }
        await publisher.stop()
        await reader.stop()
    }
}

/// Looks at and steers the test cluster directly.
struct ClusterAdmin {
    let seeds: [String]
    var url: String { "redis+cluster://" + seeds.joined(separator: ",") }

    struct Node {
        var id: String
        var address: String
        var isPrimary: Bool
        var isFailed: Bool
        var primaryID: String?
        var slots: [ClosedRange<Int>]
    }

    init() throws {
        seeds = try TestRedis.clusterSeeds().split(separator: ",").map(String.init)
    }

    func send(_ command: RedisCommand, to address: String) async throws -> RESPValue {
        let (host, port) = (address.split(separator: ":").first.map(String.init) ?? "127.0.0.1", Int(address.split(separator: ":").last ?? "") ?? 0)
        let connection = try await RedisConnection.connect(
            configuration: RedisConfiguration(endpoint: .tcp(host: host, port: port)),
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            logger: Logger(label: "cluster-admin")
        )
        defer { connection.close() }
        return try await connection.send(command)
    }

    /// CLUSTER NODES as seen by `address`.
    func nodes(from address: String? = nil) async throws -> [Node] {
        var reply: RESPValue?
        for seed in [address].compactMap({ $0 }) + seeds {
            if let answer = try? await send(RedisCommand("CLUSTER", "NODES"), to: seed) {
                reply = answer
                break
            }
        }
        guard let text = reply?.string else { throw ChatClientError("no cluster node answered CLUSTER NODES") }
        return text.split(separator: "\n").map { line in
            let fields = line.split(separator: " ").map(String.init)
            let flags = fields[2].split(separator: ",")
            let slots = fields.dropFirst(8).compactMap { field -> ClosedRange<Int>? in
                let bounds = field.split(separator: "-").compactMap { Int($0) }
                if bounds.count == 2 { return bounds[0]...bounds[1] }
                return bounds.count == 1 && !field.hasPrefix("[") ? bounds[0]...bounds[0] : nil
            }
            return Node(
                id: fields[0],
                address: String(fields[1].split(separator: "@")[0]),
                isPrimary: flags.contains("master"),
                isFailed: flags.contains("fail") || flags.contains("fail?"),
                primaryID: fields[3] == "-" ? nil : fields[3],
                slots: slots
            )
        }
    }

    /// Unique channel names, one owned by each primary.
    func channelPerPrimary() async throws -> [String] {
        let primaries = try await nodes().filter { $0.isPrimary && !$0.isFailed && !$0.slots.isEmpty }
        var channels: [String: String] = [:]
        var attempts = 0
        while channels.count < primaries.count && attempts < 10_000 {
            attempts += 1
            let name = uniqueChannel("cluster")
            let slot = ClusterSlot.of(name)
            if let owner = primaries.first(where: { $0.slots.contains { $0.contains(slot) } }), channels[owner.id] == nil {
                channels[owner.id] = name
            }
        }
        return primaries.compactMap { channels[$0.id] }
    }

    /// Promotes a replica of the primary owning `channel` (CLUSTER FAILOVER, the planned
    /// kind) and waits until every node agrees. Returns the old and new primary.
    func failover(channel: String) async throws -> (String, String) {
        let slot = ClusterSlot.of(channel)
        let everyone = try await nodes()
        guard let primary = everyone.first(where: { $0.isPrimary && $0.slots.contains { $0.contains(slot) } }),
            let replica = everyone.first(where: { $0.primaryID == primary.id && !$0.isFailed })
        else { throw ChatClientError("no primary with a replica for slot \(slot)") }
        _ = try await send(RedisCommand("CLUSTER", "FAILOVER"), to: replica.address)
        for _ in 0..<200 {
            var agreed = true
            for seed in seeds {
                let view = try await nodes(from: seed)
                let owner = view.first { $0.isPrimary && $0.slots.contains { $0.contains(slot) } }
                if owner?.address != replica.address { agreed = false }
            }
            if agreed { return (primary.address, replica.address) }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ChatClientError("the cluster did not agree on \(replica.address) as the new primary of slot \(slot)")
    }
}
