import CivitasCrypto
import CivitasLog

/// A storage transaction on PostgreSQL. What it reads to change (an agreement, a feed) it locks
/// until the end; the first log entry it appends locks the log's head row, so that every node's
/// entries form one chain. Locks are always taken in that order: the agreement or feed, then the
/// head.
final class PostgresTransaction: StorageTransaction {
    let session: PostgresSession
    let storageKey: SealedStorageKey
    /// The log's head as this transaction leaves it, once it appended (nil before its first append).
    private var head: (frontier: MerkleFrontier, lastLeaf: MerkleDigest, lastTime: UTCTime?)?
    /// Consent events appended and not yet written: they go to the database in one statement.
    private var pendingConsent: [(consent: StoredConsent, recorded: String)] = []
    /// Most consent events held before they are written.
    static let consentBatch = 5_000

    init(session: PostgresSession, storageKey: SealedStorageKey) {
        self.session = session
        self.storageKey = storageKey
    }

    func participant(_ keyID: KeyID) throws -> Participant? {
        try session.row(StoredRecords.participantQuery(where: "WHERE p.key_id = $1"), [.text(keyID.hex)]).map(StoredRecords.participant(from:))
    }

    func participantKey(_ keyID: KeyID) throws -> ParticipantKey? {
        try session.row("SELECT * FROM participant_key WHERE key_id = $1", [.text(keyID.hex)]).map(StoredRecords.participantKey(from:))
    }

    func saveParticipantKey(_ key: ParticipantKey) throws {
        var values: [SQLValue] = [.text(key.keys.keyID.hex), .text(key.participant.hex), .text(key.keys.name)]
        values += [.bytes(key.keys.signingKey), .bytes(key.keys.encryptionKey), .time(key.requested)]
        values += [.time(key.approved), .time(key.retires)]
        _ = try session.execute("""
            INSERT INTO participant_key (key_id, participant, name, ed25519, x25519, requested, approved, retires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (key_id) DO UPDATE SET approved = excluded.approved, retires = excluded.retires
            """, values)
    }

    func insertParticipant(_ participant: Participant) throws {
        let keys = participant.keys
        let inserted = try session.execute("""
            INSERT INTO participant (key_id, name, role, ed25519, x25519, registered) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (key_id) DO NOTHING
            """, [.text(keys.keyID.hex), .text(keys.name), .text(participant.role.rawValue), .bytes(keys.signingKey),
                  .bytes(keys.encryptionKey), .time(participant.registered)])
        guard inserted == 1 else { throw StoreError(.duplicate, "participant \(keys.keyID) (\(keys.name)) is already registered") }
    }

    func dataset(_ id: String) throws -> Dataset? {
        try session.row("SELECT * FROM dataset WHERE id = $1", [.text(id)]).map(StoredRecords.dataset(from:))
    }

    func insertDataset(_ dataset: Dataset) throws {
        guard try session.row("SELECT 1 FROM participant WHERE key_id = $1", [.text(dataset.publisher.hex)]) != nil else {
            throw StoreError(.notFound, "publisher \(dataset.publisher) is not a registered participant")
        }
        let purposes = String(decoding: try CanonicalJSON.encode(.array(dataset.purposes.map(JSONValue.string))), as: UTF8.self)
        let wrapped = try Segments.newDatasetKey(dataset: dataset.id, storageKey: storageKey)
        let inserted = try session.execute("""
            INSERT INTO dataset (id, publisher, schema, schema_sha256, wrapped_key, purposes, registered) VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (id) DO NOTHING
            """, [.text(dataset.id), .text(dataset.publisher.hex), .bytes(dataset.schema), .bytes(dataset.schemaSHA256), .bytes(wrapped),
                  .text(purposes), .time(dataset.registered)])
        guard inserted == 1 else { throw StoreError(.duplicate, "dataset \(dataset.id) is already registered") }
    }

    func lastBatch(of dataset: String) throws -> Int64 {
        try session.row("SELECT COALESCE(MAX(sequence), 0) AS last FROM batch WHERE dataset = $1", [.text(dataset)])?.integer("last") ?? 0
    }

    func agreement(_ id: String) throws -> StoredAgreement {
        // Locked until the transaction ends: a budget is charged by one node at a time.
        guard let row = try session.row("SELECT * FROM agreement WHERE id = $1 FOR UPDATE", [.text(id)]) else {
            throw StoreError(.notFound, "agreement \(id) does not exist")
        }
        return try StoredRecords.agreement(from: row)
    }

    func insertAgreement(_ agreement: StoredAgreement) throws {
        let inserted = try session.execute("""
            INSERT INTO agreement (id, dataset, publisher, partner, policy, policy_sha256, offer_signature, accept_signature, state,
                                   valid_from, valid_until, budget_micro, spent_micro, offered, accepted, ended)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
            ON CONFLICT (id) DO NOTHING
            """, [.text(agreement.id), .text(agreement.dataset), .text(agreement.publisher.hex), .text(agreement.partner.hex),
                  .bytes(agreement.policy), .bytes(agreement.policySHA256), .bytes(agreement.offerSignature), .bytes(agreement.acceptSignature),
                  .text(agreement.state.rawValue), .time(agreement.validFrom), .time(agreement.validUntil),
                  .integer(try StoredRecords.storable(agreement.budgetMicro)), .integer(try StoredRecords.storable(agreement.spentMicro)),
                  .time(agreement.offered), .time(agreement.accepted), .time(agreement.ended)])
        guard inserted == 1 else { throw StoreError(.duplicate, "agreement \(agreement.id) already exists") }
    }

