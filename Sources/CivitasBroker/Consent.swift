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
}

/// Consent: grants and withdrawals per subject and purpose, kept as keyed hashes, each with a signed receipt.
extension Broker {
    /// The keyed hash under which a subject id of a dataset is stored (never the id itself).
    public func subjectHash(dataset: String, subject: String) -> [UInt8] {
        subjects.mac(Array(dataset.utf8) + [0] + Array(subject.utf8))
    }

    /// Most consent events recorded in one request.
    public static let maximumConsentEvents = 10_000

    /// Records grants and withdrawals of consent in one transaction (each logged) and returns a
    /// signed receipt for each: the ISO/IEC TS 27560 record with its log index, and the broker's
    /// Ed25519 signature over it.
    public func recordConsent(_ requests: [ConsentRequest], by recorder: Participant, now: UTCTime) throws -> [JSONValue] {
        guard (1...Self.maximumConsentEvents).contains(requests.count) else {
            throw BrokerError(.invalid, "send 1 to \(Self.maximumConsentEvents) consent events at a time")
        }
        var datasets: [String: Dataset] = [:]
        var events: [StoredConsent] = []
        var records: [[String: JSONValue]] = []
        for (number, request) in requests.enumerated() {
            let label = requests.count == 1 ? "" : "event \(number + 1): "
            if datasets[request.dataset] == nil {
                guard let dataset = try store.dataset(request.dataset) else { throw BrokerError(.notFound, "\(label)dataset \(request.dataset) is not registered") }
                guard dataset.publisher == recorder.keys.keyID || recorder.role == .consentService else {
                    throw BrokerError(.forbidden, "\(label)consent for \(dataset.id) is recorded by its publisher or a consent service")
                }
                datasets[request.dataset] = dataset
            }
            guard let dataset = datasets[request.dataset], dataset.purposes.contains(request.purpose) else {
                throw BrokerError(.invalid, "\(label)dataset \(request.dataset) is not offered for purpose \(request.purpose)")
            }
            for (name, value) in [("subject", request.subject), ("notice", request.notice), ("collection_method", request.collectionMethod),
                                  ("jurisdiction", request.jurisdiction)] {
                guard (1...Self.maximumConsentFieldLength).contains(value.utf8.count) else {
                    throw BrokerError(.invalid, "\(label)consent field '\(name)' must be 1 to \(Self.maximumConsentFieldLength) bytes")
                }
            }
            let subject = subjectHash(dataset: dataset.id, subject: request.subject)
            let record: [String: JSONValue] = [
                "schema_version": "ISO/IEC TS 27560:2023",
                "record_id": .string("cr-" + Hex.encode(Sodium.randomBytes(12))),
                "pii_principal_id": .string(Hex.encode(subject)),
                "pii_controller": .string(dataset.publisher.hex),
                "dataset": .string(dataset.id),
                "purposes": [["purpose": .string(request.purpose), "lawful_basis": "consent"]],
                "notice": .string(request.notice),
                "consent_type": "explicit",
                "collection_method": .string(request.collectionMethod),
                "jurisdiction": .string(request.jurisdiction),
                "event": ["type": .string(request.granted ? "given" : "withdrawn"), "time": .string(now.rfc3339), "recorded_by": .string(recorder.keys.keyID.hex)],
                "state": .string(request.granted ? "active" : "withdrawn"),
            ]
            records.append(record)
            events.append(.init(dataset: dataset.id, subject: subject, purpose: request.purpose, granted: request.granted,
                                record: try CanonicalJSON.encode(.object(record))))
        }
        let indexes = try change { transaction in
            try events.map { event in
                try transaction.putConsent(event, now: now)
                return try transaction.appendLog(time: now, type: event.granted ? .consentGranted : .consentRevoked,
                                                 members: LogEvents.consentRecorded(dataset: event.dataset, subject: event.subject,
                                                                                    purpose: event.purpose, recordedBy: recorder.keys.keyID))
            }
        }
        return try zip(records, indexes).map { record, index in
            var receipt = record
            receipt["log_index"] = .number(Double(index))
            let signed = try CanonicalJSON.encode(.object(receipt))
            return ["receipt": .object(receipt), "broker_key": .string(keys.keyID.hex),
                    "signature": .string(Base64.encode(keys.sign(Self.receiptContext + signed)))]
        }
    }

    /// What the broker signs in a consent receipt: this context, then the receipt's canonical JSON.
    public static let receiptContext = Array("civitas-consent-receipt/1".utf8) + [0]
}
