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

    /// Takes a place in a capped room (one Lua script over every instance), then joins
    /// the channel in the broker; the join is released when `ended` completes. Call
    /// after ``check(_:)`` passed.
    func admit(_ ask: Ask, on eventLoop: any EventLoop, until ended: EventLoopFuture<Void>) -> EventLoopFuture<Result<Void, Refused>> {
        let broker = context.broker
        let presence = context.presence
        let channel = ask.channel
        let cap = context.rooms.cap(of: channel)
        let admitted: EventLoopFuture<Bool>
        if let cap {
            admitted = eventLoop.makeFutureWithTask {
                try await broker.admit(ask.member, to: channel, instance: presence.instance, cap: cap, lifetime: presence.lifetime)
            }
        } else {
            admitted = eventLoop.makeSucceededFuture(true)
        }
        let refusals = context.refusals
        return admitted.flatMap { admitted -> EventLoopFuture<Result<Void, Refused>> in
            guard admitted else {
                let cap = cap ?? 0
                let message = "This room is full: it holds at most \(cap) \(cap == 1 ? "person" : "people")."
                return eventLoop.makeSucceededFuture(.failure(Refused(refusal: Refusal(.forbidden, message, closeCode: .roomFull), reason: "room_full")))
            }
            ended.whenComplete { _ in broker.leave(channel) }
            return broker.join(channel, on: eventLoop).map { .success(()) }
        }
        .flatMapErrorThrowing { error in
            refusals.record(
                "Refused a socket's channel: the broker cannot serve", route: "/wb/", reason: "unavailable", client: ask.client,
                logger: logger, level: .warning, metadata: ["channel": "\(channel)", "error": "\(error)"]
            )
            return .failure(Refused(refusal: Refusal(.serviceUnavailable, "The chat is temporarily unavailable (\(error)); retry shortly.", closeCode: .unavailable), reason: "unavailable"))
        }
    }
}
