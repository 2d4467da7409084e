import CivitasCrypto

/// A 32-byte SHA-256 value in a Merkle tree.
public typealias MerkleDigest = [UInt8]

/// Tree hashing of RFC 9162 section 2.1.1: SHA-256 with domain-separating prefixes.
public enum MerkleHash {
    /// Size of every hash in the tree.
    public static let size = 32

    /// The root of the empty tree: SHA-256 of the empty string.
    public static let emptyRoot: MerkleDigest = SHA256Hasher.hash([])

    /// The hash of a leaf: SHA-256(0x00 || entry).
    public static func leaf(_ entry: [UInt8]) -> MerkleDigest {
        SHA256Hasher.hash([0x00] + entry)
    }

    /// The hash of an interior node: SHA-256(0x01 || left || right).
    public static func node(_ left: MerkleDigest, _ right: MerkleDigest) -> MerkleDigest {
        var input = [UInt8]()
        input.reserveCapacity(1 + left.count + right.count)
        input.append(0x01)
        input.append(contentsOf: left)
        input.append(contentsOf: right)
        return SHA256Hasher.hash(input)
    }

    /// Calls `visit` with each subtree (its first leaf and its number of leaves) whose hash is in
    /// the inclusion proof of leaf `m` in the tree of leaves `start..<start + n`, in the proof's
    /// order: from the leaf's sibling up (RFC 9162 section 2.1.3.1).
    static func inclusionSiblings(of m: UInt64, start: UInt64 = 0, count n: UInt64, _ visit: (_ start: UInt64, _ count: UInt64) -> Void) {
        guard n > 1 else { return }
        let k = split(n)
        if m < k {
            inclusionSiblings(of: m, start: start, count: k, visit)
            visit(start + k, n - k)
        } else {
            inclusionSiblings(of: m - k, start: start + k, count: n - k, visit)
            visit(start, k)
        }
    }

    /// The largest power of two strictly less than `n` (n ≥ 2): where RFC 9162 splits a tree of n leaves.
    static func split(_ n: UInt64) -> UInt64 {
        precondition(n >= 2, "a tree of fewer than two leaves has no split")
        return 1 << (63 - (n - 1).leadingZeroBitCount)
    }
}
