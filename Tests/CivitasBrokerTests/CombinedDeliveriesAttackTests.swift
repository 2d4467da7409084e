import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation
import Testing

/// The attacker of docs/threat_model.md: a partner that keeps every delivery it received on a
/// dataset, knows the quasi-identifiers of a target's records, and combines deliveries by
/// difference, intersection, or by following a pseudonym. It learns who is who from the
/// fixture's public `ref` column (`r<person>-<visit>`), which stands in for the background
/// knowledge a real attacker would bring.
@Suite("Attacks by a partner that combines everything it received")
struct CombinedDeliveriesAttackTests {
    static let quasiIdentifiers = ["age", "zip"]

    /// The person a released record belongs to, read from its public ref.
    static func person(ofRef ref: String) -> String {
        String(ref.dropFirst().prefix { $0 != "-" })
    }

    /// The fewest distinct persons behind any class (equal quasi-identifier labels) of `table`,
    /// or nil when the table holds no record.
    static func smallestClass(_ table: CSVTable) throws -> Int? {
        let qi = try quasiIdentifiers.map { try table.index(of: $0) }
        let ref = try table.index(of: "ref")
        var persons: [[String]: Set<String>] = [:]
        for row in table.rows { persons[qi.map { row[$0] }, default: []].insert(person(ofRef: row[ref])) }
        return persons.values.map(\.count).min()
    }

    /// Rows of `a` left after removing, one for one, the rows of `b` equal on `columns`.
    static func difference(_ a: CSVTable, _ b: CSVTable, on columns: [String]) throws -> CSVTable {
        let ia = try columns.map { try a.index(of: $0) }, ib = try columns.map { try b.index(of: $0) }
        var remaining: [[String]: Int] = [:]
        for row in b.rows { remaining[ib.map { row[$0] }, default: 0] += 1 }
        var result = CSVTable(columns: a.columns, rows: [])
        for row in a.rows {
            let key = ia.map { row[$0] }
            if let left = remaining[key], left > 0 { remaining[key] = left - 1 } else { result.rows.append(row) }
        }
        return result
    }

    /// Rows of `a` that also appear in `b`, equal on `columns`.
    static func intersection(_ a: CSVTable, _ b: CSVTable, on columns: [String]) throws -> CSVTable {
        let ia = try columns.map { try a.index(of: $0) }, ib = try columns.map { try b.index(of: $0) }
        let keys = Set(b.rows.map { row in ib.map { row[$0] } })
        return CSVTable(columns: a.columns, rows: a.rows.filter { row in keys.contains(ia.map { row[$0] }) })
    }

    /// Runs every combination the attacker tries on what the partner holds; returns what it
    /// achieved, worst first: the fewest persons a class of any combination narrows to.
    static func attack(_ holdings: [CSVTable], k: Int) throws -> [String] {
        var findings: [String] = []
        let stable = ["age", "zip", "diagnosis", "visits", "ref"]
        for (i, a) in holdings.enumerated() {
            if let smallest = try smallestClass(a), smallest < k { findings.append("delivery \(i) has a class of \(smallest) persons") }
            for (j, b) in holdings.enumerated() where i != j {
                if let smallest = try smallestClass(try difference(a, b, on: stable)), smallest < k {
                    findings.append("delivery \(i) minus delivery \(j) leaves a class of \(smallest) persons")
                }
                if let smallest = try smallestClass(try intersection(a, b, on: stable)), smallest < k {
                    findings.append("delivery \(i) and delivery \(j) share a class of \(smallest) persons")
                }
            }
        }
        // Following a pseudonym: one person's pseudonym in two deliveries joins their records.
        var seen: [String: Int] = [:]
        for (i, table) in holdings.enumerated() {
            let column = try table.index(of: "person")
            for pseudonym in Set(table.rows.map { $0[column] }) {
                if let earlier = seen[pseudonym] { findings.append("pseudonym \(pseudonym.prefix(8))… appears in deliveries \(earlier) and \(i)") }
                seen[pseudonym] = i
            }
        }
        // Within one delivery: the pseudonyms present in every class of a target's records.
        for (i, table) in holdings.enumerated() {
            let qi = try quasiIdentifiers.map { try table.index(of: $0) }
            let pseudonym = try table.index(of: "person"), ref = try table.index(of: "ref")
            var classesOf: [String: Set<[String]>] = [:]
            var personsOf: [String: Set<String>] = [:]
            for row in table.rows {
                classesOf[row[pseudonym], default: []].insert(qi.map { row[$0] })
                personsOf[row[pseudonym], default: []].insert(person(ofRef: row[ref]))
            }
            for (target, classes) in classesOf where classes.count > 1 {
                let candidates = classesOf.filter { $0.value == classes }.keys.flatMap { personsOf[$0] ?? [] }
                if Set(candidates).count < k { findings.append("delivery \(i): pseudonym \(target.prefix(8))… narrows to \(Set(candidates).count) persons across \(classes.count) classes") }
            }
        }
        return findings
    }

