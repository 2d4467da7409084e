import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// A delivery made by the broker and what its treatment achieved.
public struct ReleaseResult: Sendable {
    public let delivery: Delivery
    /// The treatment's figures (releases and feed windows; nil for aggregates).
    public let outcome: TreatmentOutcome?
    public let epsilonMicro: UInt64
}

/// A DP aggregate a partner asks for under an agreement.
public struct AggregateRequest: Sendable {
    public enum Statistic: String, Sendable { case count, sum, mean }
    public var purpose: String
    public var statistic: Statistic
    /// The measure summed or averaged (not for counts).
    public var measure: String?
    public var groupBy: [String]
    public var epsilonMicro: UInt64

    public init(purpose: String, statistic: Statistic, measure: String?, groupBy: [String], epsilonMicro: UInt64) {
        self.purpose = purpose
        self.statistic = statistic
        self.measure = measure
        self.groupBy = groupBy
        self.epsilonMicro = epsilonMicro
    }
}

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

/// The broker's use cases: agreements, consent, releases, DP aggregates and feeds. Every
/// change is one store transaction together with its log entry; a refusal changes nothing.
public final class Broker: Sendable {
    public let store: BrokerStore
    /// The broker's keys: they sign envelopes, checkpoints and consent receipts.
    public let keys: SecretKeys
    private let master: PseudonymMasterKey
    private let subjects: DomainPRF
    /// Feeds whose window could not reach k, with the last batch it held then.
    private let waitingWindows = WaitingWindows()
    /// The webhook URLs the broker may call (checked when a feed is created and before every push).
    public let webhooks: WebhookTargets

    /// Largest subject id, notice, method or jurisdiction text accepted in a consent event.
    public static let maximumConsentFieldLength = 256

    public init(store: BrokerStore, keys: SecretKeys, webhooks: WebhookTargets = WebhookTargets()) throws {
        self.store = store
        self.keys = keys
        self.webhooks = webhooks
        var secret = try store.secret(named: "broker-master")
        master = try PseudonymMasterKey(bytes: &secret)
        subjects = try master.prf(domain: "civitas-consent-subjects/1")
    }

    // MARK: Agreements

    /// Stores an agreement offered by the dataset's publisher, who signed the policy hash.
    public func offerAgreement(policy value: JSONValue, signature: [UInt8], by publisher: Participant, now: String) throws -> StoredAgreement {
        let policy = try AgreementPolicy.parse(value)
        guard policy.publisher == publisher.keys.keyID else {
            throw BrokerError(.forbidden, "the policy names publisher \(policy.publisher), not the caller \(publisher.keys.keyID)")
        }
        guard let dataset = try store.dataset(policy.dataset) else { throw BrokerError(.notFound, "dataset \(policy.dataset) is not registered") }
        guard dataset.publisher == publisher.keys.keyID else { throw BrokerError(.forbidden, "only the publisher of \(dataset.id) may offer agreements on it") }
        guard let partner = try store.participant(policy.partner), partner.role == .partner else {
            throw BrokerError(.invalid, "partner \(policy.partner) is not a registered participant with the role partner")
        }
        try policy.check(against: try DatasetSchema.parse(dataset.schema), offeredPurposes: dataset.purposes)
        guard publisher.keys.isValidSignature(signature, for: AgreementPolicy.offerMessage(policySHA256: policy.sha256)) else {
            throw BrokerError(.badSignature, "the offer signature does not verify with \(publisher.keys.name)'s key over policy \(Hex.encode(policy.sha256))")
        }
        let agreement = StoredAgreement(id: policy.id, dataset: policy.dataset, publisher: policy.publisher, partner: policy.partner,
                                        policy: policy.canonical, policySHA256: policy.sha256, offerSignature: signature,
                                        validFrom: policy.validFrom, validUntil: policy.validUntil, budgetMicro: policy.epsilonBudgetMicro, offered: now)
        let keySources = try policy.aggregates.map { try Self.declaredGroups($0.groupBy, terms: $0, schema: DatasetSchema.parse(dataset.schema), sourcesOnly: true).1 } ?? [:]
        try mapStore {
            try store.offerAgreement(agreement, purposes: policy.purposes, legalBasis: policy.legalBasis.rawValue,
                                     aggregateKeys: keySources.compactMapValues(\.stringValue))
        }
        return agreement
    }

