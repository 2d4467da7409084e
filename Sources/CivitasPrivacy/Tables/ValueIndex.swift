#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The code of every distinct value of one column, values being equal when their UTF-8 bytes
/// are (as the released bytes are; two spellings of one character stay two values), found by a
/// hash of those bytes
/// (the standard library's per-process randomly seeded hasher, so crafted values cannot force
/// collisions) in an open-addressing table whose slots keep part of each value's hash beside its
/// code: values are compared only when those bits are equal, and a look-up reads one slot.
struct ValueIndex {
    /// Per code, the hash of its value (to place the codes again when the table grows).
    private var hashes: [UInt64] = []
    /// Per slot: the hash's upper 32 bits, then the code + 1 (0 when the slot is empty).
    private var slots: [UInt64] = []
    /// A hasher holding the process's seed and nothing else, copied for each value (the same
    /// hash as a new `Hasher`, without reading the seed again).
    private let seeded = Hasher()

    /// The code of `value` among `values`; a new value is appended to `values` and gets the next code.
    mutating func code(of value: String, in values: inout [String]) -> UInt32 {
        var contiguous = value
        return contiguous.withUTF8 { bytes in code(of: UnsafeRawBufferPointer(bytes), in: &values, making: { _ in value }) }
    }

    /// The code of the value whose UTF-8 bytes are `bytes`; a new value is appended to `values`
    /// (as `making` writes it from its bytes, which must be valid UTF-8) and gets the next code.
    mutating func code(of bytes: UnsafeRawBufferPointer, in values: inout [String]) -> UInt32 {
        code(of: bytes, in: &values, making: { String(decoding: $0, as: UTF8.self) })
    }

    /// Appends to `codes` the codes of `count` values, the i-th being `bytes(i)`, exactly as
    /// ``code(of:in:)`` would give them one by one. The values are taken a batch at a time: their
    /// hashes first, then their slots, then their stored values, so that the memory reads of
    /// different values (most of them cache misses in a large column) overlap.
    mutating func appendCodes(count: Int, of bytes: (Int) -> UnsafeRawBufferPointer, in values: inout [String], to codes: inout [UInt32]) {
        let batch = 16
        var batchHashes = (0..<batch).map { _ in UInt64(0) }, batchEntries = batchHashes
        var start = 0
        while start < count {
            let size = min(batch, count - start)
            for i in 0..<size { batchHashes[i] = hash(bytes(start + i)) }
            // Grown before the batch, so that no slot read below moves while the batch is coded.
            if (hashes.count + size) * 2 > slots.count { grow(toHold: hashes.count + size) }
            let mask = slots.count - 1
            slots.withUnsafeBufferPointer { slots in
                for i in 0..<size { batchEntries[i] = slots[Int(truncatingIfNeeded: batchHashes[i]) & mask] }
            }
            for i in 0..<size {
                // A value found in its first slot is coded at once; any other goes the whole way
                // (which sees the values this batch added).
                let entry = batchEntries[i], value = bytes(start + i)
                if entry & Self.tagMask == batchHashes[i] & Self.tagMask, entry != 0 {
                    let code = Int(entry & 0xFFFF_FFFF) - 1
                    if Self.same(values[code], value) {
                        codes.append(UInt32(code))
                        continue
                    }
                }
                codes.append(code(of: value, hash: batchHashes[i], in: &values, making: { String(decoding: $0, as: UTF8.self) }))
            }
            start += size
        }
    }

    private static let tagMask: UInt64 = 0xFFFF_FFFF_0000_0000

    private func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = seeded
        hasher.combine(bytes: bytes)
        return UInt64(bitPattern: Int64(hasher.finalize()))
    }

    private mutating func code(of bytes: UnsafeRawBufferPointer, in values: inout [String], making: (UnsafeRawBufferPointer) -> String) -> UInt32 {
        code(of: bytes, hash: hash(bytes), in: &values, making: making)
    }

    private mutating func code(of bytes: UnsafeRawBufferPointer, hash: UInt64, in values: inout [String],
                               making: (UnsafeRawBufferPointer) -> String) -> UInt32 {
        if (hashes.count + 1) * 2 > slots.count { grow(toHold: hashes.count + 1) }
        let mask = slots.count - 1
        let tag = hash & Self.tagMask
        var slot = Int(truncatingIfNeeded: hash) & mask
        while true {
            let entry = slots[slot]
            if entry == 0 { break }
            if entry & Self.tagMask == tag {
                let code = Int(entry & 0xFFFF_FFFF) - 1
                if Self.same(values[code], bytes) { return UInt32(code) }
            }
            slot = (slot &+ 1) & mask
        }
        let code = values.count
        slots[slot] = tag | UInt64(code + 1)
        hashes.append(hash)
        values.append(making(bytes))
        return UInt32(code)
    }

    /// At least doubles the table, to hold `count` values at most half full, and places every
    /// code again by its kept hash.
    private mutating func grow(toHold count: Int) {
        var size = max(slots.count * 2, 64)
        while size < count * 2 { size <<= 1 }
        slots = [UInt64](repeating: 0, count: size)
        let mask = size - 1
        for (code, hash) in hashes.enumerated() {
            var slot = Int(truncatingIfNeeded: hash) & mask
            while slots[slot] != 0 { slot = (slot &+ 1) & mask }
            slots[slot] = hash & Self.tagMask | UInt64(code + 1)
        }
    }

    /// Whether `value`'s UTF-8 bytes are `bytes` (read in place: the value is neither copied nor retained).
    private static func same(_ value: String, _ bytes: UnsafeRawBufferPointer) -> Bool {
        value.utf8.withContiguousStorageIfAvailable { stored in
            guard stored.count == bytes.count else { return false }
            guard let a = stored.baseAddress, let b = bytes.baseAddress else { return true }
            return memcmp(a, b, bytes.count) == 0
        } ?? value.utf8.elementsEqual(bytes)
    }
}
