/// An append-only RFC 9162 Merkle tree that keeps every complete subtree's hash.
///
/// Level 0 holds the leaf hashes; level k holds the hash of each complete,
/// aligned subtree of 2^k leaves. A complete subtree never changes once its
/// last leaf arrives, so appending writes on average two hashes (one leaf, one
/// amortized interior node) and never rewrites any. The root of any past size
/// and every proof are assembled from O(log n) stored hashes, with O(log² n)
/// hashing in the worst case (the right edge of an incomplete tree).
///
/// Why complete-subtree hashes rather than tiles: they are the same stored
/// nodes a tile layout groups in blocks of 256; this in-memory form is the
/// simplest that makes proofs cost O(log n) lookups, and a storage backend can
/// persist the levels as tiles without changing any hash or proof.
public struct MerkleTree: Sendable {
    /// levels[k] holds (number of complete 2^k subtrees) × 32 bytes.
    private var levels: [[UInt8]] = [[]]

    public init() {}

    /// Number of leaves.
    public private(set) var size: UInt64 = 0

    /// Appends a leaf by its hash (``MerkleHash/leaf(_:)`` of the entry bytes); returns its index.
    @discardableResult
    public mutating func append(leafHash: MerkleDigest) -> UInt64 {
        precondition(leafHash.count == MerkleHash.size, "a leaf hash is 32 bytes")
        let index = size
        levels[0].append(contentsOf: leafHash)
        size += 1
        var position = index
        var level = 0
        var current = leafHash
        while position & 1 == 1 {
            let left = node(level: level, index: position - 1)
            current = MerkleHash.node(left, current)
            level += 1
            if levels.count == level { levels.append([]) }
            levels[level].append(contentsOf: current)
            position >>= 1
        }
        return index
    }

    /// Appends an entry's bytes as a leaf; returns its index.
    @discardableResult
    public mutating func append(entry: [UInt8]) -> UInt64 {
        append(leafHash: MerkleHash.leaf(entry))
    }

    /// The hash of leaf `index`.
    public func leafHash(at index: UInt64) -> MerkleDigest {
        node(level: 0, index: index)
    }

    /// The root of the tree as it was at `treeSize` leaves (default: now).
    public func root(atSize treeSize: UInt64? = nil) throws -> MerkleDigest {
        let n = treeSize ?? size
        guard n <= size else {
            throw MerkleProofError(.invalidSizes, "the tree has \(size) leaves, not \(n)")
        }
        return n == 0 ? MerkleHash.emptyRoot : subtreeHash(start: 0, count: n)
    }

    /// The inclusion proof of leaf `index` in the tree of `treeSize` leaves (RFC 9162 section 2.1.3.1).
    public func inclusionProof(index: UInt64, treeSize: UInt64? = nil) throws -> [MerkleDigest] {
        let n = treeSize ?? size
        guard n <= size else { throw MerkleProofError(.invalidSizes, "the tree has \(size) leaves, not \(n)") }
        guard index < n else { throw MerkleProofError(.indexOutOfRange, "leaf index \(index) is outside a tree of \(n) leaves") }
        var proof: [MerkleDigest] = []
        MerkleHash.inclusionSiblings(of: index, count: n) { start, count in proof.append(subtreeHash(start: start, count: count)) }
        return proof
    }

    /// The consistency proof from the tree of `size1` leaves to the tree of `size2` (RFC 9162 section 2.1.4.1).
    public func consistencyProof(from size1: UInt64, to size2: UInt64? = nil) throws -> [MerkleDigest] {
        let n = size2 ?? size
        guard n <= size else { throw MerkleProofError(.invalidSizes, "the tree has \(size) leaves, not \(n)") }
        guard size1 > 0, size1 <= n else {
            throw MerkleProofError(.invalidSizes, "no consistency proof from \(size1) to \(n) leaves")
        }
        var proof: [MerkleDigest] = []
        if size1 < n { subproof(m: size1, start: 0, count: n, complete: true, into: &proof) }
        return proof
    }

