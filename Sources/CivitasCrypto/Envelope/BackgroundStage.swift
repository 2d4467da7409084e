import Dispatch

/// A second pipeline stage on its own thread: work items run in submission
/// order, at most `depth` are outstanding, and the first error is kept and
/// rethrown. Sealing and opening use it to hash on one core while the other
/// encrypts or decrypts.
final class BackgroundStage: @unchecked Sendable {
    private let queue = DispatchQueue(label: "civitas.envelope.stage")
    private let slots: DispatchSemaphore
    private let depth: Int
    private let lock = Mutex()
    private var firstError: (any Error)?

    init(depth: Int) {
        self.depth = depth
        self.slots = DispatchSemaphore(value: depth)
    }

    /// Waits for a free slot; after this returns, the item submitted `depth`
    /// submissions ago has finished and its buffers may be reused.
    func reserveSlot() throws {
        slots.wait()
        if let error = lock.withLock({ firstError }) {
            slots.signal()
            throw error
        }
    }

    /// Gives back a slot reserved with ``reserveSlot()`` when nothing will be submitted for it.
    func releaseReservation() {
        slots.signal()
    }

    /// Runs `work` on the stage's thread; call once after each ``reserveSlot()``.
    func submit(_ work: @escaping @Sendable () throws -> Void) {
        queue.async { [self] in
            defer { slots.signal() }
            guard lock.withLock({ firstError == nil }) else { return }
            do { try work() } catch { lock.withLock { if firstError == nil { firstError = error } } }
        }
    }

    /// Waits until every submitted item has finished, then rethrows the first error.
    func drain() throws {
        for _ in 0..<depth { slots.wait() }
        for _ in 0..<depth { slots.signal() }
        if let error = lock.withLock({ firstError }) { throw error }
    }
}

/// A page-aligned buffer that can be handed to the background stage.
final class PipelineBuffer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let capacity: Int
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        self.pointer = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1), alignment: 4096)
    }

    deinit { pointer.deallocate() }

    var filled: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }
    var whole: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: capacity) }
}
