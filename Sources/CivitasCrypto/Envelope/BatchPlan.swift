/// How a payload's chunks are grouped into the batches the pipeline moves
/// between its two threads. Batches are whole chunks; only the last chunk of
/// the payload may be short.
struct BatchPlan {
    /// Slots in the pipeline ring: one being processed, one being filled ahead, one being hashed behind.
    static let ringSize = 3

    let payloadLength: UInt64
    let chunkSize: Int
    let chunkCount: UInt64
    let chunksPerBatch: Int
    let batchCount: UInt64

    init(payloadLength: UInt64, chunkSize: Int) {
        self.payloadLength = payloadLength
        self.chunkSize = chunkSize
        chunkCount = EnvelopeFormat.chunkCount(payloadLength: payloadLength, chunkSize: chunkSize)
        // About 256 KiB per batch keeps the threads' hand-offs rare on large payloads;
        // small payloads use single chunks so the two threads overlap at all.
        let wide = max(1, (256 * 1024) / chunkSize)
        chunksPerBatch = chunkCount >= UInt64(wide * 16) ? wide : 1
        batchCount = (chunkCount + UInt64(chunksPerBatch) - 1) / UInt64(chunksPerBatch)
    }

    var batchPlainCapacity: Int { chunksPerBatch * chunkSize }
    var batchCipherCapacity: Int { chunksPerBatch * (chunkSize + EnvelopeFormat.chunkOverhead) }

    /// The payload bytes a batch covers.
    func plainRange(ofBatch batch: UInt64) -> Range<UInt64> {
        let start = batch * UInt64(chunksPerBatch) * UInt64(chunkSize)
        let end = min(payloadLength, start + UInt64(chunksPerBatch) * UInt64(chunkSize))
        return start..<end
    }

    /// The ciphertext chunk lengths of a batch, first chunk numbered `firstChunk` (1-based).
    func cipherChunkLengths(ofBatch batch: UInt64) -> (firstChunk: UInt64, lengths: [Int]) {
        let first = batch * UInt64(chunksPerBatch)
        let last = min(chunkCount, first + UInt64(chunksPerBatch))
        var lengths: [Int] = []
        for chunk in first..<last {
            let start = chunk * UInt64(chunkSize)
            let plain = Int(min(UInt64(chunkSize), payloadLength - min(payloadLength, start)))
            lengths.append(plain + EnvelopeFormat.chunkOverhead)
        }
        return (first + 1, lengths)
    }
}

/// Carries a value across threads where the pipeline guarantees only one thread uses it at a time.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
