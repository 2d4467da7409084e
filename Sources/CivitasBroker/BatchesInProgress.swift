import Foundation

/// The batches this broker node is storing now, by dataset and idempotency key, so that a
/// batch uploaded to follow one of them (the next part of a large file) waits for it instead of
/// being refused.
final class BatchesInProgress: @unchecked Sendable {
    private struct Key: Hashable {
        let dataset: String
        let idempotencyKey: String
    }

    private let lock = NSLock()
    /// How many uploads are storing each batch (a retry may overlap the first attempt).
    private var storing: [Key: Int] = [:]
    private var waiters: [Key: [CheckedContinuation<Void, Never>]] = [:]

    /// Runs `body` with the batch counted as being stored; its waiters go on once no upload is storing it.
    func storing<T>(dataset: String, idempotencyKey: String?, _ body: () throws -> T) rethrows -> T {
        guard let idempotencyKey else { return try body() }
        let key = Key(dataset: dataset, idempotencyKey: idempotencyKey)
        lock.withLock { storing[key, default: 0] += 1 }
        defer {
            let done = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
                storing[key, default: 1] -= 1
                guard storing[key] == 0 else { return [] }
                storing[key] = nil
                return waiters.removeValue(forKey: key) ?? []
            }
            for waiter in done { waiter.resume() }
        }
        return try body()
    }

    /// Returns once no upload on this node is storing the batch (at once when none is).
    func wait(dataset: String, idempotencyKey: String) async {
        let key = Key(dataset: dataset, idempotencyKey: idempotencyKey)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = lock.withLock { () -> Bool in
                guard storing[key] != nil else { return true }
                waiters[key, default: []].append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}
