import CivitasCrypto
import Testing
@testable import CivitasLog

/// The witness's rules (C2SP tlog-witness) and cosignatures (C2SP tlog-cosignature): each
/// refusal is shown beside the request that passes, so a rule that let everything through fails.
@Suite struct WitnessTests {
    let origin = "civitas.example/witnessed-log"
    let logKeys: SecretKeys
    let noteKey: NoteKey
    let witness: SecretKeys

    init() throws {
        logKeys = try SecretKeys.generate(name: "broker")
        noteKey = try NoteKey(name: origin, publicKey: logKeys.publicKeys.signingKey)
        witness = try SecretKeys.generate(name: "witness")
    }

    func tree(_ size: Int, salt: String = "") -> MerkleTree {
        var tree = MerkleTree()
        for index in 0..<size { _ = tree.append(entry: Array("entry \(index)\(index >= 3 ? salt : "")".utf8)) }
        return tree
    }

    func note(_ tree: MerkleTree, signer: SecretKeys? = nil, origin: String? = nil) throws -> String {
        try Checkpoint(origin: origin ?? self.origin, size: tree.size, rootHash: try tree.root()).signedNote(signer: signer ?? logKeys, keyName: origin ?? self.origin)
    }

    func witnessed(_ tree: MerkleTree) throws -> WitnessedCheckpoint {
        WitnessedCheckpoint(size: tree.size, rootHash: try tree.root(), note: try note(tree))
    }

    func refusal(_ request: AddCheckpointRequest, latest: WitnessedCheckpoint?) -> WitnessRefusal? {
        do {
            _ = try WitnessRules(logs: [noteKey]).check(request, latest: latest)
            return nil
        } catch {
            return error
        }
    }

    @Test func aFirstCheckpointAndOneThatExtendsItAreCosigned() throws {
        let small = tree(4), large = tree(9)
        #expect(refusal(AddCheckpointRequest(oldSize: 0, proof: [], note: try note(small)), latest: nil) == nil)
        let proof = try large.consistencyProof(from: 4, to: 9)
        #expect(refusal(AddCheckpointRequest(oldSize: 4, proof: proof, note: try note(large)), latest: try witnessed(small)) == nil)
        #expect(refusal(AddCheckpointRequest(oldSize: 9, proof: [], note: try note(large)), latest: try witnessed(large)) == nil)
    }

    @Test func aRollbackIsRefused() throws {
        let small = tree(4), large = tree(9)
        // The log shows the smaller tree after the larger: old size above the checkpoint's is a bad request,
        // and an old size that is not the one cosigned is a conflict naming it.
        #expect(refusal(AddCheckpointRequest(oldSize: 9, proof: [], note: try note(small)), latest: try witnessed(large))?.status == 400)
        let conflict = refusal(AddCheckpointRequest(oldSize: 4, proof: [], note: try note(small)), latest: try witnessed(large))
        #expect(conflict?.status == 409)
        #expect(conflict?.latestSize == 9)
    }

    @Test func aForkIsRefused() throws {
        let honest = tree(6), forked = tree(6, salt: "forked"), forkedLonger = tree(10, salt: "forked")
        #expect(try honest.root() != forked.root())
        // The same size with another root.
        #expect(refusal(AddCheckpointRequest(oldSize: 6, proof: [], note: try note(forked)), latest: try witnessed(honest))?.status == 409)
        // A longer tree that does not extend the cosigned one: its own proof from 6 fails against the cosigned root.
        let proof = try forkedLonger.consistencyProof(from: 6, to: 10)
        #expect(refusal(AddCheckpointRequest(oldSize: 6, proof: proof, note: try note(forkedLonger)), latest: try witnessed(honest))?.status == 422)
        // The positive control: the same proof against the forked tree's own checkpoint passes.
        #expect(refusal(AddCheckpointRequest(oldSize: 6, proof: proof, note: try note(forkedLonger)), latest: try witnessed(forked)) == nil)
    }

    @Test func unknownLogsAndUntrustedSignaturesAreRefused() throws {
        let small = tree(3)
        #expect(refusal(AddCheckpointRequest(oldSize: 0, proof: [], note: try note(small, origin: "other.example/log")), latest: nil)?.status == 404)
        let stranger = try SecretKeys.generate(name: "stranger")
        #expect(refusal(AddCheckpointRequest(oldSize: 0, proof: [], note: try note(small, signer: stranger)), latest: nil)?.status == 403)
        #expect(refusal(AddCheckpointRequest(oldSize: 0, proof: [try small.root()], note: try note(small)), latest: nil)?.status == 422)
    }

    @Test func requestBodiesRoundTripAndMalformedOnesAreBadRequests() throws {
        let large = tree(9)
        let request = AddCheckpointRequest(oldSize: 4, proof: try large.consistencyProof(from: 4, to: 9), note: try note(large))
        #expect(try AddCheckpointRequest.parse(Array(request.body.utf8)) == request)
        for body in ["old 04\n\n" + request.note, "old 4\nnot-base64\n\n" + request.note, "4\n\n" + request.note, "old 4\n" + request.note] {
            #expect(throws: WitnessRefusal.self) { try AddCheckpointRequest.parse(Array(body.utf8)) }
        }
        let tooLong = "old 4\n" + String(repeating: Base64.encode(try large.root()) + "\n", count: 64) + "\n" + request.note
        #expect(throws: WitnessRefusal.self) { try AddCheckpointRequest.parse(Array(tooLong.utf8)) }
    }

    @Test func cosignaturesVerifyForTheirWitnessOnly() throws {
        let checkpointNote = try note(tree(5))
        let checkpoint = try Checkpoint.verify(note: checkpointNote, key: noteKey)
        let key = try CosignerKey(name: "witness.example/w1", publicKey: witness.publicKeys.signingKey)
        let line = try Cosignature.line(for: checkpoint, signer: witness, name: key.name, time: 1_780_000_000)
        let cosigned = Cosignature.merged(checkpointNote, adding: [String(line.dropLast())])
        #expect(try Cosignature.verified(note: cosigned, trusted: [key]) == [key: 1_780_000_000])
        // The log's signature still verifies on the cosigned note; other keys' lines are ignored.
        #expect(try Checkpoint.verify(note: cosigned, key: noteKey) == checkpoint)
        let other = try CosignerKey(name: "witness.example/w2", publicKey: try SecretKeys.generate(name: "w2").publicKeys.signingKey)
        #expect(try Cosignature.verified(note: cosigned, trusted: [other]).isEmpty)
        #expect(try Cosignature.verified(note: checkpointNote, trusted: [key]).isEmpty)
        // The same line on another checkpoint does not verify.
        let elsewhere = Cosignature.merged(try note(tree(6)), adding: [String(line.dropLast())])
        #expect(throws: LogError.self) { try Cosignature.verified(note: elsewhere, trusted: [key]) }
        // Verifier keys round-trip and carry the cosignature type.
        #expect(try CosignerKey(verifierKey: key.verifierKey) == key)
        #expect(throws: LogError.self) { try CosignerKey(verifierKey: noteKey.verifierKey) }
    }
}
