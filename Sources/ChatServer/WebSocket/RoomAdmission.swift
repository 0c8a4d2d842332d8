import Chat
import HTTPTypes
import Logging
import NIOCore

/// Whether a socket may take a channel, and its place there: the room's rules, the
/// address's allowances and the broker's join. One chat.v1 socket asks once, at its
/// upgrade; a chat.v2 socket asks for every subscription.
struct RoomAdmission: Sendable {
    /// What a socket asks for.
    struct Ask: Sendable {
        var channel: ChannelName
        /// Who the socket counts as in the room (its place in a capped room).
        var member: String
        /// The identity its `uid` cookie proved, if it had a valid one.
        var verified: String?
        /// The socket resumes: its replay reads the history.
        var resumes: Bool
        /// The client's address.
        var client: String
    }

    /// A refusal with the reason counted in `chatroom_refusals_total`.
    struct Refused: Error, Sendable {
        var refusal: Refusal
        var reason: String
    }

    let context: ChatServerContext
    let logger: Logger

    /// The rules that need no broker: a private room, the history allowance of a
    /// resume, a capped room asked without an identity.
    func check(_ ask: Ask) -> Refused? {
        let gatekeeper = context.gatekeeper
        if let refusal = RoomPolicy.refusal(for: ask.channel, identity: ask.verified) {
            return Refused(refusal: refusal, reason: "private_room")
        }
        // A resume reads the history: it takes a read from the address's allowance, as
        // `/history` does.
        if ask.resumes, let wait = gatekeeper.takeHistoryRead(from: ask.client) {
            let tooMany = Gatekeeper.tooMany("history reads", rate: gatekeeper.settings.historyRate, wait: wait)
            return Refused(refusal: Refusal(.tooManyRequests, tooMany.message, closeCode: .tooManyRequests), reason: "rate_limited")
        }
        // A place in a capped room is a person's: a client without an identity would be a
        // new person each time, and could fill the room alone.
        if context.rooms.cap(of: ask.channel) != nil, ask.verified == nil {
            let message = "This room holds a limited number of people, so it needs to know who you are: open the chat page first (it gives your browser an identity), then connect again."
            return Refused(refusal: Refusal(.forbidden, message, closeCode: .identityRequired), reason: "identity_required")
        }
        return nil
    }

    /// What came of an admission: refused or not, and whether the broker's join was made
    /// (it is to be balanced with `broker.leave`, also when it failed).
    struct Admitted: Sendable {
        var refused: Refused?
        var joined: Bool
    }

    /// Refuses a person the room banned, then takes a place in a capped room (one Lua
    /// script over every instance), then joins the channel in the broker. Call after
    /// ``check(_:)`` passed.
    ///
    /// The ban is looked up in ``RoomModerations``: a Redis read at most once a second
    /// per room, however many sockets ask.
    func admit(_ ask: Ask, on eventLoop: any EventLoop) -> EventLoopFuture<Admitted> {
        let broker = context.broker
        let presence = context.presence
        let moderations = context.moderations
        let channel = ask.channel
        let cap = context.rooms.cap(of: channel)
        // When the person's ban ends (0: when lifted), if they are banned.
        let banned: EventLoopFuture<Int64?>
        if let room = moderations.kept(channel) {
            banned = eventLoop.makeSucceededFuture(room.bannedUntil(ask.member, now: RoomModeration.now))
        } else {
            banned = eventLoop.makeFutureWithTask {
                try await moderations.room(of: channel, from: broker).bannedUntil(ask.member, now: RoomModeration.now)
            }
        }
        // A place in a capped room: `nil` for a banned person, who is asked for none.
        let admitted = banned.flatMap { until -> EventLoopFuture<(banUntil: Int64?, admitted: Bool?)> in
            if let until { return eventLoop.makeSucceededFuture((until, nil)) }
            guard let cap else { return eventLoop.makeSucceededFuture((nil, true)) }
            return eventLoop.makeFutureWithTask {
                (nil, try await broker.admit(ask.member, to: channel, instance: presence.instance, cap: cap, lifetime: presence.lifetime))
            }
        }
        return admitted.flatMap { banUntil, admitted -> EventLoopFuture<Admitted> in
            guard let admitted else {
                var refusal = Refusal(.forbidden, RoomModeration.bannedWords, closeCode: .banned)
                if let banUntil, banUntil > 0 { refusal.until = banUntil }
                return eventLoop.makeSucceededFuture(Admitted(refused: Refused(refusal: refusal, reason: "banned"), joined: false))
            }
            guard admitted else {
                let cap = cap ?? 0
                let message = "This room is full: it holds at most \(cap) \(cap == 1 ? "person" : "people")."
                return eventLoop.makeSucceededFuture(Admitted(refused: Refused(refusal: Refusal(.forbidden, message, closeCode: .roomFull), reason: "room_full"), joined: false))
            }
            return broker.join(channel, on: eventLoop)
                .map { Admitted(refused: nil, joined: true) }
                .flatMapErrorThrowing { error in Admitted(refused: unavailable(error, ask), joined: true) }
        }
        .flatMapErrorThrowing { error in Admitted(refused: unavailable(error, ask), joined: false) }
    }

    /// ``admit(_:on:)`` with the join released when `ended` completes.
    func admit(_ ask: Ask, on eventLoop: any EventLoop, until ended: EventLoopFuture<Void>) -> EventLoopFuture<Result<Void, Refused>> {
        let broker = context.broker
        return admit(ask, on: eventLoop).map { admitted in
            // If it ended meanwhile, the leave runs at once, after the join: they balance.
            if admitted.joined { ended.whenComplete { _ in broker.leave(ask.channel) } }
            return admitted.refused.map { .failure($0) } ?? .success(())
        }
    }

    private func unavailable(_ error: any Error, _ ask: Ask) -> Refused {
        context.refusals.record(
            "Refused a socket's channel: the broker cannot serve", route: "/wb/", reason: "unavailable", client: ask.client,
            logger: logger, level: .warning, metadata: ["channel": "\(ask.channel)", "error": "\(error)"]
        )
        return Refused(refusal: Refusal(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly.", closeCode: .unavailable), reason: "unavailable")
    }
}
