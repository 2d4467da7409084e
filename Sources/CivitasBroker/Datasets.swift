import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// The formats a batch arrives in.
public enum BatchFormat: Sendable {
    /// CSV with a header row (RFC 4180).
    case csv
    /// JSON Lines: one object per line.
    case jsonLines
    /// NGSI-LD or NGSI v2 entities, normalized or key-values.
    case ngsi
}

/// Datasets: registered by an agency with an annotated schema; batches validated whole against
/// it and stored encrypted.
extension Broker {
    /// Most records in one batch.
    public static let maximumBatchRows = 1_000_000
    /// Most problems one refusal lists.
    public static let maximumReportedProblems = 20

    /// Registers a dataset under an annotated schema, offered for `purposes`; only an agency may.
    public func registerDataset(id: String, schema: JSONValue, purposes: [String], by publisher: Participant, now: UTCTime) throws -> Dataset {
        try require(publisher, roles: [.agency])
        guard schema.objectValue != nil else { throw BrokerError(.invalidSchema, "a dataset needs a schema (a JSON object)") }
        let bytes = try CanonicalJSON.encode(schema)
        do { _ = try DatasetSchema.parse(bytes) } catch let error as PrivacyError {
            throw BrokerError(.invalidSchema, "the schema: \(error.message)")
        }
        // What the catalog publishes about it: a title and description at least.
        _ = try DatasetDescription.parse(schema: schema)
        guard (1...128).contains(id.utf8.count), Self.isCode(id) else {
            throw BrokerError(.invalid, "dataset id '\(id.prefix(60))' must be 1-128 of a-z 0-9 . _ -")
        }
        try Self.checkPurposes(purposes)
        let dataset = Dataset(id: id, publisher: publisher.keys.keyID, schema: bytes, schemaSHA256: SHA256Hasher.hash(bytes), purposes: purposes, registered: now)
        try change { transaction in
            try transaction.insertDataset(dataset)
            _ = try transaction.appendLog(time: now, type: .datasetRegistered,
                                          members: LogEvents.datasetRegistered(dataset: id, publisher: dataset.publisher, schemaSHA256: dataset.schemaSHA256))
        }
        return dataset
    }

    /// Most purposes one dataset may be offered for.
    public static let maximumPurposes = 32

    /// Whether `text` uses only the characters of dataset ids and purpose codes: a-z 0-9 - _ .
    static func isCode(_ text: String) -> Bool {
        text.utf8.allSatisfy { (48...57).contains($0) || (97...122).contains($0) || $0 == 45 || $0 == 46 || $0 == 95 }
    }

    /// Checks purpose codes: 1-64 of a-z 0-9 - _ . each, no repeats, at most ``maximumPurposes``.
    static func checkPurposes(_ purposes: [String]) throws {
        guard purposes.count <= maximumPurposes else { throw BrokerError(.invalid, "at most \(maximumPurposes) purposes") }
        for purpose in purposes {
            guard (1...64).contains(purpose.utf8.count), isCode(purpose) else {
                throw BrokerError(.invalid, "purpose '\(purpose.prefix(60))' must be 1-64 of a-z 0-9 . _ -")
            }
        }
        guard Set(purposes).count == purposes.count else { throw BrokerError(.invalid, "a purpose is listed twice") }
    }

    /// A registered dataset.
    public func dataset(_ id: String) throws -> Dataset {
        guard let dataset = try mapStore({ try store.dataset(id) }) else { throw BrokerError(.notFound, "dataset \(id) is not registered") }
        return dataset
    }

    /// A number that changes whenever the broker's state does (every change appends to the
    /// exchange log): what was read for an unchanged version can be served again.
    public var stateVersion: UInt64 { store.logSize }

    /// Every registered dataset with its publisher, and the operator who runs the broker (the
    /// first registered), for the public catalog.
    public func catalog() throws -> (operator: Participant?, datasets: [(dataset: Dataset, publisher: Participant?)]) {
        let all = try mapStore { try store.participants() }
        let participants = Dictionary(uniqueKeysWithValues: all.map { ($0.keys.keyID, $0) })
        let operator_ = all.filter { $0.role == .operator_ }.min { $0.registered < $1.registered }
        return (operator_, try mapStore { try store.datasets() }.map { ($0, participants[$0.publisher]) })
    }

