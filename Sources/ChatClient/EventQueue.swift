import NIOConcurrencyHelpers

/// A queue that a channel handler pushes to, in order and without suspending, and a
/// task awaits with a timeout.
final class EventQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: (id: Int, continuation: CheckedContinuation<Element?, Never>)?
        var nextID = 0
    }

    private let state = NIOLockedValueBox(State())

    func push(_ item: Element) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Element?, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            state.items.append(item)
            return nil
        }
        waiter?.resume(returning: item)
    }

    /// The next element, or `nil` after `timeout`.
    func next(timeout: Duration) async -> Element? {
        if let item = state.withLockedValue({ $0.items.isEmpty ? nil : $0.items.removeFirst() }) { return item }
        let id = state.withLockedValue { state in
            state.nextID += 1
            return state.nextID
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.expire(id)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            let ready = state.withLockedValue { state -> Element?? in
                if !state.items.isEmpty { return .some(state.items.removeFirst()) }
                state.waiter = (id, continuation)
                return .none
            }
            if case .some(let item) = ready { continuation.resume(returning: item) }
        }
    }

    private func expire(_ id: Int) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Element?, Never>? in
            guard let waiter = state.waiter, waiter.id == id else { return nil }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume(returning: nil)
    }
}
