import CivitasCrypto
import CivitasLog
import Foundation
import GRDB

extension BrokerStore {
    // MARK: Agreements

    /// Stores an offered agreement and logs `agreement.offered`.
    public func offerAgreement(_ agreement: StoredAgreement, purposes: [String], legalBasis: String, aggregateKeys: [String: String] = [:]) throws {
        try writeLogged { db, log in
            if try Row.fetchOne(db, sql: "SELECT 1 FROM agreement WHERE id = ?", arguments: [agreement.id]) != nil {
                throw StoreError(.duplicate, "agreement \(agreement.id) already exists")
            }
            try db.execute(sql: """
                INSERT INTO agreement (id, dataset, publisher, partner, policy, policy_sha256, offer_signature, state,
                                       valid_from, valid_until, budget_micro, offered)
                VALUES (?, ?, ?, ?, ?, ?, ?, 'offered', ?, ?, ?, ?)
                """, arguments: [agreement.id, agreement.dataset, agreement.publisher.hex, agreement.partner.hex, Data(agreement.policy),
                                 Data(agreement.policySHA256), Data(agreement.offerSignature), agreement.validFrom, agreement.validUntil,
                                 Int64(agreement.budgetMicro), agreement.offered])
            try log.append(time: agreement.offered, type: .agreementOffered, members: LogEvents.agreementOffered(
                agreement: agreement.id, dataset: agreement.dataset, publisher: agreement.publisher, partner: agreement.partner,
                purposes: purposes, policySHA256: agreement.policySHA256, legalBasis: legalBasis, validFrom: agreement.validFrom.rfc3339,
                validUntil: agreement.validUntil.rfc3339, epsilonBudgetMicro: agreement.budgetMicro, aggregateKeys: aggregateKeys))
        }
    }

    /// Records the partner's acceptance (its signature over the policy hash) and logs `agreement.accepted`.
    public func acceptAgreement(_ id: String, signature: [UInt8], now: UTCTime) throws -> StoredAgreement {
        try writeLogged { db, log in
            var agreement = try Self.agreement(id, in: db)
            guard agreement.state == .offered else {
                throw StoreError(.conflict, "agreement \(id) is \(agreement.state.rawValue); only an offered agreement can be accepted")
            }
            try db.execute(sql: "UPDATE agreement SET state = 'accepted', accept_signature = ?, accepted = ? WHERE id = ?",
                           arguments: [Data(signature), now, id])
            try log.append(time: now, type: .agreementAccepted, members: LogEvents.agreementAccepted(agreement: id, partner: agreement.partner))
            agreement.state = .accepted
            agreement.acceptSignature = signature
            agreement.accepted = now
            return agreement
        }
    }

    /// Ends an offered or accepted agreement: revoked by a party (`by`), or expired (`by` nil). Logged.
    public func endAgreement(_ id: String, as state: StoredAgreement.State, by: KeyID?, now: UTCTime) throws -> StoredAgreement {
        precondition(state == .revoked || state == .expired, "an agreement ends revoked or expired")
        return try writeLogged { db, log in
            var agreement = try Self.agreement(id, in: db)
            guard agreement.state == .offered || agreement.state == .accepted else {
                throw StoreError(.conflict, "agreement \(id) is already \(agreement.state.rawValue)")
            }
            try db.execute(sql: "UPDATE agreement SET state = ?, ended = ? WHERE id = ?", arguments: [state.rawValue, now, id])
            if state == .revoked, let by {
                try log.append(time: now, type: .agreementRevoked, members: LogEvents.agreementRevoked(agreement: id, by: by))
            } else {
                try log.append(time: now, type: .agreementExpired, members: ["agreement": .string(id)])
            }
            agreement.state = state
            agreement.ended = now
            return agreement
        }
    }

