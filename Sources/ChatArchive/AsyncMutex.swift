/// A lock for async code: one holder at a time, the others wait their turn in order.
/// (An actor alone does not do: its methods let others in at every `await`.)
actor AsyncMutex {
    private var held = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func lock() async {
        guard held else {
            held = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Hands the lock to the next in line, if any.
    func unlock() {
        if waiting.isEmpty {
            held = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
