import Foundation

/// A moment in UTC to the whole second: the one form of time the broker reasons with. Read from
/// and written as RFC 3339 in the log's form (`2026-11-26T12:00:00Z`) here and nowhere else;
/// compared as numbers, never as text.
public struct UTCTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let secondsSince1970: Int64

    public init(secondsSince1970: Int64) {
        self.secondsSince1970 = secondsSince1970
    }

    /// The second `date` falls in.
    public init(_ date: Date) {
        secondsSince1970 = Int64(date.timeIntervalSince1970.rounded(.down))
    }

    /// The time of `2026-11-26T12:00:00Z` (exactly that form: UTC, whole seconds, a real calendar
    /// date and time of day), or nil.
    public init?(rfc3339 text: String) {
        let b = Array(text.utf8)
        guard b.count == 20, b[4] == 45, b[7] == 45, b[10] == 84, b[13] == 58, b[16] == 58, b[19] == 90,
              [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].allSatisfy({ (48...57).contains(b[$0]) }) else { return nil }
        func number(_ range: Range<Int>) -> Int64 { range.reduce(0) { $0 * 10 + Int64(b[$1] - 48) } }
        let year = number(0..<4), month = number(5..<7), day = number(8..<10)
        let hour = number(11..<13), minute = number(14..<16), second = number(17..<19)
        guard (1...12).contains(month), day >= 1, day <= CivilDate.daysIn(month: Int(month), year: Int(year)),
              hour < 24, minute < 60, second < 60 else { return nil }
        secondsSince1970 = Int64(CivilDate.days(year: Int(year), month: Int(month), day: Int(day))) * 86_400 + hour * 3600 + minute * 60 + second
    }

    /// `2026-11-26T12:00:00Z`.
    public var rfc3339: String {
        let days = secondsSince1970 >= 0 ? secondsSince1970 / 86_400 : (secondsSince1970 - 86_399) / 86_400
        let rest = secondsSince1970 - days * 86_400
        let (year, month, day) = CivilDate.fromDays(Int(days))
        func pad<N: BinaryInteger>(_ n: N, _ width: Int) -> String {
            let text = String(n)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(rest / 3600, 2)):\(pad(rest % 3600 / 60, 2)):\(pad(rest % 60, 2))Z"
    }

    public var description: String { rfc3339 }

    public var date: Date { Date(timeIntervalSince1970: TimeInterval(secondsSince1970)) }

    /// The current time, to the second.
    public static var now: UTCTime { UTCTime(Date()) }

    public func adding(seconds: Int64) -> UTCTime { UTCTime(secondsSince1970: secondsSince1970 + seconds) }

    /// Seconds from `earlier` to this time (negative when `earlier` is later).
    public func seconds(since earlier: UTCTime) -> Int64 { secondsSince1970 - earlier.secondsSince1970 }

    public static func < (lhs: UTCTime, rhs: UTCTime) -> Bool { lhs.secondsSince1970 < rhs.secondsSince1970 }
}

extension UTCTime: ExpressibleByStringLiteral {
    /// A time written in the source (`"2026-11-26T12:00:00Z"`); a literal that is not one is a
    /// programming error and stops the program.
    public init(stringLiteral text: String) {
        guard let time = UTCTime(rfc3339: text) else { preconditionFailure("not an RFC 3339 UTC time: \(text)") }
        self = time
    }
}
