import CivitasCrypto
import CivitasLog
import Synchronization

/// What the broker needs of a store: it persists and reads back, and decides nothing. Every
/// implementation passes the same contract suite (`Tests/CivitasStoreTests/StorageContractTests.swift`).
/// Every change goes through ``transaction(_:)``, where the broker composes its writes and log
/// entries into one commit.
public protocol BrokerStorage: AnyObject, Sendable {
    // MARK: Changes
    /// Runs `body` in ONE write transaction with the log: all it writes and appends commits, or none of it.
    func transaction<T>(_ body: (any StorageTransaction) throws -> T) throws -> T

    // MARK: Secrets and the log
    /// A 32-byte secret of the store, created on first use and kept wrapped by the storage key.
    func secret(named name: String) throws -> [UInt8]
    /// Number of entries in the exchange log.
    var logSize: UInt64 { get }
    /// The exchange log's origin line (its name in checkpoints).
    var logOrigin: String { get }
    /// Signs a checkpoint of the log as it is now (unless the latest covers it) and returns the latest.
    func checkpointLog(signer: SecretKeys) throws -> String
    /// Appends to the kept checkpoint of `size` entries the signature lines of `lines` (each
    /// without its newline) it does not carry yet, and returns the note; refuses (`notFound`) a
    /// size no checkpoint was kept for.
    func addSignatures(toCheckpointOfSize size: UInt64, lines: [String]) throws -> String
    /// The latest kept checkpoint, as stored (nil when none was signed yet).
    func latestCheckpointNote() throws -> String?
    /// The bytes of log entry `index`; refuses (`notFound`) an index past the log's end.
    func logEntry(at index: UInt64) throws -> [UInt8]
    /// The whole log as the auditor's export.
    func logExporter(signer: SecretKeys, pageEntries: Int) throws -> LogExporter
    /// Entry `index` with its inclusion proof and a checkpoint covering it.
    func logInclusionEvidence(index: UInt64, signer: SecretKeys) throws -> InclusionEvidence
    /// The log's size and its latest checkpoint's, with when that was signed.
    func logStatus() throws -> LogStatus
    /// The RFC 9162 consistency proof from the log's first `size1` entries to its first `size2`
    /// (at most the log's size); refuses a first size of 0 (`invalidArgument`) and sizes with no
    /// proof between them (`notFound`).
    func logConsistencyProof(from size1: UInt64, to size2: UInt64) throws -> [MerkleDigest]

    // MARK: Participants and request nonces
    func participant(_ keyID: KeyID) throws -> Participant?
    func participants() throws -> [Participant]
    /// A key a participant rotated to or away from, by its key id (registered keys never rotated have none).
    func participantKey(_ keyID: KeyID) throws -> ParticipantKey?
    /// The rotations participants asked for that the operator has not approved yet, oldest first.
    func pendingParticipantKeys() throws -> [ParticipantKey]
    /// Records request nonces in one write, in order; for each, whether it was new: false for one
    /// its key used since `oldestAccepted` (earlier in the same list included).
    func recordNonces(_ nonces: [RequestNonce], oldestAccepted: Int64) throws -> [Bool]

    // MARK: Datasets and batches
    func dataset(_ id: String) throws -> Dataset?
    func datasets() throws -> [Dataset]
    /// Stores a batch handed over chunk by chunk (columns, rows), whole or not at all: a producer
    /// that throws leaves nothing stored.
    /// `bodySHA256` is the SHA-256 of the upload's bytes as received, kept with its idempotency key
    /// so that the same upload sent again is recognized without reading it (``uploadedBatch(dataset:idempotencyKey:bodySHA256:)``).
    /// `quality`, called in the same transaction once a new batch is sealed (never for a replay),
    /// turns the dataset's stored quality counts into the counts to store (nil: leave them).
    func appendBatch(dataset id: String, idempotencyKey: String?, bodySHA256: [UInt8]?, now: UTCTime,
                     produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void,
                     quality: (_ stored: [UInt8]?) throws -> [UInt8]?) throws -> Batch
    /// The batch stored under `idempotencyKey` from an upload of exactly these bytes (their
    /// SHA-256), answered as replayed; nil when there is none (or it came from other bytes).
    func uploadedBatch(dataset id: String, idempotencyKey: String, bodySHA256: [UInt8]) throws -> Batch?
    /// The sequence of the dataset's batch stored under `idempotencyKey`, from whatever bytes; nil when none is.
    func batchSequence(dataset id: String, idempotencyKey: String) throws -> Int64?
    func batches(of dataset: String, from sequence: Int64) throws -> [BatchSummary]
    /// The records of a dataset (or of some batches), batch by batch and segment by segment, each
    /// segment decrypted and checked and handed over as one chunk read in place.
    func recordChunks(of id: String, batches: Range<Int64>?, handle: (RecordChunk) throws -> Void) throws

