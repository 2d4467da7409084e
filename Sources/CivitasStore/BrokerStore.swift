import CivitasCrypto
import CivitasLog
import CivitasModel
import Foundation
import GRDB
import Synchronization

/// The broker's state on embedded SQLite: participants, request nonces, datasets and
/// batches of records. Records are stored encrypted (XChaCha20-Poly1305 under a
/// per-dataset key, itself wrapped by the store key) in segments bound to their
/// dataset, batch and position. Every change is one transaction.
public final class BrokerStore: Sendable {
    let pool: DatabasePool
    let storageKey: SealedStorageKey
    /// Envelopes of ``EnvelopeFiles/threshold`` bytes or more, as files beside the database.
    let envelopes: EnvelopeFiles
    /// The exchange log's Merkle tree, mirrored in memory; changed only after its entries commit.
    let logState: LockedLog
    /// When expired nonces were last swept.
    let nonceSweep = NonceSweep()
    /// Records per encrypted segment.
    public static let segmentRows = Segments.rows

    /// Opens (creating if needed) the database at `path` in WAL mode and applies migrations.
    /// `logOrigin` names the exchange log (its checkpoints' origin line); it is fixed when the store is created.
    public init(path: String, storageKey: SealedStorageKey, logOrigin: String = BrokerStore.defaultLogOrigin) throws {
        // Owner-only from the start: SQLite gives the WAL and shared-memory files the database's mode.
        // A descriptor is opened (and closed) only to create a new file: closing one on a database
        // this process already has open would drop every POSIX lock SQLite holds on it.
        let descriptor = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if descriptor >= 0 {
            close(descriptor)
        } else if errno != EEXIST {
            throw StoreError(.database, "cannot create the store at \(path): \(String(cString: strerror(errno)))")
        }
        guard chmod(path, 0o600) == 0 else {
            throw StoreError(.database, "cannot make the store at \(path) owner-only: \(String(cString: strerror(errno)))")
        }
        let pool: DatabasePool
        let envelopes = EnvelopeFiles(database: path)
        do {
            var configuration = Configuration()
            configuration.foreignKeysEnabled = true
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
            try Self.sweepEnvelopes(pool, envelopes)
        } catch let error as DatabaseError {
            throw StoreError(.database, "cannot open the store at \(path): \(error.message ?? "\(error.resultCode)")")
        }
        self.pool = pool
        self.storageKey = storageKey
        self.envelopes = envelopes
        self.logState = LockedLog(try Self.loadLog(pool, origin: logOrigin))
    }


    /// Removes the envelope files no delivery names (those of transactions that never committed),
    /// holding the write lock so that no transaction is between writing its file and committing.
    private static func sweepEnvelopes(_ pool: DatabasePool, _ envelopes: EnvelopeFiles) throws {
        _ = try pool.write { db in
            try envelopes.sweep(keeping: Set(String.fetchAll(db, sql: "SELECT envelope_file FROM delivery WHERE envelope_file IS NOT NULL")))
        }
    }

    /// Names of the migrations applied to this database, in order.
    public func appliedMigrations() throws -> [String] {
        try wrap { try pool.read { db in try Self.migrator.appliedMigrations(db) } }
    }

    // MARK: Participants

    /// The participant with this key id, if registered.
    public func participant(_ keyID: KeyID) throws -> Participant? {
        try wrap {
            try pool.read { db in
                try Row.fetchOne(db.cachedStatement(sql: StoredRecords.participantQuery(where: "WHERE p.key_id = ?")), arguments: [keyID.hex])
            }.map(StoredRecords.participant(from:))
        }
    }

    /// All participants, by name.
    public func participants() throws -> [Participant] {
        try wrap { try pool.read { db in try Row.fetchAll(db.cachedStatement(sql: StoredRecords.participantQuery(where: "ORDER BY p.name"))) }.map(StoredRecords.participant(from:)) }
    }

