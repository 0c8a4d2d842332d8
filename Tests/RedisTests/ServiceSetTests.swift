import ServiceLifecycle
import Testing

@testable import Redis

@Suite("Service set")
struct ServiceSetTests {
    struct Failed: Error {}

    struct Failing: Service {
        func run() async throws {
            try await Task.sleep(for: .milliseconds(20))
            throw Failed()
        }
    }

    struct UntilCancelled: Service {
        func run() async throws {
            try await Task.sleep(for: .seconds(60))
        }
    }

    @Test func theFirstErrorStopsTheOthersAndIsThrown() async {
        let set = ServiceSet()
        set.add(UntilCancelled())
        set.add(Failing())
        await #expect(throws: Failed.self) {
            try await set.run()
        }
    }

    @Test func cancellationIsNotAnError() async throws {
        let set = ServiceSet()
        set.add(UntilCancelled())
        try await withThrowingTaskGroup { group in
            group.addTask { try await set.run() }
            try await Task.sleep(for: .milliseconds(50))
            group.cancelAll()
            try await group.waitForAll()
        }
    }
}
