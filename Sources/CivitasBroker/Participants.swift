import CivitasCrypto
import CivitasLog
import CivitasStore
import Foundation

/// Participants: registered by the operator with their public keys; every signed request names one.
extension Broker {
    /// Refuses `participant` unless its role is one of `roles`.
    public func require(_ participant: Participant, roles: Set<Participant.Role>) throws {
        guard roles.contains(participant.role) else {
            throw BrokerError(.forbidden, "\(participant.keys.name) (\(participant.role.rawValue)) may not do this; it needs the role \(roles.map(\.rawValue).sorted().joined(separator: " or "))")
        }
    }

    /// Registers a participant by its public keys; only the operator may. Logged.
    @discardableResult
    public func registerParticipant(_ keys: PublicKeys, role: Participant.Role, by registrar: Participant, now: UTCTime) throws -> Participant {
        try require(registrar, roles: [.operator_])
        return try change { try Self.register(keys, role: role, now: now, in: $0) }
    }

    /// Registers the operator the broker starts with, unless it is registered already (as the
    /// operator: a key registered with another role is refused).
    @discardableResult
    public func registerOperator(_ keys: PublicKeys, now: UTCTime) throws -> Participant {
        try change { transaction in
            if let existing = try transaction.participant(keys.keyID) {
                guard existing.role == .operator_ else {
                    throw BrokerError(.conflict, "\(keys.name) (\(keys.keyID)) is registered as \(existing.role.rawValue), not as the operator")
                }
                return existing
            }
            return try Self.register(keys, role: .operator_, now: now, in: transaction)
        }
    }

    private static func register(_ keys: PublicKeys, role: Participant.Role, now: UTCTime, in transaction: any StorageTransaction) throws -> Participant {
        // A key another participant rotated to (or asked to) signs for that participant only.
        if try transaction.participantKey(keys.keyID) != nil {
            throw BrokerError(.duplicate, "the key \(keys.keyID) is a rotated key of another participant")
        }
        let participant = Participant(keys: keys, role: role, registered: now)
        try transaction.insertParticipant(participant)
        _ = try transaction.appendLog(time: now, type: .participantRegistered, members: LogEvents.participantRegistered(keys, role: role.rawValue))
        return participant
    }

    /// Every registered participant, for any participant.
    public func participants(for participant: Participant) throws -> [Participant] {
        try mapStore { try store.participants() }
    }

    /// The participant whose key id signs a request and the key to check the signature with, if
    /// the key is registered or a rotation approved it; refuses (`forbidden`) a key whose grace
    /// period ended at `now` and a rotation still awaiting approval.
    public func signer(_ keyID: KeyID, now: UTCTime) throws -> Signer? {
        let found = try knownParticipants.signer(keyID, now: now.secondsSince1970) {
            try mapStore {
                if let rotated = try store.participantKey(keyID) {
                    guard rotated.approved != nil else {
                        throw BrokerError(.forbidden, "the key \(keyID) awaits the operator's approval of its rotation (civitas participants approve-key)")
                    }
                    guard let participant = try store.participant(rotated.participant) else { return nil }
                    return Signer(participant: participant, key: rotated.keys, retires: rotated.retires)
                }
                return try store.participant(keyID).map { Signer(participant: $0, key: $0.keys, retires: nil) }
            }
        }
        if let found, let retires = found.retires, now >= retires {
            throw BrokerError(.forbidden, "the key \(keyID) was retired at \(retires): sign with \(found.participant.keys.name)'s current key \(found.participant.currentKeys.keyID)")
        }
        return found
    }

    /// Accepts a request nonce once per key: refused as a replay when the key used it within the
    /// allowed skew (nonces older than `oldestAccepted` are forgotten). Returns once the nonce is
    /// stored, together with those of the requests that arrived meanwhile.
    public func acceptNonce(_ nonce: String, keyID: KeyID, created: Int64, oldestAccepted: Int64) async throws {
        guard (1...256).contains(nonce.utf8.count) else { throw BrokerError(.invalid, "a request nonce must be 1 to 256 bytes") }
        let new: Bool
        do {
            new = try await requestNonces.record(RequestNonce(keyID: keyID.hex, nonce: nonce, created: created), oldestAccepted: oldestAccepted)
        } catch let error as StoreError where error.code == .invalidArgument {
            throw BrokerError(.invalid, error.message)
        }
        guard new else { throw BrokerError(.replayed, "replayed request: this nonce was already used") }
    }
}
