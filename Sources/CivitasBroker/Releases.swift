import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// A delivery made by the broker and what its treatment achieved.
public struct ReleaseResult: Sendable {
    public let delivery: Delivery
    /// The treatment's figures (releases and feed windows; nil for aggregates, and for a
    /// delivery answered again for a request key).
    public let outcome: TreatmentOutcome?
    public let epsilonMicro: UInt64
    /// The ρ charged, under an agreement that counts ρ.
    public let rhoMicro: UInt64?
    /// What the partner is told of the delivery: ε charged and the treatment's counts (never a record).
    public let figures: [String: JSONValue]
    /// Whether this is the delivery an earlier request with the same key made.
    public let replayed: Bool

    init(delivery: Delivery, outcome: TreatmentOutcome?, epsilonMicro: UInt64, rhoMicro: UInt64? = nil) {
        self.delivery = delivery
        self.outcome = outcome
        self.epsilonMicro = epsilonMicro
        self.rhoMicro = rhoMicro
        figures = Self.figures(outcome: outcome, epsilonMicro: epsilonMicro, rhoMicro: rhoMicro)
        replayed = false
    }

    init(replaying delivery: Delivery, figures: [String: JSONValue], epsilonMicro: UInt64, rhoMicro: UInt64?) {
        self.delivery = delivery
        outcome = nil
        self.epsilonMicro = epsilonMicro
        self.rhoMicro = rhoMicro
        self.figures = figures
        replayed = true
    }

    static func figures(outcome: TreatmentOutcome?, epsilonMicro: UInt64, rhoMicro: UInt64?) -> [String: JSONValue] {
        var object: [String: JSONValue] = ["epsilon_charged": .string(MicroUnits.decimal(epsilonMicro))]
        if let rhoMicro { object["rho_charged"] = .string(MicroUnits.decimal(rhoMicro)) }
        if let outcome {
            object["records_selected"] = .number(Double(outcome.recordsSelected))
            object["records_without_consent"] = .number(Double(outcome.recordsWithoutConsent))
            object["records_suppressed"] = .number(Double(outcome.recordsSuppressed))
            object["k_achieved"] = .number(Double(outcome.kAchieved))
            if let report = outcome.report {
                object["k_counts"] = .string(report.subjectColumn == nil ? "records" : "subjects")
                object["subjects_released"] = .number(Double(report.subjectsReleased))
                object["subjects_suppressed"] = .number(Double(report.subjectsSuppressed))
            }
        }
        return object
    }
}

/// A partner's idempotency key for one request, with the request's hash.
struct KeyedRequest {
    let key: String
    let sha256: [UInt8]

    /// Longest idempotency key accepted.
    static let maximumKeyLength = 200

    /// The key, checked, for the request described by `members` (nil without a key).
    init?(_ key: String?, request members: [String: JSONValue]) throws {
        guard let key else { return nil }
        try self.init(key, sha256: SHA256Hasher.hash(try CanonicalJSON.encode(.object(members))))
    }

    /// The key, checked, for a request whose content hashes to `sha256`.
    init(_ key: String, sha256: [UInt8]) throws {
        guard (1...Self.maximumKeyLength).contains(key.utf8.count), key.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw BrokerError(.invalid, "an idempotency key is 1 to \(Self.maximumKeyLength) visible ASCII characters")
        }
        self.key = key
        self.sha256 = sha256
    }
}

/// Releases of records under an agreement.
extension Broker {
    /// Releases the dataset to the partner under the agreement: the pipeline's steps 1 to 9. A
    /// release draws only from batches that no earlier delivery to this partner drew from (under
    /// any agreement on the dataset), so no record reaches a partner twice.
    /// With `requestKey`, a repeated request (a client's retry) answers the delivery the first
    /// one made: never a second release, never a second charge.
    public func release(agreement id: String, purpose: String, by partner: Participant, now: UTCTime, requestKey: String? = nil) throws -> ReleaseResult {
        let keyed = try KeyedRequest(requestKey, request: ["release": .string(id), "purpose": .string(purpose)])
        return try countingRefusals(under: id, partner: partner, now: now) {
            try answeringOnce(keyed, partner: partner) {
                try release(agreement: id, purpose: purpose, by: partner, now: now, keyed: keyed)
            }
        }
    }

