import CivitasCrypto
import CivitasLog
import Foundation
import GRDB

/// Reads and writes inside one storage transaction (``BrokerStorage/transaction(_:)``): rows as
/// they are now, locked against other writers until the transaction ends; whatever is written
/// and appended to the log commits together, or nothing does. It persists what it is given and
/// decides nothing: the broker checks every rule before it writes.
public protocol StorageTransaction: AnyObject {
    // MARK: Participants and datasets
    /// The participant with this key id, if registered.
    func participant(_ keyID: KeyID) throws -> Participant?
    /// Stores a participant; refuses (`duplicate`) a key id already stored.
    func insertParticipant(_ participant: Participant) throws
    func participantKey(_ keyID: KeyID) throws -> ParticipantKey?
    /// Inserts a participant key, or updates when it was approved and when it retires.
    func saveParticipantKey(_ key: ParticipantKey) throws
    /// The dataset with this id, if registered.
    func dataset(_ id: String) throws -> Dataset?
    /// Stores a dataset with a fresh records key; refuses (`duplicate`) an id already stored and
    /// (`notFound`) a publisher that is not.
    func insertDataset(_ dataset: Dataset) throws
    /// The dataset's highest batch sequence (0 before its first batch).
    func lastBatch(of dataset: String) throws -> Int64

    // MARK: Agreements and consent
    /// The agreement, as stored now; `notFound` if there is none.
    func agreement(_ id: String) throws -> StoredAgreement
    /// Stores a new agreement; refuses (`duplicate`) an id already stored.
    func insertAgreement(_ agreement: StoredAgreement) throws
    /// Stores what may change of an agreement: its state, acceptance, end and spent budget.
    func updateAgreement(_ agreement: StoredAgreement) throws
    /// Appends a consent event (every one is kept); a subject's latest event for a dataset and purpose is its state.
    func appendConsent(_ consent: StoredConsent, now: UTCTime) throws

    // MARK: Feeds, deliveries and the log
    /// The feed, as stored now; `notFound` if there is none.
    func feed(_ id: String) throws -> Feed
    /// Stores a new feed; refuses (`duplicate`) an id already stored.
    func insertFeed(_ feed: Feed) throws
    /// Stores what may change of a feed: its next batch and its delivered, acknowledged and pushed sequences.
    func updateFeed(_ feed: Feed) throws
    /// Appends a log entry; returns it with its canonical bytes and leaf hash.
    func appendLogEntry(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> ExchangeLog.PreparedEntry
    /// Stores a delivery and its envelope.
    func insertDelivery(_ delivery: Delivery) throws
    /// Records that `delivery` drew these batches of `dataset` for `partner`; each batch at most
    /// once per partner and dataset (a second draw is refused as `superseded`).
    func recordDrawnBatches(_ batches: [Int64], dataset: String, partner: KeyID, delivery: String) throws
    /// Stores a partner's idempotency key with the delivery it made; refuses (`duplicate`) a key
    /// the partner already used.
    func insertRequestKey(_ key: RequestKey) throws
    /// Stores a recorder's consent idempotency key with the entry its request made; refuses
    /// (`duplicate`) a key the recorder already used.
    func insertConsentKey(_ key: ConsentKey) throws
    /// Stores a login link or a session.
    func insertWebToken(_ token: WebToken) throws
    /// Removes the login links and sessions that expired before `time` (RFC 3339 times compare as text).
    func deleteWebTokens(expiredBefore time: UTCTime) throws
    /// Counts one refusal of a request under `agreement` for `code`, at `time`.
    func countRefusal(agreement: String, code: String, at time: UTCTime) throws
    /// Ends the token with this SHA-256 at `time` if it has not ended; true when this call ended it
    /// (so two calls racing to use one login link cannot both succeed).
    func endWebToken(sha256: [UInt8], at time: UTCTime) throws -> Bool
    /// Tells every other process on the same database, once this transaction commits, that a
    /// window of `feed` was delivered (see ``BrokerStorage/watchWindows(_:)``).
    func announceWindow(feed: String) throws
    /// The data-quality counts kept for a dataset, read inside the transaction (to update them).
    func datasetQuality(_ dataset: String) throws -> [UInt8]?
    /// Stores a dataset's data-quality counts, replacing what was stored.
    func saveDatasetQuality(_ dataset: String, counts: [UInt8]) throws
}

extension StorageTransaction {
    /// Appends a log entry; returns its index.
    @discardableResult
    public func appendLog(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> UInt64 {
        try appendLogEntry(time: time, type: type, members: members).entry.index
    }
}

extension BrokerStore {
    /// Runs `body` in ONE write transaction over the broker's state and the log: whatever it
    /// reads, writes and appends commits together, or nothing does. The store persists; the
    /// caller decides what may be written.
    public func transaction<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        var written: [String] = []
        do {
            return try writeLogged { db, log in
                let transaction = SQLiteTransaction(db: db, log: log, storageKey: storageKey, envelopes: envelopes)
                defer {
                    log = transaction.log
                    written = transaction.writtenEnvelopes
                }
                return try body(transaction)
            }
        } catch {
            // The transaction did not commit: no delivery names the envelope files it wrote.
            written.forEach(envelopes.remove)
            throw error
        }
    }
}

/// A storage transaction on the SQLite store.
final class SQLiteTransaction: StorageTransaction {
    let db: Database
    var log: LogWriter
    let storageKey: SealedStorageKey
    let envelopes: EnvelopeFiles
    /// The envelope files this transaction wrote (removed again if it does not commit).
    private(set) var writtenEnvelopes: [String] = []

