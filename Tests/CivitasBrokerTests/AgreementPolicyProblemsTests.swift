import CivitasBroker
import CivitasCrypto
import CivitasPrivacy
import Testing

/// A policy with several problems is refused with all of them at once, each naming its member;
/// the sound policy beside it passes.
@Suite("Every problem of a policy at once")
struct AgreementPolicyProblemsTests {
    @Test("Three broken members give three problems, each naming its member")
    func everyProblem() throws {
        let fixture = try BrokerFixture()
        let sound = fixture.policy(id: "ag-sound", partner: fixture.partnerAKeys)
        _ = try AgreementPolicy.parse(sound)
        let broken = fixture.policy(id: "ag-broken", partner: fixture.partnerAKeys,
                                    extra: ["legal_basis": "whim", "epsilon_budget": "lots", "valid_until": "2020-01-01T00:00:00Z"])
        do {
            _ = try AgreementPolicy.parse(broken)
            Issue.record("a broken policy parsed")
        } catch let error as BrokerError {
            #expect(error.details.count == 3, "\(error.details)")
            #expect(error.details.contains { $0.contains("legal_basis") })
            #expect(error.details.contains { $0.contains("epsilon_budget") })
            #expect(error.details.contains { $0.contains("valid_from") && $0.contains("valid_until") })
            #expect(error.message.contains("3 problems"))
        }
        // Against the schema: two unknown fields and a purpose not offered, all reported.
        let dataset = try #require(try fixture.store.dataset(BrokerFixture.dataset))
        let schema = try DatasetSchema.parse(dataset.schema)
        let policy = try AgreementPolicy.parse(fixture.policy(id: "ag-fields", partner: fixture.partnerAKeys,
                                                              fields: ["age", "shoe_size", "eye_colour"],
                                                              extra: ["purposes": ["marketing"]]))
        do {
            try policy.check(against: schema, offeredPurposes: [BrokerFixture.purpose])
            Issue.record("a policy with unknown fields passed")
        } catch let error as BrokerError {
            #expect(error.details.count == 3, "\(error.details)")
            #expect(error.details.contains { $0.contains("shoe_size") } && error.details.contains { $0.contains("eye_colour") })
            #expect(error.details.contains { $0.contains("marketing") })
        }
    }
}
