import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// Agreements: offered by the publisher, accepted by the partner, revoked by either, expired by time.
extension Broker {
    /// Stores an agreement offered by the dataset's publisher, who signed the policy hash.
    public func offerAgreement(policy value: JSONValue, signature: [UInt8], by publisher: Participant, now: UTCTime) throws -> StoredAgreement {
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
                                        validFrom: policy.validFrom, validUntil: policy.validUntil, budgetMicro: policy.budgetMicro, offered: now)
        let keySources = try policy.aggregates.map { try Self.declaredGroups($0.groupBy, terms: $0, schema: DatasetSchema.parse(dataset.schema), sourcesOnly: true).1 } ?? [:]
        let aggregateKeys = keySources.compactMapValues(\.stringValue)
        try change { transaction in
            try transaction.insertAgreement(agreement)
            _ = try transaction.appendLog(time: now, type: .agreementOffered, members: LogEvents.agreementOffered(
                agreement: agreement.id, dataset: agreement.dataset, publisher: agreement.publisher, partner: agreement.partner,
                purposes: policy.purposes, policySHA256: agreement.policySHA256, legalBasis: policy.legalBasis.rawValue,
                validFrom: agreement.validFrom.rfc3339, validUntil: agreement.validUntil.rfc3339, epsilonBudgetMicro: policy.epsilonBudgetMicro,
                aggregateKeys: aggregateKeys, rhoBudgetMicro: policy.rhoBudgetMicro))
        }
        return agreement
    }

    /// The partner accepts, signing the same policy hash.
    public func acceptAgreement(_ id: String, signature: [UInt8], by partner: Participant, now: UTCTime) throws -> StoredAgreement {
        let agreement = try existing(id)
        guard agreement.partner == partner.keys.keyID else { throw BrokerError(.forbidden, "only the partner of agreement \(id) may accept it") }
        guard partner.keys.isValidSignature(signature, for: AgreementPolicy.acceptMessage(policySHA256: agreement.policySHA256)) else {
            throw BrokerError(.badSignature, "the acceptance signature does not verify with \(partner.keys.name)'s key over policy \(Hex.encode(agreement.policySHA256))")
        }
        guard now <= agreement.validUntil else { throw BrokerError(.agreementNotActive, "agreement \(id) ended at \(agreement.validUntil)") }
        return try change { transaction in
            var current = try transaction.agreement(id)
            guard current.state == .offered else {
                throw BrokerError(.agreementNotActive, "agreement \(id) is \(current.state.rawValue); only an offered agreement can be accepted")
            }
            current.state = .accepted
            current.acceptSignature = signature
            current.accepted = now
            try transaction.updateAgreement(current)
            _ = try transaction.appendLog(time: now, type: .agreementAccepted, members: LogEvents.agreementAccepted(agreement: id, partner: current.partner))
            return current
        }
    }

    /// Either party revokes the agreement; nothing is released under it afterwards.
    public func revokeAgreement(_ id: String, by participant: Participant, now: UTCTime) throws -> StoredAgreement {
        let agreement = try existing(id)
        guard [agreement.publisher, agreement.partner].contains(participant.keys.keyID) else {
            throw BrokerError(.forbidden, "only the parties to agreement \(id) may revoke it")
        }
        return try end(id, as: .revoked, by: participant.keys.keyID, now: now)
    }

    /// Marks agreements past their validity as expired (logged); returns their ids.
    @discardableResult
    public func expireAgreements(now: UTCTime) throws -> [String] {
        // One node looks at a time; an agreement it ends is ended for all.
        try claimed("expire-agreements", seconds: 60) { try expireEachAgreement(now: now) } ?? []
    }

    private func expireEachAgreement(now: UTCTime) throws -> [String] {
        var expired: [String] = []
        for agreement in try store.agreements(involving: nil) where (agreement.state == .offered || agreement.state == .accepted) && agreement.validUntil < now {
            do {
                _ = try end(agreement.id, as: .expired, by: nil, now: now)
                expired.append(agreement.id)
            } catch let error as BrokerError where error.code == .agreementNotActive {
                continue  // revoked or expired meanwhile
            }
        }
        return expired
    }

    /// Ends an offered or accepted agreement: revoked by a party (`by`), or expired (`by` nil). Logged.
    private func end(_ id: String, as state: StoredAgreement.State, by party: KeyID?, now: UTCTime) throws -> StoredAgreement {
        try change { transaction in
            var current = try transaction.agreement(id)
            guard current.state == .offered || current.state == .accepted else {
                throw BrokerError(.agreementNotActive, "agreement \(id) is already \(current.state.rawValue)")
            }
            current.state = state
            current.ended = now
            try transaction.updateAgreement(current)
            if let party {
                _ = try transaction.appendLog(time: now, type: .agreementRevoked, members: LogEvents.agreementRevoked(agreement: id, by: party))
            } else {
                _ = try transaction.appendLog(time: now, type: .agreementExpired, members: LogEvents.agreementExpired(agreement: id))
            }
            return current
        }
    }

    /// An agreement and its policy, for one of its parties (or an auditor or the operator).
    public func agreement(_ id: String, for participant: Participant) throws -> (StoredAgreement, AgreementPolicy) {
        let agreement = try existing(id)
        guard [agreement.publisher, agreement.partner].contains(participant.keys.keyID) || participant.role == .auditor || participant.role == .operator_ else {
            throw BrokerError(.forbidden, "agreement \(id) is not \(participant.keys.name)'s")
        }
        return (agreement, try AgreementPolicy.parse(try JSONParser.parse(agreement.policy)))
    }

    /// The agreements a participant may see: its own, or every one for an auditor or the operator.
    public func agreements(for participant: Participant) throws -> [StoredAgreement] {
        let all = participant.role == .auditor || participant.role == .operator_
        return try mapStore { try store.agreements(involving: all ? nil : participant.keys.keyID) }
    }
}
