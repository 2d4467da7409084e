import CivitasCrypto

/// Verification of inclusion and consistency proofs, RFC 9162 sections
/// 2.1.3.2 and 2.1.4.2. Pure functions: no storage, no clock.
public enum MerkleVerifier {
    /// Checks that `leafHash` is leaf `index` of the tree of `treeSize` leaves whose root is `root`.
    public static func verifyInclusion(leafHash: MerkleDigest, index: UInt64, treeSize: UInt64,
                                       proof: [MerkleDigest], root: MerkleDigest) throws {
        let computed = try rootFromInclusionProof(leafHash: leafHash, index: index, treeSize: treeSize, proof: proof)
        guard computed == root else {
            throw MerkleProofError(.rootMismatch, "inclusion proof for leaf \(index) of \(treeSize) leads to another root",
                                   expected: root, computed: computed, proof: proof)
        }
    }

    /// The root an inclusion proof leads to (RFC 9162 section 2.1.3.2, steps 1–5).
    public static func rootFromInclusionProof(leafHash: MerkleDigest, index: UInt64, treeSize: UInt64,
                                              proof: [MerkleDigest]) throws -> MerkleDigest {
        guard index < treeSize else {
            throw MerkleProofError(.indexOutOfRange, "leaf index \(index) is outside a tree of \(treeSize) leaves", proof: proof)
        }
        guard leafHash.count == MerkleHash.size, proof.allSatisfy({ $0.count == MerkleHash.size }) else {
            throw MerkleProofError(.malformedProof, "a leaf hash or proof hash is not 32 bytes", proof: proof)
        }
        var fn = index
        var sn = treeSize - 1
        var r = leafHash
        let complete = walk(proof[...], fn: &fn, sn: &sn) { sibling, onLeft in
            r = onLeft ? MerkleHash.node(sibling, r) : MerkleHash.node(r, sibling)
        }
        guard complete else {
            throw MerkleProofError(.malformedProof, "inclusion proof for leaf \(index) of \(treeSize) has \(proof.count) hashes, too many", proof: proof)
        }
        guard sn == 0 else {
            throw MerkleProofError(.malformedProof, "inclusion proof for leaf \(index) of \(treeSize) has \(proof.count) hashes, too few", proof: proof)
        }
        return r
    }

    /// Checks that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves with root `root1`.
    public static func verifyConsistency(size1: UInt64, size2: UInt64, root1: MerkleDigest, root2: MerkleDigest,
                                         proof: [MerkleDigest]) throws {
        guard size1 <= size2 else {
            throw MerkleProofError(.invalidSizes, "the second tree (\(size2) leaves) is smaller than the first (\(size1)): the log went back",
                                   expected: root2, proof: proof)
        }
        guard size1 > 0 else {
            throw MerkleProofError(.invalidSizes, "a consistency proof from the empty tree proves nothing", proof: proof)
        }
        if size1 == size2 {
            guard proof.isEmpty else {
                throw MerkleProofError(.malformedProof, "trees of equal size need an empty consistency proof, got \(proof.count) hashes", proof: proof)
            }
            guard root1 == root2 else {
                throw MerkleProofError(.rootMismatch, "two trees of \(size1) leaves have different roots: the log forked",
                                       expected: root1, computed: root2, proof: proof)
            }
            return
        }
        guard !proof.isEmpty else {
            throw MerkleProofError(.malformedProof, "consistency proof from \(size1) to \(size2) leaves is empty", proof: proof)
        }
        guard root1.count == MerkleHash.size, root2.count == MerkleHash.size,
              proof.allSatisfy({ $0.count == MerkleHash.size }) else {
            throw MerkleProofError(.malformedProof, "a root or proof hash is not 32 bytes", proof: proof)
        }
        // RFC 9162 section 2.1.4.2.
        var path = proof
        if size1 & (size1 - 1) == 0 { path.insert(root1, at: 0) }
        var fn = size1 - 1
        var sn = size2 - 1
        while fn & 1 == 1 {
            fn >>= 1
            sn >>= 1
        }
        var fr = path[0]
        var sr = path[0]
        let complete = walk(path.dropFirst(), fn: &fn, sn: &sn) { sibling, onLeft in
            if onLeft {
                fr = MerkleHash.node(sibling, fr)
                sr = MerkleHash.node(sibling, sr)
            } else {
                sr = MerkleHash.node(sr, sibling)
            }
        }
        guard complete else {
            throw MerkleProofError(.malformedProof, "consistency proof from \(size1) to \(size2) has too many hashes", proof: proof)
        }
        guard sn == 0 else {
            throw MerkleProofError(.malformedProof, "consistency proof from \(size1) to \(size2) has too few hashes", proof: proof)
        }
        guard fr == root1 else {
            throw MerkleProofError(.rootMismatch, "consistency proof does not lead to the first tree's root (\(size1) leaves)",
                                   expected: root1, computed: fr, proof: proof)
        }
        guard sr == root2 else {
            throw MerkleProofError(.rootMismatch, "consistency proof does not lead to the second tree's root (\(size2) leaves)",
                                   expected: root2, computed: sr, proof: proof)
        }
    }

    /// The walk both verifications share (RFC 9162 2.1.3.2 step 3 and 2.1.4.2 step 6):
    /// for each proof hash, whether it is a left sibling, given the bit patterns of
    /// `fn` and `sn`. Returns false if the proof has more hashes than the tree has levels.
    private static func walk(_ path: ArraySlice<MerkleDigest>, fn: inout UInt64, sn: inout UInt64,
                             step: (MerkleDigest, Bool) -> Void) -> Bool {
        for sibling in path {
            guard sn != 0 else { return false }
            if fn & 1 == 1 || fn == sn {
                step(sibling, true)
                if fn & 1 == 0 {
                    repeat {
                        fn >>= 1
                        sn >>= 1
                    } while fn & 1 == 0 && fn != 0
                }
            } else {
                step(sibling, false)
            }
            fn >>= 1
            sn >>= 1
        }
        return true
    }
}