    /// The partner accepts, signing the same policy hash.
    public func acceptAgreement(_ id: String, signature: [UInt8], by partner: Participant, now: String) throws -> StoredAgreement {
        let agreement = try existing(id)
        guard agreement.partner == partner.keys.keyID else { throw BrokerError(.forbidden, "only the partner of agreement \(id) may accept it") }
        guard partner.keys.isValidSignature(signature, for: AgreementPolicy.acceptMessage(policySHA256: agreement.policySHA256)) else {
            throw BrokerError(.badSignature, "the acceptance signature does not verify with \(partner.keys.name)'s key over policy \(Hex.encode(agreement.policySHA256))")
        }
        guard now <= agreement.validUntil else { throw BrokerError(.agreementNotActive, "agreement \(id) ended at \(agreement.validUntil)") }
        return try mapStore { try store.acceptAgreement(id, signature: signature, now: now) }
    }

    /// Either party revokes the agreement; nothing is released under it afterwards.
    public func revokeAgreement(_ id: String, by participant: Participant, now: String) throws -> StoredAgreement {
        let agreement = try existing(id)
        guard [agreement.publisher, agreement.partner].contains(participant.keys.keyID) else {
            throw BrokerError(.forbidden, "only the parties to agreement \(id) may revoke it")
        }
        return try mapStore { try store.endAgreement(id, as: .revoked, by: participant.keys.keyID, now: now) }
    }

    /// Marks agreements past their validity as expired (logged); returns their ids.
    @discardableResult
    public func expireAgreements(now: String) throws -> [String] {
        var expired: [String] = []
        for agreement in try store.agreements() where (agreement.state == .offered || agreement.state == .accepted) && agreement.validUntil < now {
            do {
                _ = try store.endAgreement(agreement.id, as: .expired, by: nil, now: now)
                expired.append(agreement.id)
            } catch let error as StoreError where error.code == .conflict {
                continue  // revoked or expired meanwhile
            }
        }
        return expired
    }

    /// An agreement and its policy, for one of its parties (or an auditor or the operator).
    public func agreement(_ id: String, for participant: Participant) throws -> (StoredAgreement, AgreementPolicy) {
        let agreement = try existing(id)
        guard [agreement.publisher, agreement.partner].contains(participant.keys.keyID) || participant.role == .auditor || participant.role == .operator_ else {
            throw BrokerError(.forbidden, "agreement \(id) is not \(participant.keys.name)'s")
        }
        return (agreement, try AgreementPolicy.parse(try JSONParser.parse(agreement.policy)))
    }

    // MARK: Consent

    /// The keyed hash under which a subject id of a dataset is stored (never the id itself).
    public func subjectHash(dataset: String, subject: String) -> [UInt8] {
        subjects.mac(Array(dataset.utf8) + [0] + Array(subject.utf8))
    }

    /// Most consent events recorded in one request.
    public static let maximumConsentEvents = 10_000

