import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// A consent event for one subject and purpose, with the ISO/IEC TS 27560 record fields the recorder supplies.
public struct ConsentRequest: Sendable {
    public var dataset: String
    public var subject: String
    public var purpose: String
    public var granted: Bool
    /// The notice the subject was shown (an id or URL).
    public var notice: String
    /// How consent was collected (`web-form`, `paper-form`, `phone`…).
    public var collectionMethod: String
    /// Jurisdiction code (`US-PA`, `EU`…).
    public var jurisdiction: String

    public init(dataset: String, subject: String, purpose: String, granted: Bool, notice: String, collectionMethod: String, jurisdiction: String) {
        self.dataset = dataset
        self.subject = subject
        self.purpose = purpose
        self.granted = granted
        self.notice = notice
        self.collectionMethod = collectionMethod
        self.jurisdiction = jurisdiction
    }

    /// SHA-256 over every field of `requests`, in order, each length-prefixed: what an idempotency key was used for.
    static func digest(of requests: [ConsentRequest]) throws -> [UInt8] {
        let hasher = try SHA256Hasher()
        var buffer: [UInt8] = []
        func append(_ field: String) {
            let count = UInt32(field.utf8.count)
            buffer.append(UInt8(count >> 24))
            buffer.append(UInt8((count >> 16) & 0xFF))
            buffer.append(UInt8((count >> 8) & 0xFF))
            buffer.append(UInt8(count & 0xFF))
            buffer += field.utf8
        }
        for request in requests {
            buffer.removeAll(keepingCapacity: true)
            append(request.dataset)
            append(request.subject)
            append(request.purpose)
            append(request.granted ? "grant" : "withdraw")
            append(request.notice)
            append(request.collectionMethod)
            append(request.jurisdiction)
            buffer.withUnsafeBytes { hasher.update($0) }
        }
        return hasher.finish()
    }
}

/// Consent: grants and withdrawals per subject and purpose, kept as keyed hashes, each with a signed receipt.
extension Broker {
    /// The keyed hash under which a subject id of a dataset is stored (never the id itself).
    public func subjectHash(dataset: String, subject: String) -> [UInt8] {
        var input: [UInt8] = []
        input.reserveCapacity(dataset.utf8.count + 1 + subject.utf8.count)
        input += dataset.utf8
        input.append(0)
        input += subject.utf8
        return subjects.mac(input)
    }

    /// The text fields of a consent event, as the API names them.
    static let consentFieldNames = ["subject", "notice", "collection_method", "jurisdiction"]

    /// Most consent events recorded in one request.
    public static let maximumConsentEvents = 10_000

    /// Most datasets the events of one request may concern.
    public static let maximumConsentDatasets = 64

    /// Records grants and withdrawals of consent in one transaction and returns their receipts:
    /// each event's ISO/IEC TS 27560 record, provable on its own by its inclusion proof in the
    /// Merkle tree of the request's records, whose root the one `consent.recorded` log entry
    /// carries and the broker signs.
    /// With `requestKey`, the same request sent again (a client's retry, or a rerun of a file
    /// partly sent) is answered with the receipts the first one got, and records nothing more.
    public func recordConsent(_ requests: [ConsentRequest], by recorder: Participant, now: UTCTime, requestKey: String? = nil) throws -> ConsentReceipts {
        guard (1...Self.maximumConsentEvents).contains(requests.count) else {
            throw BrokerError(.invalid, "send 1 to \(Self.maximumConsentEvents) consent events at a time")
        }
        let keyed = try requestKey.map { try KeyedRequest($0, sha256: try ConsentRequest.digest(of: requests)) }
        if let first = try firstReceipts(keyed, recorder: recorder) { return first }
        do {
            return try record(requests, by: recorder, now: now, keyed: keyed)
        } catch {
            // Another request with the same key may have committed first: its receipts are the answer.
            guard let first = try firstReceipts(keyed, recorder: recorder) else { throw error }
            return first
        }
    }