    /// Fails, naming what the attacker achieved, unless every attack came back empty-handed.
    static func expectNobodySingledOut(_ holdings: [CSVTable], k: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let findings = try attack(holdings, k: k)
        #expect(findings.isEmpty, "\(findings.prefix(5))", sourceLocation: sourceLocation)
    }

    /// `people` persons from `first`, one visit each, in 8 quasi-identifier classes.
    static func visits(people: Range<Int>, visit: Int = 0, classOf: (Int) -> Int = { $0 % 8 }) -> CSVTable {
        CSVTable(columns: ["person", "ref", "age", "zip", "diagnosis", "visits", "notes"], rows: people.map { i in
            let c = classOf(i)
            return [BrokerFixture.person(i), "r\(i)-\(visit)", String(20 + c * 7), "1910\(c)", ["flu", "asthma", "diabetes", "covid"][(i + visit) % 4],
                    String(i % 12), "note"]
        })
    }

    func release(_ fixture: BrokerFixture, _ id: String) throws -> CSVTable {
        let result = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        return try fixture.open(result.delivery, as: fixture.partnerAKeys)
    }

    @Test("A person with five records never forms a class of five on their own")
    func oneSubjectClass() throws {
        let fixture = try BrokerFixture()
        var table = Self.visits(people: 0..<40)
        for visit in 0..<5 {
            table.rows.append([BrokerFixture.person(100), "r100-\(visit)", "77", "19109", ["flu", "asthma", "covid", "flu", "flu"][visit], "1", "note"])
        }
        try fixture.publish(table)
        try fixture.consent(Array(0..<40) + [100], granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 5), partner: fixture.partnerAKeys)
        let result = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        let released = try fixture.open(result.delivery, as: fixture.partnerAKeys)
        try Self.expectNobodySingledOut([released], k: 5)
        #expect(result.outcome?.kAchieved ?? 0 >= 5)
        #expect(result.outcome?.report?.subjectColumn == "person")
        // The positive control: counted in records, as a record-level checker does, the lone person's class passes.
        let records = try AnonymityRequirements(k: 5)
        let recordLevel = try OptimalSearch().anonymize(table, quasiIdentifiers: [
            QuasiIdentifier(column: "age", hierarchy: .intervals(widths: [10, 20, 40])), QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [1, 1, 1])),
        ], requirements: records, keepColumns: ["ref", "person"])
        #expect(try !Self.attack([recordLevel.table], k: 5).isEmpty)
    }

    @Test("The difference and the intersection of two releases isolate nobody")
    func twoReleases() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(Self.visits(people: 0..<40))
        try fixture.consent(Array(0..<60), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 5), partner: fixture.partnerAKeys)
        let first = try release(fixture, id)
        // Two new people in each of five classes.
        try fixture.publish(Self.visits(people: 40..<50, classOf: { $0 % 5 }))
        var holdings = [first]
        do { holdings.append(try release(fixture, id)) } catch let error as BrokerError where error.code == .kUnreachable {}
        try Self.expectNobodySingledOut(holdings, k: 5)
        #expect(holdings.count == 2)
    }

    @Test("A release, a later window and a later release cannot be subtracted from one another")
    func releaseThenWindow() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(Self.visits(people: 0..<40))
        try fixture.consent(Array(0..<80), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 5,
                                                  extra: ["feed": ["window_records": 20, "window_seconds": 3600]]), partner: fixture.partnerAKeys)
        var holdings = [try release(fixture, id)]
        _ = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        try fixture.publish(Self.visits(people: 40..<80))
        for window in try fixture.broker.closeDueWindows(now: fixture.now) {
            holdings.append(try fixture.open(window.delivery, as: fixture.partnerAKeys))
        }
        #expect(holdings.count == 2)
        do { holdings.append(try release(fixture, id)) } catch let error as BrokerError where error.code == .nothingToRelease {}
        try Self.expectNobodySingledOut(holdings, k: 5)
        // No record reaches the partner twice.
        let refs = try holdings.flatMap { table in let ref = try table.index(of: "ref"); return table.rows.map { $0[ref] } }
        #expect(Set(refs).count == refs.count)
    }

    @Test("A pseudonym cannot be followed from one delivery to the next, nor across classes within one")
    func followingPseudonyms() throws {
        let fixture = try BrokerFixture()
        // Person 0 has a second visit in another class: their pseudonym would link both classes.
        var table = Self.visits(people: 0..<40)
        table.rows += Self.visits(people: 0..<1, visit: 1, classOf: { _ in 3 }).rows
        try fixture.publish(table)
        try fixture.consent(Array(0..<40), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 5), partner: fixture.partnerAKeys)
        let first = try release(fixture, id)
        try fixture.publish(Self.visits(people: 0..<40, visit: 2))
        let second = try release(fixture, id)
        try Self.expectNobodySingledOut([first, second], k: 5)
    }

    @Test("Longitudinal pseudonyms are refused with quasi-identifiers, and do link deliveries without them")
    func longitudinalLinkage() throws {
        let fixture = try BrokerFixture()
        let refused = try #require(throws: BrokerError.self) {
            try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 5,
                                             extra: ["treatment": ["k": 5, "linkage": "longitudinal"]]), partner: fixture.partnerAKeys)
        }
        #expect(refused.message.contains("quasi-identifiers"))
        try fixture.publish(Self.visits(people: 0..<10))
        try fixture.consent(Array(0..<10), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-2", partner: fixture.partnerAKeys, k: 1, fields: ["person", "diagnosis"],
                                                  extra: ["treatment": ["k": 1, "linkage": "longitudinal"]]), partner: fixture.partnerAKeys)
        let first = try release(fixture, id)
        try fixture.publish(Self.visits(people: 0..<10, visit: 1))
        let second = try release(fixture, id)
        #expect(Set(first.rows.map { $0[0] }) == Set(second.rows.map { $0[0] }))
    }

    @Test("A group holding one person neither appears nor vanishes with their consent")
    func groupPresence() throws {
        let fixture = try BrokerFixture()
        var table = Self.visits(people: 0..<40)
        table.rows.append([BrokerFixture.person(100), "r100-0", "77", "19109", "flu", "1", "note"])
        try fixture.publish(table)
        try fixture.consent(Array(0..<40) + [100], granted: true)
        let keys = (0...9).map { "1910\($0)" }
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 5, budget: 2, extra: [
            "aggregates": ["group_by": ["zip"], "group_keys": ["zip": .array(keys.map(JSONValue.string))], "max_epsilon_per_query": 0.4],
        ]), partner: fixture.partnerAKeys)
        func groups() throws -> [String] {
            let result = try fixture.broker.aggregate(agreement: id, request: AggregateRequest(
                purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: ["zip"], epsilonMicro: 100_000), by: fixture.partnerA, now: fixture.now)
            return try fixture.open(result.delivery, as: fixture.partnerAKeys).rows.map { $0[0] }
        }
        let present = try groups()
        try fixture.consent([100], granted: false)
        let absent = try groups()
        #expect(present == keys)
        #expect(absent == keys)
        // Grouping by a column without declared keys is refused when offered.
        let undeclared = try #require(throws: BrokerError.self) {
            try fixture.agree(fixture.policy(id: "ag-2", partner: fixture.partnerAKeys, k: 5, extra: [
                "aggregates": ["group_by": ["zip"], "max_epsilon_per_query": 0.4],
            ]), partner: fixture.partnerAKeys)
        }
        #expect(undeclared.message.contains("group_keys"))
    }

    @Test("The auditor replays the rules: a batch delivered twice and group keys taken from the data are named")
    func auditorReplay() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(Self.visits(people: 0..<40))
        try fixture.consent(Array(0..<40), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 5, budget: 2), partner: fixture.partnerAKeys)
        _ = try release(fixture, id)
        _ = try fixture.broker.aggregate(agreement: id, request: AggregateRequest(
            purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: ["zip"], epsilonMicro: 100_000), by: fixture.partnerA, now: fixture.now)
        let auditor = Auditor(broker: fixture.brokerKeys.publicKeys)
        let honest = auditor.audit(MemorySource(try fixture.export()))
        #expect(honest.passed, "\(honest.findings)")
        // Entries a misbehaving broker could write: batch 1 again, and keys found in the data.
        let envelope = try EnvelopeSealer(issuer: fixture.brokerKeys, recipient: fixture.partnerAKeys.publicKeys).seal([1, 2, 3])
        let summary = try EnvelopeVerifier.verify(MemorySource(envelope), issuer: fixture.brokerKeys.publicKeys)
        let agreement = try #require(try fixture.store.agreement(id))
        for (delivery, transforms) in [("rel-again", ["kind": "release", "batches": "1"]),
                                       ("agg-data", ["kind": "aggregate", "group_by": ["zip"], "group_keys": ["zip": "data"]])] as [(String, [String: JSONValue])] {
            let members = LogEvents.releaseDelivered(release: delivery, agreement: id, dataset: BrokerFixture.dataset, partner: agreement.partner,
                                                     purpose: BrokerFixture.purpose, policySHA256: agreement.policySHA256, envelope: summary,
                                                     recordsReleased: 0, recordsSuppressed: 0, kAchieved: 0, epsilonMicro: 0, transforms: transforms)
            // Written straight through the store's transaction, as a broker that ignored its own rules could.
            try fixture.store.transaction { transaction in
                let index = try transaction.appendLog(time: fixture.now, type: .releaseDelivered, members: members)
                try transaction.insertDelivery(Delivery(id: delivery, agreement: id, partner: agreement.partner, kind: .release, feed: nil,
                                                        feedSequence: nil, logIndex: index, records: 0, envelope: envelope, created: fixture.now))
            }
        }
        let report = auditor.audit(MemorySource(try fixture.export()))
        #expect(report.findings.map(\.code) == [.deliveredTwice, .undeclaredGroupKeys], "\(report.findings)")
        #expect(report.findings.first?.message.contains("batch 1") == true)
    }
}
