import Redis
import Testing

@Suite("Redis Cluster: slots and URLs")
struct ClusterSlotTests {
    @Test func slotsAreRedisOwn() {
        // CRC16/XMODEM's check value, and what redis-server 7.0's CLUSTER KEYSLOT answers.
        #expect(ClusterSlot.of("123456789") == 0x31C3 % 16384)
        let keyslot: [String: Int] = [
            "foo": 12182, "123456789": 12739, "": 0, "ünïcode": 6051, "chatroom:{c1}:meta": 14347,
            // The first {…} with something inside decides; an empty {} does not count.
            "foo{}{bar}": 8363, "foo{{bar}}zap": 4015, "{bar": 4015, "foo{bar}{zap}": 5061, "bar": 5061,
        ]
        for (key, slot) in keyslot {
            #expect(ClusterSlot.of(key) == slot, "\(key)")
        }
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("{user1000}.followers"))
    }

    @Test func aChannelsKeysAndPubSubChannelShareOneSlot() {
        for channel in ["channel_1", "a", "ünïcode", "x-y.z"] {
            let slots = ["meta", "history", "messages"].map { ClusterSlot.of("chatroom:{\(channel)}:\($0)") }
            #expect(Set(slots).count == 1)
            #expect(slots[0] == ClusterSlot.of(channel))
        }
    }

    @Test func clusterURLs() throws {
        guard case .cluster(let seeds) = try RedisTarget(url: "redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/") else {
            Issue.record("not read as a cluster")
            return
        }
        #expect(seeds.map(\.address) == ["10.0.0.1:7000", "10.0.0.2:6379", "[::1]:7002"])
        #expect(seeds.allSatisfy { $0.username == "user" && $0.password == "p@ss" })
        #expect(try RedisTarget(url: "redis+cluster://:secret@h:1").description == "redis+cluster://:***@h:1")
        guard case .single = try RedisTarget(url: "redis://h:1/2") else {
            Issue.record("a plain URL is one Redis")
            return
        }
        for bad in ["redis+cluster://", "redis+cluster://h:1/3", "redis+cluster://h:99999", "redis+cluster://h:1,,h:2", "redis+cluster://h:x"] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisTarget(url: bad) }
        }
    }
}
