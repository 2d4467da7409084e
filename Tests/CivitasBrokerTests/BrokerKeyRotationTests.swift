import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasStore
import Testing

/// The broker's signing key rotates in the log itself: the old key checkpoints what it signed,
/// introduces the new key in a `broker.key_rotated` entry, and co-signs the checkpoint covering
/// it. An auditor holding only the old key follows the chain to the new one, on either store.
@Suite("Rotating the broker's key")
struct BrokerKeyRotationTests {
    static func fixture(_ database: String) throws -> BrokerFixture {
        database == "postgres" ? try SharedDatabaseBrokerTests.twoNodes().fixture : try BrokerFixture()
    }

    static func export(_ store: any BrokerStorage, signer: SecretKeys) throws -> [UInt8] {
        let exporter = try store.logExporter(signer: signer, pageEntries: 10_000)
        var export: [UInt8] = []
        while let page = try exporter.nextPage() { export += page }
        return export
    }

    @Test("A rotation is logged, co-signed and followed by the audit; the old key no longer signs", arguments: ["sqlite", "postgres"])
    func rotation(_ database: String) throws {
        let fixture = try Self.fixture(database)
        try fixture.consent(Array(0..<30), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-rotation", partner: fixture.partnerAKeys, k: 2, suppression: 0.5), partner: fixture.partnerAKeys)
        _ = try fixture.publish(BrokerFixture.records(people: 30))
        _ = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        _ = try fixture.broker.checkpoint()
        // Entries the old key has not checkpointed yet are covered by it before the rotation.
        try fixture.consent(Array(30..<35), granted: true)

        let newKeys = try SecretKeys.generate(name: "broker-2027")
        let rotated = try Broker(store: fixture.store, keys: newKeys)
        #expect(throws: BrokerError.self) { try rotated.adoptKey(previous: nil, now: fixture.now) }
        #expect(throws: BrokerError.self) { try rotated.adoptKey(previous: try SecretKeys.generate(name: "stranger"), now: fixture.now) }
        let adoption = try rotated.adoptKey(previous: fixture.brokerKeys, now: fixture.now)
        guard case .rotated(let entry, let size) = adoption else {
            Issue.record("the broker did not rotate: \(adoption)")
            return
        }
        #expect(size == entry + 1 && size == fixture.store.logSize)
        #expect(try rotated.adoptKey(previous: fixture.brokerKeys, now: fixture.now) == .current)
        // The old key can no longer start a broker on this log.
        #expect(throws: BrokerError.self) { try Broker(store: fixture.store, keys: fixture.brokerKeys).adoptKey(previous: nil, now: fixture.now) }

        // The next release is signed by the new key.
        try fixture.consent(Array(40..<50), granted: true)
        _ = try fixture.publish(BrokerFixture.records(people: 10, startingAt: 40))
        let release = try rotated.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        #expect(release.delivery.id.isEmpty == false)

        let export = try Self.export(fixture.store, signer: newKeys)
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(export))
        #expect(report.passed, "\(report.findings)")
        #expect(report.brokerKeys == [fixture.brokerKeys.keyID, newKeys.keyID])
        #expect(report.releasesVerified == 2)
        // Positive control: the new key alone does not verify what the old key signed before the rotation.
        #expect(!Auditor(broker: newKeys.publicKeys).audit(MemorySource(export)).passed)
    }
}
