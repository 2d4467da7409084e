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

    /// The code of `value` among `values`; a new value is appended to `values` and gets the next code.
    mutating func code(of value: String, in values: inout [String]) -> UInt32 {
        let hash = Self.hash(value)
        if (hashes.count + 1) * 2 > slots.count { grow() }
        let mask = slots.count - 1
        let tag = hash & 0xFFFF_FFFF_0000_0000
        var slot = Int(truncatingIfNeeded: hash) & mask
        while true {
            let entry = slots[slot]
            if entry == 0 { break }
            if entry & 0xFFFF_FFFF_0000_0000 == tag {
                let code = Int(entry & 0xFFFF_FFFF) - 1
                if Self.sameBytes(values[code], value) { return UInt32(code) }
            }
            slot = (slot &+ 1) & mask
        }
        let code = values.count
        slots[slot] = tag | UInt64(code + 1)
        hashes.append(hash)
        values.append(value)
        return UInt32(code)
    }

    /// Doubles the table and places every code again by its kept hash.
    private mutating func grow() {
        var size = max(slots.count * 2, 64)
        while size < (hashes.count + 1) * 2 { size <<= 1 }
        slots = [UInt64](repeating: 0, count: size)
        let mask = size - 1
        for (code, hash) in hashes.enumerated() {
            var slot = Int(truncatingIfNeeded: hash) & mask
            while slots[slot] != 0 { slot = (slot &+ 1) & mask }
            slots[slot] = hash & 0xFFFF_FFFF_0000_0000 | UInt64(code + 1)
        }
    }

    private static func sameBytes(_ one: String, _ other: String) -> Bool {
        var one = one, other = other
        return one.withUTF8 { first in
            other.withUTF8 { second in
                guard first.count == second.count else { return false }
                guard let a = first.baseAddress, let b = second.baseAddress else { return true }
                return memcmp(a, b, first.count) == 0
            }
        }
    }

    private static func hash(_ value: String) -> UInt64 {
        var hasher = Hasher()
        if value.utf8.withContiguousStorageIfAvailable({ hasher.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
            for byte in value.utf8 { hasher.combine(byte) }
        }
        return UInt64(bitPattern: Int64(hasher.finalize()))
    }
}
