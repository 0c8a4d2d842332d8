@testable import Chat
import NIOConcurrencyHelpers
import NIOCore
import Testing

@Suite("Moderation rules and signals, without a broker")
struct ModerationRulesTests {
    let channel = ChannelName("room")!
    let now: Int64 = 1_000_000

    @Test func bansThenMutesThenSlowModeRefuseInThatOrder() {
        var room = RoomModeration(mutes: ["ada": now + 2500], bans: ["eve": 0, "old": now - 1], slowMode: 10)
        #expect(room.refusal(from: "eve", kind: .delete(of: 1), exempt: true, lastPost: nil, now: now)?.reason == "banned")
        #expect(room.refusal(from: "old", kind: .message, exempt: false, lastPost: nil, now: now) == nil, "a ban that ended holds nothing")
        let muted = room.refusal(from: "ada", kind: .react(of: 1, on: true), exempt: false, lastPost: nil, now: now)
        #expect(muted?.reason == "muted" && muted?.message == "You are muted in this room for 3 more seconds.")
        #expect(room.refusal(from: "ada", kind: .delete(of: 1), exempt: false, lastPost: nil, now: now) == nil, "a muted person may delete their words")
        let slow = room.refusal(from: "bob", kind: .message, exempt: false, lastPost: now - 4000, now: now)
        #expect(slow?.reason == "slow_mode" && slow?.retryAfter == 6)
        if case .refused(let status) = slow?.kind { #expect(status == 429) } else { Issue.record("slow mode is a refusal") }
        #expect(room.refusal(from: "bob", kind: .message, exempt: true, lastPost: now - 4000, now: now) == nil, "moderators are exempt")
        #expect(room.refusal(from: "bob", kind: .edit(of: 1), exempt: false, lastPost: now - 4000, now: now) == nil, "slow mode counts messages")
        #expect(room.refusal(from: nil, kind: .message, exempt: false, lastPost: nil, now: now) == nil, "no identity, nothing to hold it to")
        room.apply(.unbanned("eve"))
        room.apply(.muted("ada", until: 0))
        room.apply(.slowMode(seconds: 0))
        #expect(room.refusal(from: "eve", kind: .message, exempt: false, lastPost: now, now: now) == nil)
        #expect(room.refusal(from: "ada", kind: .message, exempt: false, lastPost: now, now: now) == nil)
        #expect(!room.isEmpty(now: now), "slow mode set to 0 is a setting")
    }

    @Test func signalsSayEveryChangeAndNothingElse() {
        func event(_ text: String) -> ChatEvent? { Signal.event(channel: channel, payload: ByteBuffer(string: text)) }
        #expect(event("s1 m AbCdEfGhIjKlMnO 1764637000000") == .moderation(channel: channel, change: .muted("AbCdEfGhIjKlMnO", until: 1_764_637_000_000)))
        #expect(event("s1 b AbCdEfGhIjKlMnO 0") == .moderation(channel: channel, change: .banned("AbCdEfGhIjKlMnO", until: 0)))
        #expect(event("s1 u AbCdEfGhIjKlMnO") == .moderation(channel: channel, change: .unbanned("AbCdEfGhIjKlMnO")))
        #expect(event("s1 s 30") == .moderation(channel: channel, change: .slowMode(seconds: 30)))
        for broken in ["s1 m AbCdEfGhIjKlMnO", "s1 b x y", "s1 s", "s1 s ten", "s1 u a b", "s1 m a 1 2"] {
            #expect(event(broken) == nil, "\(broken)")
        }
        #expect(ChatEvent.moderation(channel: channel, change: .banned("eve", until: 0)).audience == .only("eve"))
        #expect(ChatEvent.moderation(channel: channel, change: .slowMode(seconds: 5)).audience == .everyone)
        #expect(ChatEvent.moderation(channel: channel, change: .slowMode(seconds: 5)).goesAlone)
    }

    @Test(arguments: [false, true])
    func theMemoryBrokerKeepsModerationThroughANewEpochAndTellsEveryChange(_ defaultFirst: Bool) async throws {
        let told = NIOLockedValueBox<[ChatEvent]>([])
        let broker = MemoryBroker(history: HistoryPolicy(timeToLive: .milliseconds(1))) { events in told.withLockedValue { $0 += events } }
        if defaultFirst {
            #expect(try await broker.moderate(.defaultSlowMode(seconds: 5), in: channel).change == .slowMode(seconds: 5))
        }
        _ = try await broker.moderate(.ban("eve", seconds: 0), in: channel)
        #expect(try await broker.moderate(.defaultSlowMode(seconds: 9), in: channel).change == (defaultFirst ? nil : .slowMode(seconds: 9)))
        try await Task.sleep(for: .milliseconds(5))
        // The channel's history outlived its time to live: a new epoch, the same ban.
        #expect(try await broker.publish(ByteBuffer(string: "hi"), name: nil, to: channel, options: PublishOptions()).createdChannel)
        await #expect(throws: BrokerError.self) {
            try await broker.publish(PublishRequest(ByteBuffer(string: "hi"), to: channel, from: "eve"))
        }
        #expect(try await broker.moderation(of: channel).isBanned("eve", now: RoomModeration.now))
        let changes = told.withLockedValue { $0 }.compactMap { event -> ModerationChange? in
            if case .moderation(_, let change) = event { change } else { nil }
        }
        #expect(changes.contains(.banned("eve", until: 0)))
    }
}

