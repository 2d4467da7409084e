import CivitasCrypto
import CivitasLog
import CivitasStore
import CivitasTime

/// What a participant may read of its own part in the data space (the web view's pages): an
/// agency's datasets with their batches and consent counts (never a subject), and the agreements
/// it may see, each with its newest deliveries and their logged figures.
public struct ParticipantOverview: Sendable {
    public struct DatasetFigures: Sendable {
        public let dataset: String
        public let batches: Int
        public let records: Int
        /// Per purpose the dataset is offered for: people whose latest event grants consent, and who withdrew.
        public let consent: [(purpose: String, granted: Int, withdrawn: Int)]
    }

    public struct DeliveryFigures: Sendable {
        public let delivery: DeliverySummary
        /// Nil for a delivery that selects no records (an aggregate).
        public let recordsWithoutConsent: UInt64?
        public let recordsSuppressed: UInt64
        public let kAchieved: UInt64
        /// What the delivery was charged, in its agreement's unit (ε, or ρ under zCDP).
        public let chargeMicro: UInt64
    }

    public struct AgreementFigures: Sendable {
        public let agreement: StoredAgreement
        public let purposes: [String]
        /// The unit the agreement counts its privacy loss in.
        public let accounting: AgreementPolicy.Accounting
        public let publisher: String
        public let partner: String
        /// Newest first.
        public let deliveries: [DeliveryFigures]
        /// The partner's requests the broker refused, by reason.
        public let refusals: [RefusalCount]
    }

    public let datasets: [DatasetFigures]
    public let agreements: [AgreementFigures]
}

/// A page of the log as a participant browses it.
public struct LogPage: Sendable {
    public let size: UInt64
    public let start: UInt64
    public let end: UInt64
    /// The entries of `start..<end` that match the filters, with their canonical bytes.
    public let entries: [(entry: LogEntry, bytes: [UInt8])]
}

extension Broker {
    /// The participant's overview, with at most `deliveries` deliveries per agreement.
    public func overview(for participant: Participant, deliveries limit: Int) throws -> ParticipantOverview {
        let names = Dictionary(uniqueKeysWithValues: try mapStore { try store.participants() }.map { ($0.keys.keyID, $0.keys.name) })
        var datasets: [ParticipantOverview.DatasetFigures] = []
        if participant.role == .agency {
            for dataset in try mapStore({ try store.datasets() }) where dataset.publisher == participant.keys.keyID {
                let batches = try mapStore { try store.batches(of: dataset.id, from: 1) }
                let consent = try dataset.purposes.map { purpose in
                    let states = try mapStore { try store.consentStates(dataset: dataset.id, purpose: purpose) }
                    let granted = states.values.filter { $0 }.count
                    return (purpose: purpose, granted: granted, withdrawn: states.count - granted)
                }
                datasets.append(.init(dataset: dataset.id, batches: batches.count, records: batches.reduce(0) { $0 + $1.records }, consent: consent))
            }
        }
        let agreements = try agreements(for: participant).map { agreement in
            let policy = try AgreementPolicy.parse(try JSONParser.parse(agreement.policy))
            let deliveries = try mapStore { try store.deliverySummaries(agreement: agreement.id, limit: limit) }.map { delivery in
                let entry = try LogEntry.parse(try mapStore { try store.logEntry(at: delivery.logIndex) }, position: delivery.logIndex)
                return ParticipantOverview.DeliveryFigures(
                    delivery: delivery, recordsWithoutConsent: entry.members["transforms"]?["records_without_consent"]?.exactUnsignedInteger,
                    recordsSuppressed: entry.count("records_suppressed") ?? 0, kAchieved: entry.count("k_achieved") ?? 0,
                    chargeMicro: entry.count("rho_micro") ?? entry.count("epsilon_micro") ?? 0)
            }
            return ParticipantOverview.AgreementFigures(agreement: agreement, purposes: policy.purposes, accounting: policy.accounting,
                                                        publisher: names[agreement.publisher] ?? agreement.publisher.hex,
                                                        partner: names[agreement.partner] ?? agreement.partner.hex, deliveries: deliveries,
                                                        refusals: try mapStore { try store.refusals(agreement: agreement.id) })
        }
        return ParticipantOverview(datasets: datasets, agreements: agreements)
    }

    /// Up to `count` entries from `start` (default: the last page), those of `type`, `agreement`
    /// or `dataset` when given. Any participant may read the log.
    public func logPage(from start: UInt64?, count: Int, type: String?, agreement: String?, dataset: String?) throws -> LogPage {
        let size = store.logSize
        let first = min(start ?? (size > UInt64(count) ? size - UInt64(count) : 0), size)
        let end = min(first + UInt64(count), size)
        var entries: [(entry: LogEntry, bytes: [UInt8])] = []
        for index in first..<end {
            let bytes = try mapStore { try store.logEntry(at: index) }
            let entry = try LogEntry.parse(bytes, position: index)
            if let type, entry.type.rawValue != type { continue }
            if let agreement, entry.string("agreement") != agreement { continue }
            if let dataset, entry.string("dataset") != dataset { continue }
            entries.append((entry, bytes))
        }
        return LogPage(size: size, start: first, end: end, entries: entries)
    }

    /// The log's origin line.
    public var logOrigin: String { store.logOrigin }

    /// Entries in the log.
    public var logSize: UInt64 { store.logSize }
}
