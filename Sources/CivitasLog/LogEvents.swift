import CivitasCrypto

/// Builders for the members of each entry type, so writers cannot misspell a member.
public enum LogEvents {
    public static func participantRegistered(_ keys: PublicKeys, role: String) -> [String: JSONValue] {
        ["participant": .string(keys.keyID.hex), "name": .string(keys.name), "role": .string(role),
         "ed25519": .string(Base64.encode(keys.signingKey)), "x25519": .string(Base64.encode(keys.encryptionKey))]
    }

    /// A participant's key `participant` replaced by `replacement` (the operator approved it).
    public static func keyRotated(participant: KeyID, replacement: PublicKeys) -> [String: JSONValue] {
        ["participant": .string(participant.hex), "replacement": .string(replacement.keyID.hex),
         "ed25519": .string(Base64.encode(replacement.signingKey)), "x25519": .string(Base64.encode(replacement.encryptionKey))]
    }

    public static func datasetRegistered(dataset: String, publisher: KeyID, schemaSHA256: [UInt8]) -> [String: JSONValue] {
        ["dataset": .string(dataset), "publisher": .string(publisher.hex), "schema_sha256": .string(Hex.encode(schemaSHA256))]
    }

    /// An offered agreement; the budget is ε × 10^6 as an integer. `aggregateKeys` names, per
    /// column the partner may group by, where its declared group keys come from (`policy` or `schema`).
    public static func agreementOffered(agreement: String, dataset: String, publisher: KeyID, partner: KeyID,
                                        purposes: [String], policySHA256: [UInt8], legalBasis: String,
                                        validFrom: String, validUntil: String, epsilonBudgetMicro: UInt64,
                                        aggregateKeys: [String: String] = [:], rhoBudgetMicro: UInt64? = nil) -> [String: JSONValue] {
        var members: [String: JSONValue] = ["agreement": .string(agreement), "dataset": .string(dataset), "publisher": .string(publisher.hex),
         "partner": .string(partner.hex), "purposes": .array(purposes.map(JSONValue.string)),
         "policy_sha256": .string(Hex.encode(policySHA256)), "legal_basis": .string(legalBasis),
         "valid_from": .string(validFrom), "valid_until": .string(validUntil),
         "epsilon_budget_micro": .number(Double(epsilonBudgetMicro))]
        if !aggregateKeys.isEmpty { members["aggregate_keys"] = .object(aggregateKeys.mapValues(JSONValue.string)) }
        // An agreement that counts its privacy loss in ρ (zCDP) states that budget, × 10^6.
        if let rhoBudgetMicro { members["rho_budget_micro"] = .number(Double(rhoBudgetMicro)) }
        return members
    }

    public static func agreementAccepted(agreement: String, partner: KeyID) -> [String: JSONValue] {
        ["agreement": .string(agreement), "partner": .string(partner.hex)]
    }

    public static func agreementRevoked(agreement: String, by: KeyID) -> [String: JSONValue] {
        ["agreement": .string(agreement), "by": .string(by.hex)]
    }

    public static func agreementExpired(agreement: String) -> [String: JSONValue] {
        ["agreement": .string(agreement)]
    }

    /// A consent event (granted or withdrawn) for a subject's keyed hash, never the subject itself.
    public static func consentRecorded(dataset: String, subject: [UInt8], purpose: String, recordedBy: KeyID) -> [String: JSONValue] {
        ["dataset": .string(dataset), "subject": .string(Hex.encode(subject)), "purpose": .string(purpose), "recorded_by": .string(recordedBy.hex)]
    }

    /// The consent events of one request: how many, of which datasets, by whom, and the Merkle root
    /// (RFC 9162) of their receipts, so each receipt is provable without naming any subject here.
    public static func consentRecorded(datasets: [String], recordedBy: KeyID, receipts: Int, receiptsRoot: MerkleDigest,
                                       granted: Int, withdrawn: Int) -> [String: JSONValue] {
        ["datasets": .array(datasets.map { .string($0) }), "recorded_by": .string(recordedBy.hex),
         "receipts": .number(Double(receipts)), "receipts_root": .string(Hex.encode(receiptsRoot)),
         "granted": .number(Double(granted)), "withdrawn": .number(Double(withdrawn))]
    }

    /// A delivered release: the envelope's signed manifest and signature (no payload), what the
    /// privacy treatment achieved, and the ε charged (× 10^6). `kAchieved` is 0 when no k-anonymity step ran.
    public static func releaseDelivered(release: String, agreement: String, dataset: String, partner: KeyID, purpose: String,
                                        policySHA256: [UInt8], envelope: EnvelopeSummary, recordsReleased: UInt64,
                                        recordsSuppressed: UInt64, kAchieved: UInt64, epsilonMicro: UInt64, rhoMicro: UInt64? = nil,
                                        transforms: [String: JSONValue]) -> [String: JSONValue] {
        var members: [String: JSONValue] = ["release": .string(release), "agreement": .string(agreement), "dataset": .string(dataset),
         "partner": .string(partner.hex), "purpose": .string(purpose), "policy_sha256": .string(Hex.encode(policySHA256)),
         "envelope_manifest": envelope.manifest.jsonValue, "envelope_signature": .string(Base64.encode(envelope.signature)),
         "records_released": .number(Double(recordsReleased)), "records_suppressed": .number(Double(recordsSuppressed)),
         "k_achieved": .number(Double(kAchieved)), "epsilon_micro": .number(Double(epsilonMicro)), "transforms": .object(transforms)]
        // Under an agreement that counts ρ: the ρ charged (ε²/2 for a pure ε step), × 10^6.
        if let rhoMicro { members["rho_micro"] = .number(Double(rhoMicro)) }
        return members
    }
}
