import CivitasCrypto
import CivitasLog
import Foundation
import Testing
@testable import CivitasStore

@Suite("The exchange log in the store")
struct ExchangeLogStoreTests {
    let now: UTCTime = "2026-11-27T10:00:00Z"

    func audit(_ store: BrokerStore, signer: SecretKeys) throws -> AuditReport {
        let sink = MemorySink()
        try store.exportLog(signer: signer, to: sink)
        return Auditor(broker: signer.publicKeys).audit(MemorySource(sink.bytes))
    }

    @Test("A reopened store continues its log where it stopped, from the stored leaf hashes")
    func continues() throws {
        let temporary = try TemporaryStore()
        let broker = try SecretKeys.generate(name: "broker")
        try temporary.store.registerParticipant(broker.publicKeys, role: .operator_, now: now)
        for name in ["a", "b", "c"] {
            try temporary.store.registerParticipant(try SecretKeys.generate(name: name).publicKeys, role: .agency, now: now)
        }
        let first = try temporary.store.checkpointLog(signer: broker)
        let reopened = try temporary.reopen()
        #expect(reopened.logSize == 4)
        try reopened.registerParticipant(try SecretKeys.generate(name: "d").publicKeys, role: .partner, now: "2026-11-27T09:00:00Z")
        let report = try audit(reopened, signer: broker)
        #expect(report.passed, "\(report.findings)")
        #expect(report.entries == 5 && report.checkpointsVerified == 2)
        // The earlier checkpoint is a prefix of the continued log, and times never went back.
        let sink = MemorySink()
        try reopened.exportLog(signer: broker, to: sink)
        #expect(Auditor(broker: broker.publicKeys).audit(MemorySource(sink.bytes), savedCheckpoint: first).passed)
    }

    @Test("An export read in small pages is byte for byte the export read at once, and audits clean")
    func pages() throws {
        let temporary = try TemporaryStore()
        let broker = try SecretKeys.generate(name: "broker")
        for name in ["a", "b", "c", "d", "e"] {
            try temporary.store.registerParticipant(try SecretKeys.generate(name: name).publicKeys, role: .agency, now: now)
            try temporary.store.checkpointLog(signer: broker)
        }
        let whole = MemorySink()
        try temporary.store.exportLog(signer: broker, to: whole)
        let exporter = try temporary.store.logExporter(signer: broker, pageEntries: 2)
        var paged: [UInt8] = [], pages = 0
        while let page = try exporter.nextPage() {
            paged += page
            pages += 1
        }
        #expect(pages == 3 && paged == whole.bytes)
        let report = Auditor(broker: broker.publicKeys).audit(MemorySource(paged))
        #expect(report.passed && report.checkpointsVerified == 5)
    }

    @Test("A store whose last log entry was altered, or whose entries have a gap, refuses to open")
    func tampered() throws {
        let temporary = try TemporaryStore()
        for name in ["a", "b", "c"] {
            try temporary.store.registerParticipant(try SecretKeys.generate(name: name).publicKeys, role: .agency, now: now)
        }
        let database = try DatabaseHandle(path: temporary.path)
        try database.execute("UPDATE log_entry SET bytes = CAST(REPLACE(CAST(bytes AS TEXT), 'agency', 'auditor') AS BLOB) WHERE position = 2")
        #expect(throws: StoreError(.corrupt, "")) { _ = try temporary.reopen() }
        try database.execute("UPDATE log_entry SET position = 7 WHERE position = 1")
        #expect(throws: StoreError(.corrupt, "")) { _ = try temporary.reopen() }
    }
}
