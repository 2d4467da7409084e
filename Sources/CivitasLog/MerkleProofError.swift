import CivitasCrypto

/// A proof that failed to verify, with the evidence an auditor needs to show
/// it to someone else: the roots expected and computed, and the proof itself.
public struct MerkleProofError: Error, CustomStringConvertible, Sendable {
    /// Stable reasons a proof is refused.
    public enum Code: String, Sendable {
        /// The leaf index is not inside the tree.
        case indexOutOfRange
        /// The sizes cannot describe an append-only history (second smaller than first, or an empty first tree).
        case invalidSizes
        /// The proof has the wrong number of hashes for these sizes, or a hash of the wrong length.
        case malformedProof
        /// The proof recomputes a root other than the one claimed.
        case rootMismatch
    }

    public let code: Code
    public let message: String
    /// The root the caller claimed (hex), when there is one.
    public let expectedRoot: String?
    /// The root the proof leads to (hex), when it could be computed.
    public let computedRoot: String?
    /// The proof, as hex hashes.
    public let proof: [String]

    init(_ code: Code, _ message: String, expected: [UInt8]? = nil, computed: [UInt8]? = nil, proof: [[UInt8]] = []) {
        self.code = code
        self.message = message
        self.expectedRoot = expected.map(Hex.encode)
        self.computedRoot = computed.map(Hex.encode)
        self.proof = proof.map(Hex.encode)
    }

    public var description: String {
        var text = message
        if let expectedRoot { text += "; expected root \(expectedRoot)" }
        if let computedRoot { text += ", computed \(computedRoot)" }
        return text
    }
}
