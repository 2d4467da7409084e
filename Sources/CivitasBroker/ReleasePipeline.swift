import CivitasCrypto
import CivitasLog
import CivitasModel
import CivitasPrivacy
import CivitasStore
import Foundation

/// The release pipeline's steps shared by releases, aggregates and feed windows (DESIGN.md).
extension Broker {
    /// Step 1: the agreement exists, names this partner, is accepted, inside its validity, and allows the purpose.
    func authorize(_ id: String, purpose: String, partner: Participant, now: UTCTime) throws -> (StoredAgreement, AgreementPolicy, Dataset) {
        let agreement = try existing(id)
        guard agreement.partner == partner.keys.keyID else { throw BrokerError(.forbidden, "agreement \(id) is not with \(partner.keys.name)") }
        try Self.checkActive(agreement, at: now)
        let policy = try AgreementPolicy.parse(try JSONParser.parse(agreement.policy))
        guard policy.purposes.contains(purpose) else {
            throw BrokerError(.purposeNotAllowed, "agreement \(id) allows \(policy.purposes.joined(separator: ", ")), not \(purpose)")
        }
        guard let dataset = try store.dataset(agreement.dataset) else { throw BrokerError(.notFound, "dataset \(agreement.dataset) is gone") }
        return (agreement, policy, dataset)
    }

    /// Step 3's rule: basis consent releases subjects with an active grant; other bases drop
    /// subjects who objected. Callers ask once per subject (a person with many records is hashed once).
    func consentRule(policy: AgreementPolicy, dataset: String, purpose: String) throws -> @Sendable (String) -> Bool {
        let states = try mapStore { try store.consentStates(dataset: dataset, purpose: purpose) }
        let requireGrant = policy.legalBasis == .consent
        return { subject in
            let state = SubjectDigest(self.subjectHash(dataset: dataset, subject: subject)).flatMap { states[$0] }
            return requireGrant ? state == true : state != false
        }
    }

    /// Step 2: the records of these batches of the dataset (nil: of every batch), decrypted one
    /// segment at a time and handed to `handle`.
    func forEachSegment(of dataset: String, sequences: [Int64]?, _ handle: (RecordChunk) throws -> Void) throws {
        let runs: [Range<Int64>?] = sequences.map { BatchRanges.runs($0).map(Optional.some) } ?? [nil]
        for run in runs {
            try mapStore { try store.recordChunks(of: dataset, batches: run, handle: handle) }
        }
    }

    /// The batches among `sequences` that no delivery to `partner` has drawn from, in order.
    func undrawn(_ sequences: [Int64], partner: KeyID, dataset: String) throws -> [Int64] {
        let drawn = try mapStore { try store.drawnBatches(partner: partner, dataset: dataset) }
        return sequences.filter { !drawn.contains($0) }.sorted()
    }

    /// A fresh delivery id (`rel-`, `win-`, `agg-` or `syn-` and 16 hex digits).
    static func newDeliveryID(_ kind: Delivery.Kind) -> String {
        let prefix = switch kind {
        case .release: "rel"
        case .window: "win"
        case .aggregate: "agg"
        case .synthetic: "syn"
        }
        return "\(prefix)-" + Hex.encode(Sodium.randomBytes(8))
    }

    /// Steps 2 to 7 on these batches of the dataset, read a segment at a time. Pseudonyms are
    /// drawn for this delivery alone unless the agreement asks for longitudinal linkage.
    func treat(batches: [Int64], agreement: StoredAgreement, policy: AgreementPolicy, dataset: Dataset, purpose: String,
               suppressionLimit: Double?, deliveryID: String) throws -> TreatedRecords {
        let epoch = policy.treatment.linkage == .longitudinal ? policy.treatment.pseudonymEpoch : "\(policy.treatment.pseudonymEpoch)/\(deliveryID)"
        let pseudonymizer = try Pseudonymizer(master: master, domain: PseudonymDomain(
            agreement: agreement.id, partner: agreement.partner.hex, purpose: purpose, epoch: epoch))
        let treatment = ReleaseTreatment(schema: try DatasetSchema.parse(dataset.schema), policy: policy)
        // Segments are read and decrypted on another thread while the records of the last one are
        // taken in; the consent states are read while the first segments are (no record is taken
        // in before they are, and a subject would be refused without them).
        var input = treatment.input(mayRelease: { _ in false })
        try ChunkHandoff.overlap(produce: { emit in try forEachSegment(of: dataset.id, sequences: batches, emit) },
                                 whileStarting: { input.mayRelease = try consentRule(policy: policy, dataset: dataset.id, purpose: purpose) }) { (chunk: RecordChunk) in
            try input.add(chunk)
        }
        return try treatment.finish(input, pseudonymizer: pseudonymizer, suppressionLimit: suppressionLimit, randomness: randomness())
    }