    init(db: Database, log: LogWriter, storageKey: SealedStorageKey, envelopes: EnvelopeFiles) {
        self.db = db
        self.log = log
        self.storageKey = storageKey
        self.envelopes = envelopes
    }

    func participant(_ keyID: KeyID) throws -> Participant? {
        try Row.fetchOne(db, sql: StoredRecords.participantQuery(where: "WHERE p.key_id = ?"), arguments: [keyID.hex]).map(StoredRecords.participant(from:))
    }

    func participantKey(_ keyID: KeyID) throws -> ParticipantKey? {
        try Row.fetchOne(db, sql: "SELECT * FROM participant_key WHERE key_id = ?", arguments: [keyID.hex]).map(StoredRecords.participantKey(from:))
    }

    func saveParticipantKey(_ key: ParticipantKey) throws {
        var arguments: StatementArguments = [key.keys.keyID.hex, key.participant.hex, key.keys.name, Data(key.keys.signingKey), Data(key.keys.encryptionKey)]
        arguments += [key.requested, key.approved, key.retires]
        try db.execute(sql: """
            INSERT INTO participant_key (key_id, participant, name, ed25519, x25519, requested, approved, retires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (key_id) DO UPDATE SET approved = excluded.approved, retires = excluded.retires
            """, arguments: arguments)
    }

    func insertParticipant(_ participant: Participant) throws {
        let keys = participant.keys
        if try Row.fetchOne(db, sql: "SELECT 1 FROM participant WHERE key_id = ?", arguments: [keys.keyID.hex]) != nil {
            throw StoreError(.duplicate, "participant \(keys.keyID) (\(keys.name)) is already registered")
        }
        var arguments: StatementArguments = [keys.keyID.hex, keys.name, participant.role.rawValue]
        arguments += [Data(keys.signingKey), Data(keys.encryptionKey), participant.registered]
        try db.execute(sql: "INSERT INTO participant (key_id, name, role, ed25519, x25519, registered) VALUES (?, ?, ?, ?, ?, ?)",
                       arguments: arguments)
    }

    func dataset(_ id: String) throws -> Dataset? {
        try Row.fetchOne(db, sql: "SELECT * FROM dataset WHERE id = ?", arguments: [id]).map(StoredRecords.dataset(from:))
    }

    func insertDataset(_ dataset: Dataset) throws {
        if try Row.fetchOne(db, sql: "SELECT 1 FROM dataset WHERE id = ?", arguments: [dataset.id]) != nil {
            throw StoreError(.duplicate, "dataset \(dataset.id) is already registered")
        }
        guard try Row.fetchOne(db, sql: "SELECT 1 FROM participant WHERE key_id = ?", arguments: [dataset.publisher.hex]) != nil else {
            throw StoreError(.notFound, "publisher \(dataset.publisher) is not a registered participant")
        }
        let purposes = String(decoding: try CanonicalJSON.encode(.array(dataset.purposes.map(JSONValue.string))), as: UTF8.self)
        let wrapped = try Segments.newDatasetKey(dataset: dataset.id, storageKey: storageKey)
        var arguments: StatementArguments = [dataset.id, dataset.publisher.hex, Data(dataset.schema)]
        arguments += [Data(dataset.schemaSHA256), Data(wrapped), purposes, dataset.registered]
        try db.execute(sql: "INSERT INTO dataset (id, publisher, schema, schema_sha256, wrapped_key, purposes, registered) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       arguments: arguments)
    }

    func lastBatch(of dataset: String) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM batch WHERE dataset = ?", arguments: [dataset]) ?? 0
    }

    func agreement(_ id: String) throws -> StoredAgreement {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM agreement WHERE id = ?", arguments: [id]) else {
            throw StoreError(.notFound, "agreement \(id) does not exist")
        }
        return try StoredRecords.agreement(from: row)
    }