    /// The agreement with this id, if any.
    public func agreement(_ id: String) throws -> StoredAgreement? {
        try wrap {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM agreement WHERE id = ?", arguments: [id]).map(Self.agreement(from:))
            }
        }
    }

    /// Agreements a participant is a party to (all of them when `participant` is nil), by id.
    public func agreements(involving participant: KeyID? = nil) throws -> [StoredAgreement] {
        try wrap {
            try pool.read { db in
                if let participant {
                    return try Row.fetchAll(db, sql: "SELECT * FROM agreement WHERE publisher = ? OR partner = ? ORDER BY id",
                                            arguments: [participant.hex, participant.hex]).map(Self.agreement(from:))
                }
                return try Row.fetchAll(db, sql: "SELECT * FROM agreement ORDER BY id").map(Self.agreement(from:))
            }
        }
    }

    static func agreement(_ id: String, in db: Database) throws -> StoredAgreement {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM agreement WHERE id = ?", arguments: [id]) else {
            throw StoreError(.notFound, "agreement \(id) does not exist")
        }
        return try agreement(from: row)
    }

    static func agreement(from row: Row) throws -> StoredAgreement {
        let id: String = try row.decode(forColumn: "id")
        guard let publisher = KeyID(hex: try row.decode(forColumn: "publisher")), let partner = KeyID(hex: try row.decode(forColumn: "partner")),
              let state = StoredAgreement.State(rawValue: try row.decode(forColumn: "state")) else {
            throw StoreError(.corrupt, "agreement \(id) has a malformed party or state")
        }
        let policy: Data = try row.decode(forColumn: "policy"), hash: Data = try row.decode(forColumn: "policy_sha256"), offer: Data = try row.decode(forColumn: "offer_signature")
        var agreement = StoredAgreement(id: id, dataset: try row.decode(forColumn: "dataset"), publisher: publisher, partner: partner, policy: Array(policy),
                                        policySHA256: Array(hash), offerSignature: Array(offer), validFrom: try row.decode(forColumn: "valid_from"),
                                        validUntil: try row.decode(forColumn: "valid_until"), budgetMicro: UInt64(try row.decode(Int64.self, forColumn: "budget_micro")), offered: try row.decode(forColumn: "offered"))
        agreement.acceptSignature = (try row.decode(Data?.self, forColumn: "accept_signature")).map(Array.init)
        agreement.state = state
        agreement.spentMicro = UInt64(try row.decode(Int64.self, forColumn: "spent_micro"))
        agreement.accepted = try row.decode(forColumn: "accepted")
        agreement.ended = try row.decode(forColumn: "ended")
        return agreement
    }

    // MARK: Consent

    /// A consent event to record.
    public struct ConsentEvent: Sendable {
        public var dataset: String
        public var subject: [UInt8]
        public var purpose: String
        public var granted: Bool
        public var record: [UInt8]

        public init(dataset: String, subject: [UInt8], purpose: String, granted: Bool, record: [UInt8]) {
            self.dataset = dataset
            self.subject = subject
            self.purpose = purpose
            self.granted = granted
            self.record = record
        }
    }

    /// Records several consent events in one transaction, each logged; returns their log indexes.
    public func recordConsents(_ events: [ConsentEvent], recordedBy: KeyID, now: UTCTime) throws -> [UInt64] {
        try writeLogged { db, log in
            try events.map { event in
                try db.execute(sql: """
                    INSERT INTO consent (dataset, subject, purpose, granted, record, updated) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (dataset, subject, purpose) DO UPDATE SET granted = excluded.granted, record = excluded.record, updated = excluded.updated
                    """, arguments: [event.dataset, Data(event.subject), event.purpose, event.granted, Data(event.record), now])
                return try log.append(time: now, type: event.granted ? .consentGranted : .consentRevoked, members: [
                    "dataset": .string(event.dataset), "subject": .string(Hex.encode(event.subject)), "purpose": .string(event.purpose),
                    "recorded_by": .string(recordedBy.hex),
                ])
            }
        }
    }

    /// The current consent state of every subject recorded for a dataset and purpose:
    /// subject hash (hex) → granted.
    public func consentStates(dataset: String, purpose: String) throws -> [String: Bool] {
        try wrap {
            try pool.read { db in
                var states: [String: Bool] = [:]
                let rows = try Row.fetchCursor(db, sql: "SELECT subject, granted FROM consent WHERE dataset = ? AND purpose = ?",
                                               arguments: [dataset, purpose])
                while let row = try rows.next() {
                    states[Hex.encode(Array(try row.decode(Data.self, forColumn: "subject")))] = try row.decode(forColumn: "granted")
                }
                return states
            }
        }
    }

    // MARK: Batches by range

    /// The dataset's batches from `sequence` on, in order.
    public func batches(of dataset: String, from sequence: Int64 = 1) throws -> [BatchSummary] {
        try wrap {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT sequence, records, created FROM batch WHERE dataset = ? AND sequence >= ? ORDER BY sequence",
                                 arguments: [dataset, sequence]).map {
                    BatchSummary(sequence: $0["sequence"], records: $0["records"], created: $0["created"])
                }
            }
        }
    }

    /// The last batch sequence of a dataset (0 when it has none).
    public func lastBatch(of dataset: String) throws -> Int64 {
        try wrap { try pool.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM batch WHERE dataset = ?", arguments: [dataset]) ?? 0 } }
    }

    // MARK: Deliveries

    /// Runs `body` in ONE write transaction over the exchange state and the log: whatever it
    /// reads, writes and appends commits together, or nothing does. The store persists; the
    /// caller decides what may be written.
    public func exchangeTransaction<T>(_ body: (any ExchangeWrites) throws -> T) throws -> T {
        try writeLogged { db, log in
            let transaction = ExchangeTransaction(db: db, log: log)
            defer { log = transaction.log }
            return try body(transaction)
        }
    }

    /// The batches of `dataset` that deliveries to `partner` have drawn from.
    public func drawnBatches(partner: KeyID, dataset: String) throws -> Set<Int64> {
        try wrap {
            try pool.read { db in
                Set(try Int64.fetchAll(db, sql: "SELECT sequence FROM drawn_batch WHERE partner = ? AND dataset = ?",
                                       arguments: [partner.hex, dataset]))
            }
        }
    }

    /// The delivery with this id, if any.
    public func delivery(_ id: String) throws -> Delivery? {
        try wrap { try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM delivery WHERE id = ?", arguments: [id]).map(Self.delivery(from:)) } }
    }

    /// A feed's windows after `sequence`, in order, at most `limit`.
    public func deliveries(feed: String, after sequence: Int64, limit: Int) throws -> [Delivery] {
        try wrap {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM delivery WHERE feed = ? AND feed_sequence > ? ORDER BY feed_sequence LIMIT ?",
                                 arguments: [feed, sequence, limit]).map(Self.delivery(from:))
            }
        }
    }

    /// Deliveries under an agreement, oldest first.
    public func deliveries(agreement: String) throws -> [Delivery] {
        try wrap {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM delivery WHERE agreement = ? ORDER BY log_index", arguments: [agreement]).map(Self.delivery(from:))
            }
        }
    }

    static func delivery(from row: Row) throws -> Delivery {
        let id: String = try row.decode(forColumn: "id")
        guard let partner = KeyID(hex: try row.decode(forColumn: "partner")), let kind = Delivery.Kind(rawValue: try row.decode(forColumn: "kind")) else {
            throw StoreError(.corrupt, "delivery \(id) has a malformed partner or kind")
        }
        let envelope: Data = try row.decode(forColumn: "envelope")
        return Delivery(id: id, agreement: try row.decode(forColumn: "agreement"), partner: partner, kind: kind, feed: try row.decode(forColumn: "feed"), feedSequence: try row.decode(forColumn: "feed_sequence"),
                        logIndex: UInt64(try row.decode(Int64.self, forColumn: "log_index")), records: try row.decode(forColumn: "records"), envelope: Array(envelope), created: try row.decode(forColumn: "created"))
    }

    // MARK: Feeds

    /// Creates a feed that starts with the dataset's next batch.
    public func createFeed(id: String, agreement: String, purpose: String, webhook: String?, now: UTCTime) throws -> Feed {
        try wrap {
            try pool.write { db in
                let stored = try Self.agreement(agreement, in: db)
                let next = (try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM batch WHERE dataset = ?", arguments: [stored.dataset]) ?? 0) + 1
                try db.execute(sql: "INSERT INTO feed (id, agreement, purpose, next_batch, webhook, created) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [id, agreement, purpose, next, webhook, now])
                return try Self.feed(id, in: db)
            }
        }
    }

    /// The feed with this id, if any.
    public func feed(_ id: String) throws -> Feed? {
        try wrap { try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM feed WHERE id = ?", arguments: [id]).map(Self.feed(from:)) } }
    }

    /// Every feed, by id.
    public func feeds() throws -> [Feed] {
        try wrap { try pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM feed ORDER BY id").map(Self.feed(from:)) } }
    }

    /// Moves a feed past batches that produced no delivery (every record suppressed or without consent).
    public func skipFeedBatches(_ id: String, from: Int64, to: Int64) throws {
        try wrap {
            try pool.write { db in
                let feed = try Self.feed(id, in: db)
                guard feed.nextBatch == from, to > from else {
                    throw StoreError(.superseded, "feed \(id) has moved on to batch \(feed.nextBatch)")
                }
                try db.execute(sql: "UPDATE feed SET next_batch = ? WHERE id = ?", arguments: [to, id])
            }
        }
    }

    /// Records the partner's acknowledgement of every window up to `sequence` (never moving back).
    public func acknowledge(feed id: String, through sequence: Int64) throws -> Feed {
        try wrap {
            try pool.write { db in
                let feed = try Self.feed(id, in: db)
                guard sequence <= feed.delivered else {
                    throw StoreError(.invalidArgument, "feed \(id) has delivered \(feed.delivered) windows; \(sequence) cannot be acknowledged")
                }
                try db.execute(sql: "UPDATE feed SET acknowledged = MAX(acknowledged, ?) WHERE id = ?", arguments: [sequence, id])
                return try Self.feed(id, in: db)
            }
        }
    }

    /// Records that the webhook accepted every window up to `sequence`.
    public func markPushed(feed id: String, through sequence: Int64) throws {
        try wrap {
            try pool.write { db in
                try db.execute(sql: "UPDATE feed SET pushed = MAX(pushed, ?) WHERE id = ?", arguments: [sequence, id])
            }
        }
    }

    static func feed(_ id: String, in db: Database) throws -> Feed {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM feed WHERE id = ?", arguments: [id]) else {
            throw StoreError(.notFound, "feed \(id) does not exist")
        }
        return try feed(from: row)
    }

    static func feed(from row: Row) throws -> Feed {
        Feed(id: try row.decode(forColumn: "id"), agreement: try row.decode(forColumn: "agreement"), purpose: try row.decode(forColumn: "purpose"), nextBatch: try row.decode(forColumn: "next_batch"), delivered: try row.decode(forColumn: "delivered"),
             acknowledged: try row.decode(forColumn: "acknowledged"), webhook: try row.decode(forColumn: "webhook"), pushed: try row.decode(forColumn: "pushed"), created: try row.decode(forColumn: "created"))
    }
}

/// Reads and writes inside one exchange transaction (``BrokerStorage/exchangeTransaction(_:)``):
/// rows as they are now, locked against other writers until the transaction ends.
public protocol ExchangeWrites: AnyObject {
    /// The agreement, as stored now.
    func agreement(_ id: String) throws -> StoredAgreement
    /// Sets what the agreement has spent of its budget (ε × 10^6).
    func setSpent(_ micro: UInt64, of agreement: String) throws
    /// The feed, as stored now.
    func feed(_ id: String) throws -> Feed
    /// Moves the feed to `nextBatch` after delivering window number `delivered`.
    func moveFeed(_ id: String, nextBatch: Int64, delivered: Int64) throws
    /// Appends a log entry; returns its index.
    func appendLog(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> UInt64
    /// Stores a delivery and its envelope.
    func insertDelivery(_ delivery: Delivery) throws
    /// Records that `delivery` drew these batches of `dataset` for `partner`; each batch at most
    /// once per partner and dataset (a second draw is refused as superseded).
    func recordDrawnBatches(_ batches: [Int64], dataset: String, partner: KeyID, delivery: String) throws
}

/// The SQLite exchange transaction.
final class ExchangeTransaction: ExchangeWrites {
    let db: Database
    var log: LogWriter

    init(db: Database, log: LogWriter) {
        self.db = db
        self.log = log
    }

    /// The agreement, as stored now.
    public func agreement(_ id: String) throws -> StoredAgreement {
        try BrokerStore.agreement(id, in: db)
    }

    /// Sets what the agreement has spent of its budget (ε × 10^6).
    public func setSpent(_ micro: UInt64, of agreement: String) throws {
        guard micro <= UInt64(Int64.max) else { throw StoreError(.invalidArgument, "a budget figure above 2^63 cannot be stored") }
        try db.execute(sql: "UPDATE agreement SET spent_micro = ? WHERE id = ?", arguments: [Int64(micro), agreement])
    }

    /// The feed, as stored now.
    public func feed(_ id: String) throws -> Feed {
        try BrokerStore.feed(id, in: db)
    }

    /// Moves the feed to `nextBatch` after delivering window number `delivered`.
    public func moveFeed(_ id: String, nextBatch: Int64, delivered: Int64) throws {
        try db.execute(sql: "UPDATE feed SET next_batch = ?, delivered = ? WHERE id = ?", arguments: [nextBatch, delivered, id])
    }

    /// Appends a log entry; returns its index.
    public func appendLog(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> UInt64 {
        try log.append(time: time, type: type, members: members)
    }

    /// Stores a delivery and its envelope.
    public func insertDelivery(_ delivery: Delivery) throws {
        // The envelope is bound without an intermediate copy (SQLite copies it once itself).
        try delivery.envelope.withUnsafeBytes { envelope in
            let blob = envelope.baseAddress.map { Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: $0), count: envelope.count, deallocator: .none) } ?? Data()
            try db.execute(sql: """
                INSERT INTO delivery (id, agreement, partner, kind, feed, feed_sequence, log_index, records, envelope, created)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [delivery.id, delivery.agreement, delivery.partner.hex, delivery.kind.rawValue, delivery.feed,
                                 delivery.feedSequence, Int64(delivery.logIndex), delivery.records, blob, delivery.created])
        }
    }

    /// Records that `delivery` drew these batches of `dataset` for `partner`; each batch at most
    /// once per partner and dataset (a second draw is refused as superseded).
    public func recordDrawnBatches(_ batches: [Int64], dataset: String, partner: KeyID, delivery: String) throws {
        for sequence in batches {
            if try Row.fetchOne(db, sql: "SELECT 1 FROM drawn_batch WHERE partner = ? AND dataset = ? AND sequence = ?",
                                arguments: [partner.hex, dataset, sequence]) != nil {
                throw StoreError(.superseded, "batch \(sequence) of \(dataset) was delivered to this partner meanwhile")
            }
            try db.execute(sql: "INSERT INTO drawn_batch (partner, dataset, sequence, delivery) VALUES (?, ?, ?, ?)",
                           arguments: [partner.hex, dataset, sequence, delivery])
        }
    }
}