    /// Records grants and withdrawals of consent in one transaction (each logged) and returns a
    /// signed receipt for each: the ISO/IEC TS 27560 record with its log index, and the broker's
    /// Ed25519 signature over it.
    public func recordConsent(_ requests: [ConsentRequest], by recorder: Participant, now: String) throws -> [JSONValue] {
        guard (1...Self.maximumConsentEvents).contains(requests.count) else {
            throw BrokerError(.invalid, "send 1 to \(Self.maximumConsentEvents) consent events at a time")
        }
        var datasets: [String: Dataset] = [:]
        var events: [BrokerStore.ConsentEvent] = []
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
                "event": ["type": .string(request.granted ? "given" : "withdrawn"), "time": .string(now), "recorded_by": .string(recorder.keys.keyID.hex)],
                "state": .string(request.granted ? "active" : "withdrawn"),
            ]
            records.append(record)
            events.append(.init(dataset: dataset.id, subject: subject, purpose: request.purpose, granted: request.granted,
                                record: try CanonicalJSON.encode(.object(record))))
        }
        let indexes = try mapStore { try store.recordConsents(events, recordedBy: recorder.keys.keyID, now: now) }
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

    // MARK: Releases

    /// Releases the dataset to the partner under the agreement: the pipeline's steps 1 to 9. A
    /// release draws only from batches that no earlier delivery to this partner drew from (under
    /// any agreement on the dataset), so no record reaches a partner twice.
    public func release(agreement id: String, purpose: String, by partner: Participant, now: String) throws -> ReleaseResult {
        let (agreement, policy, dataset) = try authorize(id, purpose: purpose, partner: partner, now: now)
        let all = try store.batches(of: dataset.id).map(\.sequence)
        let batches = try undrawn(all, partner: agreement.partner, dataset: dataset.id)
        if !all.isEmpty && batches.isEmpty {
            throw BrokerError(.nothingToRelease, "every batch of \(dataset.id) has already been delivered to \(partner.keys.name); a later release carries only the records of new batches")
        }
        let deliveryID = Self.newDeliveryID(.release)
        let table = try records(of: dataset.id, sequences: batches)
        let outcome = try treat(table, agreement: agreement, policy: policy, dataset: dataset, purpose: purpose, suppressionLimit: nil,
                                deliveryID: deliveryID)
        let delivery = try deliver(outcome.table, id: deliveryID, kind: .release, agreement: agreement, policy: policy, purpose: purpose,
                                   outcome: outcome, epsilonMicro: outcome.epsilonMicro, feedWindow: nil, drawnBatches: batches, now: now)
        return ReleaseResult(delivery: delivery, outcome: outcome, epsilonMicro: outcome.epsilonMicro)
    }

    /// A differentially private aggregate over the consented records, charged to the agreement's ε budget.
    public func aggregate(agreement id: String, request: AggregateRequest, by partner: Participant, now: String) throws -> ReleaseResult {
        let (agreement, policy, dataset) = try authorize(id, purpose: request.purpose, partner: partner, now: now)
        guard let terms = policy.aggregates else { throw BrokerError(.invalid, "agreement \(id) does not allow aggregates") }
        if let column = request.groupBy.first(where: { !terms.groupBy.contains($0) }) {
            throw BrokerError(.invalid, "agreement \(id) does not allow grouping by '\(column)' (allowed: \(terms.groupBy.joined(separator: ", ")))")
        }
        guard request.epsilonMicro > 0, request.epsilonMicro <= terms.maxEpsilonPerQueryMicro else {
            throw BrokerError(.invalid, "ε per aggregate must be above 0 and at most \(MicroUnits.decimal(terms.maxEpsilonPerQueryMicro)) under agreement \(id)")
        }
        guard agreement.spentMicro + request.epsilonMicro <= agreement.budgetMicro else {
            throw BrokerError(.budgetExhausted, "agreement \(id) has ε \(MicroUnits.decimal(agreement.budgetMicro - agreement.spentMicro)) left; this aggregate needs \(MicroUnits.decimal(request.epsilonMicro))")
        }
        let schema = try DatasetSchema.parse(dataset.schema)
        let statistic: DPAggregate.Statistic
        if request.statistic == .count {
            statistic = .count
        } else {
            guard let measure = request.measure, policy.fields.contains(measure), let field = schema.field(measure),
                  field.privacy == .measure, let bounds = field.bounds else {
                throw BrokerError(.invalid, "a \(request.statistic.rawValue) needs a measure with bounds among the agreement's fields")
            }
            statistic = request.statistic == .sum ? .sum(column: measure, lower: bounds.lower, upper: bounds.upper)
                : .mean(column: measure, lower: bounds.lower, upper: bounds.upper)
        }
        let mayRelease = try consentRule(policy: policy, dataset: dataset.id, purpose: request.purpose)
        let (table, _) = try ReleaseTreatment(schema: schema, policy: policy).consented(try records(of: dataset.id, sequences: nil), mayRelease: mayRelease)
        let subject = AgreementPolicy.subjectField(of: schema).flatMap { table.columns.contains($0) ? $0 : nil }
        let (groups, keySources) = try Self.declaredGroups(request.groupBy, terms: terms, schema: schema)
        let result: CSVTable
        do {
            let epsilon = try Rational(UInt128(request.epsilonMicro), 1_000_000)
            let query = try DPAggregate(statistic: statistic, groupBy: request.groupBy, mechanism: .laplace(epsilon: epsilon), subject: subject,
                                        maxGroupsPerSubject: terms.maxGroupsPerSubject, maxRowsPerSubject: terms.maxRowsPerSubject)
            var sampler = ExactSampler(random: SystemRandomness())
            result = try query.run(table, groups: groups, using: &sampler)
        } catch let error as PrivacyError {
            throw BrokerError(.invalid, error.message)
        }
        let delivery = try deliver(result, id: Self.newDeliveryID(.aggregate), kind: .aggregate, agreement: agreement, policy: policy, purpose: request.purpose, outcome: nil,
                                   epsilonMicro: request.epsilonMicro, feedWindow: nil, drawnBatches: [], now: now,
                                   transforms: ["statistic": .string(request.statistic.rawValue), "mechanism": "discrete-laplace",
                                                "group_by": .array(request.groupBy.map(JSONValue.string)), "group_keys": .object(keySources),
                                                "measure": .string(request.measure ?? "")])
        return ReleaseResult(delivery: delivery, outcome: nil, epsilonMicro: request.epsilonMicro)
    }

    /// Most groups one aggregate may output.
    public static let maximumAggregateGroups = 100_000

    /// Every combination of the group-by columns' declared keys (the policy's list, else the
    /// schema's), and where each column's keys came from. The data never decides which keys appear.
    static func declaredGroups(_ columns: [String], terms: AgreementPolicy.AggregateTerms, schema: DatasetSchema,
                               sourcesOnly: Bool = false) throws -> ([[String]], [String: JSONValue]) {
        var groups: [[String]] = [[]]
        var sources: [String: JSONValue] = [:]
        for column in columns {
            let keys: [String]
            if let declared = terms.groupKeys[column] {
                keys = declared
                sources[column] = "policy"
            } else if let declared = schema.field(column)?.declaredDomain {
                keys = declared
                sources[column] = "schema"
            } else {
                throw BrokerError(.invalid, "group-by column '\(column)' has no declared keys in the agreement or the schema")
            }
            if sourcesOnly { continue }
            guard groups.count * keys.count <= maximumAggregateGroups else {
                throw BrokerError(.invalid, "grouping by \(columns.joined(separator: ", ")) gives more than \(maximumAggregateGroups) declared groups")
            }
            groups = groups.flatMap { prefix in keys.map { prefix + [$0] } }
        }
        return (groups, sources)
    }

    // MARK: Feeds

    /// Subscribes the partner to new records under the agreement (which must have feed terms).
    public func subscribe(agreement id: String, purpose: String, webhook: String?, by partner: Participant, now: String) throws -> Feed {
        let (_, policy, _) = try authorize(id, purpose: purpose, partner: partner, now: now)
        guard policy.feed != nil else { throw BrokerError(.invalid, "agreement \(id) has no feed terms") }
        if let webhook { try webhooks.check(webhook) }
        return try mapStore { try store.createFeed(id: "feed-" + Hex.encode(Sodium.randomBytes(8)), agreement: id, purpose: purpose, webhook: webhook, now: now) }
    }

    /// Closes every feed window that is due at `now` (enough records, or the oldest waiting
    /// long enough) and delivers it. Windows that cannot reach k wait for more records or are
    /// suppressed, as the agreement says. Returns the deliveries made.
    /// With `dataset`, only that dataset's feeds are looked at (an upload closes what it filled).
    /// A feed that fails (its agreement out of budget, say) is reported to `failed` and skipped:
    /// it never stops the others.
    public func closeDueWindows(now: String, dataset only: String? = nil,
                                failed: (_ feed: String, _ error: any Error) -> Void = { _, _ in }) throws -> [ReleaseResult] {
        var results: [ReleaseResult] = []
        for feed in try store.feeds() {
            do {
                if let result = try closeWindow(of: feed, now: now, dataset: only) { results.append(result) }
            } catch {
                failed(feed.id, error)
            }
        }
        return results
    }

    /// Closes `feed`'s window if it is due; nil when nothing was delivered.
    private func closeWindow(of feed: Feed, now: String, dataset only: String?) throws -> ReleaseResult? {
        guard let agreement = try store.agreement(feed.agreement), only == nil || agreement.dataset == only,
              agreement.state == .accepted, agreement.validFrom <= now, now <= agreement.validUntil,
              let policy = try? AgreementPolicy.parse(try JSONParser.parse(agreement.policy)), let terms = policy.feed,
              let dataset = try store.dataset(agreement.dataset) else { return nil }
        let pending = try store.batches(of: dataset.id, from: feed.nextBatch)
        guard let first = pending.first, let last = pending.last else { return nil }
        // A window that could not reach k is tried again only once a new batch has joined it.
        if waitingWindows.lastBatch(of: feed.id) == last.sequence { return nil }
        let waiting = pending.reduce(0) { $0 + $1.records }
        let waited = (RFC3339.seconds(now) ?? 0) - (RFC3339.seconds(first.created) ?? 0)
        guard waiting >= terms.windowRecords || waited >= Int64(terms.windowSeconds) else { return nil }
        let window = feed.nextBatch..<(last.sequence + 1)
        do {
            // Batches another delivery to this partner already drew from are passed over.
            let batches = try undrawn(pending.map(\.sequence), partner: agreement.partner, dataset: dataset.id)
            guard !batches.isEmpty else { throw BrokerError(.nothingToRelease, "every batch of the window was already delivered") }
            let deliveryID = Self.newDeliveryID(.window)
            let table = try records(of: dataset.id, sequences: batches)
            let outcome = try treat(table, agreement: agreement, policy: policy, dataset: dataset, purpose: feed.purpose,
                                    suppressionLimit: terms.belowK == .suppress ? 1 : nil, deliveryID: deliveryID)
            let delivery = try deliver(outcome.table, id: deliveryID, kind: .window, agreement: agreement, policy: policy, purpose: feed.purpose,
                                       outcome: outcome, epsilonMicro: outcome.epsilonMicro,
                                       feedWindow: (feed: feed.id, from: window.lowerBound, to: window.upperBound), drawnBatches: batches, now: now)
            return ReleaseResult(delivery: delivery, outcome: outcome, epsilonMicro: outcome.epsilonMicro)
        } catch let error as BrokerError where error.code == .kUnreachable && terms.belowK == .wait {
            waitingWindows.record(feed.id, lastBatch: last.sequence)
        } catch let error as BrokerError where error.code == .kUnreachable || error.code == .nothingToRelease {
            do {
                try mapStore { try store.skipFeedBatches(feed.id, from: window.lowerBound, to: window.upperBound) }
            } catch let error as BrokerError where error.code == .conflict {
                // another caller moved the feed on meanwhile
            }
        } catch let error as BrokerError where error.code == .conflict {
            // another caller (an upload, the schedule, another node) delivered this window first
        }
        return nil
    }

    /// A feed, for its partner.
    public func feed(_ id: String, for partner: Participant) throws -> Feed {
        guard let feed = try store.feed(id), let agreement = try store.agreement(feed.agreement), agreement.partner == partner.keys.keyID else {
            throw BrokerError(.notFound, "feed \(id) is not one of \(partner.keys.name)'s")
        }
        return feed
    }

    /// The partner acknowledges every window up to `sequence`; later pulls start after it.
    public func acknowledge(feed id: String, through sequence: Int64, by partner: Participant) throws -> Feed {
        _ = try feed(id, for: partner)
        return try mapStore { try store.acknowledge(feed: id, through: sequence) }
    }

    /// A delivery, for its partner (or an auditor, who can verify but not open it).
    public func delivery(_ id: String, for participant: Participant) throws -> Delivery {
        guard let delivery = try store.delivery(id), delivery.partner == participant.keys.keyID || participant.role == .auditor else {
            throw BrokerError(.notFound, "delivery \(id) is not one of \(participant.keys.name)'s")
        }
        return delivery
    }

    // MARK: Pipeline steps

    /// Step 1: the agreement exists, names this partner, is accepted, inside its validity, and allows the purpose.
    private func authorize(_ id: String, purpose: String, partner: Participant, now: String) throws -> (StoredAgreement, AgreementPolicy, Dataset) {
        let agreement = try existing(id)
        guard agreement.partner == partner.keys.keyID else { throw BrokerError(.forbidden, "agreement \(id) is not with \(partner.keys.name)") }
        guard agreement.state == .accepted else {
            throw BrokerError(.agreementNotActive, "agreement \(id) is \(agreement.state.rawValue)\(agreement.ended.map { " since \($0)" } ?? "")")
        }
        guard agreement.validFrom <= now, now <= agreement.validUntil else {
            throw BrokerError(.agreementNotActive, "agreement \(id) is valid from \(agreement.validFrom) to \(agreement.validUntil), not at \(now)")
        }
        let policy = try AgreementPolicy.parse(try JSONParser.parse(agreement.policy))
        guard policy.purposes.contains(purpose) else {
            throw BrokerError(.purposeNotAllowed, "agreement \(id) allows \(policy.purposes.joined(separator: ", ")), not \(purpose)")
        }
        guard let dataset = try store.dataset(agreement.dataset) else { throw BrokerError(.notFound, "dataset \(agreement.dataset) is gone") }
        return (agreement, policy, dataset)
    }

    /// Step 3's rule: basis consent releases subjects with an active grant; other bases drop subjects who objected.
    private func consentRule(policy: AgreementPolicy, dataset: String, purpose: String) throws -> (String) -> Bool {
        let states = try mapStore { try store.consentStates(dataset: dataset, purpose: purpose) }
        let requireGrant = policy.legalBasis == .consent
        return { subject in
            let state = states[Hex.encode(self.subjectHash(dataset: dataset, subject: subject))]
            return requireGrant ? state == true : state != false
        }
    }

    /// Step 2: the records of these batches of the dataset (nil: of every batch), decrypted.
    private func records(of dataset: String, sequences: [Int64]?) throws -> CSVTable {
        var table = CSVTable(columns: [], rows: [])
        for run in sequences.map { BatchRanges.runs($0).map(Optional.some) } ?? [nil] {
            try mapStore {
                try store.records(of: dataset, batches: run) { columns, rows in
                    table.columns = columns
                    table.rows += rows
                }
            }
        }
        return table
    }

    /// The batches among `sequences` that no delivery to `partner` has drawn from, in order.
    private func undrawn(_ sequences: [Int64], partner: KeyID, dataset: String) throws -> [Int64] {
        let drawn = try mapStore { try store.drawnBatches(partner: partner, dataset: dataset) }
        return sequences.filter { !drawn.contains($0) }.sorted()
    }

    /// A fresh delivery id (`rel-`, `win-` or `agg-` and 16 hex digits).
    private static func newDeliveryID(_ kind: Delivery.Kind) -> String {
        "\(kind == .aggregate ? "agg" : kind == .window ? "win" : "rel")-" + Hex.encode(Sodium.randomBytes(8))
    }

    /// Steps 3 to 6. Pseudonyms are drawn for this delivery alone unless the agreement asks for
    /// longitudinal linkage.
    private func treat(_ table: CSVTable, agreement: StoredAgreement, policy: AgreementPolicy, dataset: Dataset, purpose: String,
                       suppressionLimit: Double?, deliveryID: String) throws -> TreatmentOutcome {
        let epoch = policy.treatment.linkage == .longitudinal ? policy.treatment.pseudonymEpoch : "\(policy.treatment.pseudonymEpoch)/\(deliveryID)"
        let pseudonymizer = try Pseudonymizer(master: master, domain: PseudonymDomain(
            agreement: agreement.id, partner: agreement.partner.hex, purpose: purpose, epoch: epoch))
        return try ReleaseTreatment(schema: try DatasetSchema.parse(dataset.schema), policy: policy)
            .apply(table, mayRelease: try consentRule(policy: policy, dataset: dataset.id, purpose: purpose),
                   pseudonymizer: pseudonymizer, suppressionLimit: suppressionLimit)
    }

    /// Steps 8 and 9: seal for the partner, then charge, log and store in one transaction.
    private func deliver(_ table: CSVTable, id deliveryID: String, kind: Delivery.Kind, agreement: StoredAgreement, policy: AgreementPolicy,
                         purpose: String, outcome: TreatmentOutcome?, epsilonMicro: UInt64, feedWindow: (feed: String, from: Int64, to: Int64)?,
                         drawnBatches: [Int64], now: String, transforms: [String: JSONValue] = [:]) throws -> Delivery {
        guard let partner = try store.participant(agreement.partner) else { throw BrokerError(.notFound, "partner \(agreement.partner) is gone") }
        let sealer = EnvelopeSealer(issuer: keys, recipient: partner.keys, contentType: "text/csv", metadata: [
            "delivery": .string(deliveryID), "kind": .string(kind.rawValue), "agreement": .string(agreement.id),
            "dataset": .string(agreement.dataset), "purpose": .string(purpose), "policy_sha256": .string(Hex.encode(agreement.policySHA256)),
            "records": .number(Double(table.rows.count)),
        ])
        let payload = table.csv()
        let sink = MemorySink()
        let summary = try sealer.seal(from: MemorySource(payload), payloadLength: UInt64(payload.count), to: sink,
                                      created: RFC3339.date(now) ?? Date())
        let envelope = sink.bytes
        var allTransforms = outcome?.logTransforms ?? [:]
        allTransforms.merge(transforms) { _, new in new }
        allTransforms["kind"] = .string(kind.rawValue)
        if !drawnBatches.isEmpty { allTransforms["batches"] = .string(BatchRanges.text(drawnBatches)) }
        let members = LogEvents.releaseDelivered(
            release: deliveryID, agreement: agreement.id, dataset: agreement.dataset, partner: agreement.partner, purpose: purpose,
            policySHA256: agreement.policySHA256, envelope: summary, recordsReleased: UInt64(table.rows.count),
            recordsSuppressed: UInt64(outcome?.recordsSuppressed ?? 0), kAchieved: UInt64(outcome?.kAchieved ?? 0),
            epsilonMicro: epsilonMicro, transforms: allTransforms)
        let commit = DeliveryCommit(id: deliveryID, agreement: agreement.id, kind: kind, records: table.rows.count, envelope: envelope,
                                    epsilonMicro: epsilonMicro, logMembers: members, feedWindow: feedWindow, drawnBatches: drawnBatches)
        return try mapStore { try store.commitDelivery(commit, now: now) }
    }

    private func existing(_ id: String) throws -> StoredAgreement {
        guard let agreement = try store.agreement(id) else { throw BrokerError(.notFound, "agreement \(id) does not exist") }
        return agreement
    }

    /// Store refusals as broker errors.
    private func mapStore<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StoreError {
            switch error.code {
            case .notFound: throw BrokerError(.notFound, error.message)
            case .duplicate: throw BrokerError(.duplicate, error.message)
            case .budgetExceeded: throw BrokerError(.budgetExhausted, error.message)
            case .conflict: throw BrokerError(.agreementNotActive, error.message)
            case .superseded: throw BrokerError(.conflict, error.message)
            case .invalidArgument: throw BrokerError(.invalid, error.message)
            case .replayed, .corrupt, .database: throw error
            }
        }
    }
}