    func insertAgreement(_ agreement: StoredAgreement) throws {
        if try Row.fetchOne(db, sql: "SELECT 1 FROM agreement WHERE id = ?", arguments: [agreement.id]) != nil {
            throw StoreError(.duplicate, "agreement \(agreement.id) already exists")
        }
        let acceptSignature: Data? = agreement.acceptSignature.map { Data($0) }
        let budget: Int64 = try StoredRecords.storable(agreement.budgetMicro), spent: Int64 = try StoredRecords.storable(agreement.spentMicro)
        var arguments: StatementArguments = [agreement.id, agreement.dataset, agreement.publisher.hex, agreement.partner.hex]
        arguments += [Data(agreement.policy), Data(agreement.policySHA256), Data(agreement.offerSignature), acceptSignature]
        arguments += [agreement.state.rawValue, agreement.validFrom, agreement.validUntil, budget]
        arguments += [spent, agreement.offered, agreement.accepted, agreement.ended]
        try db.execute(sql: """
            INSERT INTO agreement (id, dataset, publisher, partner, policy, policy_sha256, offer_signature, accept_signature, state,
                                   valid_from, valid_until, budget_micro, spent_micro, offered, accepted, ended)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: arguments)
    }

    func updateAgreement(_ agreement: StoredAgreement) throws {
        let acceptSignature: Data? = agreement.acceptSignature.map { Data($0) }
        let spent: Int64 = try StoredRecords.storable(agreement.spentMicro)
        var arguments: StatementArguments = [agreement.state.rawValue, acceptSignature, agreement.accepted]
        arguments += [agreement.ended, spent, agreement.id]
        try db.execute(sql: "UPDATE agreement SET state = ?, accept_signature = ?, accepted = ?, ended = ?, spent_micro = ? WHERE id = ?",
                       arguments: arguments)
        guard db.changesCount == 1 else { throw StoreError(.notFound, "agreement \(agreement.id) does not exist") }
    }

    /// The text of the last time written by ``appendConsent(_:now:)``: a request's events share one.
    private var consentTime: (time: UTCTime, text: String)?
    /// The first record written for the current log entry, whose row the entry's later records are
    /// stored as differences from (``RecordDifferences``).
    private var consentBase: (logIndex: UInt64, row: Int64, record: [UInt8])?
    private var consentInsert: ConsentInsert?

    func appendConsent(_ consent: StoredConsent, now: UTCTime) throws {
        if consentTime?.time != now { consentTime = (now, now.rfc3339) }
        var stored = consent.record
        var baseRow: Int64?
        if let base = consentBase, let logIndex = consent.logIndex, base.logIndex == logIndex,
           let differences = RecordDifferences.encode(consent.record, from: base.record) {
            stored = differences
            baseRow = base.row
        }
        let insert = try consentInsert ?? ConsentInsert(db)
        consentInsert = insert
        try insert.insert(dataset: consent.dataset, subject: consent.subject, purpose: consent.purpose, granted: consent.granted, record: stored,
                          recorded: consentTime?.text ?? now.rfc3339, logIndex: consent.logIndex, base: baseRow)
        if baseRow == nil, let logIndex = consent.logIndex { consentBase = (logIndex, db.lastInsertedRowID, consent.record) }
    }

    func feed(_ id: String) throws -> Feed {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM feed WHERE id = ?", arguments: [id]) else {
            throw StoreError(.notFound, "feed \(id) does not exist")
        }
        return try StoredRecords.feed(from: row)
    }

    func insertFeed(_ feed: Feed) throws {
        if try Row.fetchOne(db, sql: "SELECT 1 FROM feed WHERE id = ?", arguments: [feed.id]) != nil {
            throw StoreError(.duplicate, "feed \(feed.id) already exists")
        }
        var arguments: StatementArguments = [feed.id, feed.agreement, feed.purpose, feed.nextBatch, feed.delivered]
        arguments += [feed.acknowledged, feed.webhook, feed.pushed, feed.created]
        try db.execute(sql: """
            INSERT INTO feed (id, agreement, purpose, next_batch, delivered, acknowledged, webhook, pushed, created)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: arguments)
    }

    func updateFeed(_ feed: Feed) throws {
        let arguments: StatementArguments = [feed.nextBatch, feed.delivered, feed.acknowledged, feed.pushed, feed.id]
        try db.execute(sql: "UPDATE feed SET next_batch = ?, delivered = ?, acknowledged = ?, pushed = ? WHERE id = ?", arguments: arguments)
        guard db.changesCount == 1 else { throw StoreError(.notFound, "feed \(feed.id) does not exist") }
    }

