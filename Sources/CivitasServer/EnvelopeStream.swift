import Foundation
import NIOCore

/// Serves a delivery's envelope as it is read from the store: a reader thread reads it a piece at
/// a time inside one read of the store and hands each piece over; the response writes them in
/// order. At most ``capacity`` pieces wait between the two, so memory stays at two megabytes
/// whatever the envelope's size, and a reader whose client takes no piece for ``stallLimit``
/// gives up, ending its read of the store.
final class EnvelopeStream: AsyncSequence, @unchecked Sendable {
    typealias Element = ByteBuffer
    /// Bytes in one piece: 128 KiB, below the size from which the broker's allocator maps each
    /// block afresh (``ProcessMemory``), so pieces reuse memory rather than fault in new pages.
    static let pieceSize = 1 << 17
    /// Pieces read ahead of the response at most (2 MiB).
    static let capacity = 16
    /// How long the reader waits for the response to take a piece before it gives up.
    static let stallLimit: TimeInterval = 60

    private let condition = NSCondition()
    private var pieces: [ByteBuffer] = []
    private var waiting: CheckedContinuation<ByteBuffer?, any Error>?
    private var ended = false
    private var failure: (any Error)?
    private var abandoned = false

    private let stallLimit: TimeInterval

    /// Starts `read` on a thread of its own, handing each piece it reads (at most ``pieceSize``
    /// bytes) to the response and stopping it when the response is gone; `finished` runs on that
    /// thread once the read is over, however it ended.
    init(stallLimit: TimeInterval = EnvelopeStream.stallLimit,
         read: @escaping @Sendable (_ each: (UnsafeRawBufferPointer) throws -> Bool) throws -> Void,
         finished: @escaping @Sendable () -> Void) {
        self.stallLimit = stallLimit
        let thread = Thread { [self] in
            defer { finished() }
            do {
                try read { bytes in put(ByteBuffer(bytes: bytes)) }
                end(nil)
            } catch {
                end(error)
            }
        }
        thread.name = "civitas.envelope-reader"
        thread.start()
    }

    /// Hands a piece over, waiting while ``capacity`` pieces wait already; false once the response
    /// is gone or took nothing for ``stallLimit``.
    private func put(_ piece: ByteBuffer) -> Bool {
        condition.lock()
        let deadline = Date(timeIntervalSinceNow: stallLimit)
        while pieces.count >= Self.capacity && !abandoned {
            if !condition.wait(until: deadline) { abandoned = true }
        }
        guard !abandoned else {
            condition.unlock()
            return false
        }
        if let waiting {
            self.waiting = nil
            condition.unlock()
            waiting.resume(returning: piece)
        } else {
            pieces.append(piece)
            condition.unlock()
        }
        return true
    }

    private func end(_ error: (any Error)?) {
        condition.lock()
        ended = true
        // A read that stopped early must not look like a whole envelope to the response.
        failure = error ?? (abandoned ? Stalled() : nil)
        let (waiting, failure) = (self.waiting, self.failure)
        self.waiting = nil
        condition.unlock()
        guard let waiting else { return }
        if let failure { waiting.resume(throwing: failure) } else { waiting.resume(returning: nil) }
    }

    /// The reader stopped before the end: the response was gone or took no piece for ``stallLimit``.
    struct Stalled: Error {}

    /// The next piece; nil after the last.
    func next() async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            if !pieces.isEmpty {
                let piece = pieces.removeFirst()
                condition.signal()
                condition.unlock()
                continuation.resume(returning: piece)
            } else if ended {
                let failure = self.failure
                condition.unlock()
                if let failure { continuation.resume(throwing: failure) } else { continuation.resume(returning: nil) }
            } else {
                waiting = continuation
                condition.unlock()
            }
        }
    }

    /// Tells the reader the response is gone: it stops at its next piece.
    func abandon() {
        condition.lock()
        abandoned = true
        condition.signal()
        condition.unlock()
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let stream: EnvelopeStream
        func next() async throws -> ByteBuffer? { try await stream.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}
