import Foundation
import Testing
@testable import CivitasModel

/// How many chunks the producer has handed over, read from the consumer's thread.
final class EmittedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int {
        get { lock.withLock { count } }
        set { lock.withLock { count = newValue } }
    }
}

@Suite("Chunks handed from a producer thread")
struct ChunkHandoffTests {
    struct Refused: Error, Equatable { let at: Int }

    /// Emits chunks 0..<count (one row each, naming its number), throwing at `failAt`.
    static func producer(count: Int, failAt: Int? = nil, emitted: EmittedCount)
        -> (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void {
        { emit in
            for index in 0..<count {
                if index == failAt { throw Refused(at: index) }
                try emit(["n"], [[String(index)]])
                emitted.value = index + 1
            }
        }
    }

    @Test("Every chunk arrives once, in order, while the producer runs ahead by at most the capacity")
    func inOrder() throws {
        let emitted = EmittedCount()
        var received: [String] = []
        var mostAhead = 0
        try ChunkHandoff.overlap(capacity: 2, produce: Self.producer(count: 500, emitted: emitted)) { columns, rows in
            #expect(columns == ["n"])
            received += rows.map { $0[0] }
            mostAhead = max(mostAhead, emitted.value - received.count)
        }
        #expect(received == (0..<500).map(String.init))
        #expect(mostAhead <= 3, "the producer may run ahead by the queue's capacity and the chunk in its hands")
    }

    @Test("A producer's error arrives after the chunks before it; a consumer's error stops the producer")
    func errors() throws {
        let emitted = EmittedCount()
        var received = 0
        #expect(throws: Refused(at: 7)) {
            try ChunkHandoff.overlap(produce: Self.producer(count: 100, failAt: 7, emitted: emitted)) { _, _ in received += 1 }
        }
        #expect(received == 7)
        emitted.value = 0
        #expect(throws: Refused(at: -1)) {
            try ChunkHandoff.overlap(produce: Self.producer(count: 100_000, emitted: emitted)) { _, rows in
                if rows[0][0] == "3" { throw Refused(at: -1) }
            }
        }
        // The producer stopped when the consumer did: it emitted a few chunks past the failing one, not all.
        #expect(emitted.value < 10)
    }

    @Test("Work done while the producer starts runs before the first chunk is consumed, as the producer makes chunks; its error stops the producer")
    func whileStarting() throws {
        let emitted = EmittedCount()
        var received: [Int] = []
        var emittedWhileStarting = 0
        try ChunkHandoff.overlap(produce: { (emit: (Int) throws -> Void) in
            for index in 0..<50 {
                try emit(index)
                emitted.value = index + 1
            }
        }, whileStarting: {
            #expect(received.isEmpty)
            // The producer fills the queue meanwhile: the caller's work and the first chunks overlap.
            let deadline = Date().addingTimeInterval(5)
            while emitted.value < 2 && Date() < deadline { usleep(1_000) }
            emittedWhileStarting = emitted.value
        }) { (chunk: Int) in received.append(chunk) }
        #expect(received == Array(0..<50))
        #expect(emittedWhileStarting >= 2)
        emitted.value = 0
        #expect(throws: Refused(at: -2)) {
            try ChunkHandoff.overlap(produce: { (emit: (Int) throws -> Void) in
                for index in 0..<100_000 {
                    try emit(index)
                    emitted.value = index + 1
                }
            }, whileStarting: { throw Refused(at: -2) }) { (_: Int) in Issue.record("nothing is consumed after the caller's work failed") }
        }
        #expect(emitted.value < 10)
    }
}