/// Feeds whose window could not reach k, and the last batch it held then (in memory: after a
/// restart each waiting window is tried once more).
final class WaitingWindows: @unchecked Sendable {
    private let lock = NSLock()
    private var batches: [String: Int64] = [:]

    func lastBatch(of feed: String) -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        return batches[feed]
    }

    func record(_ feed: String, lastBatch: Int64) {
        lock.lock()
        defer { lock.unlock() }
        batches[feed] = lastBatch
    }
}

/// RFC 3339 UTC times with whole seconds (the log's form) to and from seconds since 1970.
public enum RFC3339 {
    /// Seconds since 1970 of `2026-11-26T12:00:00Z`, or nil if the text is not in that form.
    public static func seconds(_ text: String) -> Int64? {
        guard LogTime.isValid(text) else { return nil }
        let b = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int64 { range.reduce(0) { $0 * 10 + Int64(b[$1] - 48) } }
        let year = number(0..<4), month = number(5..<7), day = number(8..<10)
        // Days from civil (proleptic Gregorian), 1970-01-01 = 0.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return days * 86_400 + number(11..<13) * 3600 + number(14..<16) * 60 + number(17..<19)
    }

    /// The same time as a Date.
    public static func date(_ text: String) -> Date? { seconds(text).map { Date(timeIntervalSince1970: TimeInterval($0)) } }
}
