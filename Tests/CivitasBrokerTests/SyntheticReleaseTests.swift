import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation
import Testing

@Suite("Synthetic releases")
struct SyntheticReleaseTests {
    /// Synthetic terms over age (bins), zip and diagnosis (declared), with a ρ budget; no ε budget.
    func syntheticPolicy(_ fixture: BrokerFixture, id: String = "ag-syn", rhoBudget: Double = 1, maxRho: Double = 0.5) -> JSONValue {
        guard case .object(var object) = fixture.policy(id: id, partner: fixture.partnerAKeys) else { return .null }
        object["epsilon_budget"] = nil
        object["rho_budget"] = .number(rhoBudget)
        object["synthetic"] = [
            "fields": ["age", "zip", "diagnosis"],
            "bins": ["age": [0, 30, 50, 80, 121]],
            "domains": ["zip": .array((0..<10).map { .string("1910\($0)") }), "diagnosis": ["flu", "asthma", "diabetes", "covid"]],
            "tree": [["zip", "age"], ["age", "diagnosis"]],
            "max_rho_per_release": .number(maxRho),
        ]
        return .object(object)
    }

    @Test("A partner receives sealed synthetic rows of the declared fields, as many as the logged noisy total, charged ρ; the auditor replays ρ")
    func syntheticRelease() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 300))
        try fixture.consent(Array(0..<300), granted: true)
        let id = try fixture.agree(syntheticPolicy(fixture), partner: fixture.partnerAKeys)
        let result = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 400_000, by: fixture.partnerA, now: fixture.now)
        #expect(result.delivery.kind == .synthetic)
        #expect(result.rhoMicro == 400_000)
        #expect(result.figures["rho_charged"] == "0.4")
        let table = try fixture.open(result.delivery, as: fixture.partnerAKeys)
        #expect(table.columns == ["age", "zip", "diagnosis"])
        #expect(table.rows.count == result.delivery.records)
        let zips = Set((0..<10).map { "1910\($0)" }), ages = Set(["[0,30)", "[30,50)", "[50,80)", "[80,121)"])
        for row in table.rows {
            #expect(ages.contains(row[0]) && zips.contains(row[1]) && ["flu", "asthma", "diabetes", "covid"].contains(row[2]))
        }
        #expect(try fixture.store.agreement(id)?.spentMicro == 400_000)
        let export = try fixture.export()
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(export))
        #expect(report.passed, "\(report.findings)")
        #expect(report.agreements[id]?.countsRho == true)
        #expect(report.agreements[id]?.spentMicro == 400_000)
        #expect(report.agreements[id]?.budgetMicro == 1_000_000)
        // The log entry names the marginals and the noise, and the rows delivered: never the true count.
        let entry = try LogEntry.parse(try fixture.store.logEntry(at: result.delivery.logIndex), position: result.delivery.logIndex)
        #expect(entry.count("rho_micro") == 400_000)
        #expect(entry.count("records_released") == UInt64(table.rows.count))
        let transforms = try #require(entry.members["transforms"]?.objectValue)
        #expect(transforms["kind"] == "synthetic")
        #expect(transforms["mechanism"] == "discrete-gaussian")
        // Five marginals (three one-way, two pairs), each given ρ/5: σ² = 1² · 5 / (2 · 0.4) = 25/4.
        #expect(transforms["sigma_squared"] == "25/4")
    }

    @Test("The number of rows follows the noisy total, not the true count of consented people")
    func rowCountIsNoisy() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 100, visitsEach: 1))
        try fixture.consent(Array(0..<100), granted: true)
        let id = try fixture.agree(syntheticPolicy(fixture, rhoBudget: 10, maxRho: 0.01), partner: fixture.partnerAKeys)
        var counts = Set<Int>()
        for _ in 0..<8 {
            let result = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 10_000, by: fixture.partnerA, now: fixture.now)
            counts.insert(try fixture.open(result.delivery, as: fixture.partnerAKeys).rows.count)
        }
        // At ρ = 0.01, σ ≈ 16 per count: eight releases do not all land on the true 100.
        #expect(counts.count > 1)
    }

    @Test("A request beyond the remaining ρ, or beyond the per-release cap, is refused and charges nothing")
    func budgetRefusal() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 50))
        try fixture.consent(Array(0..<50), granted: true)
        let id = try fixture.agree(syntheticPolicy(fixture), partner: fixture.partnerAKeys)
        _ = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 500_000, by: fixture.partnerA, now: fixture.now)
        _ = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 400_000, by: fixture.partnerA, now: fixture.now)
        let over = try #require(throws: BrokerError.self) {
            _ = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 200_000, by: fixture.partnerA, now: fixture.now)
        }
        #expect(over.code == .budgetExhausted)
        let capped = try #require(throws: BrokerError.self) {
            _ = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 600_000, by: fixture.partnerA, now: fixture.now)
        }
        #expect(capped.code == .invalid)
        // Refusals are counted per agreement, but nothing is charged, logged as a delivery or delivered.
        #expect(try fixture.store.agreement(id)?.spentMicro == 900_000)
        #expect(try fixture.store.deliveryCounts().values.reduce(0, +) == 2)
        // Positive control: what is left can still be spent.
        _ = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 100_000, by: fixture.partnerA, now: fixture.now)
        #expect(try fixture.store.agreement(id)?.spentMicro == 1_000_000)
    }

    @Test("Under ρ accounting an aggregate's ε is charged as ε²/2, and the auditor sums ρ across aggregates and synthetic releases")
    func aggregatesUnderRho() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 60))
        try fixture.consent(Array(0..<60), granted: true)
        let id = try fixture.agree(syntheticPolicy(fixture), partner: fixture.partnerAKeys)
        let count = AggregateRequest(purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: ["zip"], epsilonMicro: 400_000)
        let aggregate = try fixture.broker.aggregate(agreement: id, request: count, by: fixture.partnerA, now: fixture.now)
        #expect(aggregate.rhoMicro == 80_000)  // 0.4² / 2
        _ = try fixture.broker.synthetic(agreement: id, purpose: BrokerFixture.purpose, rhoMicro: 500_000, by: fixture.partnerA, now: fixture.now)
        #expect(try fixture.store.agreement(id)?.spentMicro == 580_000)
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export()))
        #expect(report.passed, "\(report.findings)")
        #expect(report.agreements[id]?.spentMicro == 580_000)
        #expect(report.agreements[id]?.releases == 2)
    }

    @Test("A policy is refused when synthetic terms lack a ρ budget, name a field outside the agreement, the subject, or one without a domain")
    func policyChecks() throws {
        let fixture = try BrokerFixture()
        func refused(_ change: (inout [String: JSONValue]) -> Void) throws -> Bool {
            guard case .object(var object) = syntheticPolicy(fixture, id: "ag-\(UUID().uuidString.prefix(8).lowercased())") else { return false }
            change(&object)
            do {
                try fixture.agree(.object(object), partner: fixture.partnerAKeys)
                return false
            } catch is BrokerError {
                return true
            }
        }
        #expect(try refused { $0["rho_budget"] = nil })
        #expect(try refused { $0["epsilon_budget"] = 1 })  // both units at once
        #expect(try refused { $0["synthetic"] = ["fields": ["notes"], "domains": ["notes": ["x"]], "max_rho_per_release": 0.5] })
        #expect(try refused { $0["synthetic"] = ["fields": ["person"], "domains": ["person": ["x"]], "max_rho_per_release": 0.5] })
        #expect(try refused { $0["synthetic"] = ["fields": ["zip", "diagnosis"], "domains": ["zip": ["19100"]], "max_rho_per_release": 0.5] })
        #expect(try refused { $0["synthetic"] = ["fields": ["age"], "max_rho_per_release": 0.5, "typo": 1] })
        // Positive control: age has a declared domain in the schema (an integer from 0 to 120), so this policy is accepted.
        #expect(try !refused { $0["synthetic"] = ["fields": ["age"], "max_rho_per_release": 0.5] })
    }
}
