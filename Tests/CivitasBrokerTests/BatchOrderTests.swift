@testable import CivitasBroker
import CivitasCrypto
import CivitasModel
import CivitasPrivacy
import Foundation
import Testing

/// The parts of a large file are consecutive batches: a part uploaded while the broker still
/// stores the one before waits for it, and is never stored before it.
@Suite("Batch order")
struct BatchOrderTests {
    /// A batch's bytes that hold the first read until `gate` opens, signalling `started` first.
    final class HeldSource: ByteSource, @unchecked Sendable {
        let inner: MemorySource
        let started: DispatchSemaphore
        let gate: DispatchSemaphore
        var held = false

        init(_ bytes: [UInt8], started: DispatchSemaphore, gate: DispatchSemaphore) {
            inner = MemorySource(bytes)
            self.started = started
            self.gate = gate
        }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            if !held {
                held = true
                started.signal()
                gate.wait()
            }
            return try inner.read(into: buffer)
        }
    }

    /// A value shared between the test and the threads it starts, behind a lock.
    final class Shared<Value>: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: Value
        init(_ value: Value) { stored = value }
        var value: Value {
            get { lock.withLock { stored } }
            set { lock.withLock { stored = newValue } }
        }
    }

    @Test("A batch that follows one the dataset does not hold is refused and nothing is stored; once it is held, it is stored next")
    func followerOfMissingBatchRefused() throws {
        let fixture = try BrokerFixture()
        let dataset = BrokerFixture.dataset
        let second = BrokerFixture.records(people: 5, startingAt: 20).csv()
        #expect {
            try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: { MemorySource(second) }, idempotencyKey: "file-part-2",
                                            follows: "file-part-1", by: fixture.clinic, now: fixture.now)
        } throws: { ($0 as? BrokerError)?.code == .previousBatchMissing }
        #expect(try fixture.store.batches(of: dataset, from: 1).isEmpty)
        // Positive control: once the part before is stored, the same request is stored after it.
        let first = try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: { MemorySource(BrokerFixture.records(people: 5).csv()) },
                                                    idempotencyKey: "file-part-1", by: fixture.clinic, now: fixture.now)
        let next = try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: { MemorySource(second) }, idempotencyKey: "file-part-2",
                                                   follows: "file-part-1", by: fixture.clinic, now: fixture.now)
        #expect(next.sequence == first.sequence + 1 && !next.replayed)
        // A key of the wrong length is refused before anything is read.
        #expect(throws: BrokerError.self) {
            try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: { MemorySource(second) }, idempotencyKey: "file-part-3",
                                            follows: String(repeating: "k", count: 201), by: fixture.clinic, now: fixture.now)
        }
    }

    @Test("A batch's follower waits while the broker stores it and goes on once it is stored; a batch not being stored is not waited for")
    func followerWaitsForBatchInProgress() async throws {
        let fixture = try BrokerFixture()
        let dataset = BrokerFixture.dataset
        let started = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0), finished = DispatchSemaphore(value: 0)
        let held = HeldSource(BrokerFixture.records(people: 5).csv(), started: started, gate: gate)
        let shared = Shared(fixture), first = Shared<Result<Batch, any Error>?>(nil)
        Thread {
            first.value = Result {
                try shared.value.broker.publishBatch(dataset: dataset, format: .csv, body: { held }, idempotencyKey: "file-part-1",
                                                     by: shared.value.clinic, now: shared.value.now)
            }
            finished.signal()
        }.start()
        started.wait()  // part 1 is being stored, held at its first read

        let waited = Shared(false)
        let waiter = Task {
            await shared.value.broker.batchStored(dataset: dataset, idempotencyKey: "file-part-1")
            waited.value = true
        }
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(!waited.value)  // still storing part 1
        gate.signal()
        await waiter.value
        finished.wait()
        let stored = try #require(first.value).get()
        let next = try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: { MemorySource(BrokerFixture.records(people: 5, startingAt: 5).csv()) },
                                                   idempotencyKey: "file-part-2", follows: "file-part-1", by: fixture.clinic, now: fixture.now)
        #expect(next.sequence == stored.sequence + 1)
        // Nothing is being stored under another key: no wait at all.
        await fixture.broker.batchStored(dataset: dataset, idempotencyKey: "never-sent")
    }
}
