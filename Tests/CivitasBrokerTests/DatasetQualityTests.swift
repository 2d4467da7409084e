import CivitasBroker
import CivitasCrypto
import CivitasPrivacy
import CivitasStore
import Foundation
import Testing
@testable import CivitasBroker

@Suite("Dataset quality")
struct DatasetQualityTests {
    @Test("Counts come from validated batches: completeness per field, validity with refused batches, distinct subjects")
    func counts() throws {
        let fixture = try BrokerFixture()
        let dataset = try #require(try fixture.store.dataset(BrokerFixture.dataset))
        // 150 people with two records each; every third record has no notes.
        var table = BrokerFixture.records(people: 150)
        let notes = try table.index(of: "notes")
        table = CSVTable(columns: table.columns, rows: table.rows.enumerated().map { i, row in
            var row = row
            if i % 3 == 0 { row[notes] = "" }
            return row
        })
        _ = try fixture.broker.publishBatch(dataset: dataset.id, format: .csv, body: { MemorySource(table.csv()) }, idempotencyKey: nil,
                                            by: fixture.clinic, now: fixture.now)
        // A refused batch of 50 rows (one age is no number): counted as submitted, not accepted.
        var bad = BrokerFixture.records(people: 25, startingAt: 500)
        bad = CSVTable(columns: bad.columns, rows: bad.rows.enumerated().map { i, row in
            var row = row
            if i == 7 { row[2] = "old" }
            return row
        })
        #expect(throws: BrokerError.self) {
            _ = try fixture.broker.publishBatch(dataset: dataset.id, format: .csv, body: { MemorySource(bad.csv()) }, idempotencyKey: nil,
                                                by: fixture.clinic, now: fixture.now)
        }
        let figures = try #require(try fixture.broker.qualityFigures(of: dataset, now: fixture.now))
        let completeness = Dictionary(uniqueKeysWithValues: figures.completeness.map { ($0.field, $0.value) })
        #expect(completeness["notes"] == 0.67)   // 200 of 300
        #expect(completeness["person"] == 1)
        #expect(figures.validity == 0.86)        // 300 of 350
        #expect(figures.subjectUniqueness == 0.5) // 150 people, 300 records
        #expect(figures.batchesInLastPeriod == nil && figures.onSchedule == nil)  // no accrual periodicity declared
        #expect(figures.latestBatchAgeHours == 0)
    }

    @Test("Below 100 accepted records no ratio is published")
    func smallDatasets() throws {
        let fixture = try BrokerFixture()
        let dataset = try #require(try fixture.store.dataset(BrokerFixture.dataset))
        _ = try fixture.broker.publishBatch(dataset: dataset.id, format: .csv, body: { MemorySource(BrokerFixture.records(people: 49).csv()) },
                                            idempotencyKey: nil, by: fixture.clinic, now: fixture.now)
        #expect(try fixture.broker.qualityFigures(of: dataset, now: fixture.now) == nil)
        // Positive control: one more person (100 records) and the figures appear.
        _ = try fixture.broker.publishBatch(dataset: dataset.id, format: .csv, body: { MemorySource(BrokerFixture.records(people: 1, startingAt: 49).csv()) },
                                            idempotencyKey: nil, by: fixture.clinic, now: fixture.now)
        #expect(try fixture.broker.qualityFigures(of: dataset, now: fixture.now) != nil)
    }

    @Test("The subject sketch estimates distinct counts within a fraction of a per cent, and merges as a union")
    func sketch() {
        var all = SubjectSketch(), first = SubjectSketch(), second = SubjectSketch()
        for i in 0..<200_000 {
            let hash = SHA256Hasher.hash(Array("subject-\(i)".utf8))
            all.add(hash: hash)
            if i < 120_000 { first.add(hash: hash) }
            if i >= 80_000 { second.add(hash: hash) }
        }
        #expect(abs(all.estimate / 200_000 - 1) < 0.01)
        first.merge(second)
        #expect(first == all)
        var few = SubjectSketch()
        for i in 0..<1000 { few.add(hash: SHA256Hasher.hash(Array("p\(i % 700)".utf8))) }
        #expect(abs(few.estimate - 700) < 3)
    }

    @Test("Record times read as text that compares in time order; anything else is ignored")
    func recordTimes() {
        #expect(BatchQualityTally.recordTime("2019-07-31 05:13:54") == "2019-07-31T05:13:54")
        #expect(BatchQualityTally.recordTime("2019-07-31T05:13:54Z") == "2019-07-31T05:13:54")
        #expect(BatchQualityTally.recordTime("2019-07-31") == "2019-07-31T00:00:00")
        #expect(BatchQualityTally.recordTime("31/07/2019") == nil)
        #expect(BatchQualityTally.recordTime("2019-07-31 5:13") == nil)
    }
}

@Suite("SipHash-2-4")
struct SketchHashTests {
    @Test("The reference vectors: key 00…0f, messages 00, 00 01, … (Aumasson and Bernstein's vectors.h)")
    func vectors() {
        let hash = SketchHash(key: Array(0..<16))
        // Messages of bytes 0, 1, …, n-1 for n = 0, 7, 8, 15: as strings of those scalars (all ASCII).
        func message(_ n: Int) -> String { String(decoding: (0..<n).map { UInt8($0) }, as: UTF8.self) }
        #expect(hash.hash(message(0)) == 0x726fdb47dd0e0e31)
        #expect(hash.hash(message(7)) == 0xab0200f58b01d137)
        #expect(hash.hash(message(8)) == 0x93f5f5799a932462)
        #expect(hash.hash(message(15)) == 0xa129ca6149be45e5)
    }
}
