import CivitasCrypto
import Foundation

/// Bytes handed from a download to a reader on another thread as they arrive, with at most
/// `capacity` bytes waiting: the writer waits while the reader is behind, the reader waits for
/// the next bytes. Either side may stop the other with an error.
final class ByteChannel: ByteSource, ByteSink, @unchecked Sendable {
    private let condition = NSCondition()
    private var chunks: [[UInt8]] = []
    private var head = 0
    private var offset = 0
    private var buffered = 0
    private var finished = false
    private var failure: (any Error)?
    private var readerGone = false
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// Appends bytes for the reader; waits while `capacity` bytes are waiting. Throws once the reader stopped.
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !bytes.isEmpty else { return }
        condition.lock()
        defer { condition.unlock() }
        while buffered >= capacity && !readerGone { condition.wait() }
        guard !readerGone else { throw CLIError("the envelope's reader stopped") }
        chunks.append(Array(bytes))
        buffered += bytes.count
        condition.broadcast()
    }

    /// No more bytes: the reader sees the end, or `error` if the download failed.
    func finish(error: (any Error)? = nil) {
        condition.lock()
        finished = true
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// The reader is done (or failed): a waiting writer is released.
    func stopReading() {
        condition.lock()
        readerGone = true
        condition.broadcast()
        condition.unlock()
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        condition.lock()
        defer { condition.unlock() }
        var filled = 0
        while filled < buffer.count {
            if head == chunks.count {
                if finished {
                    if let failure { throw failure }
                    break
                }
                condition.wait()
                continue
            }
            let chunk = chunks[head]
            let count = min(chunk.count - offset, buffer.count - filled)
            chunk.withUnsafeBytes { source in
                guard let from = source.baseAddress, let to = buffer.baseAddress else { return }
                (to + filled).copyMemory(from: from + offset, byteCount: count)
            }
            filled += count
            offset += count
            buffered -= count
            if offset == chunk.count {
                head += 1
                offset = 0
                if head > 64 {
                    chunks.removeFirst(head)
                    head = 0
                }
            }
            condition.broadcast()
        }
        return filled
    }
}

/// Writes every byte to two sinks.
final class TeeSink: ByteSink {
    private let first: ByteSink
    private let second: ByteSink

    init(_ first: ByteSink, _ second: ByteSink) {
        self.first = first
        self.second = second
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try first.write(bytes)
        try second.write(bytes)
    }
}

/// Passes bytes on to another sink, counting them.
final class CountingSink: ByteSink {
    private let next: ByteSink
    private(set) var count = 0

    init(_ next: ByteSink) { self.next = next }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try next.write(bytes)
        count += bytes.count
    }
}

/// Runs `body` on a thread of its own (it may block waiting for bytes) and returns its result.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.start()
    }
}
