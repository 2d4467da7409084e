/// The right edge of an RFC 9162 Merkle tree: the hash of each complete subtree in the binary
/// decomposition of its size, largest first. It is all a writer needs to append a leaf and to
/// compute the root, so a store can keep it in one row instead of loading the whole tree.
public struct MerkleFrontier: Sendable, Equatable {
    /// Number of leaves.
    public private(set) var size: UInt64
    /// One 32-byte hash per set bit of `size`, from the largest subtree to the smallest.
    public private(set) var hashes: [MerkleDigest]

    /// The frontier of the empty tree.
    public init() {
        size = 0
        hashes = []
    }

    /// The frontier of a tree of `size` leaves, from its stored form (``encoded``): refuses bytes
    /// that do not hold one hash per set bit of `size`.
    public init(size: UInt64, encoded: [UInt8]) throws {
        let expected = size.nonzeroBitCount
        guard encoded.count == expected * MerkleHash.size else {
            throw LogError(.invalidEntry, "a frontier of \(size) leaves holds \(expected) hashes, not \(encoded.count) bytes")
        }
        self.size = size
        hashes = stride(from: 0, to: encoded.count, by: MerkleHash.size).map { Array(encoded[$0..<$0 + MerkleHash.size]) }
    }

    init(size: UInt64, hashes: [MerkleDigest]) {
        self.size = size
        self.hashes = hashes
    }

    /// The hashes one after another, as a store keeps them.
    public var encoded: [UInt8] { hashes.flatMap { $0 } }

    /// Appends a leaf by its hash.
    public mutating func append(leafHash: MerkleDigest) {
        precondition(leafHash.count == MerkleHash.size, "a leaf hash is 32 bytes")
        var current = leafHash
        var position = size
        // Every trailing set bit of the old size is a subtree the new leaf completes.
        while position & 1 == 1, let left = hashes.popLast() {
            current = MerkleHash.node(left, current)
            position >>= 1
        }
        hashes.append(current)
        size += 1
    }

    /// The tree's root (SHA-256 of the empty string for the empty tree).
    public var root: MerkleDigest {
        guard var root = hashes.last else { return MerkleHash.emptyRoot }
        for left in hashes.dropLast().reversed() { root = MerkleHash.node(left, root) }
        return root
    }
}
