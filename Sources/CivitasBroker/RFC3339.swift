import CivitasLog
import Foundation

/// RFC 3339 UTC times with whole seconds (the log's form) to and from seconds since 1970.
public enum RFC3339 {
    /// Seconds since 1970 of `2026-11-26T12:00:00Z`, or nil if the text is not in that form.
    public static func seconds(_ text: String) -> Int64? {
        guard LogTime.isValid(text) else { return nil }
        let b = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int64 { range.reduce(0) { $0 * 10 + Int64(b[$1] - 48) } }
        let year = number(0..<4), month = number(5..<7), day = number(8..<10)
        // Days from civil (proleptic Gregorian), 1970-01-01 = 0.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return days * 86_400 + number(11..<13) * 3600 + number(14..<16) * 60 + number(17..<19)
    }

    /// The same time as a Date.
    public static func date(_ text: String) -> Date? { seconds(text).map { Date(timeIntervalSince1970: TimeInterval($0)) } }
}
