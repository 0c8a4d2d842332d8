// Imports nothing: scripts/fuzz.sh compiles this file into a libFuzzer target.

/// The `--since` of `chatroom export`.
///
/// Read strictly, by hand: Foundation's date reader on Linux rolls a `25:00`, a `10:61`
/// or a `02-30` over into some other time without a word, and an export would then
/// quietly begin somewhere the operator did not ask for.
enum TranscriptSince {
    /// `--since`: a date (`2026-12-01`, midnight UTC) or a time as RFC 3339 has it
    /// (`2026-12-01T10:00:00Z`, optionally with a fraction of a second, with `Z` or an
    /// offset such as `+01:00`), as ms since 1970. `nil` for anything else, including a
    /// month, day, hour, minute, second or offset out of its range.
    static func parse(_ text: String) -> Int64? {
        var reader = Reader(Array(text.utf8))
        guard let year = reader.digits(4), reader.take("-"), let month = reader.digits(2), reader.take("-"), let day = reader.digits(2),
            (1...12).contains(month), (1...daysIn(month: month, of: year)).contains(day)
        else { return nil }
        let midnight = Int64(daysSince1970(year: year, month: month, day: day)) * 86_400_000
        if reader.isAtEnd { return midnight }
        guard reader.take("T") || reader.take("t"), let hour = reader.digits(2), reader.take(":"), let minute = reader.digits(2), reader.take(":"),
            let second = reader.digits(2), hour <= 23, minute <= 59, second <= 59
        else { return nil }
        var milliseconds = Int64(((hour * 60) + minute) * 60 + second) * 1000
        if reader.take(".") {
            // At least one digit; the first three count, more are allowed and dropped.
            guard let first = reader.digit() else { return nil }
            var fraction = first * 100
            if let digit = reader.digit() { fraction += digit * 10 }
            if let digit = reader.digit() { fraction += digit }
            while reader.digit() != nil {}
            milliseconds += Int64(fraction)
        }
        var offset = 0
        if reader.take("Z") || reader.take("z") {
            offset = 0
        } else {
            let sign: Int
            if reader.take("+") {
                sign = 1
            } else if reader.take("-") {
                sign = -1
            } else {
                return nil
            }
            guard let hours = reader.digits(2), reader.take(":"), let minutes = reader.digits(2), hours <= 23, minutes <= 59 else { return nil }
            offset = sign * (hours * 60 + minutes) * 60_000
        }
        guard reader.isAtEnd else { return nil }
        return midnight + milliseconds - Int64(offset)
    }

    /// Days in `month` (1–12) of `year`, by the Gregorian calendar.
    static func daysIn(month: Int, of year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard
    /// Hinnant's `days_from_civil`).
    static func daysSince1970(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// Reads ASCII from the front of the text.
    private struct Reader {
        let bytes: [UInt8]
        var place = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var isAtEnd: Bool { place == bytes.count }

        mutating func take(_ character: Unicode.Scalar) -> Bool {
            guard place < bytes.count, bytes[place] == UInt8(ascii: character) else { return false }
            place += 1
            return true
        }

        mutating func digit() -> Int? {
            guard place < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[place]) else { return nil }
            defer { place += 1 }
            return Int(bytes[place] - UInt8(ascii: "0"))
        }

        /// Exactly `count` digits.
        mutating func digits(_ count: Int) -> Int? {
            var value = 0
            for _ in 0..<count {
                guard let digit = digit() else { return nil }
                value = value * 10 + digit
            }
            return value
        }
    }
}
