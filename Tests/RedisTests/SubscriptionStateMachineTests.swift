import Testing

@testable import Redis

/// The pub/sub bookkeeping, event by event, without a socket. Waiters are names.
@Suite("Subscription state machine")
struct SubscriptionStateMachineTests {
    typealias Machine = SubscriptionStateMachine<String>

    /// A machine on a connection with no channel yet.
    func connected() -> Machine {
        var machine = Machine()
        guard case .resubscribe(let names, isReconnect: false) = machine.connectionEstablished() else {
            Issue.record("a first connection is not a reconnect")
            return machine
        }
        #expect(names.isEmpty)
        return machine
    }

    func succeeded(_ action: Machine.ReplyAction) -> [String] {
        guard case .confirmed(let succeed, _) = action else { return [] }
        return succeed
    }

    @Test func subscribeTwiceThenUnsubscribeOnceKeepsTheChannel() {
        var machine = connected()
        guard case .sendSubscribe(["a"]) = machine.subscribe("a", waiter: "first") else { Issue.record("the first join subscribes"); return }
        guard case .wait = machine.subscribe("a", waiter: "second") else { Issue.record("the second join waits for the same reply"); return }
        #expect(succeeded(machine.subscribeReplyReceived("a")) == ["first", "second"])
        guard case .succeed("third") = machine.subscribe("a", waiter: "third") else { Issue.record("a confirmed channel joins at once"); return }

        guard case .none = machine.unsubscribe("a") else { Issue.record("references remain"); return }
        guard case .none = machine.unsubscribe("a") else { Issue.record("references remain"); return }
        #expect(machine.subscribedChannels == ["a"])
        #expect(machine.messageReceived("a") == .deliver)
        guard case .unsubscribe("a", let failing, send: true) = machine.unsubscribe("a") else { Issue.record("the last leave unsubscribes"); return }
        #expect(failing.isEmpty)
        #expect(machine.subscribedChannels.isEmpty)
        #expect(machine.messageReceived("a") == .ignore)
        guard case .none = machine.unsubscribe("a") else { Issue.record("an extra leave does nothing"); return }
    }

