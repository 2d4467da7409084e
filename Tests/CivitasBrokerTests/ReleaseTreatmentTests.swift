import CivitasBroker
import CivitasCrypto
import CivitasPrivacy
import Foundation
import Testing

/// The release treatment takes records a batch at a time (as the store hands out segments) and
/// keeps them as codes; what leaves must not depend on how the records were cut.
@Suite("Release treatment, batch by batch")
struct ReleaseTreatmentTests {
    let master: PseudonymMasterKey
    let schema: DatasetSchema
    let records: CSVTable

    init() throws {
        master = try PseudonymMasterKey.generate()
        schema = try DatasetSchema.parse(try CanonicalJSON.encode(BrokerFixture.scenario.json["schema"] ?? .null))
        records = BrokerFixture.records(people: 120, visitsEach: 3)
    }

    func policy(_ treatment: JSONValue, basis: String = "consent") throws -> AgreementPolicy {
        try AgreementPolicy.parse([
            "agreement": "ag-1", "dataset": .string(BrokerFixture.dataset), "publisher": .string(String(repeating: "a", count: 32)),
            "partner": .string(String(repeating: "b", count: 32)), "purposes": [.string(BrokerFixture.purpose)], "legal_basis": .string(basis),
            "fields": ["person", "ref", "age", "zip", "diagnosis", "visits"], "treatment": treatment, "epsilon_budget": 10,
            "valid_from": "2026-11-01T00:00:00Z", "valid_until": "2026-12-31T23:59:59Z",
        ])
    }

    /// Subjects 0, 5, 10, … have no consent.
    static func mayRelease(_ subject: String) -> Bool { (Int(subject.dropFirst()) ?? 0) % 5 != 0 }

    func treat(_ treatment: ReleaseTreatment, batches: [Range<Int>], epoch: String = "2026") throws -> TreatedRecords {
        var input = treatment.input(mayRelease: Self.mayRelease)
        for batch in batches {
            try input.add(columns: records.columns, rows: Array(records.rows[batch]))
        }
        let pseudonymizer = try Pseudonymizer(master: master, domain: PseudonymDomain(agreement: "ag-1", partner: "b", purpose: "p", epoch: epoch))
        return try treatment.finish(input, pseudonymizer: pseudonymizer, randomness: AnyRandomWords(SeededRandomness(state: 11)))
    }

    @Test("Whole or in batches of any size, the payload and the figures are the same", arguments: [
        ["k": 3, "suppression_limit": 0.2] as JSONValue,
        ["k": 3, "suppression_limit": 0.2, "algorithm": "mondrian"],
        ["k": 3, "suppression_limit": 0.5, "max_records_per_subject": 2, "measure_noise": ["epsilon": 0.5]],
        ["k": 1],
    ])
    func batchInvariant(_ terms: JSONValue) throws {
        let treatment = ReleaseTreatment(schema: schema, policy: try policy(terms))
        let whole = try treat(treatment, batches: [0..<records.rows.count])
        #expect(whole.outcome.recordsReleased > 0)
        #expect(whole.outcome.recordsWithoutConsent == 72)  // 24 people × 3 records
        for cuts in [[0..<1, 1..<100, 100..<360], [0..<179, 179..<180, 180..<181, 181..<360], [0..<360, 360..<360]] {
            let cut = try treat(treatment, batches: cuts)
            #expect(cut.payload == whole.payload)
            #expect(cut.outcome.recordsSuppressed == whole.outcome.recordsSuppressed)
            #expect(cut.outcome.recordsOverCap == whole.outcome.recordsOverCap)
            #expect(cut.outcome.kAchieved == whole.outcome.kAchieved)
            #expect(cut.outcome.epsilonMicro == whole.outcome.epsilonMicro)
        }
        // Positive control: the comparison sees a change in any released byte (other pseudonyms).
        if treatment.policy.treatment.k >= 2 || whole.outcome.columns.contains("person") {
            #expect(try treat(treatment, batches: [0..<records.rows.count], epoch: "2027").payload != whole.payload)
        }
    }

    @Test("Many new subjects in one batch are judged on both cores, each record by its own subject's consent")
    func manyNewSubjectsJudgedTogether() throws {
        // Far more new subjects in one batch than are judged on one core.
        let many = BrokerFixture.records(people: 6_000, visitsEach: 2)
        let treatment = ReleaseTreatment(schema: schema, policy: try policy(["k": 1]))
        let pseudonymizer = try Pseudonymizer(master: master, domain: PseudonymDomain(agreement: "ag-1", partner: "b", purpose: "p", epoch: "2026"))
        // Subjects refused by a rule that differs between the halves of the batch, so that answers
        // given to the wrong half or in the wrong order show.
        let refused: @Sendable (String) -> Bool = { subject in
            let number = Int(subject.dropFirst()) ?? 0
            return number < 13_000 ? number % 7 == 0 : number % 3 != 0
        }
        var input = treatment.input(mayRelease: { !refused($0) })
        try input.add(columns: many.columns, rows: many.rows)
        let treated = try treatment.finish(input, pseudonymizer: pseudonymizer, randomness: AnyRandomWords(SeededRandomness(state: 11)))
        let expected = many.rows.filter { !refused($0[0]) }.map { [pseudonymizer.pseudonym($0[0])] + Array($0[1...5]) }
        let released = try CSVTable.parse(treated.payload, delimiter: 0x2C)
        #expect(treated.outcome.recordsWithoutConsent == many.rows.count - expected.count)
        #expect(released.rows == expected)
        #expect(expected.count > 1_000 && expected.count < many.rows.count - 1_000, "both answers must be common, or the test shows nothing")
    }

    @Test("The released rows are the records' rows: consent, cap, projection and pseudonyms, in dataset order")
    func projectedRows() throws {
        let treatment = ReleaseTreatment(schema: schema, policy: try policy(["k": 1, "max_records_per_subject": 2]))
        let treated = try treat(treatment, batches: [0..<100, 100..<360])
        let released = try CSVTable.parse(treated.payload, delimiter: 0x2C)
        let pseudonymizer = try Pseudonymizer(master: master, domain: PseudonymDomain(agreement: "ag-1", partner: "b", purpose: "p", epoch: "2026"))
        var perPerson: [String: Int] = [:]
        let expected: [[String]] = records.rows.compactMap { row in
            guard Self.mayRelease(row[0]) else { return nil }
            perPerson[row[0], default: 0] += 1
            guard (perPerson[row[0]] ?? 0) <= 2 else { return nil }
            return [pseudonymizer.pseudonym(row[0])] + Array(row[1...5])
        }
        #expect(released.columns == ["person", "ref", "age", "zip", "diagnosis", "visits"])
        #expect(released.rows == expected)
        #expect(treated.outcome.recordsOverCap == 96)
    }
}
