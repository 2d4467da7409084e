import CivitasCrypto
import CivitasLog

/// What the broker needs of a store: it persists and reads back, and decides nothing. Every
/// implementation passes the same contract suite (`Tests/CivitasStoreTests/StorageContractTests.swift`).
/// Changes that are logged commit with their log entries in one transaction.
public protocol BrokerStorage: AnyObject, Sendable {
    // MARK: Secrets and the log
    /// A 32-byte secret of the store, created on first use and kept wrapped by the storage key.
    func secret(named name: String) throws -> [UInt8]
    /// Number of entries in the exchange log.
    var logSize: UInt64 { get }
    /// Signs a checkpoint of the log as it is now (unless the latest covers it) and returns the latest.
    func checkpointLog(signer: SecretKeys) throws -> String
    /// The whole log as the auditor's export.
    func logExporter(signer: SecretKeys, pageEntries: Int) throws -> LogExporter
    /// Entry `index` with its inclusion proof and a checkpoint covering it.
    func logInclusionEvidence(index: UInt64, signer: SecretKeys) throws -> InclusionEvidence

    // MARK: Participants and request nonces
    func registerParticipant(_ keys: PublicKeys, role: Participant.Role, now: UTCTime) throws -> Participant
    func participant(_ keyID: KeyID) throws -> Participant?
    func participants() throws -> [Participant]
    /// Records a request nonce; refuses (`replayed`) one the key used since `oldestAccepted`.
    func recordNonce(keyID: String, nonce: String, created: Int64, oldestAccepted: Int64) throws

    // MARK: Datasets and batches
    func registerDataset(id: String, publisher: KeyID, schema: [UInt8], purposes: [String], now: UTCTime) throws -> Dataset
    func dataset(_ id: String) throws -> Dataset?
    func datasets() throws -> [Dataset]
    /// Stores a batch whole, encrypted; the same idempotency key answers the stored batch.
    func appendBatch(dataset id: String, columns: [String], rows: [[String]], idempotencyKey: String?, now: UTCTime) throws -> Batch
    /// Stores a batch handed over chunk by chunk (columns, rows), whole or not at all: a producer
    /// that throws leaves nothing stored.
    func appendBatch(dataset id: String, idempotencyKey: String?, now: UTCTime,
                     produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void) throws -> Batch
    func batches(of dataset: String, from sequence: Int64) throws -> [BatchSummary]
    /// The records of a dataset (or of some batches), segment by segment.
    func records(of id: String, batches: Range<Int64>?, handle: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws

    // MARK: Agreements and consent
    func offerAgreement(_ agreement: StoredAgreement, purposes: [String], legalBasis: String, aggregateKeys: [String: String]) throws
    func acceptAgreement(_ id: String, signature: [UInt8], now: UTCTime) throws -> StoredAgreement
    func endAgreement(_ id: String, as state: StoredAgreement.State, by: KeyID?, now: UTCTime) throws -> StoredAgreement
    func agreement(_ id: String) throws -> StoredAgreement?
    func agreements(involving participant: KeyID?) throws -> [StoredAgreement]
    func recordConsents(_ events: [BrokerStore.ConsentEvent], recordedBy: KeyID, now: UTCTime) throws -> [UInt64]
    /// Per subject hash (hex), whether its latest event for the purpose granted consent.
    func consentStates(dataset: String, purpose: String) throws -> [String: Bool]

    // MARK: Deliveries and feeds
    /// Runs `body` in ONE write transaction with the log: all it writes commits, or none of it.
    func exchangeTransaction<T>(_ body: (any ExchangeWrites) throws -> T) throws -> T
    func drawnBatches(partner: KeyID, dataset: String) throws -> Set<Int64>
    func delivery(_ id: String) throws -> Delivery?
    func deliveries(feed: String, after sequence: Int64, limit: Int) throws -> [Delivery]
    func createFeed(id: String, agreement: String, purpose: String, webhook: String?, now: UTCTime) throws -> Feed
    func feed(_ id: String) throws -> Feed?
    func feeds() throws -> [Feed]
    func skipFeedBatches(_ id: String, from: Int64, to: Int64) throws
    func acknowledge(feed id: String, through sequence: Int64) throws -> Feed
    func markPushed(feed id: String, through sequence: Int64) throws
}

extension BrokerStore: BrokerStorage {}