    // MARK: Agreements and consent
    func agreement(_ id: String) throws -> StoredAgreement?
    func agreements(involving participant: KeyID?) throws -> [StoredAgreement]
    /// The newest `limit` deliveries under an agreement, newest first, without their envelopes.
    func deliverySummaries(agreement: String, limit: Int) throws -> [DeliverySummary]
    /// The refusals counted under an agreement, by code.
    func refusals(agreement: String) throws -> [RefusalCount]
    /// The login link or session whose token hashes to `sha256`, if any.
    func webToken(sha256: [UInt8]) throws -> WebToken?
    /// The recorder's consent idempotency key `key`, if it was used.
    func consentKey(recorder: KeyID, key: String) throws -> ConsentKey?
    /// The data-quality counts kept for a dataset (the broker's encoding), if any were stored.
    func datasetQuality(_ dataset: String) throws -> [UInt8]?
    /// The records of the consent events logged by entry `logIndex`, in the order of their request.
    func consentRecords(logIndex: UInt64) throws -> [[UInt8]]
    /// Per subject hash, whether its latest event for the purpose granted consent.
    func consentStates(dataset: String, purpose: String) throws -> [SubjectDigest: Bool]

    // MARK: Deliveries and feeds
    func drawnBatches(partner: KeyID, dataset: String) throws -> Set<Int64>
    func delivery(_ id: String) throws -> Delivery?
    /// How many deliveries of each kind were made.
    func deliveryCounts() throws -> [Delivery.Kind: Int]
    /// Delivery `id`'s partner, log entry and envelope length, if it exists, without reading the envelope.
    func deliveryEnvelope(_ id: String) throws -> DeliveryEnvelope?
    /// Reads delivery `id`'s envelope from its start, in pieces of at most `pieceSize` bytes handed
    /// to `each` in order (each valid only during the call) within one read of the store, until the
    /// end or until `each` returns false. Refuses (`notFound`) a delivery that does not exist.
    func readEnvelope(of id: String, pieceSize: Int, _ each: (UnsafeRawBufferPointer) throws -> Bool) throws
    /// The partner's idempotency key `key`, if it was used.
    func requestKey(partner: KeyID, key: String) throws -> RequestKey?
    func deliveries(feed: String, after sequence: Int64, limit: Int) throws -> [Delivery]
    func feed(_ id: String) throws -> Feed?
    func feeds() throws -> [Feed]
    /// Calls `handler` with a feed's id whenever a transaction of ANOTHER process on the same
    /// database announced a window of it (``StorageTransaction/announceWindow(feed:)``), until the
    /// store is released. A store only one process opens has nothing to watch.
    func watchWindows(_ handler: @escaping @Sendable (_ feed: String) -> Void) throws

    // MARK: Scheduled work
    /// Claims the work named `name` (a feed's window, its webhook pushes) for `holder` for the
    /// next `seconds` on the database's clock, in one statement: true when nobody else holds it
    /// now. A claim past its time is anybody's; the holder may claim again to extend it.
    func claimWork(_ name: String, holder: String, seconds: Int) throws -> Bool
    /// Gives up `holder`'s claim on `name` before its time (anybody else's is left alone).
    func releaseWork(_ name: String, holder: String) throws
}

extension BrokerStore: BrokerStorage {}

extension BrokerStorage {
    /// The records of a dataset (or of some batches), segment by segment, as rows of strings.
    public func records(of id: String, batches: Range<Int64>? = nil, handle: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws {
        try recordChunks(of: id, batches: batches) { chunk in try handle(chunk.columns, chunk.rows) }
    }

    /// Stores a batch handed over chunk by chunk, leaving the dataset's quality counts as they are.
    public func appendBatch(dataset id: String, idempotencyKey: String?, bodySHA256: [UInt8]?, now: UTCTime,
                            produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void) throws -> Batch {
        try appendBatch(dataset: id, idempotencyKey: idempotencyKey, bodySHA256: bodySHA256, now: now, produce: produce, quality: { _ in nil })
    }

    /// Stores a batch given whole, encrypted, as ``appendBatch(dataset:idempotencyKey:bodySHA256:now:produce:)``
    /// does; the same idempotency key answers the stored batch.
    public func appendBatch(dataset id: String, columns: [String], rows: [[String]], idempotencyKey: String?, now: UTCTime) throws -> Batch {
        try appendBatch(dataset: id, idempotencyKey: idempotencyKey, bodySHA256: nil, now: now) { emit in
            try emit(columns, [])
            for start in stride(from: 0, to: rows.count, by: Segments.rows) {
                try emit(columns, Array(rows[start..<min(rows.count, start + Segments.rows)]))
            }
        }
    }

    /// Records a request nonce; refuses (`replayed`) one the key used since `oldestAccepted`.
    public func recordNonce(keyID: String, nonce: String, created: Int64, oldestAccepted: Int64) throws {
        guard try recordNonces([RequestNonce(keyID: keyID, nonce: nonce, created: created)], oldestAccepted: oldestAccepted) == [true] else {
            throw StoreError(.replayed, "nonce \(nonce.prefix(40)) was already used by key \(keyID.prefix(40))")
        }
    }
}

/// What every store accepts of request nonces, and when it forgets expired ones: at most once a
/// second (whenever the oldest accepted time moved on), not on every request.
final class NonceSweep: Sendable {
    private let last = Mutex<Int64>(Int64.min)

    /// Refuses a nonce outside 1 to 256 bytes.
    static func check(_ nonces: [RequestNonce]) throws {
        if let long = nonces.first(where: { !(1...256).contains($0.nonce.utf8.count) }) {
            throw StoreError(.invalidArgument, "a request nonce must be 1 to 256 bytes, not \(long.nonce.utf8.count)")
        }
    }

    /// Whether nonces older than `oldestAccepted` should be swept now.
    func due(oldestAccepted: Int64) -> Bool {
        last.withLock { last in
            guard oldestAccepted > last else { return false }
            last = oldestAccepted
            return true
        }
    }
}
