import Testing
@testable import CivitasStore

@Suite("Records stored as their differences")
struct RecordDifferencesTests {
    @Test("Records decode to exactly their bytes, alike ones in a fraction of their size; what does not fit is refused")
    func roundTrips() throws {
        var generator = SystemRandomNumberGenerator()
        var encoded = 0
        for trial in 0..<2_000 {
            let length = Int.random(in: 0...700, using: &generator)
            let base = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var record = base
            // Between none and all of the bytes changed, in runs.
            let changes = trial % 10 == 0 ? length : Int.random(in: 0...max(0, length / 8), using: &generator)
            for _ in 0..<changes where length > 0 {
                let at = Int.random(in: 0..<length, using: &generator)
                record[at] = UInt8.random(in: 0...255, using: &generator)
            }
            guard let differences = RecordDifferences.encode(record, from: base) else {
                #expect(changes > length / 8 || length < 8, "alike records of \(length) bytes were not encoded")
                continue
            }
            encoded += 1
            #expect(differences.count < max(record.count, 1))
            #expect(RecordDifferences.decode(differences, onto: base) == record)
            if differences != [] {
                // Control: onto another base, the same differences give other bytes.
                let other = base.map { $0 ^ 0x5A }
                #expect(RecordDifferences.decode(differences, onto: other) != record)
            }
        }
        #expect(encoded > 1_500)

        let record = Array(#"{"pii_principal_id":"7591aa","record_id":"cr-0123456789ab","state":"active"}"#.utf8)
        let base = Array(#"{"pii_principal_id":"03c2fe","record_id":"cr-ba9876543210","state":"active"}"#.utf8)
        let differences = try #require(RecordDifferences.encode(record, from: base))
        #expect(differences.count < record.count / 2)
        #expect(RecordDifferences.encode(record, from: base + [0]) == nil)
        // Differences that run past the base, or are cut short, do not fit.
        #expect(RecordDifferences.decode(differences, onto: Array(base.prefix(20))) == nil)
        #expect(RecordDifferences.decode(Array(differences.dropLast()), onto: base) == nil)
        #expect(RecordDifferences.decode([0x80, 0x80, 0x80, 0x80, 0x01], onto: base) == nil)
    }
}
