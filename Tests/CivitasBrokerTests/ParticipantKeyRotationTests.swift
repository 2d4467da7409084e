import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasStore
import Testing

/// A participant rotates its key: asked with its current key, approved by the operator, the new
/// key then signs for the same participant (its agreements carry on) and receives its envelopes;
/// the old key is accepted for the grace period and refused after it. On either store.
@Suite("Participants rotating their keys")
struct ParticipantKeyRotationTests {
    @Test("Asked, approved, signed with, sealed to, and the old key retired after its grace period", arguments: ["sqlite", "postgres"])
    func rotation(_ database: String) throws {
        let fixture = try BrokerKeyRotationTests.fixture(database)
        let broker = fixture.broker
        try fixture.consent(Array(0..<30), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-rotating-partner", partner: fixture.partnerAKeys, k: 2, suppression: 0.5), partner: fixture.partnerAKeys)
        _ = try fixture.publish(BrokerFixture.records(people: 30))
        let operatorParticipant = try #require(try fixture.store.participant(fixture.brokerKeys.keyID))
        let newKeys = try SecretKeys.generate(name: "health-2027")

        // Asked with another participant's key, or for a key already registered: refused.
        #expect(throws: BrokerError.self) {
            try broker.requestKeyRotation(to: newKeys.publicKeys, by: fixture.partnerA, signedWith: fixture.partnerBKeys.keyID, now: fixture.now)
        }
        #expect(throws: BrokerError.self) {
            try broker.requestKeyRotation(to: fixture.partnerBKeys.publicKeys, by: fixture.partnerA, signedWith: fixture.partnerAKeys.keyID, now: fixture.now)
        }
        _ = try broker.requestKeyRotation(to: newKeys.publicKeys, by: fixture.partnerA, signedWith: fixture.partnerAKeys.keyID, now: fixture.now)
        #expect(try broker.pendingKeyRotations(for: operatorParticipant).map(\.keys.keyID) == [newKeys.keyID])
        // Until approved, the new key signs for nobody; only the operator approves.
        #expect(throws: BrokerError.self) { try broker.signer(newKeys.keyID, now: fixture.now) }
        #expect(throws: BrokerError.self) { try broker.approveKeyRotation(newKeys.keyID, by: fixture.partnerA, now: fixture.now) }
        let rotation = try broker.approveKeyRotation(newKeys.keyID, by: operatorParticipant, now: fixture.now)
        #expect(rotation.replaced == fixture.partnerAKeys.publicKeys)
        #expect(rotation.replacedRetires.secondsSince1970 == fixture.now.secondsSince1970 + broker.keyGracePeriod)
        #expect(throws: BrokerError.self) { try broker.approveKeyRotation(newKeys.keyID, by: operatorParticipant, now: fixture.now) }
        // The rotated key cannot be registered as a participant of its own.
        #expect(throws: BrokerError.self) {
            try broker.registerParticipant(newKeys.publicKeys, role: .partner, by: operatorParticipant, now: fixture.now)
        }

        // The new key signs for the same participant.
        let signer = try #require(try broker.signer(newKeys.keyID, now: fixture.now))
        #expect(signer.participant.keys.keyID == fixture.partnerAKeys.keyID && signer.key == newKeys.publicKeys)
        #expect(signer.participant.currentKeys == newKeys.publicKeys)
        // The old key: accepted during the grace period, refused from its end on.
        let graceEnd = UTCTime(secondsSince1970: fixture.now.secondsSince1970 + broker.keyGracePeriod)
        #expect(try broker.signer(fixture.partnerAKeys.keyID, now: UTCTime(secondsSince1970: graceEnd.secondsSince1970 - 1)) != nil)
        #expect(throws: BrokerError.self) { try broker.signer(fixture.partnerAKeys.keyID, now: graceEnd) }

        // The agreement carries on; the release is sealed to the new key only.
        let release = try broker.release(agreement: id, purpose: BrokerFixture.purpose, by: signer.participant, now: fixture.now)
        let envelope = try #require(try fixture.store.delivery(release.delivery.id)).envelope
        let opened = MemorySink()
        _ = try EnvelopeOpener(recipient: newKeys, issuer: fixture.brokerKeys.publicKeys).open(MemorySource(envelope), to: opened)
        #expect(!opened.bytes.isEmpty)
        #expect(throws: (any Error).self) {
            try EnvelopeOpener(recipient: fixture.partnerAKeys, issuer: fixture.brokerKeys.publicKeys).open(MemorySource(envelope), to: MemorySink())
        }
        // The audit follows the rotation: the envelope addressed to the new key is the partner's.
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export()))
        #expect(report.passed, "\(report.findings)")
        #expect(report.releasesVerified == 1)
    }
}