    func updateAgreement(_ agreement: StoredAgreement) throws {
        let changed = try session.execute("UPDATE agreement SET state = $1, accept_signature = $2, accepted = $3, ended = $4, spent_micro = $5 WHERE id = $6",
                                          [.text(agreement.state.rawValue), .bytes(agreement.acceptSignature), .time(agreement.accepted),
                                           .time(agreement.ended), .integer(try StoredRecords.storable(agreement.spentMicro)), .text(agreement.id)])
        guard changed == 1 else { throw StoreError(.notFound, "agreement \(agreement.id) does not exist") }
    }

    func appendConsent(_ consent: StoredConsent, now: UTCTime) throws {
        // A request's events share one time: its text is made once.
        let recorded = pendingConsent.last.flatMap { $0.recorded == now.rfc3339 ? $0.recorded : nil } ?? now.rfc3339
        // One statement writes events of one request entry.
        if let last = pendingConsent.last, last.consent.logIndex != consent.logIndex { try writeConsent() }
        pendingConsent.append((consent, recorded))
        if pendingConsent.count >= Self.consentBatch { try writeConsent() }
    }

    /// Writes the consent events appended so far, in order, in one statement.
    private func writeConsent() throws {
        guard !pendingConsent.isEmpty else { return }
        let events = pendingConsent
        pendingConsent.removeAll(keepingCapacity: true)
        try session.execute("""
            INSERT INTO consent_event (dataset, subject, purpose, granted, record, recorded, log_index)
            SELECT *, $7::bigint FROM unnest($1::text[], $2::bytea[], $3::text[], $4::boolean[], $5::bytea[], $6::text[])
            """, [.texts(events.map(\.consent.dataset)), .byteStrings(events.map(\.consent.subject)), .texts(events.map(\.consent.purpose)),
                  .flags(events.map(\.consent.granted)), .byteStrings(events.map(\.consent.record)), .texts(events.map(\.recorded)),
                  .integer(events.first?.consent.logIndex.map { Int64($0) })])
    }

    func feed(_ id: String) throws -> Feed {
        // Locked until the transaction ends: a window is taken by one node at a time.
        guard let row = try session.row("SELECT * FROM feed WHERE id = $1 FOR UPDATE", [.text(id)]) else {
            throw StoreError(.notFound, "feed \(id) does not exist")
        }
        return try StoredRecords.feed(from: row)
    }

    func insertFeed(_ feed: Feed) throws {
        let inserted = try session.execute("""
            INSERT INTO feed (id, agreement, purpose, next_batch, delivered, acknowledged, webhook, pushed, created)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING
            """, [.text(feed.id), .text(feed.agreement), .text(feed.purpose), .integer(feed.nextBatch), .integer(feed.delivered),
                  .integer(feed.acknowledged), .text(feed.webhook), .integer(feed.pushed), .time(feed.created)])
        guard inserted == 1 else { throw StoreError(.duplicate, "feed \(feed.id) already exists") }
    }

    func updateFeed(_ feed: Feed) throws {
        let changed = try session.execute("UPDATE feed SET next_batch = $1, delivered = $2, acknowledged = $3, pushed = $4 WHERE id = $5",
                                          [.integer(feed.nextBatch), .integer(feed.delivered), .integer(feed.acknowledged),
                                           .integer(feed.pushed), .text(feed.id)])
        guard changed == 1 else { throw StoreError(.notFound, "feed \(feed.id) does not exist") }
    }

