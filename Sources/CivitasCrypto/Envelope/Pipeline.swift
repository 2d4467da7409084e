import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The second core of a seal or open: a serial worker thread that hashes (and
/// for sealing, writes) each batch while the calling thread reads and
/// encrypts or decrypts the next. Items run in submission order; the first
/// error is kept and later items are skipped.
///
/// Waiting spins briefly before sleeping: on small payloads, waking a sleeping
/// thread takes longer than the work being waited for.
final class PipelineWorker: @unchecked Sendable {
    private let queue = DispatchQueue(label: "civitas.envelope.worker")
    private let lock = Mutex()
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var firstError: (any Error)?
    private var submitted = 0
    private var completed = 0
    private var sleeping = false

    init() {
        condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    /// Queues `work`; returns its sequence number (0, 1, 2, ...).
    @discardableResult
    func submit(_ work: @escaping @Sendable () throws -> Void) -> Int {
        let number = submitted
        submitted += 1
        queue.async { [self] in
            if lock.withLock({ firstError == nil }) {
                do { try work() } catch { lock.withLock { if firstError == nil { firstError = error } } }
            }
            lock.withLock {
                completed += 1
                if sleeping { pthread_cond_broadcast(condition) }
            }
        }
        return number
    }

    /// Waits until item `number` and all before it have finished, then rethrows the first error.
    func wait(through number: Int) throws {
        var spins = 0
        while spins < 20_000 {
            if lock.withLock({ completed > number }) { break }
            spins += 1
        }
        lock.withLock {
            while completed <= number {
                sleeping = true
                pthread_cond_wait(condition, lock.mutex)
            }
            sleeping = false
        }
        if let error = lock.withLock({ firstError }) { throw error }
    }

    /// Waits for every submitted item, then rethrows the first error.
    func finish() throws {
        try wait(through: submitted - 1)
    }
}

/// The worker and the ring of slots one seal or open uses. Call ``close()``
/// when done (also after a failure): it waits for the worker and recycles the buffers.
struct PipelineRing {
    let worker = PipelineWorker()
    private let slots: [PipelineSlot]

    init(plan: BatchPlan) {
        slots = (0..<BatchPlan.ringSize).map { _ in
            PipelineSlot(plainCapacity: plan.batchPlainCapacity, cipherCapacity: plan.batchCipherCapacity)
        }
    }

    /// The slot for a batch, once the worker has finished with what it last held.
    func slot(forBatch batch: UInt64) throws -> PipelineSlot {
        let slot = slots[Int(batch % UInt64(slots.count))]
        if let pending = slot.pending { try worker.wait(through: pending) }
        return slot
    }

    func close() {
        try? worker.finish()
        slots.forEach { $0.recycle() }
    }
}

/// One slot of the pipeline ring: the buffers a batch of chunks moves through.
final class PipelineSlot: @unchecked Sendable {
    let plain: PipelineBuffer
    let cipher: PipelineBuffer
    /// Sequence number of the worker item that last used this slot, if any.
    var pending: Int?

    init(plainCapacity: Int, cipherCapacity: Int) {
        plain = PipelineBuffer.take(capacity: plainCapacity)
        cipher = PipelineBuffer.take(capacity: cipherCapacity)
    }

    /// Returns the buffers to the pool; call once the worker has finished.
    func recycle() {
        PipelineBuffer.recycle(plain)
        PipelineBuffer.recycle(cipher)
    }
}

/// A page-aligned buffer. Buffers are pooled across envelopes, because fresh
/// large allocations cost more in page faults than sealing a small payload.
final class PipelineBuffer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let capacity: Int
    var count = 0

    private init(capacity: Int) {
        self.capacity = capacity
        self.pointer = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1), alignment: 4096)
    }

    deinit { pointer.deallocate() }

    var filled: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }

    private static let poolLock = Mutex()
    nonisolated(unsafe) private static var pool: [Int: [PipelineBuffer]] = [:]
    private static let poolLimitPerSize = 12

    /// A buffer of exactly `capacity` bytes, from the pool when one is free.
    static func take(capacity: Int) -> PipelineBuffer {
        let reused = poolLock.withLock { pool[capacity]?.popLast() }
        let buffer = reused ?? PipelineBuffer(capacity: capacity)
        buffer.count = 0
        return buffer
    }

    /// Gives a buffer back to the pool, wiping what it held.
    static func recycle(_ buffer: PipelineBuffer) {
        buffer.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
        buffer.count = 0
        poolLock.withLock {
            if pool[buffer.capacity, default: []].count < poolLimitPerSize {
                pool[buffer.capacity, default: []].append(buffer)
            }
        }
    }
}
