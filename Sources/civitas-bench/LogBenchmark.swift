import CivitasCrypto
import CivitasLog
import Foundation

/// Log benchmark: append throughput (tree only, entries in memory, and entries
/// written through to disk in batches) and proof generation at 10 M entries.
func runLogBenchmark() throws {
    let broker = try SecretKeys.generate(name: "bench-broker")
    let partner = try SecretKeys.generate(name: "bench-partner")
    let time = "2026-11-26T12:00:00Z"
    func consent(_ i: Int) -> [String: JSONValue] {
        ["dataset": "traffic-flow", "subject": .string(Hex.encode(SHA256Hasher.hash(withUnsafeBytes(of: i, Array.init)))),
         "purpose": "mobility-planning", "recorded_by": .string(partner.keyID.hex)]
    }
    print("| what | figure |")
    print("|---|---|")

    // 1. Entries built, canonicalized, hashed, linked and added to the tree (in memory).
    let count = 200_000
    var log = try ExchangeLog(origin: "civitas.example/bench")
    let start = DispatchTime.now().uptimeNanoseconds
    for i in 0..<count { try log.append(time: time, type: .consentGranted, members: consent(i)) }
    let inMemory = Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    print(String(format: "| appends, in memory (consent entries, canonical JSON + SHA-256 + tree) | %.0f /s |", inMemory))

    // 2. Written through to disk in batches of 1,000 with one fsync per batch.
    let directory = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/civitas-bench-log-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let onDisk = try LogDirectory(path: directory, origin: "civitas.example/bench", signer: broker)
    let diskCount = 100_000
    let diskStart = DispatchTime.now().uptimeNanoseconds
    for batch in 0..<(diskCount / 1000) {
        try onDisk.append(batch: (0..<1000).map { (time, .consentGranted, consent(batch * 1000 + $0)) })
    }
    let diskRate = Double(diskCount) / (Double(DispatchTime.now().uptimeNanoseconds - diskStart) / 1e9)
    print(String(format: "| appends, written to disk in batches of 1,000 (one fsync each) | %.0f /s |", diskRate))

    // 3. The tree alone at 10 M leaves.
    let size = 10_000_000
    var tree = MerkleTree()
    var leaf = [UInt8](repeating: 0, count: 32)
    let treeStart = DispatchTime.now().uptimeNanoseconds
    for i in 0..<size {
        withUnsafeBytes(of: UInt64(i)) { leaf.replaceSubrange(0..<8, with: $0) }
        tree.append(leafHash: leaf)
    }
    let treeRate = Double(size) / (Double(DispatchTime.now().uptimeNanoseconds - treeStart) / 1e9)
    print(String(format: "| tree appends (leaf hashes given), up to 10 M | %.0f /s |", treeRate))

    let root = try tree.root()
    var generator = SystemRandomNumberGenerator()
    let proofs = 2000
    var inclusionTotal = 0.0, worstInclusion = 0.0
    for _ in 0..<proofs {
        let index = UInt64.random(in: 0..<UInt64(size), using: &generator)
        let t = DispatchTime.now().uptimeNanoseconds
        let proof = try tree.inclusionProof(index: index)
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t) / 1e3
        inclusionTotal += elapsed
        worstInclusion = max(worstInclusion, elapsed)
        try MerkleVerifier.verifyInclusion(leafHash: tree.leafHash(at: index), index: index, treeSize: UInt64(size), proof: proof, root: root)
    }
    print(String(format: "| inclusion proof at 10 M entries: mean / worst (µs) | %.1f / %.1f |", inclusionTotal / Double(proofs), worstInclusion))
    var consistencyTotal = 0.0, worstConsistency = 0.0
    for _ in 0..<proofs {
        let first = UInt64.random(in: 1..<UInt64(size), using: &generator)
        let t = DispatchTime.now().uptimeNanoseconds
        let proof = try tree.consistencyProof(from: first)
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t) / 1e3
        consistencyTotal += elapsed
        worstConsistency = max(worstConsistency, elapsed)
        try MerkleVerifier.verifyConsistency(size1: first, size2: UInt64(size), root1: try tree.root(atSize: first), root2: root, proof: proof)
    }
    print(String(format: "| consistency proof to 10 M entries: mean / worst (µs) | %.1f / %.1f |", consistencyTotal / Double(proofs), worstConsistency))
    let rootStart = DispatchTime.now().uptimeNanoseconds
    for i in 0..<proofs { _ = try tree.root(atSize: UInt64(size - i)) }
    print(String(format: "| root of a past size near 10 M (µs) | %.1f |", Double(DispatchTime.now().uptimeNanoseconds - rootStart) / 1e3 / Double(proofs)))
    print(String(format: "| peak RSS of the run | %.0f MiB |", Double(Memory.statusValue("VmHWM")) / 1_048_576))
}