    func appendLogEntry(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> ExchangeLog.PreparedEntry {
        var current = try lockedHead()
        // Entries never go back in time, whichever node's clock wrote the one before.
        let time = max(time, current.lastTime ?? time)
        let entry = try ExchangeLog.prepare(index: current.frontier.size, previous: current.lastLeaf, time: time.rfc3339, type: type, members: members)
        try session.execute("INSERT INTO log_entry (position, bytes, leaf) VALUES ($1, $2, $3)",
                            [.integer(Int64(entry.entry.index)), .bytes(entry.bytes), .bytes(entry.leafHash)])
        current.frontier.append(leafHash: entry.leafHash)
        current.lastLeaf = entry.leafHash
        current.lastTime = time
        head = current
        return entry
    }

    /// The log's head, locked by the first append of this transaction.
    private func lockedHead() throws -> (frontier: MerkleFrontier, lastLeaf: MerkleDigest, lastTime: UTCTime?) {
        if let head { return head }
        guard let row = try session.row("SELECT size, last_leaf, last_time, frontier FROM log_head FOR UPDATE") else {
            throw StoreError(.corrupt, "the exchange log has no head row")
        }
        let size = try StoredRecords.unsigned(row.integer("size"))
        // An empty log has no last time; any other is the last entry's.
        let lastTime = try row.text("last_time").isEmpty ? nil : try row.time("last_time")
        let locked = (frontier: try MerkleFrontier(size: size, encoded: try row.bytes("frontier")), lastLeaf: try row.bytes("last_leaf"),
                      lastTime: lastTime)
        head = locked
        return locked
    }

    /// Writes what waits to be written: the consent events, then the log's head as the appended
    /// entries left it (the store calls this just before commit).
    func finish() throws {
        try writeConsent()
        guard let head else { return }
        try session.execute("UPDATE log_head SET size = $1, last_leaf = $2, last_time = $3, frontier = $4",
                            [.integer(Int64(head.frontier.size)), .bytes(head.lastLeaf), .time(head.lastTime), .bytes(head.frontier.encoded)])
    }

    func insertDelivery(_ delivery: Delivery) throws {
        try session.execute("""
            INSERT INTO delivery (id, agreement, partner, kind, feed, feed_sequence, log_index, records, envelope, created)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            """, [.text(delivery.id), .text(delivery.agreement), .text(delivery.partner.hex), .text(delivery.kind.rawValue), .text(delivery.feed),
                  .integer(delivery.feedSequence), .integer(Int64(delivery.logIndex)), .integer(Int64(delivery.records)),
                  .bytes(delivery.envelope), .time(delivery.created)])
    }

    func recordDrawnBatches(_ batches: [Int64], dataset: String, partner: KeyID, delivery: String) throws {
        for sequence in batches {
            let inserted = try session.execute("""
                INSERT INTO drawn_batch (partner, dataset, sequence, delivery) VALUES ($1, $2, $3, $4)
                ON CONFLICT (partner, dataset, sequence) DO NOTHING
                """, [.text(partner.hex), .text(dataset), .integer(sequence), .text(delivery)])
            guard inserted == 1 else { throw StoreError(.superseded, "batch \(sequence) of \(dataset) was delivered to this partner meanwhile") }
        }
    }

    func announceWindow(feed: String) throws {
        // Delivered to every listening connection when the transaction commits, never before.
        try session.rows("SELECT pg_notify($1, $2)", [.text(PostgresStore.windowChannel), .text(feed)])
    }

    func insertRequestKey(_ key: RequestKey) throws {
        let inserted = try session.execute("""
            INSERT INTO request_key (partner, key, request_sha256, delivery, figures, created) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (partner, key) DO NOTHING
            """, [.text(key.partner.hex), .text(key.key), .bytes(key.requestSHA256), .text(key.delivery), .bytes(key.figures), .time(key.created)])
        guard inserted == 1 else { throw StoreError(.duplicate, "request key \(key.key.prefix(60)) was already used by this partner") }
    }

    func deleteWebTokens(expiredBefore time: UTCTime) throws {
        try session.execute("DELETE FROM web_token WHERE expires < $1", [.time(time)])
    }

    func countRefusal(agreement: String, code: String, at time: UTCTime) throws {
        try session.execute("""
            INSERT INTO refusal (agreement, code, count, last) VALUES ($1, $2, 1, $3)
            ON CONFLICT (agreement, code) DO UPDATE SET count = refusal.count + 1, last = excluded.last
            """, [.text(agreement), .text(code), .time(time)])
    }

    func insertWebToken(_ token: WebToken) throws {
        try session.execute("INSERT INTO web_token (sha256, kind, participant, created, expires, ended) VALUES ($1, $2, $3, $4, $5, $6)",
                            [.bytes(token.sha256), .text(token.kind.rawValue), .text(token.participant.hex), .time(token.created),
                             .time(token.expires), .time(token.ended)])
    }

    func endWebToken(sha256: [UInt8], at time: UTCTime) throws -> Bool {
        try session.execute("UPDATE web_token SET ended = $1 WHERE sha256 = $2 AND ended IS NULL", [.time(time), .bytes(sha256)]) == 1
    }

    func datasetQuality(_ dataset: String) throws -> [UInt8]? {
        try session.row("SELECT counts FROM dataset_quality WHERE dataset = $1 FOR UPDATE", [.text(dataset)]).map { try $0.bytes("counts") }
    }

    func saveDatasetQuality(_ dataset: String, counts: [UInt8]) throws {
        try session.execute("""
            INSERT INTO dataset_quality (dataset, counts) VALUES ($1, $2) ON CONFLICT (dataset) DO UPDATE SET counts = excluded.counts
            """, [.text(dataset), .bytes(counts)])
    }

    func insertConsentKey(_ key: ConsentKey) throws {
        let inserted = try session.execute("""
            INSERT INTO consent_key (recorder, key, request_sha256, log_index, created) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (recorder, key) DO NOTHING
            """, [.text(key.recorder.hex), .text(key.key), .bytes(key.requestSHA256), .integer(Int64(key.logIndex)), .time(key.created)])
        guard inserted == 1 else { throw StoreError(.duplicate, "consent request key \(key.key.prefix(60)) was already used by this recorder") }
    }
}