    /// Steps 8 and 9: seal the CSV payload of `records` records for the partner, then charge, log
    /// and store in one transaction.
    func deliver(payload: consuming [UInt8], records: Int, id deliveryID: String, kind: Delivery.Kind, agreement: StoredAgreement, policy: AgreementPolicy,
                         purpose: String, outcome: TreatmentOutcome?, epsilonMicro: UInt64, feedWindow: (feed: String, from: Int64, to: Int64)?,
                         drawnBatches: [Int64], now: UTCTime, transforms: [String: JSONValue] = [:], requestKey: RequestKey? = nil,
                         rhoMicro: UInt64? = nil) throws -> Delivery {
        // Under ρ accounting, a pure ε step costs ε²/2; a synthetic release states its ρ.
        let charged = policy.accounting == .rho ? (rhoMicro ?? policy.charge(epsilonMicro: epsilonMicro)) : epsilonMicro
        guard let partner = try store.participant(agreement.partner) else { throw BrokerError(.notFound, "partner \(agreement.partner) is gone") }
        // Sealed to the key the partner holds now (its registered one until a rotation replaced it).
        let sealer = EnvelopeSealer(issuer: keys, recipient: partner.currentKeys, contentType: "text/csv", metadata: [
            "delivery": .string(deliveryID), "kind": .string(kind.rawValue), "agreement": .string(agreement.id),
            "dataset": .string(agreement.dataset), "purpose": .string(purpose), "policy_sha256": .string(Hex.encode(agreement.policySHA256)),
            "records": .number(Double(records)),
        ])
        let payloadLength = UInt64(payload.count)
        let sink = MemorySink(capacity: Int(EnvelopeFormat.bodyLength(payloadLength: payloadLength,
                                                                      chunkSize: EnvelopeFormat.automaticChunkSize(payloadLength: payloadLength))) + 64 * 1024)
        // The payload is let go once sealed: only the envelope is held while it is stored.
        let summary = try sealer.seal(from: MemorySource(consume payload), payloadLength: payloadLength, to: sink,
                                      created: now.date)
        let envelope = sink.bytes
        var allTransforms = outcome?.logTransforms ?? [:]
        allTransforms.merge(transforms) { _, new in new }
        allTransforms["kind"] = .string(kind.rawValue)
        if !drawnBatches.isEmpty { allTransforms["batches"] = .string(BatchRanges.text(drawnBatches)) }
        let members = LogEvents.releaseDelivered(
            release: deliveryID, agreement: agreement.id, dataset: agreement.dataset, partner: agreement.partner, purpose: purpose,
            policySHA256: agreement.policySHA256, envelope: summary, recordsReleased: UInt64(records),
            recordsSuppressed: UInt64(outcome?.recordsSuppressed ?? 0), kAchieved: UInt64(outcome?.kAchieved ?? 0),
            epsilonMicro: epsilonMicro, rhoMicro: policy.accounting == .rho ? charged : nil, transforms: allTransforms)
        // Step 9, in ONE transaction: the agreement as it is now (still active, budget left), the
        // feed still where this window starts, then the charge, the log entry, the delivery and
        // the batches it drew. Any refusal leaves all of them unwritten.
        let delivery = try change { transaction in
            var current = try transaction.agreement(agreement.id)
            try Self.checkActive(current, at: now)
            current.spentMicro = try Self.charge(charged, to: current, policy: policy)
            try transaction.updateAgreement(current)
            var feedSequence: Int64?
            if let window = feedWindow {
                let feed = try transaction.feed(window.feed)
                guard feed.nextBatch == window.from, window.to > window.from else {
                    throw BrokerError(.conflict, "feed \(feed.id) has moved on to batch \(feed.nextBatch); this window starts at \(window.from)")
                }
                feedSequence = feed.delivered + 1
                try transaction.updateFeed(feed.with(nextBatch: window.to, delivered: feed.delivered + 1))
                try transaction.announceWindow(feed: feed.id)
            }
            let index = try transaction.appendLog(time: now, type: .releaseDelivered, members: members)
            let delivery = Delivery(id: deliveryID, agreement: current.id, partner: current.partner, kind: kind, feed: feedWindow?.feed,
                                    feedSequence: feedSequence, logIndex: index, records: records, envelope: envelope, created: now)
            try transaction.insertDelivery(delivery)
            try transaction.recordDrawnBatches(drawnBatches, dataset: current.dataset, partner: current.partner, delivery: deliveryID)
            if let requestKey { try transaction.insertRequestKey(requestKey) }
            return delivery
        }
        if let window = feedWindow { feedSignals.signal(window.feed) }
        return delivery
    }

    /// An agreement may be used only while accepted and inside its validity window.
    static func checkActive(_ agreement: StoredAgreement, at now: UTCTime) throws {
        guard agreement.state == .accepted else {
            throw BrokerError(.agreementNotActive, "agreement \(agreement.id) is \(agreement.state.rawValue)\(agreement.ended.map { " since \($0)" } ?? "")")
        }
        guard agreement.validFrom <= now, now <= agreement.validUntil else {
            throw BrokerError(.agreementNotActive, "agreement \(agreement.id) is valid from \(agreement.validFrom) to \(agreement.validUntil), not at \(now)")
        }
    }

    /// What the agreement will have spent after `micro` more (ε or ρ, as the agreement counts), or a refusal past its budget.
    static func charge(_ micro: UInt64, to agreement: StoredAgreement, policy: AgreementPolicy) throws -> UInt64 {
        var budget = PrivacyBudget(epsilonBudgetMicro: agreement.budgetMicro, spent: PrivacyCharge(epsilonMicro: agreement.spentMicro))
        do { try budget.charge(PrivacyCharge(epsilonMicro: micro)) } catch is PrivacyError {
            let unit = policy.accounting == .rho ? "ρ" : "ε"
            throw BrokerError(.budgetExhausted, "agreement \(agreement.id) has \(unit) \(MicroUnits.decimal(budget.remaining.epsilonMicro)) left; this needs \(MicroUnits.decimal(micro))")
        }
        return budget.spent.epsilonMicro
    }
}
