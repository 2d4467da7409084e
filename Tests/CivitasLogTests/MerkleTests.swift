import CivitasCrypto
import Foundation
import Testing
@testable import CivitasLog

/// The RFC 6962 reference leaves and the published root of each prefix
/// (transparency-dev/merkle testonly constants; the same tree as RFC 6962's examples).
private let referenceLeaves: [[UInt8]] = [
    [], [0x00], [0x10], [0x20, 0x21], [0x30, 0x31], [0x40, 0x41, 0x42, 0x43],
    [0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
    [0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f],
]
private let referenceRoots = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
/// Published proofs over that tree.
private let referenceInclusion: [(index: UInt64, size: UInt64, proof: [String])] = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
private let referenceConsistency: [(size1: UInt64, size2: UInt64, proof: [String])] = [
    (2, 8, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]

private func hex(_ text: String) -> [UInt8] { Hex.decode(text) ?? [] }

private func referenceTree() -> MerkleTree {
    var tree = MerkleTree()
    for leaf in referenceLeaves { tree.append(entry: leaf) }
    return tree
}

@Suite("RFC 9162 Merkle tree")
struct MerkleTests {
    @Test("Roots of every prefix match the published reference roots")
    func referenceRootsMatch() throws {
        let tree = referenceTree()
        for size in 0...8 {
            #expect(Hex.encode(try tree.root(atSize: UInt64(size))) == referenceRoots[size], "size \(size)")
        }
    }

    @Test("A frontier appended leaf by leaf gives the published roots and every tree's root and edge up to 300 leaves")
    func frontierFollowsTheTree() throws {
        var frontier = MerkleFrontier()
        var tree = MerkleTree()
        #expect(Hex.encode(frontier.root) == referenceRoots[0])
        for (index, leaf) in referenceLeaves.enumerated() {
            frontier.append(leafHash: MerkleHash.leaf(leaf))
            #expect(Hex.encode(frontier.root) == referenceRoots[index + 1], "size \(index + 1)")
        }
        var grown = MerkleFrontier()
        for index in 0..<300 {
            let leaf = MerkleHash.leaf(Array("entry \(index)".utf8))
            tree.append(leafHash: leaf)
            // Kept as a store keeps it: encoded, read back, then appended to.
            grown = try MerkleFrontier(size: grown.size, encoded: grown.encoded)
            grown.append(leafHash: leaf)
            #expect(grown == tree.frontier, "size \(tree.size)")
            #expect(grown.root == (try tree.root()), "size \(tree.size)")
        }
        // A stored edge of the wrong length is refused.
        #expect(throws: LogError.self) { try MerkleFrontier(size: 3, encoded: [UInt8](repeating: 0, count: 32)) }
    }

    @Test("Published inclusion and consistency proofs are generated exactly and verify")
    func referenceProofs() throws {
        let tree = referenceTree()
        for vector in referenceInclusion {
            let proof = try tree.inclusionProof(index: vector.index, treeSize: vector.size)
            #expect(proof.map(Hex.encode) == vector.proof)
            try MerkleVerifier.verifyInclusion(leafHash: tree.leafHash(at: vector.index), index: vector.index,
                                               treeSize: vector.size, proof: proof, root: try tree.root(atSize: vector.size))
        }
        for vector in referenceConsistency {
            let proof = try tree.consistencyProof(from: vector.size1, to: vector.size2)
            #expect(proof.map(Hex.encode) == vector.proof)
            try MerkleVerifier.verifyConsistency(size1: vector.size1, size2: vector.size2,
                                                 root1: try tree.root(atSize: vector.size1), root2: try tree.root(atSize: vector.size2),
                                                 proof: proof)
        }
    }

    @Test("Every leaf of every tree up to 70 leaves proves inclusion, and every pair of sizes proves consistency")
    func exhaustiveSmallTrees() throws {
        var tree = MerkleTree()
        for i in 0..<70 { tree.append(entry: [UInt8(i), UInt8(i / 7)]) }
        for n in UInt64(1)...70 {
            let root = try tree.root(atSize: n)
            for i in 0..<n {
                let proof = try tree.inclusionProof(index: i, treeSize: n)
                try MerkleVerifier.verifyInclusion(leafHash: tree.leafHash(at: i), index: i, treeSize: n, proof: proof, root: root)
            }
            for m in UInt64(1)...n {
                let proof = try tree.consistencyProof(from: m, to: n)
                try MerkleVerifier.verifyConsistency(size1: m, size2: n, root1: try tree.root(atSize: m), root2: root, proof: proof)
            }
        }
    }

    @Test("The proofs of every leaf at once equal the proofs one by one, at sizes up to 300 and near powers of two")
    func allInclusionProofsAtOnce() throws {
        func hashes(_ table: InclusionProofTable, _ index: UInt64) -> [MerkleDigest] {
            var positions: [Int32] = []
            table.proof(index, into: &positions)
            return positions.map { Array(table.hashes[(Int($0) * MerkleHash.size)..<((Int($0) + 1) * MerkleHash.size)]) }
        }
        var tree = MerkleTree()
        var checked = 0
        for size in Array(1...300) + [1_023, 1_024, 1_025, 8_193, 9_999, 10_000] {
            while tree.size < UInt64(size) { tree.append(entry: Array("leaf \(tree.size)".utf8)) }
            let table = tree.allInclusionProofs()
            let root = try tree.root()
            #expect(table.nodeCount < 2 * size + 64)
            for index in 0..<UInt64(size) {
                let proof = hashes(table, index)
                #expect(proof == (try tree.inclusionProof(index: index)), "leaf \(index) of \(size)")
                try MerkleVerifier.verifyInclusion(leafHash: tree.leafHash(at: index), index: index, treeSize: UInt64(size), proof: proof, root: root)
                checked += 1
            }
            // Control: a neighbour's proof does not prove this leaf.
            if size > 1 {
                let index = UInt64(size - 1)
                #expect(throws: MerkleProofError.self) {
                    try MerkleVerifier.verifyInclusion(leafHash: tree.leafHash(at: index), index: index, treeSize: UInt64(size),
                                                       proof: hashes(table, index - 1), root: root)
                }
            }
        }
        #expect(checked == 45_150 + 1_023 + 1_024 + 1_025 + 8_193 + 9_999 + 10_000)
    }

    @Test("Mutated inclusion proofs are refused with evidence")
    func inclusionMutations() throws {
        var tree = MerkleTree()
        for i in 0..<37 { tree.append(entry: [UInt8(i)]) }
        let n: UInt64 = 37
        let root = try tree.root(atSize: n)
        for index in [UInt64(0), 5, 31, 36] {
            let leaf = tree.leafHash(at: index)
            let proof = try tree.inclusionProof(index: index, treeSize: n)
            var cases: [(String, () throws -> Void)] = []
            for position in proof.indices {
                var flipped = proof
                flipped[position][7] ^= 0x10
                cases.append(("flip proof[\(position)]", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index, treeSize: n, proof: flipped, root: root) }))
            }
            cases.append(("truncated", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index, treeSize: n, proof: Array(proof.dropLast()), root: root) }))
            cases.append(("extended", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index, treeSize: n, proof: proof + [root], root: root) }))
            // A size change that keeps the proof's shape cannot be seen by the proof alone (the
            // checkpoint binds the size); changes that alter the shape must be refused.
            cases.append(("size doubled", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index, treeSize: n * 2, proof: proof, root: root) }))
            cases.append(("size halved", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index, treeSize: n / 2, proof: proof, root: root) }))
            cases.append(("wrong index", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index ^ 1, treeSize: n, proof: proof, root: root) }))
            cases.append(("wrong leaf", { try MerkleVerifier.verifyInclusion(leafHash: MerkleHash.leaf([0xff]), index: index, treeSize: n, proof: proof, root: root) }))
            cases.append(("wrong root", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index, treeSize: n, proof: proof, root: MerkleHash.emptyRoot) }))
            cases.append(("short hash", { try MerkleVerifier.verifyInclusion(leafHash: leaf, index: index, treeSize: n, proof: proof.map { Array($0.dropLast()) }, root: root) }))
            for (name, attempt) in cases {
                #expect(throws: MerkleProofError.self, "\(name) at index \(index) was accepted") { try attempt() }
            }
            // A root mismatch names both roots and carries the proof.
            do {
                try MerkleVerifier.verifyInclusion(leafHash: MerkleHash.leaf([0xff]), index: index, treeSize: n, proof: proof, root: root)
            } catch let error as MerkleProofError {
                #expect(error.code == .rootMismatch)
                #expect(error.expectedRoot == Hex.encode(root))
                #expect(error.computedRoot != nil && error.computedRoot != error.expectedRoot)
                #expect(error.proof == proof.map(Hex.encode))
            }
        }
    }

    @Test("Mutated consistency proofs are refused with evidence")
    func consistencyMutations() throws {
        var tree = MerkleTree()
        for i in 0..<50 { tree.append(entry: [UInt8(i)]) }
        for (m, n) in [(UInt64(3), UInt64(50)), (8, 50), (13, 29), (1, 2), (31, 32)] {
            let root1 = try tree.root(atSize: m), root2 = try tree.root(atSize: n)
            let proof = try tree.consistencyProof(from: m, to: n)
            var cases: [(String, () throws -> Void)] = []
            for position in proof.indices {
                var flipped = proof
                flipped[position][0] ^= 0x01
                cases.append(("flip proof[\(position)]", { try MerkleVerifier.verifyConsistency(size1: m, size2: n, root1: root1, root2: root2, proof: flipped) }))
            }
            cases.append(("truncated", { try MerkleVerifier.verifyConsistency(size1: m, size2: n, root1: root1, root2: root2, proof: Array(proof.dropLast())) }))
            cases.append(("extended", { try MerkleVerifier.verifyConsistency(size1: m, size2: n, root1: root1, root2: root2, proof: proof + [root1]) }))
            cases.append(("swapped roots", { try MerkleVerifier.verifyConsistency(size1: m, size2: n, root1: root2, root2: root1, proof: proof) }))
            cases.append(("wrong size1", { try MerkleVerifier.verifyConsistency(size1: m + 1, size2: n, root1: root1, root2: root2, proof: proof) }))
            cases.append(("size2 doubled", { try MerkleVerifier.verifyConsistency(size1: m, size2: n * 2, root1: root1, root2: root2, proof: proof) }))
            cases.append(("size1 less one", { try MerkleVerifier.verifyConsistency(size1: m - 1, size2: n, root1: root1, root2: root2, proof: proof) }))
            cases.append(("sizes reversed", { try MerkleVerifier.verifyConsistency(size1: n, size2: m, root1: root2, root2: root1, proof: proof) }))
            cases.append(("empty", { try MerkleVerifier.verifyConsistency(size1: m, size2: n, root1: root1, root2: root2, proof: []) }))
            for (name, attempt) in cases {
                #expect(throws: MerkleProofError.self, "\(name) for \(m)→\(n) was accepted") { try attempt() }
            }
        }
        // A fork: same size, different roots.
        var other = MerkleTree()
        for i in 0..<10 { other.append(entry: [UInt8(i + 1)]) }
        #expect(throws: MerkleProofError.self) {
            try MerkleVerifier.verifyConsistency(size1: 10, size2: 10, root1: try tree.root(atSize: 10), root2: try other.root(), proof: [])
        }
    }
}
