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

/// Releases of records under an agreement.
extension Broker {
    /// Releases the dataset to the partner under the agreement: the pipeline's steps 1 to 9. A
    /// release draws only from batches that no earlier delivery to this partner drew from (under
    /// any agreement on the dataset), so no record reaches a partner twice.
    public func release(agreement id: String, purpose: String, by partner: Participant, now: UTCTime) throws -> ReleaseResult {
        let (agreement, policy, dataset) = try authorize(id, purpose: purpose, partner: partner, now: now)
        let all = try store.batches(of: dataset.id, from: 1).map(\.sequence)
        let batches = try undrawn(all, partner: agreement.partner, dataset: dataset.id)
        if !all.isEmpty && batches.isEmpty {
            throw BrokerError(.nothingToRelease, "every batch of \(dataset.id) has already been delivered to \(partner.keys.name); a later release carries only the records of new batches")
        }
        let deliveryID = Self.newDeliveryID(.release)
        var treated = try treat(batches: batches, agreement: agreement, policy: policy, dataset: dataset, purpose: purpose, suppressionLimit: nil,
                                deliveryID: deliveryID)
        let delivery = try deliver(payload: treated.takePayload(), records: treated.outcome.recordsReleased, id: deliveryID, kind: .release, agreement: agreement, policy: policy, purpose: purpose,
                                   outcome: treated.outcome, epsilonMicro: treated.outcome.epsilonMicro, feedWindow: nil, drawnBatches: batches, now: now)
        return ReleaseResult(delivery: delivery, outcome: treated.outcome, epsilonMicro: treated.outcome.epsilonMicro)
    }
}
