import CivitasCrypto
import CivitasLog
import Foundation
import Testing
@testable import CivitasStore

/// At start the store verifies the whole stored log, its checkpoints and every delivery's log
/// index, and refuses to serve a log that was altered, naming where.
@Suite("The stored log, verified at start")
struct StoredLogTests {
    /// A store with participants, twelve consent events and a checkpoint over all of them.
    static func populated() throws -> (TemporaryStore, SecretKeys) {
        let temporary = try TemporaryStore()
        let broker = try SecretKeys.generate(name: "broker")
        let agency = try SecretKeys.generate(name: "agency")
        try temporary.store.registerParticipant(agency.publicKeys, role: .agency, now: "2026-11-27T09:00:00Z")
        try temporary.store.registerDataset(id: "calls", publisher: agency.keyID, schema: Array("{}".utf8), purposes: ["research"], now: "2026-11-27T09:00:00Z")
        let recorded: UTCTime = "2026-11-27T10:00:00Z"
        try temporary.store.transaction { transaction in
            for i in 0..<12 {
                let consent = StoredConsent(dataset: "calls", subject: SHA256Hasher.hash(Array("person \(i)".utf8)), purpose: "research", granted: true,
                                            record: Array("{}".utf8))
                try transaction.appendConsent(consent, now: recorded)
                _ = try transaction.appendLog(time: recorded, type: .consentGranted, members: LogEvents.consentRecorded(
                    dataset: consent.dataset, subject: consent.subject, purpose: consent.purpose, recordedBy: agency.keyID))
            }
        }
        try temporary.store.checkpointLog(signer: broker)
        return (temporary, broker)
    }

    @Test("An intact log reopens")
    func intact() throws {
        let (temporary, _) = try Self.populated()
        #expect(try temporary.reopen().logSize == temporary.store.logSize)
    }

    @Test("An entry altered in the middle is refused, naming it")
    func alteredMiddle() throws {
        let (temporary, _) = try Self.populated()
        try DatabaseHandle(path: temporary.path).execute("UPDATE log_entry SET bytes = CAST(replace(CAST(bytes AS TEXT), 'research', 'marketing') AS BLOB) WHERE position = 5")
        let error = try #require(throws: StoreError.self) { try temporary.reopen() }
        #expect(error.code == .corrupt && error.message.contains("log entry 5"), "\(error.message)")
    }

    @Test("An entry altered together with its leaf hash breaks the link from the next one")
    func alteredWithLeaf() throws {
        let (temporary, _) = try Self.populated()
        let handle = try DatabaseHandle(path: temporary.path)
        try handle.execute("UPDATE log_entry SET bytes = CAST(replace(CAST(bytes AS TEXT), 'research', 'marketing') AS BLOB) WHERE position = 5")
        // Recompute the stored leaf as SHA-256(0x00 ‖ bytes) is not possible in SQL; copy the next entry's instead.
        try handle.execute("UPDATE log_entry SET leaf = (SELECT leaf FROM log_entry WHERE position = 6) WHERE position = 5")
        let error = try #require(throws: StoreError.self) { try temporary.reopen() }
        #expect(error.code == .corrupt && error.message.contains("log entry 5"), "\(error.message)")
    }

    @Test("A deleted last entry is refused: the stored checkpoint covers more than is left")
    func deletedLast() throws {
        let (temporary, _) = try Self.populated()
        try DatabaseHandle(path: temporary.path).execute("DELETE FROM log_entry WHERE position = (SELECT MAX(position) FROM log_entry)")
        let error = try #require(throws: StoreError.self) { try temporary.reopen() }
        #expect(error.code == .corrupt && error.message.contains("checkpoint"), "\(error.message)")
    }

    @Test("A deleted entry in the middle is refused, naming the gap")
    func deletedMiddle() throws {
        let (temporary, _) = try Self.populated()
        try DatabaseHandle(path: temporary.path).execute("DELETE FROM log_entry WHERE position = 4")
        let error = try #require(throws: StoreError.self) { try temporary.reopen() }
        #expect(error.code == .corrupt && error.message.contains("log entry 4 is missing"), "\(error.message)")
    }

    @Test("A damaged row is reported as corrupt, never a crash")
    func damagedRow() throws {
        let (temporary, _) = try Self.populated()
        try DatabaseHandle(path: temporary.path).execute("UPDATE participant SET registered = x'FFFE'")
        let error = try #require(throws: StoreError.self) { try temporary.store.participants() }
        #expect(error.code == .corrupt)
        try DatabaseHandle(path: temporary.path).execute("UPDATE dataset SET purposes = x'00'")
        #expect(throws: StoreError.self) { try temporary.store.datasets() }
    }
}
