import CivitasBroker
import Foundation
import Testing

/// A partner waiting for a feed's next window is woken by the delivery itself; a signal that
/// came between reading the version and waiting is not lost; deadlines and cancellation end a wait.
@Suite("Feed signals")
struct FeedSignalTests {
    @Test("A waiter wakes when its feed is signalled, not when another feed is")
    func wakes() async throws {
        let signals = FeedSignals()
        let version = signals.version(of: "feed-a")
        let far = ContinuousClock.now + .seconds(60)
        let waiter = Task { () -> ContinuousClock.Instant in
            await signals.wait(for: "feed-a", after: version, until: far)
            return ContinuousClock.now
        }
        try await Task.sleep(for: .milliseconds(50))
        signals.signal("feed-b")
        try await Task.sleep(for: .milliseconds(50))
        let signalled = ContinuousClock.now
        signals.signal("feed-a")
        let woke = await waiter.value
        #expect(woke >= signalled && woke < far, "woken by the signal, well before its deadline")
        #expect(signals.version(of: "feed-a") == version + 1 && signals.version(of: "feed-b") == 1)
    }

    @Test("A signal between reading the version and waiting is not lost")
    func noLostSignal() async {
        let signals = FeedSignals()
        let version = signals.version(of: "feed-a")
        signals.signal("feed-a")
        let far = ContinuousClock.now + .seconds(60)
        await signals.wait(for: "feed-a", after: version, until: far)
        #expect(ContinuousClock.now < far)
    }

    @Test("A wait ends at its deadline, or when its task is cancelled")
    func deadlineAndCancellation() async throws {
        let signals = FeedSignals()
        let deadline = ContinuousClock.now + .milliseconds(100)
        await signals.wait(for: "feed-a", after: signals.version(of: "feed-a"), until: deadline)
        #expect(ContinuousClock.now >= deadline)

        let far = ContinuousClock.now + .seconds(60)
        let waiter = Task { await signals.wait(for: "feed-a", after: signals.version(of: "feed-a"), until: far) }
        try await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        await waiter.value
        #expect(ContinuousClock.now < far)
    }
}
