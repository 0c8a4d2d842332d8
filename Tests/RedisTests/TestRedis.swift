import Foundation
import Testing

/// The redis-server that the test command started for this run.
///
/// `scripts/test.sh` starts a private redis-server on a spare loopback port and sets
/// CHATROOM_TEST_REDIS_URL. A test that needs Redis fails — it does not skip — when the
/// variable is missing, so a run without Redis can never pass by accident.
enum TestRedis {
    static func url(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        guard let url = ProcessInfo.processInfo.environment["CHATROOM_TEST_REDIS_URL"], !url.isEmpty else {
            Issue.record("CHATROOM_TEST_REDIS_URL is not set: run the tests with scripts/test.sh, which starts redis-server", sourceLocation: sourceLocation)
            throw MissingRedis()
        }
        return url
    }

    struct MissingRedis: Error {}
}