    /// The tree's right edge as it is now: each complete subtree of the binary decomposition of its size.
    public var frontier: MerkleFrontier {
        var hashes: [MerkleDigest] = []
        var start: UInt64 = 0
        for bit in (0..<64).reversed() where size & (UInt64(1) << UInt64(bit)) != 0 {
            hashes.append(node(level: bit, index: start >> UInt64(bit)))
            start += UInt64(1) << UInt64(bit)
        }
        return MerkleFrontier(size: size, hashes: hashes)
    }

    /// Every leaf's inclusion proof in the tree as it is now, for writing all of them at once:
    /// the proofs name their hashes by position in one table, so that a hash shared by many
    /// proofs is stored (and encoded by the caller) once.
    public func allInclusionProofs() -> InclusionProofTable {
        var hashes: [UInt8] = []
        var firstNode: [Int] = []
        for level in levels {
            firstNode.append(hashes.count / MerkleHash.size)
            hashes += level
        }
        // The subtrees that are not complete end at the right edge: one per set bit of the size, at most.
        var rightEdge: [UInt64: Int32] = [:]
        var start: UInt64 = 0
        var count = size
        while count > 1 {
            let k = MerkleHash.split(count)
            if (count - k) & (count - k - 1) != 0 {
                rightEdge[start + k] = Int32(hashes.count / MerkleHash.size)
                hashes += subtreeHash(start: start + k, count: count - k)
            }
            start += k
            count -= k
        }
        return InclusionProofTable(size: size, hashes: hashes, firstNode: firstNode, rightEdge: rightEdge)
    }

    // MARK: - Internals

    private func node(level: Int, index: UInt64) -> MerkleDigest {
        let offset = Int(index) * MerkleHash.size
        return Array(levels[level][offset..<offset + MerkleHash.size])
    }

    /// MTH of leaves [start, start+count); `start` is always aligned to the largest power of two ≤ count.
    private func subtreeHash(start: UInt64, count: UInt64) -> MerkleDigest {
        if count & (count - 1) == 0 {
            let level = count.trailingZeroBitCount
            return node(level: level, index: start >> UInt64(level))
        }
        let k = MerkleHash.split(count)
        return MerkleHash.node(subtreeHash(start: start, count: k), subtreeHash(start: start + k, count: count - k))
    }

    private func subproof(m: UInt64, start: UInt64, count n: UInt64, complete: Bool, into proof: inout [MerkleDigest]) {
        if m == n {
            if !complete { proof.append(subtreeHash(start: start, count: n)) }
            return
        }
        let k = MerkleHash.split(n)
        if m <= k {
            subproof(m: m, start: start, count: k, complete: complete, into: &proof)
            proof.append(subtreeHash(start: start + k, count: n - k))
        } else {
            subproof(m: m - k, start: start + k, count: n - k, complete: false, into: &proof)
            proof.append(subtreeHash(start: start, count: k))
        }
    }
}

/// The inclusion proofs of every leaf of a tree (``MerkleTree/allInclusionProofs()``): a table of
/// node hashes, and each proof as positions in it.
public struct InclusionProofTable: Sendable {
    /// Number of leaves.
    public let size: UInt64
    /// The node hashes, 32 bytes each.
    public let hashes: [UInt8]
    let firstNode: [Int]
    let rightEdge: [UInt64: Int32]

    /// Number of node hashes in ``hashes``.
    public var nodeCount: Int { hashes.count / MerkleHash.size }

    /// Writes into `proof` the positions in ``hashes`` of leaf `index`'s inclusion proof, in
    /// RFC 9162 order (from the leaf's sibling up); `proof` is emptied first.
    public func proof(_ index: UInt64, into proof: inout [Int32]) {
        precondition(index < size, "leaf \(index) is outside a tree of \(size) leaves")
        proof.removeAll(keepingCapacity: true)
        MerkleHash.inclusionSiblings(of: index, count: size) { start, count in proof.append(node(start: start, count: count)) }
    }

    private func node(start: UInt64, count: UInt64) -> Int32 {
        if count & (count - 1) == 0 {
            let level = count.trailingZeroBitCount
            return Int32(firstNode[level] + Int(start >> UInt64(level)))
        }
        // Not complete, so it ends at the right edge, where every such subtree was hashed.
        guard let position = rightEdge[start] else { preconditionFailure("no subtree of \(count) leaves starts at \(start)") }
        return position
    }
}
