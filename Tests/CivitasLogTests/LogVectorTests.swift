@testable import CivitasCrypto
import Foundation
import Testing
@testable import CivitasLog

/// The worked example of docs/log-format.md (Tests/Vectors/log-v1-example.jsonl),
/// built by the independent Python reading in Tests/Oracles.
@Suite("Log format worked example")
struct LogVectorTests {
    static func exampleBroker() throws -> SecretKeys {
        var material = SHA256Hasher.hash(Array("civitas example broker ed25519".utf8))
            + SHA256Hasher.hash(Array("civitas example broker x25519".utf8))
        return try SecretKeys(name: "broker", material: ProtectedBytes.taking(&material))
    }

    static func export() throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Vectors/log-v1-example.jsonl")
        return Array(try Data(contentsOf: url))
    }

    @Test("The example export audits clean with the derived broker key")
    func audits() throws {
        let broker = try Self.exampleBroker()
        let report = Auditor(broker: broker.publicKeys).audit(MemorySource(try Self.export()))
        #expect(report.passed, "\(report.findings)")
        #expect(report.entries == 3)
        #expect(Hex.encode(report.latestCheckpoint?.rootHash ?? []) == "569acc61ad6b792ebc13434f3f389ce9463cb16e02bc14fc071ca5cef7c51717")
    }

    @Test("Civitas rebuilds the same entries, root and checkpoint signature, and the documented proofs")
    func rebuilds() throws {
        let broker = try Self.exampleBroker()
        let lines = try Self.export().split(separator: 0x0A).map(Array.init)
        var tree = MerkleTree()
        for line in lines[1...3] {
            let entry = try LogEntry.parse(line, position: tree.size)
            #expect(try entry.canonicalBytes() == line)
            tree.append(entry: line)
        }
        let proof = try tree.inclusionProof(index: 1, treeSize: 3)
        #expect(proof.map(Hex.encode) == ["b10eeff8b74fae5efd5ee9cd2f331a91ae224d3139516451172be8e60e19df5a",
                                          "a85be02941e7e83a81e7abca1bcd6170a0cadd7e6643f82ee2d567302a6620da"])
        // The documented consistency proof from the tree of 2 to the tree of 3: the third leaf alone.
        let consistency = try tree.consistencyProof(from: 2, to: 3)
        #expect(consistency.map(Hex.encode) == ["a85be02941e7e83a81e7abca1bcd6170a0cadd7e6643f82ee2d567302a6620da"])
        try MerkleVerifier.verifyConsistency(size1: 2, size2: 3, root1: try tree.root(atSize: 2), root2: try tree.root(), proof: consistency)
        let checkpoint = try Checkpoint(origin: "civitas.example/example-log", size: 3, rootHash: try tree.root())
        // Ed25519 is deterministic: Civitas signs the same note byte for byte.
        let note = try checkpoint.signedNote(signer: broker, keyName: "civitas.example/example-log")
        let recorded = try #require(JSONParser.parse(lines[4])["checkpoint"]?.stringValue)
        #expect(note == recorded)
        #expect(try NoteKey(name: "civitas.example/example-log", publicKey: broker.publicKeys.signingKey).verifierKey
                == "civitas.example/example-log+1c7b9b33+AUgmnowStmd4YX40IWlw9CnVMpPaSrSm/qmdV8JqB+ib")
    }
}
