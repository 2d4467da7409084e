import Foundation

/// Wakes whoever waits for a feed's next window the moment the broker delivers one, instead of
/// letting waiters poll. A waiter reads `version(of:)` before it looks for windows, and waits
/// only for a change after that version, so a window delivered in between is never missed.
public final class FeedSignals: @unchecked Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, Never>
    }
    private let lock = NSLock()
    private var versions: [String: UInt64] = [:]
    private var waiters: [String: [Waiter]] = [:]
    private var nextWaiter: UInt64 = 0

    public init() {}

    /// How many times `feed` was signalled so far.
    public func version(of feed: String) -> UInt64 {
        lock.withLock { versions[feed, default: 0] }
    }

    /// A window of `feed` was delivered: every waiter wakes.
    public func signal(_ feed: String) {
        let woken = lock.withLock { () -> [Waiter] in
            versions[feed, default: 0] += 1
            return waiters.removeValue(forKey: feed) ?? []
        }
        for waiter in woken { waiter.continuation.resume() }
    }

    /// Returns once `feed` is signalled after `version`, at `deadline`, or when the task is cancelled.
    public func wait(for feed: String, after version: UInt64, until deadline: ContinuousClock.Instant) async {
        let id = lock.withLock { () -> UInt64 in
            nextWaiter += 1
            return nextWaiter
        }
        let timer = Task {
            try? await Task.sleep(until: deadline, clock: .continuous)
            self.wake(feed, waiter: id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = lock.withLock { () -> Bool in
                    if versions[feed, default: 0] > version || Task.isCancelled || ContinuousClock.now >= deadline { return true }
                    waiters[feed, default: []].append(Waiter(id: id, continuation: continuation))
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            self.wake(feed, waiter: id)
        }
        timer.cancel()
    }

    /// Resumes one waiter, if it still waits.
    private func wake(_ feed: String, waiter id: UInt64) {
        let waiter = lock.withLock { () -> Waiter? in
            guard let index = waiters[feed]?.firstIndex(where: { $0.id == id }) else { return nil }
            return waiters[feed]?.remove(at: index)
        }
        waiter?.continuation.resume()
    }
}
