import CivitasCrypto
import CivitasModel
import Foundation

/// Registered participants by signing key, kept once read: participants are only ever added,
/// so an entry never goes stale. Unknown keys are not kept (every lookup of one reads the store).
final class KnownParticipants: @unchecked Sendable {
    private let lock = NSLock()
    private var byKey: [KeyID: Participant] = [:]
    /// Most participants kept; beyond it, lookups read the store.
    static let capacity = 100_000

    func participant(_ keyID: KeyID, orRead read: () throws -> Participant?) rethrows -> Participant? {
        lock.lock()
        let known = byKey[keyID]
        lock.unlock()
        if let known { return known }
        guard let found = try read() else { return nil }
        lock.lock()
        if byKey.count < Self.capacity { byKey[keyID] = found }
        lock.unlock()
        return found
    }
}