    /// Reads a batch in `format`, validates every record against the dataset's schema and stores
    /// it encrypted, whole or not at all; feed windows it fills close at once (a window that
    /// fails is reported to `windowFailed`). The same `idempotencyKey` answers the stored batch:
    /// at once, without reading the batch again, when its bytes are the same (`bodySHA256`, their
    /// SHA-256); after reading it, when other bytes hold the same records.
    /// `body` opens the batch's bytes from the start; it may be called more than once.
    /// A batch that `follows` another (its idempotency key: the part before it of a large file) is
    /// stored only once the dataset holds that one, so a file's parts keep their order whichever
    /// upload arrives first; until then it is refused (``BrokerError/Code/previousBatchMissing``).
    public func publishBatch(dataset id: String, format: BatchFormat, body: () throws -> ByteSource, bodySHA256: [UInt8]? = nil, idempotencyKey: String?,
                             follows previousKey: String? = nil, by publisher: Participant, now: UTCTime,
                             windowFailed: (_ feed: String, _ error: any Error) -> Void = { _, _ in }) throws -> Batch {
        try require(publisher, roles: [.agency])
        let dataset = try dataset(id)
        guard dataset.publisher == publisher.keys.keyID else { throw BrokerError(.forbidden, "only the publisher of \(id) may upload to it") }
        if let idempotencyKey, let bodySHA256,
           let stored = try mapStore({ try store.uploadedBatch(dataset: id, idempotencyKey: idempotencyKey, bodySHA256: bodySHA256) }) {
            return stored
        }
        if let previousKey, !(1...200).contains(previousKey.utf8.count) {
            throw BrokerError(.invalid, "the idempotency key of the batch this one follows must be 1 to 200 bytes")
        }
        if let previousKey, try mapStore({ try store.batchSequence(dataset: id, idempotencyKey: previousKey) }) == nil {
            throw BrokerError(.previousBatchMissing, "this batch follows the batch uploaded as \(previousKey), which \(id) does not hold yet; nothing was stored: store that one first")
        }
        return try batchesInProgress.storing(dataset: id, idempotencyKey: idempotencyKey) {
            try storeBatch(dataset: dataset, format: format, body: body, bodySHA256: bodySHA256, idempotencyKey: idempotencyKey, now: now,
                           windowFailed: windowFailed)
        }
    }

    /// Returns once this node is no longer storing the dataset's batch uploaded as
    /// `idempotencyKey` (at once when it is not): a batch that follows it may then be published.
    public func batchStored(dataset id: String, idempotencyKey: String) async {
        await batchesInProgress.wait(dataset: id, idempotencyKey: idempotencyKey)
    }

    /// Validates and stores a batch that is not a replay.
    private func storeBatch(dataset: Dataset, format: BatchFormat, body: () throws -> ByteSource, bodySHA256: [UInt8]?, idempotencyKey: String?,
                            now: UTCTime, windowFailed: (_ feed: String, _ error: any Error) -> Void) throws -> Batch {
        let id = dataset.id
        let schema = try DatasetSchema.parse(dataset.schema)
        let batch: Batch
        // The batch's contribution to the dataset's quality counts, tallied as its records are validated.
        var tally = qualityTally(for: dataset, schema: schema)
        var submitted = 0
        do {
            if format == .csv {
                batch = try publishCSV(dataset: id, schema: schema, body: try body(), bodySHA256: bodySHA256, idempotencyKey: idempotencyKey, now: now,
                                       tally: &tally, submitted: &submitted)
            } else {
                batch = try publishRecords(dataset: id, schema: schema, ngsi: format == .ngsi, body: body, bodySHA256: bodySHA256,
                                           idempotencyKey: idempotencyKey, now: now, tally: &tally, submitted: &submitted)
            }
        } catch let error as BrokerError where error.code == .invalidBatch {
            // A refused batch counts against the dataset's validity; nothing of it is stored.
            try recordQuality(dataset: id, refusedRecords: submitted)
            throw error
        }
        if !batch.replayed {
            // Feed windows that this batch fills close now; time-closed windows close on the broker's schedule.
            do { _ = try closeDueWindows(now: now, dataset: id, failed: windowFailed) } catch { windowFailed("*", error) }
        }
        return batch
    }

