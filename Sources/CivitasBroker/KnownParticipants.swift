import CivitasCrypto
import CivitasModel
import CivitasTime
import Foundation

/// Signers by key id, kept for a short while once read: a key's participant never changes, but
/// its current keys and the key's retirement may (a rotation approved here or at another node),
/// so an entry is read again after ``lifetime`` seconds, and at once on this node after a
/// rotation. Unknown keys are not kept (every lookup of one reads the store).
final class KnownParticipants: @unchecked Sendable {
    private let lock = NSLock()
    private var byKey: [KeyID: (signer: Signer, read: Int64)] = [:]
    /// Most signers kept; beyond it, lookups read the store.
    static let capacity = 100_000
    /// Seconds an entry is used before the store is read again.
    static let lifetime: Int64 = 30

    func signer(_ keyID: KeyID, now: Int64, orRead read: () throws -> Signer?) rethrows -> Signer? {
        lock.lock()
        let known = byKey[keyID]
        lock.unlock()
        if let known, now - known.read < Self.lifetime, now >= known.read { return known.signer }
        guard let found = try read() else { return nil }
        lock.lock()
        if byKey.count < Self.capacity || byKey[keyID] != nil { byKey[keyID] = (found, now) }
        lock.unlock()
        return found
    }

    /// Forgets every entry (a rotation changed whose keys are current).
    func forgetAll() {
        lock.lock()
        byKey.removeAll()
        lock.unlock()
    }
}

/// Who signed a request: the participant, the key the signature is checked with, and until when
/// that key is accepted (nil: until a rotation retires it).
public struct Signer: Sendable, Equatable {
    public let participant: Participant
    public let key: PublicKeys
    public let retires: UTCTime?
}
