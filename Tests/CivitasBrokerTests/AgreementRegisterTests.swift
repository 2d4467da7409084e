import CivitasBroker
import CivitasCrypto
import Testing

@Suite("Public register of agreements")
struct AgreementRegisterTests {
    @Test("The register shows a public agreement's terms; of a confidential one only that it exists, its purposes and legal basis; offers not accepted are left out")
    func register() throws {
        let fixture = try BrokerFixture()
        let open = try fixture.agree(fixture.policy(id: "ag-open", partner: fixture.partnerAKeys), partner: fixture.partnerAKeys)
        let hidden = try fixture.agree(fixture.policy(id: "ag-hidden", partner: fixture.partnerBKeys, extra: ["register": "confidential"]),
                                       partner: fixture.partnerBKeys)
        let offer = fixture.policy(id: "ag-offered", partner: fixture.partnerAKeys)
        _ = try fixture.broker.offerAgreement(policy: offer, signature: fixture.clinicKeys.sign(AgreementPolicy.offerMessage(
            policySHA256: SHA256Hasher.hash(try CanonicalJSON.encode(offer)))), by: fixture.clinic, now: fixture.now)
        let register = try fixture.broker.publicRegister()
        #expect(Set(register.map(\.agreement)) == [open, hidden])
        let shown = try #require(register.first { $0.agreement == open })
        let terms = try #require(shown.terms)
        #expect(terms.partner == fixture.partnerAKeys.publicKeys.name && terms.dataset == BrokerFixture.dataset && !terms.fields.isEmpty)
        let confidential = try #require(register.first { $0.agreement == hidden })
        #expect(confidential.terms == nil && confidential.purposes == [BrokerFixture.purpose] && confidential.legalBasis == "consent")
        // A register value other than public or confidential is refused.
        #expect(throws: BrokerError.self) {
            try AgreementPolicy.parse(fixture.policy(id: "ag-bad", partner: fixture.partnerAKeys, extra: ["register": "secret"]))
        }
    }
}
