import CivitasCrypto

/// Evidence that one entry is in the broker's log: the entry, an RFC 9162 inclusion proof and the
/// signed checkpoint the proof leads to. A partner keeps it with a delivery to show the broker
/// recorded it; anyone holding the broker's public key can check it without the rest of the log.
public struct InclusionEvidence: Sendable, Equatable {
    /// The entry's canonical bytes.
    public let entry: [UInt8]
    public let index: UInt64
    public let proof: [MerkleDigest]
    /// The checkpoint (C2SP signed note) of the tree the proof is for.
    public let checkpoint: String

    public init(entry: [UInt8], index: UInt64, proof: [MerkleDigest], checkpoint: String) {
        self.entry = entry
        self.index = index
        self.proof = proof
        self.checkpoint = checkpoint
    }

    /// `{"index", "entry" (the entry as an object), "proof" (hex hashes), "checkpoint"}`.
    public func jsonValue() throws -> JSONValue {
        ["index": .number(Double(index)), "entry": try JSONParser.parse(entry),
         "proof": .array(proof.map { .string(Hex.encode($0)) }), "checkpoint": .string(checkpoint)]
    }

    /// Reads the JSON form.
    public static func parse(_ value: JSONValue) throws -> InclusionEvidence {
        guard let index = value["index"]?.exactUnsignedInteger, let entry = value["entry"], entry.objectValue != nil,
              case .array(let hashes)? = value["proof"], hashes.count <= 64, let checkpoint = value["checkpoint"]?.stringValue else {
            throw LogError(.malformedExport, "inclusion evidence needs index, entry, proof and checkpoint")
        }
        let proof = try hashes.map { item -> MerkleDigest in
            guard let hash = item.stringValue.flatMap(Hex.decode), hash.count == MerkleHash.size else {
                throw LogError(.malformedExport, "inclusion evidence: a proof hash is not 32 bytes of hex")
            }
            return hash
        }
        return InclusionEvidence(entry: try CanonicalJSON.encode(entry), index: index, proof: proof, checkpoint: checkpoint)
    }

    /// Checks the checkpoint is signed by the broker, that the entry is a valid entry at `index`,
    /// and that the proof leads from it to the checkpoint's root. Returns the entry and checkpoint.
    public func verify(broker: PublicKeys) throws -> (LogEntry, Checkpoint) {
        guard let origin = checkpoint.split(separator: "\n", maxSplits: 1).first.map(String.init) else {
            throw LogError(.malformedCheckpoint, "the checkpoint has no origin line")
        }
        let signed = try Checkpoint.verify(note: checkpoint, key: try NoteKey(name: origin, publicKey: broker.signingKey))
        let parsed = try LogEntry.parse(entry, position: index)
        guard parsed.index == index else { throw LogError(.invalidEntry, "the entry says it is entry \(parsed.index), not \(index)") }
        do {
            try MerkleVerifier.verifyInclusion(leafHash: MerkleHash.leaf(entry), index: index, treeSize: signed.size, proof: proof, root: signed.rootHash)
        } catch let error as MerkleProofError {
            throw LogError(.invalidEntry, "entry \(index) is not in the signed log of \(signed.size) entries: \(error.message)")
        }
        return (parsed, signed)
    }
}
