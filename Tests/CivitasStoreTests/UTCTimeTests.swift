import CivitasModel
import Foundation
import Testing

@Suite("UTC time")
struct UTCTimeTests {
    @Test("Formatting and reading agree with Foundation's ISO 8601 formatter, across centuries and leap days")
    func agreesWithFoundation() throws {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        var seconds: Int64 = 0
        for step in 0..<20_000 {
            seconds = (seconds &* 6364136223846793005 &+ 1442695040888963407) & 0x3_FFFF_FFFF  // up to 2^34 s: until about 2514
            let time = UTCTime(secondsSince1970: seconds % 253_402_300_800)  // before year 10,000
            let date = Date(timeIntervalSince1970: TimeInterval(time.secondsSince1970))
            #expect(time.rfc3339 == formatter.string(from: date), "step \(step)")
            #expect(UTCTime(rfc3339: time.rfc3339) == time)
        }
        for text in ["2024-02-29T23:59:59Z", "2000-02-29T00:00:00Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
            let date = try #require(formatter.date(from: text))
            #expect(UTCTime(rfc3339: text)?.secondsSince1970 == Int64(date.timeIntervalSince1970))
        }
    }

    @Test("Only real calendar times in the one form are read")
    func refusals() {
        for text in ["2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-01T24:00:00Z",
                     "2026-01-01T00:60:00Z", "2026-01-01T00:00:60Z", "2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00.5Z", "2026-01-01 00:00:00Z",
                     "2026-00-10T00:00:00Z", "2026-01-00T00:00:00Z", ""] {
            #expect(UTCTime(rfc3339: text) == nil, "\(text)")
        }
    }

    @Test("Times compare as instants")
    func ordering() {
        let earlier: UTCTime = "2026-11-27T09:59:59Z", later: UTCTime = "2026-11-27T10:00:00Z"
        #expect(earlier < later && later.seconds(since: earlier) == 1 && earlier.adding(seconds: 1) == later)
        #expect(UTCTime(Date(timeIntervalSince1970: 1.9)).secondsSince1970 == 1)
    }
}
