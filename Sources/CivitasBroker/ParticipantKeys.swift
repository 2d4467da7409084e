import CivitasCrypto
import CivitasLog
import CivitasModel
import CivitasStore
import CivitasTime

/// Participants rotating their keys: a participant asks with a request signed by its current
/// key, the operator approves, and from then on the new key signs for the participant and
/// receives its envelopes; the old key is accepted for ``Broker/keyGracePeriod`` more seconds.
/// The participant keeps its id (the key id it was registered with) in agreements and the log.
extension Broker {
    /// Records `participant`'s request to sign with `newKeys` instead of its current key; the
    /// request must be signed with that current key (`signedWith`).
    public func requestKeyRotation(to newKeys: PublicKeys, by participant: Participant, signedWith keyID: KeyID, now: UTCTime) throws -> ParticipantKey {
        guard keyID == participant.currentKeys.keyID else {
            throw BrokerError(.forbidden, "a key rotation is asked with the participant's current key \(participant.currentKeys.keyID), not with \(keyID)")
        }
        return try change { transaction in
            guard try transaction.participant(newKeys.keyID) == nil, try transaction.participantKey(newKeys.keyID) == nil else {
                throw BrokerError(.duplicate, "the key \(newKeys.keyID) is already registered or asked for")
            }
            let key = ParticipantKey(keys: newKeys, participant: participant.keys.keyID, requested: now)
            try transaction.saveParticipantKey(key)
            return key
        }
    }

    /// The rotations waiting for the operator's approval (operator only).
    public func pendingKeyRotations(for participant: Participant) throws -> [ParticipantKey] {
        try require(participant, roles: [.operator_])
        return try mapStore { try store.pendingParticipantKeys() }
    }

    /// Approves the rotation to the key `keyID` (operator only): it becomes its participant's
    /// current key, the key it replaces is accepted until `now` plus the grace period, and the
    /// log records the rotation.
    public func approveKeyRotation(_ keyID: KeyID, by approver: Participant, now: UTCTime) throws -> ApprovedRotation {
        try require(approver, roles: [.operator_])
        let approved = try change { transaction -> ApprovedRotation in
            guard let pending = try transaction.participantKey(keyID) else { throw BrokerError(.notFound, "no rotation to the key \(keyID) was asked for") }
            guard pending.approved == nil else { throw BrokerError(.conflict, "the rotation to \(keyID) was approved at \(pending.approved?.rfc3339 ?? "?")") }
            guard let participant = try transaction.participant(pending.participant) else {
                throw BrokerError(.notFound, "participant \(pending.participant) is not registered")
            }
            let retires = UTCTime(secondsSince1970: now.secondsSince1970 + keyGracePeriod)
            let replaced = participant.currentKeys
            if let current = try transaction.participantKey(replaced.keyID) {
                try transaction.saveParticipantKey(ParticipantKey(keys: current.keys, participant: current.participant, requested: current.requested,
                                                                  approved: current.approved, retires: retires))
            } else {
                // The registered key's first rotation: it is kept as a key that retires.
                try transaction.saveParticipantKey(ParticipantKey(keys: replaced, participant: participant.keys.keyID, requested: participant.registered,
                                                                  approved: participant.registered, retires: retires))
            }
            let key = ParticipantKey(keys: pending.keys, participant: pending.participant, requested: pending.requested, approved: now)
            try transaction.saveParticipantKey(key)
            _ = try transaction.appendLog(time: now, type: .keyRotated, members: LogEvents.keyRotated(participant: replaced.keyID, replacement: pending.keys))
            return ApprovedRotation(key: key, replaced: replaced, replacedRetires: retires)
        }
        knownParticipants.forgetAll()
        return approved
    }
}

/// A rotation the operator approved: the new key, and the key it replaced with the end of that key's grace period.
public struct ApprovedRotation: Sendable, Equatable {
    public let key: ParticipantKey
    public let replaced: PublicKeys
    public let replacedRetires: UTCTime
}