    public func participantKey(_ keyID: KeyID) throws -> ParticipantKey? {
        try wrap { try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM participant_key WHERE key_id = ?", arguments: [keyID.hex]) }.map(StoredRecords.participantKey(from:)) }
    }

    public func pendingParticipantKeys() throws -> [ParticipantKey] {
        try wrap { try pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM participant_key WHERE approved IS NULL ORDER BY requested, key_id") }.map(StoredRecords.participantKey(from:)) }
    }

    // MARK: Replay protection

    /// Records request nonces in one transaction; for each, whether it was new (false: its key used
    /// it within the window). Nonces older than the window are forgotten (their requests are
    /// refused as stale anyway).
    public func recordNonces(_ nonces: [RequestNonce], oldestAccepted: Int64) throws -> [Bool] {
        try NonceSweep.check(nonces)
        let sweep = nonceSweep.due(oldestAccepted: oldestAccepted)
        return try wrap {
            try pool.write { db in
                if sweep { try db.cachedStatement(sql: "DELETE FROM request_nonce WHERE created < ?").execute(arguments: [oldestAccepted]) }
                // A nonce seen within the window stays; one seen before it (not swept yet) is taken anew.
                let insert = try db.cachedStatement(sql: """
                    INSERT INTO request_nonce (key_id, nonce, created) VALUES (?, ?, ?)
                    ON CONFLICT (key_id, nonce) DO UPDATE SET created = excluded.created WHERE request_nonce.created < ?
                    """)
                return try nonces.map { nonce in
                    try insert.execute(arguments: [nonce.keyID, nonce.nonce, nonce.created, oldestAccepted])
                    return db.changesCount == 1
                }
            }
        }
    }

    // MARK: Datasets

    /// The dataset with this id, if registered.
    public func dataset(_ id: String) throws -> Dataset? {
        try wrap { try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM dataset WHERE id = ?", arguments: [id]) }.map(StoredRecords.dataset(from:)) }
    }

    /// All datasets, by id.
    public func datasets() throws -> [Dataset] {
        let ids: [String] = try wrap { try pool.read { db in try String.fetchAll(db, sql: "SELECT id FROM dataset ORDER BY id") } }
        return try ids.compactMap { try dataset($0) }
    }

    // MARK: Batches

    /// Stores a batch whose columns and rows `produce` hands over chunk by chunk (each sealed
    /// as segments as it arrives, so the batch is never held whole), in one transaction: a
    /// producer that throws leaves nothing stored. Every chunk names the same columns; the first
    /// may carry no rows. With an idempotency key already used, the rows are only hashed and
    /// compared, and the stored batch is answered.
    public func appendBatch(dataset id: String, idempotencyKey: String?, bodySHA256: [UInt8]?, now: UTCTime,
                            produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void,
                            quality: (_ stored: [UInt8]?) throws -> [UInt8]?) throws -> Batch {
        try Segments.checkIdempotencyKey(idempotencyKey)
        let datasetKey = try self.datasetKey(id)
        return try wrap {
            try pool.write { db -> Batch in
                if let idempotencyKey, let existing = try Row.fetchOne(db, sql: "SELECT * FROM batch WHERE dataset = ? AND idempotency_key = ?",
                                                                       arguments: [id, idempotencyKey]) {
                    let hash = try Segments.contentHash(produce: produce)
                    guard try existing.bytes("content_sha256") == hash else {
                        throw StoreError(.duplicate, "idempotency key \(idempotencyKey.prefix(60)) was used for a different batch of \(id)")
                    }
                    return Batch(dataset: id, sequence: try existing.integer("sequence"), records: Int(try existing.integer("records")),
                                 idempotencyKey: idempotencyKey, contentSHA256: hash, replayed: true)
                }
                let sequence = (try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM batch WHERE dataset = ?", arguments: [id]) ?? 0) + 1
                try db.execute(sql: "INSERT INTO batch (dataset, sequence, records, idempotency_key, content_sha256, body_sha256, created) VALUES (?, ?, 0, ?, ?, ?, ?)",
                               arguments: [id, sequence, idempotencyKey, Data(count: SHA256Hasher.digestLength), bodySHA256.map { Data($0) }, now])
                let insert = try db.cachedStatement(sql: "INSERT INTO segment (dataset, sequence, position, sealed) VALUES (?, ?, ?, ?)")
                let (records, hash) = try Segments.seal(dataset: id, sequence: sequence, key: datasetKey, produce: produce) { position, sealed in
                    try insert.execute(arguments: [id, sequence, position, Data(sealed)])
                }
                try db.execute(sql: "UPDATE batch SET records = ?, content_sha256 = ? WHERE dataset = ? AND sequence = ?",
                               arguments: [records, Data(hash), id, sequence])
                let stored = try Data.fetchOne(db, sql: "SELECT counts FROM dataset_quality WHERE dataset = ?", arguments: [id]).map { Array($0) }
                if let counts = try quality(stored) {
                    try db.execute(sql: "INSERT INTO dataset_quality (dataset, counts) VALUES (?, ?) ON CONFLICT (dataset) DO UPDATE SET counts = excluded.counts",
                                   arguments: [id, Data(counts)])
                }
                return Batch(dataset: id, sequence: sequence, records: records, idempotencyKey: idempotencyKey, contentSHA256: hash, replayed: false)
            }
        }
    }

    public func uploadedBatch(dataset id: String, idempotencyKey: String, bodySHA256: [UInt8]) throws -> Batch? {
        try wrap {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT sequence, records, content_sha256 FROM batch WHERE dataset = ? AND idempotency_key = ? AND body_sha256 = ?",
                                 arguments: [id, idempotencyKey, Data(bodySHA256)]).map { row in
                    Batch(dataset: id, sequence: try row.integer("sequence"), records: Int(try row.integer("records")),
                          idempotencyKey: idempotencyKey, contentSHA256: try row.bytes("content_sha256"), replayed: true)
                }
            }
        }
    }

    public func batchSequence(dataset id: String, idempotencyKey: String) throws -> Int64? {
        try wrap {
            try pool.read { db in
                try Int64.fetchOne(db, sql: "SELECT sequence FROM batch WHERE dataset = ? AND idempotency_key = ?", arguments: [id, idempotencyKey])
            }
        }
    }

    public func recordChunks(of id: String, batches: Range<Int64>?, handle: (RecordChunk) throws -> Void) throws {
        let datasetKey = try self.datasetKey(id)
        let range = batches ?? 0..<Int64.max
        // One segment in memory at a time: the cursor reads the next only after `handle` returns.
        try wrap {
            try pool.read { db in
                let segments = try Row.fetchCursor(db, sql: "SELECT sequence, position, sealed FROM segment WHERE dataset = ? AND sequence >= ? AND sequence < ? ORDER BY sequence, position",
                                                   arguments: [id, range.lowerBound, range.upperBound])
                while let row = try segments.next() {
                    let (sequence, position) = (try row.integer("sequence"), Int(try row.integer("position")))
                    try handle(try Segments.open(try row.bytes("sealed"), key: datasetKey, dataset: id, sequence: sequence, position: position))
                }
            }
        }
    }

    private func datasetKey(_ id: String) throws -> SealedStorageKey {
        guard let wrapped = try wrap({ try pool.read { db in try Data.fetchOne(db, sql: "SELECT wrapped_key FROM dataset WHERE id = ?", arguments: [id]) } }) else {
            throw StoreError(.notFound, "dataset \(id) is not registered")
        }
        return try Segments.datasetKey(Array(wrapped), dataset: id, storageKey: storageKey)
    }

    func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StoreError { throw error } catch let error as DatabaseError {
            throw StoreError(.database, "database: \(error.message ?? "\(error.resultCode)")")
        } catch is RowDecodingError {
            throw StoreError(.corrupt, "a stored row cannot be read: a column is missing, NULL or of the wrong type")
        }
    }
}