    /// A CSV batch read, validated and sealed chunk by chunk inside the store's transaction: the
    /// rows are never held whole. Any problem (up to the reported maximum, all rows read) refuses
    /// the whole batch and stores nothing.
    private func publishCSV(dataset id: String, schema: DatasetSchema, body: ByteSource, bodySHA256: [UInt8]?, idempotencyKey: String?,
                            now: UTCTime, tally: inout BatchQualityTally, submitted: inout Int) throws -> Batch {
        var limits = CSVTable.Limits()
        limits.maximumRows = Self.maximumBatchRows
        return try mapStore {
            try store.appendBatch(dataset: id, idempotencyKey: idempotencyKey, bodySHA256: bodySHA256, now: now, produce: { emit in
                var columns: [String] = []
                var problems: [DatasetSchema.Issue] = []
                var rows = 0
                do {
                    try CSVTable.read(from: body, limits: limits, chunkRows: 4_096, header: { header in
                        columns = header
                        let headerProblems = schema.validate(CSVTable(columns: header, rows: []), limit: Self.maximumReportedProblems)
                        guard headerProblems.isEmpty else { throw Self.refusal(id, headerProblems) }
                        try emit(header, [])
                    }) { chunk, firstRow in
                        rows += chunk.count
                        submitted = rows
                        guard problems.count < Self.maximumReportedProblems else { return }
                        problems += schema.validate(CSVTable(columns: columns, rows: chunk), limit: Self.maximumReportedProblems - problems.count,
                                                    firstRow: firstRow)
                        if problems.isEmpty {
                            try emit(columns, chunk)
                            tally.add(columns: columns, rows: chunk)
                        }
                    }
                } catch let error as PrivacyError {
                    throw BrokerError(.invalidBatch, "the batch cannot be read: \(error.message); nothing was stored")
                }
                guard problems.isEmpty else { throw Self.refusal(id, problems) }
                guard rows > 0 else {
                    throw BrokerError(.invalidBatch, "the batch has no records (a header alone is not a batch); nothing was stored")
                }
            }, quality: { stored in try Self.qualityCounts(stored, adding: tally) })
        }
    }

    /// A JSON Lines (or, with `ngsi`, NGSI) batch, read twice a record at a time: first every
    /// record is validated and the fields are collected (a batch's columns are the union of its
    /// records' fields), then, inside the store's transaction, each record becomes a row under
    /// those columns and is sealed chunk by chunk. The records are never held whole.
    private func publishRecords(dataset id: String, schema: DatasetSchema, ngsi: Bool, body: () throws -> ByteSource, bodySHA256: [UInt8]?,
                                idempotencyKey: String?, now: UTCTime, tally: inout BatchQualityTally, submitted: inout Int) throws -> Batch {
        func forEachRecord(_ handle: (_ record: [String: JSONValue], _ number: Int) throws -> Void) throws {
            do {
                var number = 0
                let counted: ([String: JSONValue], Int) throws -> Void = { record, _ in
                    number += 1
                    try handle(record, number)
                }
                if ngsi {
                    try JSONRecordReader.readNGSI(from: try body(), maximumRecords: Self.maximumBatchRows, counted)
                } else {
                    try JSONRecordReader.readJSONLines(from: try body(), maximumRecords: Self.maximumBatchRows, counted)
                }
            } catch let error as PrivacyError {
                throw BrokerError(.invalidBatch, "the batch cannot be read: \(error.message); nothing was stored")
            }
        }
        var fields = Set<String>(), problems: [DatasetSchema.Issue] = [], records = 0
        try forEachRecord { record, number in
            records = number
            submitted = number
            fields.formUnion(record.keys)
            guard problems.count < Self.maximumReportedProblems else { return }
            problems += JSONRecords.validate(record, row: number, schema: schema).1.prefix(Self.maximumReportedProblems - problems.count)
        }
        guard problems.isEmpty else { throw Self.refusal(id, problems) }
        guard records > 0 else { throw BrokerError(.invalidBatch, "the batch has no records; nothing was stored") }
        let columns = fields.sorted()
        return try mapStore {
            try store.appendBatch(dataset: id, idempotencyKey: idempotencyKey, bodySHA256: bodySHA256, now: now, produce: { emit in
                try emit(columns, [])
                var chunk: [[String]] = []
                try forEachRecord { record, _ in
                    chunk.append(try JSONRecords.row(JSONRecords.validate(record, row: 0, schema: schema).0, columns: columns))
                    if chunk.count == BrokerStore.segmentRows {
                        try emit(columns, chunk)
                        tally.add(columns: columns, rows: chunk)
                        chunk.removeAll(keepingCapacity: true)
                    }
                }
                if !chunk.isEmpty {
                    try emit(columns, chunk)
                    tally.add(columns: columns, rows: chunk)
                }
            }, quality: { stored in try Self.qualityCounts(stored, adding: tally) })
        }
    }

    static func refusal(_ dataset: String, _ problems: [DatasetSchema.Issue]) -> BrokerError {
        BrokerError(.invalidBatch, "the batch does not match the schema of \(dataset); nothing was stored", details: problems.map(\.description))
    }
}