    @Test func unsubscribeBeforeTheReplyFailsTheJoinAndIgnoresTheLateReply() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: "join")
        guard case .unsubscribe("a", failing: ["join"], send: true) = machine.unsubscribe("a") else {
            Issue.record("the waiting join fails"); return
        }
        guard case .none = machine.subscribeReplyReceived("a") else { Issue.record("nobody waits any more"); return }
        guard case .none = machine.unsubscribeReplyReceived("a") else { Issue.record("nobody waits any more"); return }
        #expect(machine.messageReceived("a") == .ignore)
        #expect(machine.unconfirmedCount == 0)
    }

    @Test func subscribingAgainBeforeTheUnsubscribeReplyWaitsForEveryReply() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: "first")
        #expect(succeeded(machine.subscribeReplyReceived("a")) == ["first"])
        _ = machine.unsubscribe("a")
        guard case .sendSubscribe(["a"]) = machine.subscribe("a", waiter: "again") else { Issue.record("subscribes again"); return }
        // The UNSUBSCRIBE's reply comes first: the SUBSCRIBE is still due.
        guard case .none = machine.unsubscribeReplyReceived("a") else { Issue.record("not confirmed by the unsubscribe reply"); return }
        #expect(machine.messageReceived("a") == .ignore)
        #expect(succeeded(machine.subscribeReplyReceived("a")) == ["again"])
        #expect(machine.messageReceived("a") == .deliver)
    }

    @Test func duplicateRepliesAndRepliesNobodyAskedForChangeNothing() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: "join")
        #expect(succeeded(machine.subscribeReplyReceived("a")) == ["join"])
        guard case .none = machine.subscribeReplyReceived("a") else { Issue.record("a duplicate reply completes nothing"); return }
        #expect(machine.messageReceived("a") == .deliver)

        guard case .none = machine.subscribeReplyReceived("never-asked") else { Issue.record("an unknown channel is ignored"); return }
        guard case .none = machine.unsubscribeReplyReceived("never-asked") else { Issue.record("an unknown channel is ignored"); return }
        guard case .none = machine.shardUnsubscribeReceived("never-asked") else { Issue.record("an unknown channel is ignored"); return }
        #expect(machine.messageReceived("never-asked") == .ignore)
        #expect(machine.subscribedChannels == ["a"])
    }

    @Test func withoutAConnectionAJoinFailsAndKeepsItsReference() {
        var machine = Machine()
        guard case .failUnavailable("join") = machine.subscribe("a", waiter: "join") else { Issue.record("no connection"); return }
        #expect(machine.subscribedChannels == ["a"])
        guard case .unsubscribe("a", failing: [], send: false) = machine.unsubscribe("a") else { Issue.record("nothing to send"); return }
        guard case .failUnavailable("again") = machine.resubscribe("a", waiter: "again") else { Issue.record("no connection"); return }
    }

    @Test func aLostConnectionFailsEveryWaiterAndKeepsTheReferences() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: "a1")
        _ = machine.subscribe("a", waiter: "a2")
        _ = machine.subscribe("b", waiter: "b1")
        #expect(succeeded(machine.subscribeReplyReceived("b")) == ["b1"])
        _ = machine.subscribe("c", waiter: "c1")

        guard case .fail(let failing) = machine.connectionLost() else { return }
        #expect(Set(failing) == ["a1", "a2", "c1"])
        #expect(!machine.isConnected && !machine.isShutdown)
        #expect(machine.subscribedChannels == ["a", "b", "c"])
        #expect(machine.messageReceived("b") == .ignore)
        #expect(machine.unconfirmedCount == 3)
        guard case .failUnavailable("late") = machine.subscribe("b", waiter: "late") else { Issue.record("no connection"); return }
        // A reply from the old connection arriving late confirms nothing new.
        guard case .none = machine.subscribeReplyReceived("a") else { Issue.record("its waiters failed already"); return }
    }

    @Test func aReconnectSubscribesExactlyTheLiveChannelsAndReportsOnceAllAreConfirmed() {
        var machine = connected()
        for name in ["a", "b", "gone"] {
            _ = machine.subscribe(name, waiter: name)
            _ = machine.subscribeReplyReceived(name)
        }
        _ = machine.subscribe("b", waiter: "b again")
        _ = machine.unsubscribe("gone")
        _ = machine.connectionLost()

        guard case .resubscribe(let names, isReconnect: true) = machine.connectionEstablished() else { Issue.record("a reconnect"); return }
        #expect(Set(names) == ["a", "b"])
        #expect(machine.unconfirmedCount == 2)
        guard case .none = machine.subscribeReplyReceived("a") else { Issue.record("b still due"); return }
        guard case .confirmed([], resubscribed: let all?) = machine.subscribeReplyReceived("b") else { Issue.record("all confirmed"); return }
        #expect(Set(all) == ["a", "b"])
        #expect(machine.unconfirmedCount == 0)
        guard case .none = machine.subscribeReplyReceived("b") else { Issue.record("reported once"); return }
    }

    @Test func aJoinDuringTheResubscribeWaitsForItsReply() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: "a")
        _ = machine.connectionLost()
        _ = machine.connectionEstablished()
        guard case .wait = machine.subscribe("a", waiter: "while resubscribing") else { Issue.record("the resubscribe's reply is due"); return }
        guard case .confirmed(["while resubscribing"], resubscribed: ["a"]?) = machine.subscribeReplyReceived("a") else {
            Issue.record("confirmed and reported"); return
        }
    }

    @Test func shutdownRefusesTheNextConnectionAndRacesWithClose() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: "join")
        guard case .closeConnection = machine.shutdown() else { Issue.record("closes the open connection"); return }
        #expect(machine.isShutdown && machine.isConnected)
        guard case .none = machine.shutdown() else { Issue.record("closes once"); return }
        // A reply may still arrive before the close.
        #expect(succeeded(machine.subscribeReplyReceived("a")) == ["join"])
        guard case .fail([]) = machine.connectionLost() else { Issue.record("nothing left to fail"); return }
        #expect(!machine.isConnected && machine.isShutdown)
        guard case .close = machine.connectionEstablished() else { Issue.record("a connection opened meanwhile is closed"); return }

        var idle = Machine()
        guard case .none = idle.shutdown() else { Issue.record("nothing to close"); return }
        guard case .close = idle.connectionEstablished() else { Issue.record("shut down before connecting"); return }
    }

    @Test func aNodeGivingAChannelUpReportsItLost() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: "join")
        #expect(succeeded(machine.subscribeReplyReceived("a")) == ["join"])
        guard case .lost("a") = machine.shardUnsubscribeReceived("a") else { Issue.record("not asked for: lost"); return }
        #expect(machine.messageReceived("a") == .ignore)
        #expect(machine.serves("a"))

        guard case .sendSubscribe(["a"]) = machine.resubscribe("a", waiter: "retry") else { Issue.record("subscribes again"); return }
        guard case .wait = machine.resubscribe("a", waiter: "retry 2") else { Issue.record("one SSUBSCRIBE at a time"); return }
        #expect(succeeded(machine.subscribeReplyReceived("a")) == ["retry", "retry 2"])

        _ = machine.unsubscribe("a")
        guard case .none = machine.shardUnsubscribeReceived("a") else { Issue.record("the asked-for reply"); return }
    }

    @Test func aChannelMovesWithItsReferencesAndWaiters() {
        var from = connected()
        var to = connected()
        _ = from.subscribe("a", waiter: "a1")
        _ = from.subscribe("a", waiter: "a2")
        let (references, waiters) = from.drop("a")
        #expect(references == 2 && waiters == ["a1", "a2"])
        #expect(!from.serves("a"))
        guard case .none = from.subscribeReplyReceived("a") else { Issue.record("forgotten"); return }

        guard case .sendSubscribe(["a"]) = to.adopt("a", references: references, waiters: waiters, waiter: "move") else {
            Issue.record("subscribes on the new node"); return
        }
        #expect(succeeded(to.subscribeReplyReceived("a")) == ["a1", "a2", "move"])
        guard case .succeed(["again"]) = to.adopt("a", references: 1, waiters: [], waiter: "again") else { Issue.record("confirmed already"); return }
        _ = to.unsubscribe("a")
        _ = to.unsubscribe("a")
        #expect(to.serves("a"))
        _ = to.unsubscribe("a")
        #expect(!to.serves("a"))
    }
}
