import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// Differentially private synthetic rows under an agreement's `synthetic` terms.
extension Broker {
    /// Synthetic rows drawn from noisy marginals of the consented records, charged ρ to the
    /// agreement's zCDP budget. With `requestKey`, a repeated request answers the first delivery:
    /// never a second charge.
    public func synthetic(agreement id: String, purpose: String, rhoMicro: UInt64, by partner: Participant, now: UTCTime,
                          requestKey: String? = nil) throws -> ReleaseResult {
        let keyed = try KeyedRequest(requestKey, request: [
            "synthetic": .string(id), "purpose": .string(purpose), "rho_micro": .number(Double(rhoMicro)),
        ])
        return try countingRefusals(under: id, partner: partner, now: now) {
            try answeringOnce(keyed, partner: partner) {
                try synthetic(agreement: id, purpose: purpose, rhoMicro: rhoMicro, by: partner, now: now, keyed: keyed)
            }
        }
    }

    private func synthetic(agreement id: String, purpose: String, rhoMicro: UInt64, by partner: Participant, now: UTCTime,
                           keyed: KeyedRequest?) throws -> ReleaseResult {
        let (agreement, policy, dataset) = try authorize(id, purpose: purpose, partner: partner, now: now)
        guard let terms = policy.synthetic else { throw BrokerError(.invalid, "agreement \(id) does not allow synthetic releases") }
        guard rhoMicro > 0, rhoMicro <= terms.maxRhoPerReleaseMicro else {
            throw BrokerError(.invalid, "ρ per synthetic release must be above 0 and at most \(MicroUnits.decimal(terms.maxRhoPerReleaseMicro)) under agreement \(id)")
        }
        _ = try Self.charge(rhoMicro, to: agreement, policy: policy)  // refused before any work; charged again when delivered
        let schema = try DatasetSchema.parse(dataset.schema)
        let mayRelease = try consentRule(policy: policy, dataset: dataset.id, purpose: purpose)
        let (table, subject) = try consentedColumns(of: dataset.id, reading: terms.spec.fields,
                                                   treatment: ReleaseTreatment(schema: schema, policy: policy), mayRelease: mayRelease)
        let synthesizer: MarginalSynthesizer
        let output: MarginalSynthesizer.Output
        do {
            synthesizer = try terms.spec.synthesizer(rho: try Rational(UInt128(rhoMicro), 1_000_000), subject: subject,
                                                     maxRecordsPerSubject: terms.maxRecordsPerSubject, schema: schema)
            var sampler = ExactSampler(random: randomness())
            output = try synthesizer.run(table, using: &sampler)
        } catch let error as PrivacyError {
            throw BrokerError(.invalid, error.message)
        }
        let deliveryID = Self.newDeliveryID(.synthetic)
        let requestKey = try Self.requestKey(keyed, partner: partner.keys.keyID, delivery: deliveryID, outcome: nil, epsilonMicro: 0,
                                             rhoMicro: rhoMicro, now: now)
        // The log states what was measured and how: an auditor can check the noise against ρ.
        let transforms: [String: JSONValue] = [
            "mechanism": "discrete-gaussian",
            "marginals": .array(synthesizer.marginals.map { names in .array(names.map(JSONValue.string)) }),
            "sigma_squared": .string(try synthesizer.sigmaSquared.description),
            "max_records_per_subject": .number(Double(terms.maxRecordsPerSubject)),
            "rows": "noisy total",
        ]
        let delivery = try deliver(payload: output.csv(), records: output.total, id: deliveryID, kind: .synthetic, agreement: agreement,
                                   policy: policy, purpose: purpose, outcome: nil, epsilonMicro: 0, feedWindow: nil, drawnBatches: [], now: now,
                                   transforms: transforms, requestKey: requestKey, rhoMicro: rhoMicro)
        return ReleaseResult(delivery: delivery, outcome: nil, epsilonMicro: 0, rhoMicro: rhoMicro)
    }
}
