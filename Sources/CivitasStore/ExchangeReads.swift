import CivitasCrypto
import CivitasLog
import Foundation
import GRDB
import GRDBSQLite

/// One half of the consent states, handed back by the core that read it.
private final class ConsentHalf: @unchecked Sendable {
    var result: Result<[SubjectDigest: Bool], any Error> = .success([:])
}

/// What the broker reads back of agreements, consent, batches, deliveries and feeds.
extension BrokerStore {
    // MARK: Agreements

    /// The agreement with this id, if any.
    public func agreement(_ id: String) throws -> StoredAgreement? {
        try wrap {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM agreement WHERE id = ?", arguments: [id]).map(StoredRecords.agreement(from:))
            }
        }
    }

    /// Agreements a participant is a party to (all of them when `participant` is nil), by id.
    public func agreements(involving participant: KeyID? = nil) throws -> [StoredAgreement] {
        try wrap {
            try pool.read { db in
                if let participant {
                    return try Row.fetchAll(db, sql: "SELECT * FROM agreement WHERE publisher = ? OR partner = ? ORDER BY id",
                                            arguments: [participant.hex, participant.hex]).map(StoredRecords.agreement(from:))
                }
                return try Row.fetchAll(db, sql: "SELECT * FROM agreement ORDER BY id").map(StoredRecords.agreement(from:))
            }
        }
    }

    // MARK: Consent

    /// The current consent state of every subject recorded for a dataset and purpose, by the
    /// subject's keyed hash.
    public func consentStates(dataset: String, purpose: String) throws -> [SubjectDigest: Bool] {
        try wrap {
            guard let (first, last, count) = try pool.read({ db in
                try Row.fetchOne(db, sql: "SELECT MIN(id), MAX(id), COUNT(*) FROM consent_event WHERE dataset = ? AND purpose = ?",
                                 arguments: [dataset, purpose]).flatMap { row -> (Int64, Int64, Int)? in
                    guard let first: Int64 = row[0], let last: Int64 = row[1] else { return nil }
                    return (first, last, row[2])
                }
            }) else { return [:] }
            // Events are only ever added, one writing transaction at a time, so every event up to
            // the last one seen above was committed before it: reads of ranges of events up to it,
            // each in its own transaction, see that one state. Two halves are read on two cores.
            let parts = count >= Self.consentSplitFrom ? 2 : 1
            let middle = first + (last - first) / 2
            let ranges = parts == 1 ? [first...last] : [first...middle, (middle + 1)...last]
            let halves = ranges.map { _ in ConsentHalf() }
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                halves[part].result = Result {
                    try pool.read { db in
                        // The first half takes in the second's states too.
                        try Self.consentStates(db, dataset: dataset, purpose: purpose, ids: ranges[part], expected: part == 0 ? count : count / parts)
                    }
                }
            }
            var states = try halves[0].result.get()
            // The later half's events are the later ones: they decide.
            if parts == 2 {
                for (subject, granted) in try halves[1].result.get() { states[subject] = granted }
            }
            return states
        }
    }

    /// Consent events from which ``consentStates(dataset:purpose:)`` reads two halves at once.
    static let consentSplitFrom = 20_000

    /// The states the events with ids in `ids` leave, the last event of a subject deciding.
    private static func consentStates(_ db: Database, dataset: String, purpose: String, ids: ClosedRange<Int64>, expected: Int) throws -> [SubjectDigest: Bool] {
        var states: [SubjectDigest: Bool] = [:]
        states.reserveCapacity(expected)
        let rows = try Row.fetchCursor(db, sql: "SELECT subject, granted FROM consent_event WHERE dataset = ? AND purpose = ? AND id >= ? AND id <= ? ORDER BY id",
                                       arguments: [dataset, purpose, ids.lowerBound, ids.upperBound])
        // Columns by position and the hash read in place: no copy and no name look-up per event.
        while let row = try rows.next() {
            let digest = try row.withUnsafeData(atIndex: 0) { subject in
                subject.flatMap { data in data.withUnsafeBytes { SubjectDigest(bytes: $0) } }
            }
            guard let digest else {
                throw StoreError(.corrupt, "a consent record of \(dataset) holds a subject hash that is not 32 bytes")
            }
            states[digest] = try row.decode(atIndex: 1)
        }
        return states
    }

    // MARK: Batches by range

    /// The dataset's batches from `sequence` on, in order.
    public func batches(of dataset: String, from sequence: Int64 = 1) throws -> [BatchSummary] {
        try wrap {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT sequence, records, created FROM batch WHERE dataset = ? AND sequence >= ? ORDER BY sequence",
                                 arguments: [dataset, sequence]).map(StoredRecords.batchSummary(from:))
            }
        }
    }

    /// The last batch sequence of a dataset (0 when it has none).
    public func lastBatch(of dataset: String) throws -> Int64 {
        try wrap { try pool.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM batch WHERE dataset = ?", arguments: [dataset]) ?? 0 } }
    }

    // MARK: Deliveries

    /// The batches of `dataset` that deliveries to `partner` have drawn from.
    public func drawnBatches(partner: KeyID, dataset: String) throws -> Set<Int64> {
        try wrap {
            try pool.read { db in
                Set(try Int64.fetchAll(db, sql: "SELECT sequence FROM drawn_batch WHERE partner = ? AND dataset = ?",
                                       arguments: [partner.hex, dataset]))
            }
        }
    }

    public func refusals(agreement: String) throws -> [RefusalCount] {
        try wrap {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT code, count, last FROM refusal WHERE agreement = ? ORDER BY code", arguments: [agreement])
                    .map(StoredRecords.refusalCount(from:))
            }
        }
    }

    public func webToken(sha256: [UInt8]) throws -> WebToken? {
        try wrap {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM web_token WHERE sha256 = ?", arguments: [Data(sha256)]).map(StoredRecords.webToken(from:))
            }
        }
    }

    public func consentKey(recorder: KeyID, key: String) throws -> ConsentKey? {
        try wrap {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM consent_key WHERE recorder = ? AND key = ?", arguments: [recorder.hex, key]).map { row in
                    try StoredRecords.consentKey(from: row, recorder: recorder, key: key)
                }
            }
        }
    }

    public func datasetQuality(_ dataset: String) throws -> [UInt8]? {
        try wrap {
            try pool.read { db in
                try Data.fetchOne(db, sql: "SELECT counts FROM dataset_quality WHERE dataset = ?", arguments: [dataset]).map { Array($0) }
            }
        }
    }

    public func consentRecords(logIndex: UInt64) throws -> [[UInt8]] {
        try wrap {
            try pool.read { db in
                var whole: [Int64: [UInt8]] = [:]
                // The entry's events are the ids from its first whole record up to the next entry's
                // (later entries have higher indexes), both found by the index of whole records.
                return try Row.fetchAll(db, sql: """
                    SELECT id, record, record_base FROM consent_event
                    WHERE id >= (SELECT MIN(id) FROM consent_event WHERE log_index = ?1 AND record_base IS NULL)
                      AND id < COALESCE((SELECT MIN(id) FROM consent_event WHERE log_index > ?1 AND record_base IS NULL), 9223372036854775807)
                      AND log_index = ?1
                    ORDER BY id
                    """, arguments: [Int64(logIndex)]).map { row -> [UInt8] in
                    let id: Int64 = row["id"]
                    let stored = Array(row["record"] as Data)
                    guard let baseRow = row["record_base"] as Int64? else {
                        whole[id] = stored
                        return stored
                    }
                    guard let base = whole[baseRow], let record = RecordDifferences.decode(stored, onto: base) else {
                        throw StoreError(.corrupt, "consent event \(id) of log entry \(logIndex) does not fit its base record (event \(baseRow))")
                    }
                    return record
                }
            }
        }
    }

    /// The partner's idempotency key `key`, if it was used.
    public func requestKey(partner: KeyID, key: String) throws -> RequestKey? {
        try wrap {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM request_key WHERE partner = ? AND key = ?", arguments: [partner.hex, key]).map { row in
                    try StoredRecords.requestKey(from: row, partner: partner, key: key)
                }
            }
        }
    }

    /// The delivery with this id, if any.
    public func delivery(_ id: String) throws -> Delivery? {
        // A cursor's row is read in place: the envelope is copied once, into the delivery.
        try wrap {
            try pool.read { db in
                let cursor = try Row.fetchCursor(db, sql: "SELECT * FROM delivery WHERE id = ?", arguments: [id])
                // The row is valid only while its cursor is.
                return try withExtendedLifetime(cursor) { try cursor.next().map(delivery(from:)) }
            }
        }
    }

    /// A stored delivery, its envelope read from its file when it is kept outside the database.
    private func delivery(from row: Row) throws -> Delivery {
        try StoredRecords.delivery(from: row, envelope: try row.optionalText("envelope_file").map(envelopes.read))
    }

    /// How many deliveries of each kind were made.
    public func deliveryCounts() throws -> [Delivery.Kind: Int] {
        try wrap {
            try pool.read { db in
                var counts: [Delivery.Kind: Int] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT kind, COUNT(*) AS n FROM delivery GROUP BY kind") {
                    guard let kind = Delivery.Kind(rawValue: row["kind"]) else { throw StoreError(.corrupt, "a delivery has an unknown kind") }
                    counts[kind] = row["n"]
                }
                return counts
            }
        }
    }

    /// Delivery `id`'s partner, log entry and envelope length, if it exists, without reading the envelope.
    public func deliveryEnvelope(_ id: String) throws -> DeliveryEnvelope? {
        try wrap {
            try pool.read { db in
                // length() of a BLOB reads its size from the record header, not its pages.
                try Row.fetchOne(db.cachedStatement(sql: "SELECT partner, log_index, length(envelope) AS bytes, envelope_file FROM delivery WHERE id = ?"),
                                 arguments: [id]).map { row in
                    guard let partner = KeyID(hex: try row.decode(forColumn: "partner")) else {
                        throw StoreError(.corrupt, "delivery \(id) has a malformed partner")
                    }
                    let file = try row.optionalText("envelope_file")
                    return DeliveryEnvelope(delivery: id, partner: partner, logIndex: UInt64(try row.decode(Int64.self, forColumn: "log_index")),
                                            byteCount: try file.map(envelopes.size(of:)) ?? row.decode(forColumn: "bytes"))
                }
            }
        }
    }

    /// Reads delivery `id`'s envelope from its start, in pieces of at most `pieceSize` bytes handed
    /// to `each` in order (each valid only during the call), from its file or within one read
    /// transaction through one incremental BLOB handle (so no piece walks the envelope's pages
    /// from the start again), until the end or until `each` returns false.
    public func readEnvelope(of id: String, pieceSize: Int, _ each: (UnsafeRawBufferPointer) throws -> Bool) throws {
        guard pieceSize > 0 else { throw StoreError(.invalidArgument, "a piece of an envelope is at least one byte") }
        try wrap {
            try pool.read { db in
                guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT rowid, envelope_file FROM delivery WHERE id = ?"), arguments: [id]) else {
                    throw StoreError(.notFound, "no delivery \(id)")
                }
                if let file = try row.optionalText("envelope_file") {
                    return try envelopes.read(file, pieceSize: pieceSize, each)
                }
                let rowID = try row.integer("rowid")
                var handle: OpaquePointer?
                let opened = sqlite3_blob_open(db.sqliteConnection, "main", "delivery", "envelope", rowID, 0, &handle)
                defer { sqlite3_blob_close(handle) }
                guard opened == SQLITE_OK, let blob = handle else {
                    throw StoreError(.database, "the envelope of delivery \(id) cannot be read: \(String(cString: sqlite3_errstr(opened)))")
                }
                let total = Int(sqlite3_blob_bytes(blob))
                let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: min(pieceSize, max(total, 1)), alignment: 16)
                defer { piece.deallocate() }
                var offset = 0
                while offset < total {
                    let count = min(piece.count, total - offset)
                    let read = sqlite3_blob_read(blob, piece.baseAddress, Int32(count), Int32(offset))
                    guard read == SQLITE_OK else {
                        throw StoreError(.database, "the envelope of delivery \(id) cannot be read at byte \(offset): \(String(cString: sqlite3_errstr(read)))")
                    }
                    offset += count
                    guard try each(UnsafeRawBufferPointer(rebasing: piece[..<count])) else { return }
                }
            }
        }
    }

    /// A feed's windows after `sequence`, in order, at most `limit`.
    public func deliveries(feed: String, after sequence: Int64, limit: Int) throws -> [Delivery] {
        try wrap {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM delivery WHERE feed = ? AND feed_sequence > ? ORDER BY feed_sequence LIMIT ?",
                                 arguments: [feed, sequence, limit]).map(delivery(from:))
            }
        }
    }

    public func deliverySummaries(agreement: String, limit: Int) throws -> [DeliverySummary] {
        try wrap {
            try pool.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT id, kind, feed_sequence, log_index, records, created FROM delivery WHERE agreement = ? ORDER BY log_index DESC LIMIT ?
                    """, arguments: [agreement, limit]).map(StoredRecords.deliverySummary(from:))
            }
        }
    }

    // MARK: Feeds

    /// The feed with this id, if any.
    public func feed(_ id: String) throws -> Feed? {
        try wrap { try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM feed WHERE id = ?", arguments: [id]).map(StoredRecords.feed(from:)) } }
    }

    /// Every feed, by id.
    public func feeds() throws -> [Feed] {
        try wrap { try pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM feed ORDER BY id").map(StoredRecords.feed(from:)) } }
    }
}

/// Scheduled work on SQLite: one process opens the store, so a claim only keeps that process's
/// own rounds from doing the same work twice; the rules are those of every store.
extension BrokerStore {
    /// Nothing to watch: no other process writes this store.
    public func watchWindows(_ handler: @escaping @Sendable (_ feed: String) -> Void) throws {}

    public func claimWork(_ name: String, holder: String, seconds: Int) throws -> Bool {
        try WorkLease.check(name: name, holder: holder, seconds: seconds)
        return try wrap {
            try pool.write { db in
                try db.execute(sql: """
                    INSERT INTO work_lease (name, holder, until) VALUES (?, ?, CAST(strftime('%s', 'now') AS INTEGER) + ?)
                    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                    WHERE work_lease.until <= CAST(strftime('%s', 'now') AS INTEGER) OR work_lease.holder = excluded.holder
                    """, arguments: [name, holder, seconds])
                return db.changesCount == 1
            }
        }
    }

    public func releaseWork(_ name: String, holder: String) throws {
        try wrap { try pool.write { db in try db.execute(sql: "DELETE FROM work_lease WHERE name = ? AND holder = ?", arguments: [name, holder]) } }
    }
}

/// What every store accepts of a claim on scheduled work.
enum WorkLease {
    static func check(name: String, holder: String, seconds: Int) throws {
        guard (1...200).contains(name.utf8.count), (1...100).contains(holder.utf8.count) else {
            throw StoreError(.invalidArgument, "a piece of work is named in 1 to 200 bytes and its holder in 1 to 100")
        }
        guard (1...86_400).contains(seconds) else { throw StoreError(.invalidArgument, "work is claimed for 1 second to a day, not \(seconds) s") }
    }
}
