import CHiredis
import Foundation
import NIOCore
import Testing

@testable import Redis

@Suite("Commands and URLs")
struct RedisCommandTests {
    /// The Swift encoder writes exactly what hiredis' redisFormatCommandArgv writes.
    @Test(arguments: [
        ["PING"],
        ["SET", "key", "value with spaces"],
        ["EVALSHA", "abc", "1", "chatroom:{c}:meta", "", "ünïcödé\r\n"],
    ])
    func encoderMatchesHiredis(arguments: [String]) {
        var buffer = ByteBuffer()
        RedisCommand(arguments[0], arguments.dropFirst().map { .string($0) }).encode(into: &buffer)

        let bytes = arguments.map { Array($0.utf8) }
        var target: UnsafeMutablePointer<CChar>?
        let cStrings: [UnsafeMutablePointer<CChar>] = bytes.map { bytes in
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
            bytes.withUnsafeBytes { UnsafeMutableRawPointer(copy).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(copy), byteCount: bytes.count) }
            return copy
        }
        defer { cStrings.forEach { $0.deallocate() } }
        var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
        let lengths = bytes.map { $0.count }
        let length = redisFormatCommandArgv(&target, Int32(arguments.count), &pointers, lengths)
        defer { redisFreeCommand(target) }
        let expected = Array(UnsafeRawBufferPointer(start: target, count: Int(length)))
        #expect(Array(buffer.readableBytesView) == expected)
    }

    @Test func descriptionNamesOnlyTheCommand() {
        #expect(RedisCommand("AUTH", "user", "secret").description == "AUTH")
    }

    @Test func tcpURL() throws {
        let configuration = try RedisConfiguration(url: "redis://alice:p%40ss@redis.example:6380/3")
        #expect(configuration.endpoint == .tcp(host: "redis.example", port: 6380))
        #expect(configuration.username == "alice")
        #expect(configuration.password == "p@ss")
        #expect(configuration.database == 3)
        #expect(configuration.description == "redis://alice:***@redis.example:6380/3")
    }

    @Test func defaultsAndPasswordOnly() throws {
        let configuration = try RedisConfiguration(url: "redis://:secret@127.0.0.1")
        #expect(configuration.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(configuration.username == nil)
        #expect(configuration.password == "secret")
        #expect(configuration.handshake.map(\.description) == ["AUTH"])
    }

    @Test func ipv6Host() throws {
        let configuration = try RedisConfiguration(url: "redis://[::1]:7000")
        #expect(configuration.endpoint == .tcp(host: "::1", port: 7000))
    }

    @Test func unixSocketURL() throws {
        let configuration = try RedisConfiguration(url: "unix:///run/redis/redis.sock?db=2&password=x")
        #expect(configuration.endpoint == .unix(path: "/run/redis/redis.sock"))
        #expect(configuration.database == 2)
        #expect(configuration.password == "x")
        #expect(configuration.handshake.map(\.description) == ["AUTH", "SELECT"])
    }

    @Test(arguments: ["http://localhost", "redis://", "redis://host/notanumber", "unix://relative/path", "nonsense"])
    func invalidURLsSayWhy(url: String) {
        #expect {
            _ = try RedisConfiguration(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .invalidURL && error.message.contains(url.isEmpty ? "" : String(url.prefix(8)))
        }
    }

    @Test func backoffGrowsToItsCapWithJitter() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        let delays = (0..<12).map { _ in backoff.next() }
        #expect(delays[0] >= .milliseconds(50) && delays[0] <= .milliseconds(100))
        #expect(delays.allSatisfy { $0 <= .seconds(5) })
        #expect(delays[11] >= .milliseconds(2500))
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(100))
    }
}
