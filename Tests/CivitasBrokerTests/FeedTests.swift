import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation
import Testing

@Suite("Feeds")
struct FeedTests {
    func feedPolicy(_ fixture: BrokerFixture, belowK: String, records: Int = 20, seconds: Int = 600, partner: SecretKeys? = nil) -> JSONValue {
        fixture.policy(id: "ag-feed", partner: partner ?? fixture.partnerAKeys, k: 2, suppression: 0.5,
                       extra: ["feed": ["window_records": .number(Double(records)), "window_seconds": .number(Double(seconds)), "below_k": .string(belowK)]])
    }

    @Test("Windows close on size or on time, hold only new records, and are delivered in order")
    func windows() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 10))  // before the subscription: never in a window
        try fixture.consent(Array(0..<100), granted: true)
        let id = try fixture.agree(feedPolicy(fixture, belowK: "suppress"), partner: fixture.partnerAKeys)
        let feed = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        #expect(try fixture.broker.closeDueWindows(now: fixture.now).isEmpty)
        try fixture.publish(BrokerFixture.records(people: 5, startingAt: 10))   // 10 records: below the window size
        #expect(try fixture.broker.closeDueWindows(now: fixture.now).isEmpty)
        try fixture.publish(BrokerFixture.records(people: 5, startingAt: 15))   // 20 records: the window is full
        let first = try fixture.broker.closeDueWindows(now: fixture.now)
        #expect(first.count == 1)
        let window = try fixture.open(try #require(first.first).delivery, as: fixture.partnerAKeys)
        #expect(try ReleaseTests.people(in: window).isSubset(of: Set(10..<20)))
        #expect(first.first?.delivery.feedSequence == 1)
        // A small batch closes on time.
        try fixture.publish(BrokerFixture.records(people: 3, startingAt: 20))
        #expect(try fixture.broker.closeDueWindows(now: "2026-11-27T10:05:00Z").isEmpty)
        let timed = try fixture.broker.closeDueWindows(now: "2026-11-27T10:10:00Z")
        #expect(timed.count == 1 && timed.first?.delivery.feedSequence == 2)
        #expect(try fixture.store.feed(feed.id)?.delivered == 2)
    }

    @Test("Pulled windows come again until acknowledged; acknowledgement never moves back")
    func acknowledgement() throws {
        let fixture = try BrokerFixture()
        try fixture.consent(Array(0..<100), granted: true)
        let id = try fixture.agree(feedPolicy(fixture, belowK: "suppress", records: 10), partner: fixture.partnerAKeys)
        let feed = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        for start in [0, 5, 10] {
            try fixture.publish(BrokerFixture.records(people: 5, startingAt: start))
            _ = try fixture.broker.closeDueWindows(now: fixture.now)
        }
        #expect(try fixture.store.deliveries(feed: feed.id, after: 0, limit: 100).compactMap(\.feedSequence) == [1, 2, 3])
        _ = try fixture.broker.acknowledge(feed: feed.id, through: 2, by: fixture.partnerA)
        let acknowledged = try fixture.broker.feed(feed.id, for: fixture.partnerA).acknowledged
        #expect(acknowledged == 2)
        #expect(try fixture.store.deliveries(feed: feed.id, after: acknowledged, limit: 100).compactMap(\.feedSequence) == [3])
        _ = try fixture.broker.acknowledge(feed: feed.id, through: 1, by: fixture.partnerA)
        #expect(try fixture.broker.feed(feed.id, for: fixture.partnerA).acknowledged == 2)
        #expect(throws: BrokerError.self) { try fixture.broker.acknowledge(feed: feed.id, through: 9, by: fixture.partnerA) }
        #expect(throws: BrokerError.self) { try fixture.broker.acknowledge(feed: feed.id, through: 3, by: fixture.partnerB) }
    }

    @Test("A feed whose agreement is out of budget never stops the other feeds' windows")
    func oneFeedNeverStopsTheOthers() throws {
        let fixture = try BrokerFixture()
        try fixture.consent(Array(0..<100), granted: true)
        // Noise on a measure charges ε 0.5 × 2 records per person = 1 per window, above this budget of 0.5.
        let broke = try fixture.agree(fixture.policy(id: "ag-broke", partner: fixture.partnerAKeys, k: 2, suppression: 0.5, budget: 0.5, extra: [
            "treatment": ["k": 2, "suppression_limit": 0.5, "measure_noise": ["epsilon": 0.5]],
            "feed": ["window_records": 10, "window_seconds": 600, "below_k": "suppress"],
        ]), partner: fixture.partnerAKeys)
        let fine = try fixture.agree(feedPolicy(fixture, belowK: "suppress", records: 10, partner: fixture.partnerBKeys), partner: fixture.partnerBKeys)
        let failing = try fixture.broker.subscribe(agreement: broke, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        _ = try fixture.broker.subscribe(agreement: fine, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerB, now: fixture.now)
        try fixture.publish(BrokerFixture.records(people: 20))
        var failures: [(String, String)] = []
        let delivered = try fixture.broker.closeDueWindows(now: fixture.now) { feed, error in failures.append((feed, "\(error)")) }
        #expect(delivered.map(\.delivery.agreement) == [fine])
        #expect(failures.map(\.0) == [failing.id])
        #expect(failures.first?.1.contains("ε") == true, "\(failures)")
    }

    @Test("A consent withdrawal applies from the next window on")
    func withdrawalNextWindow() throws {
        let fixture = try BrokerFixture()
        try fixture.consent(Array(0..<100), granted: true)
        let id = try fixture.agree(feedPolicy(fixture, belowK: "suppress", records: 10), partner: fixture.partnerAKeys)
        _ = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        try fixture.publish(BrokerFixture.records(people: 5, startingAt: 0))
        let before = try #require(try fixture.broker.closeDueWindows(now: fixture.now).first)
        #expect(before.outcome?.recordsWithoutConsent == 0)
        try fixture.consent([5, 6], granted: false)
        try fixture.publish(BrokerFixture.records(people: 5, startingAt: 5))
        let after = try #require(try fixture.broker.closeDueWindows(now: fixture.now).first)
        #expect(after.outcome?.recordsWithoutConsent == 4)
        #expect(try ReleaseTests.people(in: fixture.open(after.delivery, as: fixture.partnerAKeys)).isDisjoint(with: [5, 6]))
    }

    @Test("Records of a window that cannot reach k wait for the next one, or are suppressed, as the agreement says")
    func belowK() throws {
        for mode in ["wait", "suppress"] {
            let fixture = try BrokerFixture()
            try fixture.consent(Array(0..<100), granted: true)
            let policy = fixture.policy(id: "ag-feed", partner: fixture.partnerAKeys, k: 4, suppression: 0,
                                        fields: ["person", "age", "zip"],
                                        extra: ["feed": ["window_records": 1, "window_seconds": 600, "below_k": .string(mode)]])
            let id = try fixture.agree(policy, partner: fixture.partnerAKeys)
            let feed = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
            try fixture.publish(BrokerFixture.records(people: 1, visitsEach: 2, startingAt: 0))   // 2 records of one person: k = 4 unreachable
            let first = try fixture.broker.closeDueWindows(now: fixture.now)
            #expect(first.isEmpty)
            let state = try #require(try fixture.store.feed(feed.id))
            if mode == "wait" {
                #expect(state.nextBatch == 1, "the records wait")
                // A second person alone does not reach k = 4 people, however many records they add.
                try fixture.publish(BrokerFixture.records(people: 1, visitsEach: 3, startingAt: 10))
                #expect(try fixture.broker.closeDueWindows(now: fixture.now).isEmpty)
                try fixture.publish(BrokerFixture.records(people: 2, visitsEach: 2, startingAt: 11))
                let second = try fixture.broker.closeDueWindows(now: fixture.now)
                #expect(second.first?.delivery.records == 9)
                #expect(second.first?.outcome?.kAchieved ?? 0 >= 4)
            } else {
                #expect(state.nextBatch == 2, "the records were suppressed and the feed moved on")
                #expect(state.delivered == 0)
            }
        }
    }

    @Test("Callers racing to close the same window deliver it once; the others move on quietly")
    func racingWindows() async throws {
        let fixture = try BrokerFixture()
        try fixture.consent(Array(0..<100), granted: true)
        let id = try fixture.agree(feedPolicy(fixture, belowK: "suppress", records: 10), partner: fixture.partnerAKeys)
        let feed = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        try fixture.publish(BrokerFixture.records(people: 10, startingAt: 0))
        let broker = fixture.broker, now = fixture.now
        let delivered = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<4 { group.addTask { try broker.closeDueWindows(now: now).count } }
            return try await group.reduce(0, +)
        }
        #expect(delivered == 1)
        #expect(try fixture.store.feed(feed.id)?.delivered == 1)
        #expect(try fixture.store.deliveries(feed: feed.id, after: 0, limit: 10).count == 1)
    }

    @Test("Revoking the agreement stops its feed")
    func revokedFeed() throws {
        let fixture = try BrokerFixture()
        try fixture.consent(Array(0..<100), granted: true)
        let id = try fixture.agree(feedPolicy(fixture, belowK: "suppress", records: 10), partner: fixture.partnerAKeys)
        _ = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        _ = try fixture.broker.revokeAgreement(id, by: fixture.clinic, now: fixture.now)
        try fixture.publish(BrokerFixture.records(people: 10, startingAt: 0))
        #expect(try fixture.broker.closeDueWindows(now: fixture.now).isEmpty)
        let refused = try #require(throws: BrokerError.self) {
            try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        }
        #expect(refused.code == .agreementNotActive)
    }

    @Test("The auditor's replay passes on a full exchange and names any tampered entry")
    func audit() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 30))
        try fixture.consent(Array(0..<30), granted: true)
        let id = try fixture.agree(feedPolicy(fixture, belowK: "suppress", records: 10), partner: fixture.partnerAKeys)
        _ = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        _ = try fixture.broker.aggregate(agreement: id, request: AggregateRequest(purpose: BrokerFixture.purpose, statistic: .count, measure: nil,
                                                                                 groupBy: ["zip"], epsilonMicro: 400_000), by: fixture.partnerA, now: fixture.now)
        _ = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        try fixture.publish(BrokerFixture.records(people: 10, startingAt: 30))
        try fixture.consent(Array(30..<40), granted: true)
        _ = try fixture.broker.closeDueWindows(now: fixture.now)
        let export = try fixture.export()
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(export))
        #expect(report.passed, "\(report.findings)")
        #expect(report.releasesVerified == 3)
        #expect(report.agreements[id]?.spentMicro == 400_000)
        // Change one delivered count in the log: the auditor names the entry.
        let text = String(decoding: export, as: UTF8.self)
        let tampered = try #require(text.range(of: #""records_released":"#))
        var changed = text
        changed.replaceSubrange(tampered, with: #""records_released":1"#)
        let bad = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(Array(changed.utf8)))
        #expect(!bad.passed)
    }
}