    /// The receipts an earlier request with this key got, rebuilt from its stored records and log
    /// entry; a key used for other events is refused.
    func firstReceipts(_ keyed: KeyedRequest?, recorder: Participant) throws -> ConsentReceipts? {
        guard let keyed, let stored = try mapStore({ try store.consentKey(recorder: recorder.keys.keyID, key: keyed.key) }) else { return nil }
        guard stored.requestSHA256 == keyed.sha256 else {
            throw BrokerError(.duplicate, "idempotency key \(keyed.key.prefix(60)) was used for other consent events")
        }
        let records = try mapStore { try store.consentRecords(logIndex: stored.logIndex) }
        let entryBytes = try mapStore { try store.logEntry(at: stored.logIndex) }
        let tree = ConsentReceipts.tree(of: records)
        let entry = try LogEntry.parse(entryBytes, position: stored.logIndex)
        guard entry.type == .consentRecorded, entry.count("receipts") == UInt64(records.count),
              entry.string("receipts_root") == Hex.encode(try tree.root()) else {
            throw BrokerError(.notFound, "the consent events recorded for idempotency key \(keyed.key.prefix(60)) cannot be read back")
        }
        return ConsentReceipts(records: records, tree: tree, logEntry: entryBytes, logIndex: stored.logIndex, brokerKey: keys.keyID,
                               signature: keys.sign(ConsentReceipts.signatureContext + entryBytes), replayed: true)
    }

    private func record(_ requests: [ConsentRequest], by recorder: Participant, now: UTCTime, keyed: KeyedRequest?) throws -> ConsentReceipts {
        var datasets: [String: Dataset] = [:]
        var granted = 0
        // Every event checked first, in order, so that the first wrong one is named.
        for (number, request) in requests.enumerated() {
            // Written only into an error, so that a request of ten thousand events builds none.
            var label: String { requests.count == 1 ? "" : "event \(number + 1): " }
            if datasets[request.dataset] == nil {
                guard let dataset = try store.dataset(request.dataset) else { throw BrokerError(.notFound, "\(label)dataset \(request.dataset) is not registered") }
                guard dataset.publisher == recorder.keys.keyID || recorder.role == .consentService else {
                    throw BrokerError(.forbidden, "\(label)consent for \(dataset.id) is recorded by its publisher or a consent service")
                }
                guard datasets.count < Self.maximumConsentDatasets else {
                    throw BrokerError(.invalid, "\(label)one request records consent for at most \(Self.maximumConsentDatasets) datasets")
                }
                datasets[request.dataset] = dataset
            }
            guard let dataset = datasets[request.dataset], dataset.purposes.contains(request.purpose) else {
                throw BrokerError(.invalid, "\(label)dataset \(request.dataset) is not offered for purpose \(request.purpose)")
            }
            let lengths = 1...Self.maximumConsentFieldLength
            if !lengths.contains(request.subject.utf8.count) || !lengths.contains(request.notice.utf8.count)
                || !lengths.contains(request.collectionMethod.utf8.count) || !lengths.contains(request.jurisdiction.utf8.count) {
                for (name, value) in zip(Self.consentFieldNames, [request.subject, request.notice, request.collectionMethod, request.jurisdiction])
                    where !lengths.contains(value.utf8.count) {
                    throw BrokerError(.invalid, "\(label)consent field '\(name)' must be 1 to \(Self.maximumConsentFieldLength) bytes")
                }
            }
            if request.granted { granted += 1 }
        }
        let built = ConsentRecords.build(requests, datasets: datasets, recorder: recorder.keys.keyID, time: now.rfc3339,
                                         recordIDs: Sodium.randomBytes(12 * requests.count), subjectHash: subjectHash)
        let records = built.records
        let events = requests.indices.map { number in
            StoredConsent(dataset: requests[number].dataset, subject: built.subjects[number], purpose: requests[number].purpose,
                          granted: requests[number].granted, record: records[number])
        }
        var tree = MerkleTree()
        for leaf in built.leaves { tree.append(leafHash: leaf) }
        let members = LogEvents.consentRecorded(datasets: datasets.keys.sorted(), recordedBy: recorder.keys.keyID, receipts: records.count,
                                                receiptsRoot: try tree.root(), granted: granted, withdrawn: records.count - granted)
        let entry = try change { transaction in
            // The entry first: every event names it.
            let entry = try transaction.appendLogEntry(time: now, type: .consentRecorded, members: members)
            for var event in events {
                event.logIndex = entry.entry.index
                try transaction.appendConsent(event, now: now)
            }
            if let keyed {
                try transaction.insertConsentKey(ConsentKey(recorder: recorder.keys.keyID, key: keyed.key, requestSHA256: keyed.sha256,
                                                            logIndex: entry.entry.index, created: now))
            }
            return entry
        }
        return ConsentReceipts(records: records, tree: tree, logEntry: entry.bytes, logIndex: entry.entry.index, brokerKey: keys.keyID,
                               signature: keys.sign(ConsentReceipts.signatureContext + entry.bytes))
    }
}
