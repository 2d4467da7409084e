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
    /// The exchange log's Merkle tree, mirrored in memory; changed only after its entries commit.
    let logState: LockedLog
    /// The oldest accepted request time of the last sweep of expired nonces.
    let nonceSweep = Mutex<Int64>(Int64.min)
    /// Records per encrypted segment.
    public static let segmentRows = 1000

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
        do {
            var configuration = Configuration()
            configuration.foreignKeysEnabled = true
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
        } catch let error as DatabaseError {
            throw StoreError(.database, "cannot open the store at \(path): \(error.message ?? "\(error.resultCode)")")
        }
        self.pool = pool
        self.storageKey = storageKey
        self.logState = LockedLog(try Self.loadLog(pool, origin: logOrigin))
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
                try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM participant WHERE key_id = ?"), arguments: [keyID.hex])
            }.map(Self.participant(from:))
        }
    }

    /// All participants, by name.
    public func participants() throws -> [Participant] {
        try wrap { try pool.read { db in try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM participant ORDER BY name")) }.map(Self.participant(from:)) }
    }

    static func participant(from row: Row) throws -> Participant {
        let signing: Data = try row.decode(forColumn: "ed25519"), encryption: Data = try row.decode(forColumn: "x25519")
        guard let role = Participant.Role(rawValue: try row.decode(forColumn: "role")) else {
            throw StoreError(.corrupt, "participant \((try? row.decode(String?.self, forColumn: "key_id")) ?? "?") has an unknown role")
        }
        let keys = try PublicKeys(name: try row.decode(forColumn: "name"), signingKey: Array(signing), encryptionKey: Array(encryption))
        let storedID: String = try row.decode(forColumn: "key_id")
        guard keys.keyID.hex == storedID else { throw StoreError(.corrupt, "participant \(keys.keyID): stored key id does not match its keys") }
        return Participant(keys: keys, role: role, registered: try row.decode(forColumn: "registered"))
    }

    // MARK: Replay protection

    /// Records request nonces in one transaction; for each, whether it was new (false: its key used
    /// it within the window). Nonces older than the window are forgotten (their requests are
    /// refused as stale anyway).
    public func recordNonces(_ nonces: [RequestNonce], oldestAccepted: Int64) throws -> [Bool] {
        if let long = nonces.first(where: { !(1...256).contains($0.nonce.utf8.count) }) {
            throw StoreError(.invalidArgument, "a request nonce must be 1 to 256 bytes, not \(long.nonce.utf8.count)")
        }
        // Nonces past the window are swept at most once a second, not on every request.
        let sweep = nonceSweep.withLock { last -> Bool in
            guard oldestAccepted > last else { return false }
            last = oldestAccepted
            return true
        }
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
        try wrap { try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM dataset WHERE id = ?", arguments: [id]) }.map(Self.dataset(from:)) }
    }

    static func dataset(from row: Row) throws -> Dataset {
        let id: String = try row.decode(forColumn: "id")
        let schema: Data = try row.decode(forColumn: "schema"), hash: Data = try row.decode(forColumn: "schema_sha256")
        guard let publisher = KeyID(hex: try row.decode(forColumn: "publisher")) else { throw StoreError(.corrupt, "dataset \(id) has a malformed publisher") }
        let purposesText: String = try row.decode(forColumn: "purposes")
        guard case .array(let items)? = try? JSONParser.parse(Array(purposesText.utf8)) else {
            throw StoreError(.corrupt, "dataset \(id) has malformed purposes")
        }
        return Dataset(id: id, publisher: publisher, schema: Array(schema), schemaSHA256: Array(hash),
                       purposes: items.compactMap(\.stringValue), registered: try row.decode(forColumn: "registered"))
    }

    /// What a dataset's wrapped records key is bound to.
    static func datasetKeyBinding(_ id: String) -> [UInt8] { Array("dataset-key:\(id)".utf8) }

    /// All datasets, by id.
    public func datasets() throws -> [Dataset] {
        let ids: [String] = try wrap { try pool.read { db in try String.fetchAll(db, sql: "SELECT id FROM dataset ORDER BY id") } }
        return try ids.compactMap { try dataset($0) }
    }

    // MARK: Batches

    /// Stores a validated batch in one transaction: the batch row and its encrypted segments, or
    /// nothing. With an idempotency key already used for this dataset, returns the earlier batch
    /// (``Batch/replayed``) and stores nothing — unless the content differs, which is refused.
    public func appendBatch(dataset id: String, columns: [String], rows: [[String]], idempotencyKey: String?, now: UTCTime) throws -> Batch {
        try appendBatch(dataset: id, idempotencyKey: idempotencyKey, now: now) { emit in
            try emit(columns, [])
            for start in stride(from: 0, to: rows.count, by: Self.segmentRows) {
                try emit(columns, Array(rows[start..<min(rows.count, start + Self.segmentRows)]))
            }
        }
    }

    /// Stores a batch whose columns and rows `produce` hands over chunk by chunk (each sealed
    /// as segments as it arrives, so the batch is never held whole), in one transaction: a
    /// producer that throws leaves nothing stored. Every chunk names the same columns; the first
    /// may carry no rows. With an idempotency key already used, the rows are only hashed and
    /// compared, and the stored batch is answered.
    public func appendBatch(dataset id: String, idempotencyKey: String?, now: UTCTime,
                            produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void) throws -> Batch {
        if let idempotencyKey, !(1...200).contains(idempotencyKey.utf8.count) {
            throw StoreError(.invalidArgument, "an idempotency key must be 1 to 200 bytes")
        }
        let datasetKey = try self.datasetKey(id)
        /// The content hash: SHA-256 over the canonical columns, then each row's canonical array, each line-terminated.
        final class ContentHash {
            let hasher: SHA256Hasher
            var columns: [String]?
            init() throws { hasher = try SHA256Hasher() }
            private var line: [UInt8] = []
            func add(columns given: [String], rows: [[String]]) throws {
                if let columns {
                    guard columns == given else { throw StoreError(.invalidArgument, "every chunk of a batch must name the same columns") }
                } else {
                    columns = given
                    hash(given)
                }
                for row in rows { hash(row) }
            }
            /// Hashes one row as its canonical JSON array and a line feed.
            private func hash(_ row: [String]) {
                line.removeAll(keepingCapacity: true)
                CanonicalJSON.appendStringArray(row, to: &line)
                line.append(0x0A)
                hasher.update(line)
            }
        }
        return try wrap {
            try pool.write { db -> Batch in
                if let idempotencyKey, let existing = try Row.fetchOne(db, sql: "SELECT * FROM batch WHERE dataset = ? AND idempotency_key = ?",
                                                                       arguments: [id, idempotencyKey]) {
                    let contentHash = try ContentHash()
                    try produce { columns, rows in try contentHash.add(columns: columns, rows: rows) }
                    let hash = contentHash.hasher.finish()
                    let storedHash: Data = try existing.decode(forColumn: "content_sha256")
                    guard Array(storedHash) == hash else {
                        throw StoreError(.duplicate, "idempotency key \(idempotencyKey.prefix(60)) was used for a different batch of \(id)")
                    }
                    return Batch(dataset: id, sequence: try existing.decode(forColumn: "sequence"), records: try existing.decode(forColumn: "records"),
                                 idempotencyKey: idempotencyKey, contentSHA256: hash, replayed: true)
                }
                let sequence = (try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM batch WHERE dataset = ?", arguments: [id]) ?? 0) + 1
                try db.execute(sql: "INSERT INTO batch (dataset, sequence, records, idempotency_key, content_sha256, created) VALUES (?, ?, 0, ?, ?, ?)",
                               arguments: [id, sequence, idempotencyKey, Data(count: SHA256Hasher.digestLength), now])
                let contentHash = try ContentHash()
                var position = 0, records = 0
                var pending: [[String]] = []
                func seal(_ rows: [[String]]) throws {
                    // Canonical JSON of {"columns": [...], "rows": [[...], ...]}, written directly.
                    var plaintext = Array(#"{"columns":"#.utf8)
                    CanonicalJSON.appendStringArray(contentHash.columns ?? [], to: &plaintext)
                    plaintext += Array(#","rows":["#.utf8)
                    for (index, row) in rows.enumerated() {
                        if index > 0 { plaintext.append(UInt8(ascii: ",")) }
                        CanonicalJSON.appendStringArray(row, to: &plaintext)
                    }
                    plaintext += Array("]}".utf8)
                    let sealed = datasetKey.seal(plaintext, associatedData: Self.segmentBinding(id, sequence, position))
                    try db.execute(sql: "INSERT INTO segment (dataset, sequence, position, sealed) VALUES (?, ?, ?, ?)",
                                   arguments: [id, sequence, position, Data(sealed)])
                    position += 1
                }
                // The next chunk is read and validated on another thread while this one is sealed and stored.
                try ChunkHandoff.overlap(produce: produce) { columns, chunk in
                    try contentHash.add(columns: columns, rows: chunk)
                    records += chunk.count
                    pending += chunk
                    while pending.count >= Self.segmentRows {
                        try seal(Array(pending.prefix(Self.segmentRows)))
                        pending.removeFirst(Self.segmentRows)
                    }
                }
                if !pending.isEmpty || position == 0 { try seal(pending) }
                guard contentHash.columns != nil else { throw StoreError(.invalidArgument, "a batch needs its columns") }
                let hash = contentHash.hasher.finish()
                try db.execute(sql: "UPDATE batch SET records = ?, content_sha256 = ? WHERE dataset = ? AND sequence = ?",
                               arguments: [records, Data(hash), id, sequence])
                return Batch(dataset: id, sequence: sequence, records: records, idempotencyKey: idempotencyKey, contentSHA256: hash, replayed: false)
            }
        }
    }

    /// The dataset's records, batch by batch, segment by segment, each segment decrypted and checked.
    /// With `batches`, only those batches.
    public func records(of id: String, batches: Range<Int64>? = nil, handle: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws {
        let datasetKey = try self.datasetKey(id)
        let range = batches ?? 0..<Int64.max
        // One segment in memory at a time: the cursor reads the next only after `handle` returns.
        try wrap {
            try pool.read { db in
                let segments = try Row.fetchCursor(db, sql: "SELECT sequence, position, sealed FROM segment WHERE dataset = ? AND sequence >= ? AND sequence < ? ORDER BY sequence, position",
                                                   arguments: [id, range.lowerBound, range.upperBound])
                while let row = try segments.next() {
                    let (sequence, position, sealed): (Int64, Int, Data) =
                        (try row.decode(forColumn: "sequence"), try row.decode(forColumn: "position"), try row.decode(forColumn: "sealed"))
                    let plaintext: [UInt8]
                    do {
                        plaintext = try datasetKey.open(Array(sealed), associatedData: Self.segmentBinding(id, sequence, position))
                    } catch {
                        throw StoreError(.corrupt, "segment \(position) of batch \(sequence) of \(id) failed authentication")
                    }
                    guard let object = (try? JSONParser.parse(plaintext))?.objectValue,
                          case .array(let columnValues)? = object["columns"], case .array(let rowValues)? = object["rows"] else {
                        throw StoreError(.corrupt, "segment \(position) of batch \(sequence) of \(id) does not parse")
                    }
                    let columns = columnValues.compactMap(\.stringValue)
                    let rows: [[String]] = rowValues.map { value in
                        if case .array(let cells) = value { return cells.compactMap(\.stringValue) }
                        return []
                    }
                    try handle(columns, rows)
                }
            }
        }
    }

    private func datasetKey(_ id: String) throws -> SealedStorageKey {
        guard let wrapped = try wrap({ try pool.read { db in try Data.fetchOne(db, sql: "SELECT wrapped_key FROM dataset WHERE id = ?", arguments: [id]) } }) else {
            throw StoreError(.notFound, "dataset \(id) is not registered")
        }
        do {
            return try storageKey.unwrap(Array(wrapped), associatedData: Self.datasetKeyBinding(id))
        } catch {
            throw StoreError(.corrupt, "the key of dataset \(id) does not open with this store key")
        }
    }

    /// Associated data binding a segment to its place: moving it elsewhere makes it fail to open.
    static func segmentBinding(_ dataset: String, _ sequence: Int64, _ position: Int) -> [UInt8] {
        Array("segment:\(dataset):\(sequence):\(position)".utf8)
    }

    func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StoreError { throw error } catch let error as DatabaseError {
            throw StoreError(.database, "database: \(error.message ?? "\(error.resultCode)")")
        } catch is RowDecodingError {
            throw StoreError(.corrupt, "a stored row cannot be read: a column is missing, NULL or of the wrong type")
        }
    }
}
