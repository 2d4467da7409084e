import CivitasCrypto
import CivitasLog
import Foundation
import PostgresNIO
import Synchronization

/// The broker's state on PostgreSQL, shared by every broker node that opens the same database:
/// the same records, encryption and log as ``BrokerStore``, with the database as the one
/// sequencer of the log. A node appends under the log's head row, locked in the same
/// transaction as the change it records; its in-memory tree is only a cache for proofs,
/// extended from the database when others have appended.
public final class PostgresStore: BrokerStorage, Sendable {
    let connections: PostgresConnections
    let storageKey: SealedStorageKey
    /// This node's copy of the log's tree, behind a lock; entries others appended are read in on demand.
    let cachedLog: LockedLog
    /// When this node last swept expired nonces.
    let nonceSweep = NonceSweep()
    /// How many times a transaction that lost a race with another node (deadlock, serialization) is run.
    static let attempts = 5
    /// The notification channel of window announcements.
    static let windowChannel = "civitas_feed_windows"
    /// Who listens for them, stopped with the store.
    private let listeners = Mutex<[PostgresWindowListener]>([])

    /// Opens the database at `location`, applies migrations (once, whichever node gets there
    /// first) and checks the stored log. `logOrigin` names the exchange log; it is fixed when the
    /// database is first used. At most `connections` are open at once.
    public init(location: PostgresLocation, storageKey: SealedStorageKey, logOrigin: String = BrokerStore.defaultLogOrigin,
                connections limit: Int = 16) throws {
        connections = PostgresConnections(location: location, limit: limit)
        self.storageKey = storageKey
        try connections.withConnection { session in _ = try PostgresMigrations.migrate(session) }
        cachedLog = LockedLog(try Self.loadLog(connections, origin: logOrigin))
    }

