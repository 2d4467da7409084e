import CivitasCrypto
import CivitasStore
import CivitasTime

/// One agreement as the city's public register of data-sharing agreements shows it to residents:
/// its purposes and legal basis always; its parties, fields, treatment, budget and validity
/// unless the policy marks it `confidential`.
public struct RegisterEntry: Sendable {
    public let agreement: String
    public let purposes: [String]
    public let legalBasis: String
    /// Nil for a confidential agreement.
    public let terms: Terms?

    public struct Terms: Sendable {
        public let dataset: String
        public let publisher: String
        public let partner: String
        public let fields: [String]
        public let k: Int
        public let suppressionLimit: Double
        /// The budget and what is spent, in the agreement's unit (ε, or ρ under zCDP).
        public let accounting: AgreementPolicy.Accounting
        public let budgetMicro: UInt64
        public let spentMicro: UInt64
        public let aggregatesGroupBy: [String]?
        /// The fields of synthetic releases, when the agreement offers them.
        public let syntheticFields: [String]?
        public let feed: Bool
        public let state: StoredAgreement.State
        public let validFrom: UTCTime
        public let validUntil: UTCTime
        public let accepted: UTCTime
        /// When it was revoked or expired.
        public let ended: UTCTime?
    }
}

extension Broker {
    /// Every agreement both parties signed (in force, revoked or expired, newest first), as the
    /// public register shows it; offers not accepted are not agreements and are left out.
    public func publicRegister() throws -> [RegisterEntry] {
        let names = Dictionary(uniqueKeysWithValues: try mapStore { try store.participants() }.map { ($0.keys.keyID, $0.keys.name) })
        let agreements = try mapStore { try store.agreements(involving: nil) }
        return try agreements.filter { $0.accepted != nil }.sorted { ($0.accepted ?? $0.offered) > ($1.accepted ?? $1.offered) }.map { agreement in
            let policy = try AgreementPolicy.parse(try JSONParser.parse(agreement.policy))
            guard policy.register == .public, let accepted = agreement.accepted else {
                return RegisterEntry(agreement: agreement.id, purposes: policy.purposes, legalBasis: policy.legalBasis.rawValue, terms: nil)
            }
            let terms = RegisterEntry.Terms(
                dataset: agreement.dataset, publisher: names[agreement.publisher] ?? agreement.publisher.hex,
                partner: names[agreement.partner] ?? agreement.partner.hex, fields: policy.fields, k: policy.treatment.k,
                suppressionLimit: policy.treatment.suppressionLimit, accounting: policy.accounting, budgetMicro: agreement.budgetMicro,
                spentMicro: agreement.spentMicro, aggregatesGroupBy: policy.aggregates?.groupBy, syntheticFields: policy.synthetic?.spec.fields,
                feed: policy.feed != nil,
                state: agreement.state, validFrom: agreement.validFrom, validUntil: agreement.validUntil, accepted: accepted,
                ended: agreement.ended)
            return RegisterEntry(agreement: agreement.id, purposes: policy.purposes, legalBasis: policy.legalBasis.rawValue, terms: terms)
        }
    }
}
