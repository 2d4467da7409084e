import CivitasStore
import CivitasTime

/// Refusals of a partner's requests under an agreement, counted by reason for the parties to see
/// (they change nothing else, so they are not logged).
extension Broker {
    /// The refusals counted: those that come after the agreement's partner was recognized.
    static let countedRefusals: Set<BrokerError.Code> = [.agreementNotActive, .purposeNotAllowed, .budgetExhausted, .kUnreachable, .nothingToRelease]

    /// Runs a request under agreement `id`; a refusal of the agreement's own partner for one of
    /// ``countedRefusals`` is counted before it is passed on (counting never hides the refusal).
    func countingRefusals<T>(under id: String, partner: Participant, now: UTCTime, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as BrokerError where Self.countedRefusals.contains(error.code) {
            if let agreement = try? mapStore({ try store.agreement(id) }), agreement.partner == partner.keys.keyID {
                _ = try? change { transaction in try transaction.countRefusal(agreement: id, code: error.code.rawValue, at: now) }
            }
            throw error
        }
    }
}