    /// Creates the empty database `name` (lower-case letters, digits and `_`, at most 63) on the
    /// server of `server`, as `createdb` would, for a new broker.
    public static func createDatabase(_ name: String, at server: PostgresLocation) throws {
        guard (1...63).contains(name.utf8.count), name.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }) else {
            throw StoreError(.invalidArgument, "a database name is 1 to 63 lower-case letters, digits or _")
        }
        try mapped { try PostgresConnections(location: server, limit: 1).withConnection { try $0.execute("CREATE DATABASE \(name)") } }
    }

    deinit {
        for listener in listeners.withLock({ $0 }) { listener.stop() }
    }

    /// Names of the migrations applied to this database, in order.
    public func appliedMigrations() throws -> [String] {
        try withSession { session in try session.rows("SELECT name FROM schema_migration ORDER BY name").map { try $0.text("name") } }
    }

    // MARK: Running statements

    /// Runs `body` on a connection of its own, with database failures as store errors.
    func withSession<T>(_ body: (PostgresSession) throws -> T) throws -> T {
        try Self.mapped { try connections.withConnection(body) }
    }

    /// Runs `body` on one connection in one transaction that sees the database as it was when the
    /// transaction began (what others commit meanwhile stays invisible), read only.
    func snapshot<T>(_ body: (PostgresSession) throws -> T) throws -> T {
        try withSession { session in try session.inSnapshot { try body(session) } }
    }

    /// Database and decoding failures as store errors.
    static func mapped<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StoreError { throw error } catch let error as PSQLError {
            throw PostgresSession.storeError(error)
        } catch is PostgresDecodingError {
            throw StoreError(.corrupt, "a stored row cannot be read: a column is missing, NULL or of the wrong type")
        }
    }

    // MARK: Changes

    /// Runs `body` in ONE transaction: whatever it writes and appends to the log commits together,
    /// or nothing does. Rows it changes are locked by what it reads of them (the agreement, then
    /// the log's head); a transaction that loses a race with another node is run again, a few
    /// times, then refused as `contended`.
    public func transaction<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        var attempt = 1
        while true {
            do {
                return try withSession { session in
                    try session.inTransaction {
                        let transaction = PostgresTransaction(session: session, storageKey: storageKey)
                        let value = try body(transaction)
                        try transaction.finish()
                        return value
                    }
                }
            } catch let error as StoreError where error.code == .contended && attempt < Self.attempts {
                // Another node holds the same rows: wait a little, longer each time, and run it again.
                attempt += 1
                usleep(UInt32.random(in: 2_000...10_000) * UInt32(attempt))
            }
        }
    }

    // MARK: Secrets

    /// A secret kept wrapped by the storage key, created (32 random bytes) by whichever node asks first.
    /// The caller wipes the returned bytes.
    public func secret(named name: String) throws -> [UInt8] {
        let associatedData = Array("store-secret:\(name)".utf8)
        var fresh = Sodium.randomBytes(32)
        defer { Sodium.wipe(&fresh) }
        let wrapped = try withSession { session -> [UInt8] in
            try session.execute("INSERT INTO store_secret (name, wrapped) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                                [.text(name), .bytes(storageKey.seal(fresh, associatedData: associatedData))])
            guard let row = try session.row("SELECT wrapped FROM store_secret WHERE name = $1", [.text(name)]) else {
                throw StoreError(.corrupt, "the store secret \(name) was not kept")
            }
            return try row.bytes("wrapped")
        }
        do { return try storageKey.open(wrapped, associatedData: associatedData) } catch {
            throw StoreError(.corrupt, "the store secret \(name) does not open with this storage key")
        }
    }

    // MARK: Participants and nonces

    public func participant(_ keyID: KeyID) throws -> Participant? {
        try withSession { try $0.row(StoredRecords.participantQuery(where: "WHERE p.key_id = $1"), [.text(keyID.hex)]).map(StoredRecords.participant(from:)) }
    }

    public func participants() throws -> [Participant] {
        try withSession { try $0.rows(StoredRecords.participantQuery(where: "ORDER BY p.name")).map(StoredRecords.participant(from:)) }
    }

    public func participantKey(_ keyID: KeyID) throws -> ParticipantKey? {
        try withSession { try $0.row("SELECT * FROM participant_key WHERE key_id = $1", [.text(keyID.hex)]).map(StoredRecords.participantKey(from:)) }
    }

    public func pendingParticipantKeys() throws -> [ParticipantKey] {
        try withSession { try $0.rows("SELECT * FROM participant_key WHERE approved IS NULL ORDER BY requested, key_id").map(StoredRecords.participantKey(from:)) }
    }

    public func recordNonces(_ nonces: [RequestNonce], oldestAccepted: Int64) throws -> [Bool] {
        try NonceSweep.check(nonces)
        let sweep = nonceSweep.due(oldestAccepted: oldestAccepted)
        return try withSession { session in
            try session.inTransaction {
                if sweep { try session.execute("DELETE FROM request_nonce WHERE created < $1", [.integer(oldestAccepted)]) }
                // A nonce seen within the window by any node stays; one seen before it (not swept yet) is taken anew.
                return try nonces.map { nonce in
                    try session.execute("""
                        INSERT INTO request_nonce (key_id, nonce, created) VALUES ($1, $2, $3)
                        ON CONFLICT (key_id, nonce) DO UPDATE SET created = excluded.created WHERE request_nonce.created < $4
                        """, [.text(nonce.keyID), .text(nonce.nonce), .integer(nonce.created), .integer(oldestAccepted)]) == 1
                }
            }
        }
    }

    // MARK: Datasets and batches

    public func dataset(_ id: String) throws -> Dataset? {
        try withSession { try $0.row("SELECT * FROM dataset WHERE id = $1", [.text(id)]).map(StoredRecords.dataset(from:)) }
    }

    public func datasets() throws -> [Dataset] {
        try withSession { try $0.rows("SELECT * FROM dataset ORDER BY id").map(StoredRecords.dataset(from:)) }
    }

    public func appendBatch(dataset id: String, idempotencyKey: String?, bodySHA256: [UInt8]?, now: UTCTime,
                            produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void,
                            quality: (_ stored: [UInt8]?) throws -> [UInt8]?) throws -> Batch {
        try Segments.checkIdempotencyKey(idempotencyKey)
        let datasetKey = try self.datasetKey(id)
        let (stored, existingHash) = try withSession { session in
            try session.inTransaction { () -> (Batch, [UInt8]?) in
                // The dataset's row is the lock that numbers its batches one after another, across nodes.
                try session.rows("SELECT 1 FROM dataset WHERE id = $1 FOR UPDATE", [.text(id)])
                if let idempotencyKey, let existing = try session.row("SELECT * FROM batch WHERE dataset = $1 AND idempotency_key = $2",
                                                                      [.text(id), .text(idempotencyKey)]) {
                    let hash = try Segments.contentHash(produce: produce)
                    return (Batch(dataset: id, sequence: try existing.integer("sequence"), records: Int(try existing.integer("records")),
                                  idempotencyKey: idempotencyKey, contentSHA256: hash, replayed: true), try existing.bytes("content_sha256"))
                }
                let sequence = try session.row("SELECT COALESCE(MAX(sequence), 0) + 1 AS next FROM batch WHERE dataset = $1", [.text(id)])?.integer("next") ?? 1
                try session.execute("INSERT INTO batch (dataset, sequence, records, idempotency_key, content_sha256, body_sha256, created) VALUES ($1, $2, 0, $3, $4, $5, $6)",
                                    [.text(id), .integer(sequence), .text(idempotencyKey), .bytes([UInt8](repeating: 0, count: SHA256Hasher.digestLength)),
                                     .bytes(bodySHA256), .time(now)])
                let (records, hash) = try Segments.seal(dataset: id, sequence: sequence, key: datasetKey, produce: produce) { position, sealed in
                    try session.execute("INSERT INTO segment (dataset, sequence, position, sealed) VALUES ($1, $2, $3, $4)",
                                        [.text(id), .integer(sequence), .integer(Int64(position)), .bytes(sealed)])
                }
                try session.execute("UPDATE batch SET records = $1, content_sha256 = $2 WHERE dataset = $3 AND sequence = $4",
                                    [.integer(Int64(records)), .bytes(hash), .text(id), .integer(sequence)])
                // Under the dataset's lock: the quality counts move with the batch, on every node.
                let stored = try session.row("SELECT counts FROM dataset_quality WHERE dataset = $1", [.text(id)]).map { try $0.bytes("counts") }
                if let counts = try quality(stored) {
                    try session.execute("""
                        INSERT INTO dataset_quality (dataset, counts) VALUES ($1, $2) ON CONFLICT (dataset) DO UPDATE SET counts = excluded.counts
                        """, [.text(id), .bytes(counts)])
                }
                return (Batch(dataset: id, sequence: sequence, records: records, idempotencyKey: idempotencyKey, contentSHA256: hash, replayed: false), nil)
            }
        }
        // The same key for other content answers nothing stored.
        if let existingHash, existingHash != stored.contentSHA256 {
            throw StoreError(.duplicate, "idempotency key \(idempotencyKey?.prefix(60) ?? "") was used for a different batch of \(id)")
        }
        return stored
    }

    public func uploadedBatch(dataset id: String, idempotencyKey: String, bodySHA256: [UInt8]) throws -> Batch? {
        try withSession { session in
            try session.row("SELECT sequence, records, content_sha256 FROM batch WHERE dataset = $1 AND idempotency_key = $2 AND body_sha256 = $3",
                            [.text(id), .text(idempotencyKey), .bytes(bodySHA256)]).map { row in
                Batch(dataset: id, sequence: try row.integer("sequence"), records: Int(try row.integer("records")),
                      idempotencyKey: idempotencyKey, contentSHA256: try row.bytes("content_sha256"), replayed: true)
            }
        }
    }

    public func batchSequence(dataset id: String, idempotencyKey: String) throws -> Int64? {
        try withSession { session in
            try session.row("SELECT sequence FROM batch WHERE dataset = $1 AND idempotency_key = $2", [.text(id), .text(idempotencyKey)])
                .map { try $0.integer("sequence") }
        }
    }

    public func batches(of dataset: String, from sequence: Int64) throws -> [BatchSummary] {
        try withSession {
            try $0.rows("SELECT sequence, records, created FROM batch WHERE dataset = $1 AND sequence >= $2 ORDER BY sequence",
                        [.text(dataset), .integer(sequence)]).map(StoredRecords.batchSummary(from:))
        }
    }

    /// Segments read per statement: a few at a time, so a release holds little more than one.
    static let segmentsPerPage: Int64 = 4

    public func recordChunks(of id: String, batches: Range<Int64>?, handle: (RecordChunk) throws -> Void) throws {
        let datasetKey = try self.datasetKey(id)
        let range = batches ?? 0..<Int64.max
        // One snapshot: batches others commit meanwhile are not read half.
        try snapshot { session in
            var after: (sequence: Int64, position: Int64) = (range.lowerBound - 1, Int64.max)
            while true {
                let page = try session.rows("""
                    SELECT sequence, position, sealed FROM segment
                    WHERE dataset = $1 AND (sequence, position) > ($2, $3) AND sequence < $4
                    ORDER BY sequence, position LIMIT $5
                    """, [.text(id), .integer(after.sequence), .integer(after.position), .integer(range.upperBound), .integer(Self.segmentsPerPage)])
                for row in page {
                    after = (try row.integer("sequence"), try row.integer("position"))
                    try handle(try Segments.open(try row.bytes("sealed"), key: datasetKey, dataset: id, sequence: after.sequence, position: Int(after.position)))
                }
                if page.count < Int(Self.segmentsPerPage) { return }
            }
        }
    }

    private func datasetKey(_ id: String) throws -> SealedStorageKey {
        guard let wrapped = try withSession({ try $0.row("SELECT wrapped_key FROM dataset WHERE id = $1", [.text(id)])?.bytes("wrapped_key") }) else {
            throw StoreError(.notFound, "dataset \(id) is not registered")
        }
        return try Segments.datasetKey(wrapped, dataset: id, storageKey: storageKey)
    }

    // MARK: Agreements and consent

    public func agreement(_ id: String) throws -> StoredAgreement? {
        try withSession { try $0.row("SELECT * FROM agreement WHERE id = $1", [.text(id)]).map(StoredRecords.agreement(from:)) }
    }

    public func agreements(involving participant: KeyID?) throws -> [StoredAgreement] {
        try withSession { session in
            if let participant {
                return try session.rows("SELECT * FROM agreement WHERE publisher = $1 OR partner = $1 ORDER BY id", [.text(participant.hex)])
                    .map(StoredRecords.agreement(from:))
            }
            return try session.rows("SELECT * FROM agreement ORDER BY id").map(StoredRecords.agreement(from:))
        }
    }

    /// Consent events read per statement.
    static let consentPage: Int64 = 50_000

    public func consentStates(dataset: String, purpose: String) throws -> [SubjectDigest: Bool] {
        try snapshot { session in
            var states: [SubjectDigest: Bool] = [:]
            var after: Int64 = 0
            // Events in the order they were recorded: a subject's last one is its state.
            while true {
                let page = try session.rows("""
                    SELECT id, subject, granted FROM consent_event WHERE dataset = $1 AND purpose = $2 AND id > $3 ORDER BY id LIMIT $4
                    """, [.text(dataset), .text(purpose), .integer(after), .integer(Self.consentPage)])
                for row in page {
                    after = try row.integer("id")
                    let subject = try row.bytes("subject")
                    guard let digest = SubjectDigest(subject) else {
                        throw StoreError(.corrupt, "a consent record of \(dataset) holds a subject hash of \(subject.count) bytes, not 32")
                    }
                    states[digest] = try row.flag("granted")
                }
                if page.count < Int(Self.consentPage) { return states }
            }
        }
    }

    // MARK: Deliveries and feeds

    public func drawnBatches(partner: KeyID, dataset: String) throws -> Set<Int64> {
        try withSession {
            Set(try $0.rows("SELECT sequence FROM drawn_batch WHERE partner = $1 AND dataset = $2", [.text(partner.hex), .text(dataset)])
                .map { try $0.integer("sequence") })
        }
    }

    public func delivery(_ id: String) throws -> Delivery? {
        try withSession { try $0.row("SELECT * FROM delivery WHERE id = $1", [.text(id)]).map { try StoredRecords.delivery(from: $0) } }
    }

    public func deliveryCounts() throws -> [Delivery.Kind: Int] {
        try withSession { session in
            var counts: [Delivery.Kind: Int] = [:]
            for row in try session.rows("SELECT kind, COUNT(*) AS n FROM delivery GROUP BY kind") {
                guard let kind = Delivery.Kind(rawValue: try row.text("kind")) else { throw StoreError(.corrupt, "a delivery has an unknown kind") }
                counts[kind] = Int(try row.integer("n"))
            }
            return counts
        }
    }

    public func deliveryEnvelope(_ id: String) throws -> DeliveryEnvelope? {
        try withSession { session in
            try session.row("SELECT partner, log_index, octet_length(envelope)::bigint AS bytes FROM delivery WHERE id = $1", [.text(id)]).map { row in
                DeliveryEnvelope(delivery: id, partner: try row.keyID("partner"), logIndex: try StoredRecords.unsigned(row.integer("log_index")),
                                 byteCount: Int(try row.integer("bytes")))
            }
        }
    }

    public func readEnvelope(of id: String, pieceSize: Int, _ each: (UnsafeRawBufferPointer) throws -> Bool) throws {
        guard pieceSize > 0 else { throw StoreError(.invalidArgument, "a piece of an envelope is at least one byte") }
        try snapshot { session in
            guard let total = try session.row("SELECT octet_length(envelope)::bigint AS bytes FROM delivery WHERE id = $1", [.text(id)])?.integer("bytes") else {
                throw StoreError(.notFound, "no delivery \(id)")
            }
            // The envelope is stored out of line uncompressed: each piece reads only its own part.
            var offset: Int64 = 0
            while offset < total {
                let count = min(Int64(pieceSize), total - offset)
                guard let piece = try session.row("SELECT substring(envelope FROM $2::integer FOR $3::integer) AS piece FROM delivery WHERE id = $1",
                                                  [.text(id), .integer(offset + 1), .integer(count)])?.bytes("piece"), piece.count == Int(count) else {
                    throw StoreError(.corrupt, "the envelope of delivery \(id) ends before byte \(offset + count)")
                }
                offset += count
                guard try piece.withUnsafeBytes(each) else { return }
            }
        }
    }

    public func requestKey(partner: KeyID, key: String) throws -> RequestKey? {
        try withSession {
            try $0.row("SELECT * FROM request_key WHERE partner = $1 AND key = $2", [.text(partner.hex), .text(key)])
                .map { try StoredRecords.requestKey(from: $0, partner: partner, key: key) }
        }
    }

    public func deliverySummaries(agreement: String, limit: Int) throws -> [DeliverySummary] {
        try withSession {
            try $0.rows("SELECT id, kind, feed_sequence, log_index, records, created FROM delivery WHERE agreement = $1 ORDER BY log_index DESC LIMIT $2",
                        [.text(agreement), .integer(Int64(limit))]).map(StoredRecords.deliverySummary(from:))
        }
    }

    public func refusals(agreement: String) throws -> [RefusalCount] {
        try withSession {
            try $0.rows("SELECT code, count, last FROM refusal WHERE agreement = $1 ORDER BY code", [.text(agreement)]).map(StoredRecords.refusalCount(from:))
        }
    }

    public func webToken(sha256: [UInt8]) throws -> WebToken? {
        try withSession { try $0.row("SELECT * FROM web_token WHERE sha256 = $1", [.bytes(sha256)]).map(StoredRecords.webToken(from:)) }
    }

    public func consentKey(recorder: KeyID, key: String) throws -> ConsentKey? {
        try withSession {
            try $0.row("SELECT * FROM consent_key WHERE recorder = $1 AND key = $2", [.text(recorder.hex), .text(key)])
                .map { try StoredRecords.consentKey(from: $0, recorder: recorder, key: key) }
        }
    }

    public func datasetQuality(_ dataset: String) throws -> [UInt8]? {
        try withSession { try $0.row("SELECT counts FROM dataset_quality WHERE dataset = $1", [.text(dataset)]).map { try $0.bytes("counts") } }
    }

    public func consentRecords(logIndex: UInt64) throws -> [[UInt8]] {
        try withSession {
            try $0.rows("SELECT record FROM consent_event WHERE log_index = $1 ORDER BY id", [.integer(Int64(logIndex))]).map { try $0.bytes("record") }
        }
    }

    public func deliveries(feed: String, after sequence: Int64, limit: Int) throws -> [Delivery] {
        try withSession {
            try $0.rows("SELECT * FROM delivery WHERE feed = $1 AND feed_sequence > $2 ORDER BY feed_sequence LIMIT $3",
                        [.text(feed), .integer(sequence), .integer(Int64(limit))]).map { try StoredRecords.delivery(from: $0) }
        }
    }

    public func feed(_ id: String) throws -> Feed? {
        try withSession { try $0.row("SELECT * FROM feed WHERE id = $1", [.text(id)]).map(StoredRecords.feed(from:)) }
    }

    public func feeds() throws -> [Feed] {
        try withSession { try $0.rows("SELECT * FROM feed ORDER BY id").map(StoredRecords.feed(from:)) }
    }

    public func watchWindows(_ handler: @escaping @Sendable (_ feed: String) -> Void) throws {
        let listener = try PostgresWindowListener(connections: connections, channel: Self.windowChannel, handler: handler)
        listeners.withLock { $0.append(listener) }
    }

    // MARK: Scheduled work

    public func claimWork(_ name: String, holder: String, seconds: Int) throws -> Bool {
        try WorkLease.check(name: name, holder: holder, seconds: seconds)
        return try withSession { session in
            try session.execute("""
                INSERT INTO work_lease (name, holder, until) VALUES ($1, $2, now() + make_interval(secs => $3))
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                WHERE work_lease.until <= now() OR work_lease.holder = excluded.holder
                """, [.text(name), .text(holder), .integer(Int64(seconds))]) == 1
        }
    }

    public func releaseWork(_ name: String, holder: String) throws {
        try withSession { session in _ = try session.execute("DELETE FROM work_lease WHERE name = $1 AND holder = $2", [.text(name), .text(holder)]) }
    }
}