    func appendLogEntry(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> ExchangeLog.PreparedEntry {
        try log.appendEntry(time: time, type: type, members: members)
    }

    func insertDelivery(_ delivery: Delivery) throws {
        var arguments: StatementArguments = [delivery.id, delivery.agreement, delivery.partner.hex, delivery.kind.rawValue, delivery.feed]
        arguments += [delivery.feedSequence, Int64(delivery.logIndex), delivery.records, delivery.created]
        let insert = """
            INSERT INTO delivery (id, agreement, partner, kind, feed, feed_sequence, log_index, records, created, envelope, envelope_file)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """
        guard delivery.envelope.count < EnvelopeFiles.threshold else {
            // The row first: a second delivery with this id is refused before its file is written.
            let name = EnvelopeFiles.name(of: delivery.id)
            try db.execute(sql: insert, arguments: arguments + [Data(), name])
            writtenEnvelopes.append(name)
            try envelopes.write(delivery.envelope, name: name)
            return
        }
        // The envelope is bound without an intermediate copy (SQLite copies it once itself).
        try delivery.envelope.withUnsafeBytes { envelope in
            let blob = envelope.baseAddress.map { Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: $0), count: envelope.count, deallocator: .none) } ?? Data()
            try db.execute(sql: insert, arguments: arguments + [blob, nil])
        }
    }

    func recordDrawnBatches(_ batches: [Int64], dataset: String, partner: KeyID, delivery: String) throws {
        for sequence in batches {
            if try Row.fetchOne(db, sql: "SELECT 1 FROM drawn_batch WHERE partner = ? AND dataset = ? AND sequence = ?",
                                arguments: [partner.hex, dataset, sequence]) != nil {
                throw StoreError(.superseded, "batch \(sequence) of \(dataset) was delivered to this partner meanwhile")
            }
            try db.execute(sql: "INSERT INTO drawn_batch (partner, dataset, sequence, delivery) VALUES (?, ?, ?, ?)",
                           arguments: [partner.hex, dataset, sequence, delivery])
        }
    }

    /// One process opens a SQLite store: the broker wakes its own waiters.
    func announceWindow(feed: String) throws {}

    func insertRequestKey(_ key: RequestKey) throws {
        if try Row.fetchOne(db, sql: "SELECT 1 FROM request_key WHERE partner = ? AND key = ?", arguments: [key.partner.hex, key.key]) != nil {
            throw StoreError(.duplicate, "request key \(key.key.prefix(60)) was already used by this partner")
        }
        var arguments: StatementArguments = [key.partner.hex, key.key, Data(key.requestSHA256)]
        arguments += [key.delivery, Data(key.figures), key.created]
        try db.execute(sql: "INSERT INTO request_key (partner, key, request_sha256, delivery, figures, created) VALUES (?, ?, ?, ?, ?, ?)",
                       arguments: arguments)
    }

    func deleteWebTokens(expiredBefore time: UTCTime) throws {
        try db.execute(sql: "DELETE FROM web_token WHERE expires < ?", arguments: [time])
    }

    func countRefusal(agreement: String, code: String, at time: UTCTime) throws {
        try db.execute(sql: """
            INSERT INTO refusal (agreement, code, count, last) VALUES (?, ?, 1, ?)
            ON CONFLICT (agreement, code) DO UPDATE SET count = count + 1, last = excluded.last
            """, arguments: [agreement, code, time])
    }

    func insertWebToken(_ token: WebToken) throws {
        try db.execute(sql: "INSERT INTO web_token (sha256, kind, participant, created, expires, ended) VALUES (?, ?, ?, ?, ?, ?)",
                       arguments: [Data(token.sha256), token.kind.rawValue, token.participant.hex, token.created, token.expires, token.ended])
    }

    func endWebToken(sha256: [UInt8], at time: UTCTime) throws -> Bool {
        try db.execute(sql: "UPDATE web_token SET ended = ? WHERE sha256 = ? AND ended IS NULL", arguments: [time, Data(sha256)])
        return db.changesCount == 1
    }

    func datasetQuality(_ dataset: String) throws -> [UInt8]? {
        try Data.fetchOne(db, sql: "SELECT counts FROM dataset_quality WHERE dataset = ?", arguments: [dataset]).map { Array($0) }
    }

    func saveDatasetQuality(_ dataset: String, counts: [UInt8]) throws {
        try db.execute(sql: "INSERT INTO dataset_quality (dataset, counts) VALUES (?, ?) ON CONFLICT (dataset) DO UPDATE SET counts = excluded.counts",
                       arguments: [dataset, Data(counts)])
    }

    func insertConsentKey(_ key: ConsentKey) throws {
        if try Row.fetchOne(db, sql: "SELECT 1 FROM consent_key WHERE recorder = ? AND key = ?", arguments: [key.recorder.hex, key.key]) != nil {
            throw StoreError(.duplicate, "consent request key \(key.key.prefix(60)) was already used by this recorder")
        }
        try db.execute(sql: "INSERT INTO consent_key (recorder, key, request_sha256, log_index, created) VALUES (?, ?, ?, ?, ?)",
                       arguments: [key.recorder.hex, key.key, Data(key.requestSHA256), Int64(key.logIndex), key.created])
    }
}
