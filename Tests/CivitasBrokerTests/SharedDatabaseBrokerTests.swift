import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasStore
import Foundation
import Testing

/// Two broker nodes on one PostgreSQL database (the server the test command starts, named by
/// `CIVITAS_TEST_POSTGRES_URL`): what one process once did alone, the nodes now do together.
@Suite("Broker nodes on one database")
struct SharedDatabaseBrokerTests {
    /// A fixture broker on a fresh PostgreSQL database, and a second node on the same database.
    static func twoNodes() throws -> (fixture: BrokerFixture, second: Broker) {
        guard let url = ProcessInfo.processInfo.environment["CIVITAS_TEST_POSTGRES_URL"] else {
            throw BrokerError(.invalid, "CIVITAS_TEST_POSTGRES_URL names no PostgreSQL server: run the tests with scripts/test, which starts one")
        }
        let server = try PostgresLocation(url: url)
        let name = "civitas_broker_" + Hex.encode(Sodium.randomBytes(8))
        try PostgresStore.createDatabase(name, at: server)
        let storageKey = try SealedStorageKey.generate()
        let fixture = try BrokerFixture(store: try PostgresStore(location: server.database(name), storageKey: storageKey, connections: 4))
        let second = try Broker(store: try PostgresStore(location: server.database(name), storageKey: storageKey, connections: 4), keys: fixture.brokerKeys)
        return (fixture, second)
    }

    /// When the window of ``twoNodesWithAWindowDue()`` is due by time.
    static let due: UTCTime = "2026-11-27T11:00:00Z"

    /// Two nodes, and a feed with a batch whose window is due by time at ``due``.
    static func twoNodesWithAWindowDue() throws -> (fixture: BrokerFixture, second: Broker, feed: Feed) {
        let (fixture, second) = try twoNodes()
        try fixture.consent(Array(0..<100), granted: true)
        let policy = fixture.policy(id: "ag-feed", partner: fixture.partnerAKeys, k: 2, suppression: 0.5,
                                    extra: ["feed": ["window_records": 1_000, "window_seconds": 600, "below_k": "suppress"]])
        let id = try fixture.agree(policy, partner: fixture.partnerAKeys)
        let feed = try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: nil, by: fixture.partnerA, now: fixture.now)
        try fixture.publish(BrokerFixture.records(people: 30))
        return (fixture, second, feed)
    }

    @Test("A window due by time closes once, whichever node's schedule sees it")
    func windowClosesOnce() async throws {
        let (fixture, second, feed) = try Self.twoNodesWithAWindowDue()
        let brokers = [fixture.broker, second, fixture.broker, second]
        let delivered = try await withThrowingTaskGroup(of: Int.self) { group in
            for broker in brokers { group.addTask { try broker.closeDueWindows(now: Self.due).count } }
            return try await group.reduce(0, +)
        }
        #expect(delivered == 1)
        #expect(try fixture.store.feed(feed.id)?.delivered == 1)
        #expect(try fixture.store.deliveries(feed: feed.id, after: 0, limit: 10).count == 1)
        #expect(Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export())).passed)
    }

    @Test("A window another node has claimed is left to it until it gives the claim up")
    func claimedWindowIsLeft() throws {
        let (fixture, second, feed) = try Self.twoNodesWithAWindowDue()
        #expect(try second.claim(work: "feed-window:\(feed.id)", seconds: 60))
        #expect(try fixture.broker.closeDueWindows(now: Self.due).isEmpty)
        #expect(try fixture.store.feed(feed.id)?.delivered == 0)
        try second.release(work: "feed-window:\(feed.id)")
        #expect(try fixture.broker.closeDueWindows(now: Self.due).count == 1)
    }

    @Test("A window delivered by one node wakes the partners waiting on another at once")
    func windowWakesOtherNode() async throws {
        let (fixture, second, feed) = try Self.twoNodesWithAWindowDue()
        let seen = second.feedSignals.version(of: feed.id)
        #expect(try fixture.broker.closeDueWindows(now: Self.due).count == 1)
        // Told when the delivery committed (the signal arrives on the store's own thread), not
        // when its waiters would have looked again (every 5 s).
        let delivered = ContinuousClock.now
        while second.feedSignals.version(of: feed.id) == seen, ContinuousClock.now - delivered < .seconds(2) { usleep(1_000) }
        #expect(second.feedSignals.version(of: feed.id) > seen, "the second node was not told within 2 s")
        // A partner waiting there from before returns at once.
        let waited = ContinuousClock.now
        await second.feedSignals.wait(for: feed.id, after: seen, until: .now + .seconds(30))
        #expect(ContinuousClock.now - waited < .seconds(5))
    }
}
