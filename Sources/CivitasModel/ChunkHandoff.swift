import Foundation

/// Runs a producer of chunks on its own thread and hands its chunks to the caller's thread, at
/// most `capacity` waiting, so that producing the next chunk (reading, validating) overlaps
/// consuming this one (sealing, storing; taking records in). The producer's error, or the consumer's, ends both;
/// the producer has always returned when this does.
public enum ChunkHandoff {
    public static func overlap(capacity: Int = 2, produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void,
                        consume: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws {
        try overlap(capacity: capacity, produce: { (emit: ((columns: [String], rows: [[String]])) throws -> Void) in
            try withoutActuallyEscaping(emit) { emit in try produce { columns, rows in try emit((columns, rows)) } }
        }, consume: { (chunk: (columns: [String], rows: [[String]])) in try consume(chunk.columns, chunk.rows) })
    }

    /// The same for chunks of any kind; `whileStarting` runs on the caller's thread once the
    /// producer has started, before the first chunk is consumed.
    public static func overlap<Chunk>(capacity: Int = 2, produce: (_ emit: (Chunk) throws -> Void) throws -> Void,
                                      whileStarting: () throws -> Void = {}, consume: (Chunk) throws -> Void) throws {
        let queue = Queue<Chunk>(capacity: capacity)
        try withoutActuallyEscaping(produce) { produce in
            let producer = Producer(run: produce)
            let thread = Thread {
                do {
                    try producer.run? { chunk in try queue.put(chunk) }
                    queue.finish(nil)
                } catch {
                    queue.finish(error)
                }
                queue.producerReturned()
            }
            thread.stackSize = 8 << 20
            thread.start()
            // Whatever happens here, the producer is stopped and has returned before `produce` goes out of scope.
            defer {
                queue.cancel()
                queue.waitForProducer()
                producer.run = nil  // the thread object may outlive this call; the producer must not
            }
            try whileStarting()
            while let chunk = try queue.take() { try consume(chunk) }
        }
    }

    /// The producer, handed to its thread; it runs only while `overlap` waits for it, which
    /// lets it go before returning.
    private final class Producer<Chunk>: @unchecked Sendable {
        var run: ((_ emit: (Chunk) throws -> Void) throws -> Void)?
        init(run: @escaping (_ emit: (Chunk) throws -> Void) throws -> Void) { self.run = run }
    }

    /// Refused to a producer whose consumer has stopped.
    struct Cancelled: Error {}

    /// A bounded queue of chunks between the two threads, guarded by one condition.
    private final class Queue<Chunk>: @unchecked Sendable {
        private let condition = NSCondition()
        private let capacity: Int
        private var chunks: [Chunk] = []
        private var finished = false
        private var failure: Error?
        private var cancelled = false
        private var returned = false

        init(capacity: Int) { self.capacity = max(1, capacity) }

        func put(_ chunk: Chunk) throws {
            condition.lock()
            defer { condition.unlock() }
            while chunks.count >= capacity && !cancelled { condition.wait() }
            guard !cancelled else { throw Cancelled() }
            chunks.append(chunk)
            condition.broadcast()
        }

        func finish(_ error: Error?) {
            condition.lock()
            finished = true
            failure = error
            condition.broadcast()
            condition.unlock()
        }

        /// The next chunk; nil once the producer finished and every chunk was taken; its error, if it failed.
        func take() throws -> Chunk? {
            condition.lock()
            defer { condition.unlock() }
            while chunks.isEmpty && !finished { condition.wait() }
            if !chunks.isEmpty {
                condition.broadcast()
                return chunks.removeFirst()
            }
            if let failure { throw failure }
            return nil
        }

        func cancel() {
            condition.lock()
            cancelled = true
            chunks.removeAll()
            condition.broadcast()
            condition.unlock()
        }

        func producerReturned() {
            condition.lock()
            returned = true
            condition.broadcast()
            condition.unlock()
        }

        func waitForProducer() {
            condition.lock()
            while !returned { condition.wait() }
            condition.unlock()
        }
    }
}
