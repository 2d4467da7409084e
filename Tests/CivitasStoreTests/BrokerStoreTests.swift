import CivitasCrypto
import Foundation
import Testing
@testable import CivitasStore

/// Each test gets a fresh database file in its own folder.
struct TemporaryStore {
    let directory: String
    let path: String
    let key: SealedStorageKey
    let store: BrokerStore

    init() throws {
        directory = NSTemporaryDirectory() + "civitas-store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/broker.sqlite"
        key = try SealedStorageKey.generate()
        store = try BrokerStore(path: path, storageKey: key)
    }

    func reopen() throws -> BrokerStore { try BrokerStore(path: path, storageKey: key) }
}

@Suite("Broker store (SQLite)")
struct BrokerStoreTests {
    let now: UTCTime = "2026-11-27T10:00:00Z"

    @Test("Migrations are applied once, by name, and survive reopening")
    func migrations() throws {
        let temporary = try TemporaryStore()
        let names = try temporary.store.appliedMigrations()
        #expect(names == ["2026-11-27 participants", "2026-11-27 request nonces", "2026-11-27 datasets and batches",
                          "2026-11-28 dataset purposes", "2026-11-29 exchanges", "2026-12-02 drawn batches", "2026-12-04 request keys",
                          "2026-12-04 consent events", "2026-12-05 checkpoint times", "2026-12-05 work leases", "2026-12-05 participant keys",
                          "2026-12-05 resumable uploads and web sessions", "2026-12-05 synthetic data and dataset quality",
                          "2026-12-06 envelopes beside the database", "2026-12-06 consent records as differences"])
        #expect(try temporary.reopen().appliedMigrations() == names)
    }

    @Test("Participants are registered once and read back with their keys")
    func participants() throws {
        let temporary = try TemporaryStore()
        let agency = try SecretKeys.generate(name: "transport")
        try temporary.store.registerParticipant(agency.publicKeys, role: .agency, now: now)
        #expect(throws: StoreError(.duplicate, "")) { try temporary.store.registerParticipant(agency.publicKeys, role: .partner, now: now) }
        let read = try #require(try temporary.reopen().participant(agency.keyID))
        #expect(read.keys == agency.publicKeys && read.role == .agency)
        #expect(try temporary.store.participant(try SecretKeys.generate(name: "x").keyID) == nil)
    }

    @Test("A nonce is accepted once per key within the window")
    func nonces() throws {
        let temporary = try TemporaryStore()
        try temporary.store.recordNonce(keyID: "k1", nonce: "abc", created: 1000, oldestAccepted: 700)
        #expect(throws: StoreError(.replayed, "")) { try temporary.store.recordNonce(keyID: "k1", nonce: "abc", created: 1001, oldestAccepted: 701) }
        try temporary.store.recordNonce(keyID: "k2", nonce: "abc", created: 1001, oldestAccepted: 701)
        // Once outside the window the nonce is forgotten; the request itself would be refused as stale.
        try temporary.store.recordNonce(keyID: "k1", nonce: "abc", created: 2000, oldestAccepted: 1500)
    }

    @Test("Batches are stored encrypted, in sequence, idempotently, and read back")
    func batches() throws {
        let temporary = try TemporaryStore()
        let agency = try SecretKeys.generate(name: "emergency")
        try temporary.store.registerParticipant(agency.publicKeys, role: .agency, now: now)
        try temporary.store.registerDataset(id: "calls-911", publisher: agency.keyID, schema: Array("{}".utf8), now: now)
        let rows = (0..<2500).map { ["NORRISTOWN-SECRET-\($0)", "EMS: FALL VICTIM"] }
        let first = try temporary.store.appendBatch(dataset: "calls-911", columns: ["twp", "title"], rows: rows, idempotencyKey: "upload-1", now: now)
        #expect(first.sequence == 1 && first.records == 2500 && !first.replayed)
        let again = try temporary.store.appendBatch(dataset: "calls-911", columns: ["twp", "title"], rows: rows, idempotencyKey: "upload-1", now: now)
        #expect(again.replayed && again.sequence == 1)
        #expect(throws: StoreError(.duplicate, "")) {
            try temporary.store.appendBatch(dataset: "calls-911", columns: ["twp", "title"], rows: [["x", "y"]], idempotencyKey: "upload-1", now: now)
        }
        let second = try temporary.store.appendBatch(dataset: "calls-911", columns: ["twp", "title"], rows: [["AMBLER", "Fire: ALARM"]], idempotencyKey: nil, now: now)
        #expect(second.sequence == 2)
        var read: [[String]] = []
        try temporary.reopen().records(of: "calls-911") { columns, batch in
            #expect(columns == ["twp", "title"])
            read += batch
        }
        #expect(read == rows + [["AMBLER", "Fire: ALARM"]])
        // Nothing readable at rest: the database files hold no record text.
        for file in try FileManager.default.contentsOfDirectory(atPath: temporary.directory) {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: temporary.directory + "/" + file))
            #expect(bytes.range(of: Data("NORRISTOWN-SECRET".utf8)) == nil, "\(file) holds plaintext")
        }
    }

    @Test("A segment altered or moved at rest is refused; another store key cannot read")
    func tampering() throws {
        let temporary = try TemporaryStore()
        let agency = try SecretKeys.generate(name: "emergency")
        try temporary.store.registerParticipant(agency.publicKeys, role: .agency, now: now)
        for id in ["a", "b"] {
            try temporary.store.registerDataset(id: id, publisher: agency.keyID, schema: [], now: now)
            _ = try temporary.store.appendBatch(dataset: id, columns: ["v"], rows: [["1"], ["2"]], idempotencyKey: nil, now: now)
        }
        let other = try BrokerStore(path: temporary.path, storageKey: try SealedStorageKey.generate())
        #expect(throws: StoreError(.corrupt, "")) { try other.records(of: "a") { _, _ in } }
        // Move b's segment under a (raw SQL, as an attacker with the file would).
        let database = try DatabaseHandle(path: temporary.path)
        try database.execute("UPDATE segment SET sealed = (SELECT sealed FROM segment WHERE dataset = 'b') WHERE dataset = 'a'")
        // Evidence for a failure below: the move happened, and what the store's own reader sees.
        let moved = try database.queue.read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM segment WHERE dataset = 'a' AND sealed = (SELECT sealed FROM segment WHERE dataset = 'b')")
        }
        #expect(moved == 1, "the raw update did not move b's segment under a")
        var readRows: [[String]] = []
        #expect(throws: StoreError(.corrupt, ""), "the store read \(readRows) from a's moved segment") {
            try temporary.store.records(of: "a") { _, rows in readRows += rows }
        }
        try database.execute("UPDATE segment SET sealed = substr(sealed, 1, 30) || x'00' || substr(sealed, 32) WHERE dataset = 'b'")
        #expect(throws: StoreError(.corrupt, "")) { try temporary.store.records(of: "b") { _, _ in } }
    }

    @Test("Unknown publishers and unknown datasets are refused and store nothing")
    func refusals() throws {
        let temporary = try TemporaryStore()
        let agency = try SecretKeys.generate(name: "emergency")
        #expect(throws: StoreError(.notFound, "")) { try temporary.store.registerDataset(id: "x", publisher: agency.keyID, schema: [], now: now) }
        try temporary.store.registerParticipant(agency.publicKeys, role: .agency, now: now)
        #expect(throws: StoreError(.notFound, "")) {
            try temporary.store.appendBatch(dataset: "missing", columns: ["a"], rows: [], idempotencyKey: nil, now: now)
        }
        #expect(try temporary.store.datasets().isEmpty)
    }
}
