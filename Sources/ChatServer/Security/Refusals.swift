import Chat
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Counts every refusal in `/metrics` and logs it, at most one line per client address,
/// route and reason per interval.
///
/// A client that floods refused requests would otherwise write a log line for each
/// (four keep-alive connections wrote 12.8 MB in 10 s). The first refusal of a kind is
/// logged at once; the repeats within the interval are only counted, and the next line
/// after it says how many there were (`repeats`). Past ``maximumKeys`` distinct kinds in
/// one interval, the rest share one line per interval.
final class Refusals: Sendable {
    /// Least time between two lines for one address, route and reason.
    let interval: TimeAmount
    let metrics: ChatMetrics
    static let maximumKeys = 10_000
    private let state = NIOLockedValueBox(State())

    private struct State {
        var lines: [String: (since: NIODeadline, repeats: Int)] = [:]
        var overflowSince: NIODeadline?
        var overflowRepeats = 0
    }

    init(metrics: ChatMetrics = .none, interval: TimeAmount = .seconds(10)) {
        self.metrics = metrics
        self.interval = interval
    }

    /// Counts a refusal and logs it unless one like it was logged within the interval.
    /// - Parameters:
    ///   - route: `/send/`, `/history`, `/wb/`, `socket`, `connection`, …
    ///   - reason: the metric's reason, e.g. `rate_limited`.
    ///   - client: the client's address, the throttle's key with route and reason.
    func record(
        _ message: Logger.Message,
        route: String,
        reason: String,
        client: String,
        logger: Logger,
        level: Logger.Level = .info,
        metadata: Logger.Metadata = [:],
        now: NIODeadline = .now()
    ) {
        metrics.refused(route: route, reason: reason)
        guard logger.logLevel <= level else { return }
        guard let repeats = take("\(client)|\(route)|\(reason)", now: now) else { return }
        var metadata = metadata
        metadata["route"] = "\(route)"
        metadata["refusal"] = "\(reason)"
        metadata["client"] = "\(client)"
        if repeats > 0 { metadata["repeats"] = "\(repeats)" }
        logger.log(level: level, message, metadata: metadata)
    }

    /// `nil` when the line is to be skipped; else how many were skipped before it.
    private func take(_ key: String, now: NIODeadline) -> Int? {
        state.withLockedValue { state in
            if let line = state.lines[key] {
                guard now - line.since >= interval else {
                    state.lines[key]!.repeats += 1
                    return nil
                }
                state.lines[key] = (now, 0)
                return line.repeats
            }
            if state.lines.count >= Self.maximumKeys {
                state.lines = state.lines.filter { now - $0.value.since < interval }
            }
            guard state.lines.count < Self.maximumKeys else {
                // Too many kinds at once (a flood from many addresses): one line an interval for the rest.
                if let since = state.overflowSince, now - since < interval {
                    state.overflowRepeats += 1
                    return nil
                }
                defer { state.overflowRepeats = 0 }
                state.overflowSince = now
                return state.overflowRepeats
            }
            state.lines[key] = (now, 0)
            return 0
        }
    }
}
