import CivitasCrypto
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
    public func registerParticipant(_ keys: PublicKeys, role: Participant.Role, by registrar: Participant, now: UTCTime) throws -> Participant {
        try require(registrar, roles: [.operator_])
        return try mapStore { try store.registerParticipant(keys, role: role, now: now) }
    }

    /// Every registered participant, for any participant.
    public func participants(for participant: Participant) throws -> [Participant] {
        try mapStore { try store.participants() }
    }

    /// The participant whose key id signs a request, if registered.
    public func participant(signingWith keyID: KeyID) throws -> Participant? {
        try mapStore { try store.participant(keyID) }
    }

    /// Accepts a request nonce once per key: refused as a replay when the key used it within the
    /// allowed skew (nonces older than `oldestAccepted` are forgotten).
    public func acceptNonce(_ nonce: String, keyID: KeyID, created: Int64, oldestAccepted: Int64) throws {
        do {
            try store.recordNonce(keyID: keyID.hex, nonce: nonce, created: created, oldestAccepted: oldestAccepted)
        } catch let error as StoreError where error.code == .replayed {
            throw BrokerError(.replayed, "replayed request: this nonce was already used")
        } catch let error as StoreError where error.code == .invalidArgument {
            throw BrokerError(.invalid, error.message)
        }
    }
}
