import CivitasModel
import CivitasStore
import Foundation

/// Writes the nonces of concurrent signed requests to the store together: each request waits
/// (suspended, holding no thread) for the one transaction that records its nonce with the others
/// that arrived meanwhile, so one synced commit serves many requests. A nonce is accepted only
/// once its write commits, so replay protection survives a restart.
final class RequestNonceWriter: @unchecked Sendable {
    private struct Waiting {
        let nonce: RequestNonce
        let oldestAccepted: Int64
        let continuation: CheckedContinuation<Bool, any Error>
    }

    private let lock = NSLock()
    private var waiting: [Waiting] = []
    private var writing = false
    private let queue = DispatchQueue(label: "civitas.request-nonces")
    private let write: @Sendable ([RequestNonce], Int64) throws -> [Bool]

    /// Most nonces written in one transaction.
    static let maximumBatch = 1024

    init(write: @escaping @Sendable ([RequestNonce], Int64) throws -> [Bool]) {
        self.write = write
    }

    /// Whether `nonce` was new (false: its key used it since `oldestAccepted`), once recorded.
    func record(_ nonce: RequestNonce, oldestAccepted: Int64) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            waiting.append(Waiting(nonce: nonce, oldestAccepted: oldestAccepted, continuation: continuation))
            let start = !writing
            writing = true
            lock.unlock()
            if start { queue.async { self.drain() } }
        }
    }

    private func drain() {
        while true {
            lock.lock()
            let batch = Array(waiting.prefix(Self.maximumBatch))
            waiting.removeFirst(batch.count)
            if batch.isEmpty { writing = false }
            lock.unlock()
            if batch.isEmpty { return }
            // The narrowest window of the batch: a nonce is taken anew only if every request's window has passed it.
            let oldest = batch.map(\.oldestAccepted).min() ?? 0
            do {
                let accepted = try write(batch.map(\.nonce), oldest)
                for (item, new) in zip(batch, accepted) { item.continuation.resume(returning: new) }
            } catch {
                for item in batch { item.continuation.resume(throwing: error) }
            }
        }
    }
}