    /// Runs `body` unless `keyed` already made a delivery; answers that delivery instead, also when
    /// another request with the same key committed first meanwhile.
    func answeringOnce(_ keyed: KeyedRequest?, partner: Participant, _ body: () throws -> ReleaseResult) throws -> ReleaseResult {
        if let first = try firstDelivery(for: keyed, partner: partner) { return first }
        do {
            return try body()
        } catch {
            // Another request with this key may have committed first (its charge can even be what
            // refused this one): then that delivery is the answer.
            guard let first = try firstDelivery(for: keyed, partner: partner) else { throw error }
            return first
        }
    }

    /// The delivery an earlier request with this key made, if any; a key used for another request is refused.
    func firstDelivery(for keyed: KeyedRequest?, partner: Participant) throws -> ReleaseResult? {
        guard let keyed, let stored = try mapStore({ try store.requestKey(partner: partner.keys.keyID, key: keyed.key) }) else { return nil }
        guard stored.requestSHA256 == keyed.sha256 else {
            throw BrokerError(.duplicate, "idempotency key \(keyed.key.prefix(60)) was used for a different request")
        }
        guard let delivery = try mapStore({ try store.delivery(stored.delivery) }),
              let answer = try? JSONParser.parse(stored.figures), let figures = answer["figures"]?.objectValue,
              let epsilon = answer["epsilon_micro"]?.numberValue, epsilon >= 0, let epsilonMicro = UInt64(exactly: epsilon) else {
            throw BrokerError(.notFound, "the delivery made for idempotency key \(keyed.key.prefix(60)) cannot be read back")
        }
        let rhoMicro = answer["rho_micro"]?.numberValue.flatMap { UInt64(exactly: $0) }
        return ReleaseResult(replaying: delivery, figures: figures, epsilonMicro: epsilonMicro, rhoMicro: rhoMicro)
    }

    /// The request key to store with a delivery: the key, the request's hash and the figures to answer again.
    static func requestKey(_ keyed: KeyedRequest?, partner: KeyID, delivery: String, outcome: TreatmentOutcome?, epsilonMicro: UInt64,
                           rhoMicro: UInt64? = nil, now: UTCTime) throws -> RequestKey? {
        guard let keyed else { return nil }
        var answer: [String: JSONValue] = ["figures": .object(ReleaseResult.figures(outcome: outcome, epsilonMicro: epsilonMicro, rhoMicro: rhoMicro)),
                                           "epsilon_micro": .number(Double(epsilonMicro))]
        if let rhoMicro { answer["rho_micro"] = .number(Double(rhoMicro)) }
        return RequestKey(partner: partner, key: keyed.key, requestSHA256: keyed.sha256, delivery: delivery,
                          figures: try CanonicalJSON.encode(.object(answer)), created: now)
    }

    private func release(agreement id: String, purpose: String, by partner: Participant, now: UTCTime, keyed: KeyedRequest?) throws -> ReleaseResult {
        let (agreement, policy, dataset) = try authorize(id, purpose: purpose, partner: partner, now: now)
        let all = try store.batches(of: dataset.id, from: 1).map(\.sequence)
        let batches = try undrawn(all, partner: agreement.partner, dataset: dataset.id)
        if !all.isEmpty && batches.isEmpty {
            throw BrokerError(.nothingToRelease, "every batch of \(dataset.id) has already been delivered to \(partner.keys.name); a later release carries only the records of new batches")
        }
        let deliveryID = Self.newDeliveryID(.release)
        var treated = try treat(batches: batches, agreement: agreement, policy: policy, dataset: dataset, purpose: purpose, suppressionLimit: nil,
                                deliveryID: deliveryID)
        let requestKey = try Self.requestKey(keyed, partner: partner.keys.keyID, delivery: deliveryID, outcome: treated.outcome,
                                             epsilonMicro: treated.outcome.epsilonMicro, rhoMicro: policy.rhoCharge(epsilonMicro: treated.outcome.epsilonMicro), now: now)
        let delivery = try deliver(payload: treated.takePayload(), records: treated.outcome.recordsReleased, id: deliveryID, kind: .release, agreement: agreement, policy: policy, purpose: purpose,
                                   outcome: treated.outcome, epsilonMicro: treated.outcome.epsilonMicro, feedWindow: nil, drawnBatches: batches, now: now,
                                   requestKey: requestKey)
        return ReleaseResult(delivery: delivery, outcome: treated.outcome, epsilonMicro: treated.outcome.epsilonMicro,
                             rhoMicro: policy.rhoCharge(epsilonMicro: treated.outcome.epsilonMicro))
    }
}
