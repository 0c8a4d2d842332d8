import Chat
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The `POST /send/` messages of one event loop's connections, published together:
/// what arrives in one turn of the loop goes to the broker as one batch (with Redis, one
/// script per channel), each message answered on its own.
///
/// No task: the broker's futures answer on the loop (with Redis, one script per channel
/// written from here), so the batch costs no hop into Swift concurrency and back. A
/// batch with a message that needs more (a capped room's place, a one-to-one room's
/// inbox) takes one task for all of it.
///
/// Bound to its event loop: ``submit(_:answer:)`` is called there, and the answers come
/// there.
final class PublishQueue: @unchecked Sendable {
    typealias Answer = (Result<Publication, Posting.Failure>) -> Void

    let eventLoop: any EventLoop
    private let posting: Posting
    private let logger: Logger
    private var drafts: [Posting.Draft] = []
    private var answers: [Answer] = []
    /// The number of the batch being collected: a connection whose earlier message is in
    /// a batch gone to the broker waits for its answer before it submits the next, so
    /// that one connection's messages keep their order.
    private(set) var batch: UInt64 = 0

    init(eventLoop: any EventLoop, posting: Posting, logger: Logger) {
        self.eventLoop = eventLoop
        self.posting = posting
        self.logger = logger
    }

    /// Publishes `draft` with the others of this turn of the loop; `answer` is called on
    /// the loop once the broker has it (or refused it).
    func submit(_ draft: Posting.Draft, answer: @escaping Answer) {
        eventLoop.preconditionInEventLoop()
        drafts.append(draft)
        answers.append(answer)
        if drafts.count == 1 {
            // After the reads of this turn, with whatever else they brought.
            eventLoop.assumeIsolatedUnsafeUnchecked().execute { self.flush() }
        }
    }

    private func flush() {
        let batch = drafts
        let waiting = answers
        self.batch += 1
        drafts = []
        answers = []
        posting.publish(batch, on: eventLoop, logger: logger).assumeIsolatedUnsafeUnchecked().whenSuccess { results in
            for (answer, result) in zip(waiting, results) { answer(result) }
        }
    }
}

/// Each event loop's ``PublishQueue``, made when its first connection needs it.
final class PublishQueues: Sendable {
    private let posting: Posting
    private let logger: Logger
    private let queues = NIOLockedValueBox<[ObjectIdentifier: PublishQueue]>([:])

    init(posting: Posting, logger: Logger) {
        self.posting = posting
        self.logger = logger
    }

    func queue(for eventLoop: any EventLoop) -> PublishQueue {
        queues.withLockedValue { queues in
            if let queue = queues[ObjectIdentifier(eventLoop)] { return queue }
            let queue = PublishQueue(eventLoop: eventLoop, posting: posting, logger: logger)
            queues[ObjectIdentifier(eventLoop)] = queue
            return queue
        }
    }
}
