import ChatClient
import ChatServer
import Testing

@Suite("Many instances on one Redis")
struct ManyInstancesTests {
    @Test func thousandSocketsOnThreeInstancesGetEveryMessageOfTheirChannelOnceAndInOrder() async throws {
        let servers = try await (0..<3).asyncMap { _ in
            try await TestServer.start(broker: .redis) { $0.maximumSocketsPerAddress = 2_000 }
        }
        do {
            let channels = (0..<4).map { _ in uniqueChannel("many") }
            // 1,000 sockets, spread over the instances and the channels.
            var sockets: [(socket: ChatWebSocket, channel: Int)] = []
            for index in 0..<1_000 {
                let server = servers[index % 3]
                let channel = (index / 3) % channels.count
                sockets.append((try await ChatWebSocket.connect(port: server.port, path: "/wb/?channel=\(channels[channel])"), channel))
            }
            // Messages posted round-robin to the three instances, in one order per channel.
            let perChannel = 15
            for number in 0..<perChannel {
                for (channel, name) in channels.enumerated() {
                    let server = servers[(number + channel) % 3]
                    #expect(try await ChatHTTP.send(port: server.port, data: "\(channel)-\(number)", channel: name).status == 200)
                }
            }
            var complete = 0
            for (socket, channel) in sockets {
                var received: [String] = []
                while received.count < perChannel, let text = await socket.nextText(timeout: .seconds(10)) { received.append(text) }
                if received == (0..<perChannel).map({ "\(channel)-\($0)" }) { complete += 1 }
                #expect(await socket.nextText(timeout: .milliseconds(1)) == nil, "nothing more: no duplicate, nothing of another channel")
            }
            #expect(complete == sockets.count, "every socket got every message of its channel exactly once, in order")
            for (socket, _) in sockets { await socket.disconnect() }
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
        for server in servers { await server.stop() }
    }
}
