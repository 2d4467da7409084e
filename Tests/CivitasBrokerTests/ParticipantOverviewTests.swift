import CivitasBroker
import CivitasCrypto
import Testing

@Suite("What a participant's pages show")
struct ParticipantOverviewTests {
    @Test("An agency sees its datasets with consent counts; a partner only its own agreements and their deliveries; the log pages filter")
    func overview() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 20))
        try fixture.consent(Array(0..<12), granted: true)
        try fixture.consent(Array(0..<3), granted: false)
        let mine = try fixture.agree(fixture.policy(id: "ag-a", partner: fixture.partnerAKeys), partner: fixture.partnerAKeys)
        _ = try fixture.agree(fixture.policy(id: "ag-b", partner: fixture.partnerBKeys), partner: fixture.partnerBKeys)
        let release = try fixture.broker.release(agreement: mine, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)

        let agency = try fixture.broker.overview(for: fixture.clinic, deliveries: 20)
        let dataset = try #require(agency.datasets.first)
        #expect(dataset.dataset == BrokerFixture.dataset && dataset.batches == 1 && dataset.records == 40)
        #expect(dataset.consent.first { $0.purpose == BrokerFixture.purpose }.map { [$0.granted, $0.withdrawn] } == [9, 3])
        #expect(Set(agency.agreements.map(\.agreement.id)) == ["ag-a", "ag-b"])

        let partner = try fixture.broker.overview(for: fixture.partnerA, deliveries: 20)
        #expect(partner.datasets.isEmpty && partner.agreements.map(\.agreement.id) == ["ag-a"])
        let delivery = try #require(partner.agreements.first?.deliveries.first)
        #expect(delivery.delivery.id == release.delivery.id && delivery.delivery.records == release.delivery.records)
        #expect(delivery.recordsWithoutConsent == 22)  // 11 of 20 people never consented or withdrew, two visits each

        let releases = try fixture.broker.logPage(from: 0, count: 1000, type: "release.delivered", agreement: nil, dataset: nil)
        #expect(releases.entries.map { $0.entry.string("release") } == [release.delivery.id])
        let other = try fixture.broker.logPage(from: 0, count: 1000, type: nil, agreement: "ag-b", dataset: nil)
        #expect(!other.entries.isEmpty && other.entries.allSatisfy { $0.entry.string("agreement") == "ag-b" })
        // Refusals of the partner's requests are counted by reason; another partner's refusal under it is not.
        #expect(partner.agreements.first?.refusals.isEmpty == true)
        #expect(throws: BrokerError.self) {
            try fixture.broker.release(agreement: mine, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        }
        #expect(throws: BrokerError.self) {
            try fixture.broker.release(agreement: mine, purpose: "another-purpose", by: fixture.partnerA, now: fixture.now)
        }
        #expect(throws: BrokerError.self) {
            try fixture.broker.release(agreement: mine, purpose: BrokerFixture.purpose, by: fixture.partnerB, now: fixture.now)
        }
        let refused = try #require(try fixture.broker.overview(for: fixture.partnerA, deliveries: 20).agreements.first).refusals
        #expect(refused.map(\.code) == ["nothing_to_release", "purpose_not_allowed"] && refused.allSatisfy { $0.count == 1 })

        // The default page is the last one.
        let last = try fixture.broker.logPage(from: nil, count: 2, type: nil, agreement: nil, dataset: nil)
        #expect(last.end == last.size && last.start == last.size - 2)
    }
}
