import Foundation
import NIOCore
import Testing
@testable import CivitasServer

/// A flag and a counter the reader thread and the test share.
final class ReadProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var piecesRead = 0
    private var finishedAt: Date?

    func read() { lock.withLock { piecesRead += 1 } }
    func finish() { lock.withLock { finishedAt = Date() } }
    var pieces: Int { lock.withLock { piecesRead } }
    var finished: Date? { lock.withLock { finishedAt } }

    /// Waits up to `seconds` for the reader to finish.
    func waitForFinish(within seconds: TimeInterval) async throws -> Date? {
        let deadline = Date(timeIntervalSinceNow: seconds)
        while finished == nil && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        return finished
    }
}

@Suite("Envelope stream")
struct EnvelopeStreamTests {
    /// A read of `pieces` pieces of 1 KiB, the n-th filled with n, that stops when told to.
    static func reader(pieces: Int, progress: ReadProgress) -> @Sendable ((UnsafeRawBufferPointer) throws -> Bool) throws -> Void {
        { each in
            for n in 0..<pieces {
                progress.read()
                let piece = [UInt8](repeating: UInt8(n % 256), count: 1024)
                guard try piece.withUnsafeBytes({ try each($0) }) else { return }
            }
        }
    }

    @Test("Every piece arrives in order, and the read finishes")
    func wholeRead() async throws {
        let progress = ReadProgress()
        let stream = EnvelopeStream(read: Self.reader(pieces: 50, progress: progress), finished: { progress.finish() })
        var received: [ByteBuffer] = []
        for try await piece in stream { received.append(piece) }
        #expect(received.count == 50)
        #expect(received.enumerated().allSatisfy { n, piece in piece.readableBytesView.allSatisfy { $0 == UInt8(n) } })
        #expect(try await progress.waitForFinish(within: 5) != nil)
    }

    @Test("The reader reads no more than a few pieces ahead of the response")
    func boundedReadAhead() async throws {
        let progress = ReadProgress()
        let stream = EnvelopeStream(read: Self.reader(pieces: 1000, progress: progress), finished: { progress.finish() })
        let iterator = stream.makeAsyncIterator()
        _ = try await iterator.next()
        try await Task.sleep(for: .milliseconds(200))
        // One taken, the queue full, and the piece the reader is waiting to hand over.
        #expect(progress.pieces <= 2 + EnvelopeStream.capacity)
        stream.abandon()
        #expect(try await progress.waitForFinish(within: 5) != nil)
        #expect(progress.pieces < 1000)
    }

    @Test("A response that takes nothing makes the reader give up after the stall limit; the response then fails rather than end short")
    func stalledResponse() async throws {
        let progress = ReadProgress()
        let started = Date()
        let stream = EnvelopeStream(stallLimit: 0.3, read: Self.reader(pieces: 1000, progress: progress), finished: { progress.finish() })
        let finished = try #require(try await progress.waitForFinish(within: 5))
        #expect(finished.timeIntervalSince(started) >= 0.3)
        let iterator = stream.makeAsyncIterator()
        var taken = 0
        await #expect(throws: EnvelopeStream.Stalled.self) {
            while try await iterator.next() != nil { taken += 1 }
        }
        #expect(taken == EnvelopeStream.capacity)
    }
}
