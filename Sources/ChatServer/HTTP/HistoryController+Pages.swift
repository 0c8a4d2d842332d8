import Chat
import ChatArchive
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `/history` with `before` (a page backwards from an offset) or `epoch` (an older
/// epoch), and with the archive past the broker's window: the same answer, made of what
/// the archive and the broker hold.
///
/// The broker's stream is cut back only below what the archive has (see
/// ``ArchiveFeed``), so everything older than the broker's first offset is in the
/// archive, and the broker has everything newer than what the archive took: the two
/// meet without a hole.
extension HistoryController {
    /// A page of `channel`: after `after` (oldest first), or the newest before `before`,
    /// or both (between them), of epoch `wanted` (`nil`: the current one).
    func page(_ channel: ChannelName, epoch wanted: String?, after: Int64?, before: Int64?, limit: Int) async throws -> Answer {
        let now = try await broker.history(of: channel, after: nil, limit: 1)
        if let wanted, wanted != now.epoch {
            // An epoch Redis no longer has: only the archive can say (without one, the
            // current history answers, and its epoch tells the client).
            guard let archive else { return try await read(channel, after: after, limit: limit) }
            return try await archived(channel, epoch: wanted, after: after, before: before, limit: limit, from: archive)
        }
        guard let epoch = now.epoch else {
            // No history now (Redis lost it, or it expired): what the archive kept before.
            let previous = try await archive?.epoch(before: "", startedAt: RoomModeration.now + 1, of: channel)
            return Answer(history: now, messages: [], previousEpoch: previous)
        }
        // What the broker holds: firstOffset … lastOffset.
        let first = now.firstOffset ?? now.lastOffset + 1
        let upper = min(before ?? Int64.max, now.lastOffset + 1)
        var messages: [Message] = []
        if let after {
            if after + 1 < first, let archive {
                messages = try await archiveMessages(channel, epoch: epoch, after: after, before: min(upper, first), limit: limit, from: archive)
            }
            if messages.count < limit, upper > first, Self.bytes(of: messages) < maximumBytes {
                let start = max(after, messages.last?.offset ?? after, first - 1)
                messages += try await brokerMessages(channel, epoch: epoch, after: start, below: upper, limit: limit - messages.count, holding: Self.bytes(of: messages))
            }
        } else {
            // Backwards: the broker's part first (the newest), then the archive's below it.
            let start = max(first, upper - Int64(limit)) - 1
            if upper > first { messages = try await brokerMessages(channel, epoch: epoch, after: start, below: upper, limit: limit, holding: 0) }
            let lowest = messages.first?.offset ?? upper
            if messages.count < limit, lowest > 1, let archive, Self.bytes(of: messages) < maximumBytes {
                let older = try await archiveMessages(
                    channel, epoch: epoch, after: nil, before: min(lowest, first), limit: limit - messages.count, from: archive, holding: Self.bytes(of: messages)
                )
                messages = older + messages
            }
        }
        var history = now
        history.messages = []
        if let archive, let kept = try await archive.epoch(epoch, of: channel) {
            history.firstOffset = min(kept.first, history.firstOffset ?? kept.first)
        }
        return try await answer(history, messages, keepingNewest: after == nil)
    }

    /// The answer of `messages` (within ``maximumBytes``), and, if it begins at the
    /// epoch's first message, the epoch the archive kept before.
    private func answer(_ history: History, _ messages: [Message], keepingNewest: Bool) async throws -> Answer {
        let frames = fit(messages, keepingNewest: keepingNewest)
        var answer = Answer(history: history, messages: frames)
        let oldest = keepingNewest ? messages[(messages.count - frames.count)...].first : messages.first
        if let archive, let epoch = history.epoch, let oldest, oldest.offset <= history.firstOffset ?? 1 {
            answer.previousEpoch = try await archive.epoch(before: epoch, startedAt: oldest.time, of: history.channel)
        }
        return answer
    }

    /// A page of an epoch only the archive holds.
    private func archived(
        _ channel: ChannelName, epoch: String, after: Int64?, before: Int64?, limit: Int, from archive: any Archive
    ) async throws -> Answer {
        let kept = try await archive.epoch(epoch, of: channel)
        let messages = try await archiveMessages(channel, epoch: epoch, after: after, before: before, limit: limit, from: archive)
        let history = History(channel: channel, epoch: epoch, lastOffset: kept?.last ?? 0, firstOffset: kept?.first, messages: [])
        return try await answer(history, messages, keepingNewest: after == nil)
    }

    /// Up to `limit` of the broker's messages after `start` and below `upper`, in pages
    /// sized by the bytes the answer may still hold (it holds `held` already).
    private func brokerMessages(
        _ channel: ChannelName, epoch: String, after start: Int64, below upper: Int64, limit: Int, holding held: Int
    ) async throws -> [Message] {
        var messages: [Message] = []
        var cursor = start
        while messages.count < limit, cursor + 1 < upper {
            let wanted = min(pageSize(holding: messages, besides: held, limit: limit), Int(min(Int64(Self.page), upper - 1 - cursor)))
            guard wanted > 0 else { break }
            let read = try await broker.history(of: channel, after: cursor, limit: wanted)
            guard read.epoch == epoch else { break }
            let within = read.messages.filter { $0.offset < upper }
            messages += within
            guard let last = read.messages.last, read.messages.count == wanted, within.count == read.messages.count else { break }
            cursor = last.offset
        }
        return messages
    }

    /// Up to `limit` of the archive's messages of an epoch (oldest first; after `after`
    /// and below `before`, or the newest below `before`), in pages sized like the
    /// broker's: a history of large messages is never read in bulk.
    private func archiveMessages(
        _ channel: ChannelName, epoch: String, after: Int64?, before: Int64?, limit: Int, from archive: any Archive, holding held: Int = 0
    ) async throws -> [Message] {
        var messages: [Message] = []
        var (lower, upper) = (after, before)
        while messages.count < limit {
            let wanted = pageSize(holding: messages, besides: held, limit: limit)
            guard wanted > 0 else { break }
            let page = try await archive.messages(in: channel, epoch: epoch, after: lower, before: upper, limit: wanted)
            if after != nil {
                messages += page
                lower = page.last?.offset ?? lower
            } else {
                messages = page + messages
                upper = page.first?.offset ?? upper
            }
            guard page.count == wanted else { break }
        }
        return messages
    }

    /// How many messages to read next: none once the bytes an answer holds are reached,
    /// else no more than the bytes left can hold, judged by those read so far.
    private func pageSize(holding messages: [Message], besides held: Int, limit: Int) -> Int {
        let left = limit - messages.count
        let bytes = held + Self.bytes(of: messages)
        guard left > 0, bytes < maximumBytes else { return 0 }
        guard !messages.isEmpty else { return max(1, min(Self.firstPage, left)) }
        let average = max(1, Self.bytes(of: messages) / messages.count)
        return max(1, min(Self.page, left, (maximumBytes - bytes) / average + 1))
    }

    static func bytes(of messages: [Message]) -> Int {
        messages.reduce(0) { $0 + $1.data.readableBytes }
    }

    /// The messages' frames within ``maximumBytes`` (at least one): the oldest kept
    /// when reading forward, the newest when reading backwards.
    private func fit(_ messages: [Message], keepingNewest: Bool) -> [ByteBuffer] {
        var frames: [ByteBuffer] = []
        var bytes = 0
        for message in keepingNewest ? messages.reversed() : messages {
            var frame = ByteBuffer()
            ChatV1.writeMessage(message, into: &frame)
            guard frames.isEmpty || bytes + frame.readableBytes <= maximumBytes else { break }
            bytes += frame.readableBytes
            frames.append(frame)
        }
        return keepingNewest ? frames.reversed() : frames
    }
}
