import CivitasCrypto

/// The body of a C2SP tlog-witness `add-checkpoint` request: the size of the checkpoint the
/// witness last cosigned for the log, a consistency proof from that size, and the new checkpoint.
public struct AddCheckpointRequest: Sendable, Equatable {
    /// Most consistency proof lines a request may carry.
    public static let maximumProofLines = 63
    /// Longest request body read.
    public static let maximumBytes = 24 * 1024

    public let oldSize: UInt64
    public let proof: [MerkleDigest]
    /// The signed checkpoint note.
    public let note: String

    public init(oldSize: UInt64, proof: [MerkleDigest], note: String) {
        self.oldSize = oldSize
        self.proof = proof
        self.note = note
    }

    /// The request body: `old N`, one base64 hash per line, a blank line, the checkpoint.
    public var body: String {
        "old \(oldSize)\n" + proof.map { Base64.encode($0) + "\n" }.joined() + "\n" + note
    }

    /// Parses a request body; a malformed one is refused as a bad request.
    public static func parse(_ bytes: [UInt8]) throws(WitnessRefusal) -> AddCheckpointRequest {
        guard bytes.count <= maximumBytes else { throw .badRequest("the request is \(bytes.count) bytes, above the \(maximumBytes)-byte limit") }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let blank = text.range(of: "\n\n") else { throw .badRequest("no blank line between the old size and proof and the checkpoint") }
        let head = text[..<blank.lowerBound].split(separator: "\n", omittingEmptySubsequences: false)
        guard let first = head.first, first.hasPrefix("old "), let oldSize = UInt64(first.dropFirst(4)), String(oldSize) == first.dropFirst(4) else {
            throw .badRequest("the first line must be 'old' and a decimal size without leading zeros")
        }
        guard head.count - 1 <= maximumProofLines else { throw .badRequest("more than \(maximumProofLines) consistency proof lines") }
        var proof: [MerkleDigest] = []
        for (offset, line) in head.dropFirst().enumerated() {
            guard let hash = Base64.decode(String(line)), hash.count == MerkleHash.size else {
                throw .badRequest("consistency proof line \(offset + 1) is not a base64 hash of 32 bytes")
            }
            proof.append(hash)
        }
        return AddCheckpointRequest(oldSize: oldSize, proof: proof, note: String(text[blank.upperBound...]))
    }
}

/// What a witness keeps of one log: the latest checkpoint it cosigned.
public struct WitnessedCheckpoint: Sendable, Equatable, Codable {
    public let size: UInt64
    public let rootHash: MerkleDigest
    /// The checkpoint note as the log submitted it.
    public let note: String

    public init(size: UInt64, rootHash: MerkleDigest, note: String) {
        self.size = size
        self.rootHash = rootHash
        self.note = note
    }
}

/// A witness's refusal, with the HTTP status C2SP tlog-witness gives it.
public struct WitnessRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The request is malformed, or its old size is above the checkpoint's (400).
        case badRequest = "bad_request"
        /// No signature by a key the witness trusts for the origin verifies (403).
        case untrustedSignature = "untrusted_signature"
        /// The witness does not follow a log of that origin (404).
        case unknownLog = "unknown_log"
        /// The old size is not the size the witness last cosigned, or the same size has another root (409).
        case conflict
        /// The consistency proof does not prove the new checkpoint extends the last cosigned one (422).
        case inconsistent
    }

    public let code: Code
    public let message: String
    /// The size the witness last cosigned, sent with a conflict so that the log can retry.
    public let latestSize: UInt64?

    public init(_ code: Code, _ message: String, latestSize: UInt64? = nil) {
        self.code = code
        self.message = message
        self.latestSize = latestSize
    }

    static func badRequest(_ message: String) -> WitnessRefusal { WitnessRefusal(.badRequest, message) }

    /// The HTTP status of the refusal.
    public var status: Int {
        switch code {
        case .badRequest: 400
        case .untrustedSignature: 403
        case .unknownLog: 404
        case .conflict: 409
        case .inconsistent: 422
        }
    }

    public var description: String { message }
}

/// The decisions of a C2SP tlog-witness: which checkpoint it cosigns, given the latest it
/// cosigned for the log. Pure: the caller persists the result (atomically with reading
/// `latest`) before answering, and passes the time.
public struct WitnessRules: Sendable {
    /// The keys the witness trusts for each log origin.
    public let logs: [String: [NoteKey]]

    public init(logs: [NoteKey]) {
        self.logs = Dictionary(grouping: logs, by: \.name)
    }

    /// Checks `request` against `latest` (nil when the witness never cosigned this log): the
    /// checkpoint the witness may now cosign, or why it must not.
    public func check(_ request: AddCheckpointRequest, latest: WitnessedCheckpoint?) throws(WitnessRefusal) -> (Checkpoint, origin: String) {
        let statement: Checkpoint
        do { statement = try Checkpoint.statement(of: request.note) } catch {
            throw .badRequest("the checkpoint is malformed: \(error)")
        }
        guard let keys = logs[statement.origin] else { throw WitnessRefusal(.unknownLog, "this witness does not follow log \(statement.origin)") }
        guard keys.contains(where: { (try? Checkpoint.verify(note: request.note, key: $0)) != nil }) else {
            throw WitnessRefusal(.untrustedSignature, "no signature on the checkpoint verifies with a key this witness trusts for \(statement.origin)")
        }
        guard request.oldSize <= statement.size else {
            throw .badRequest("the old size \(request.oldSize) is above the checkpoint's size \(statement.size)")
        }
        let cosignedSize = latest?.size ?? 0
        guard request.oldSize == cosignedSize else {
            throw WitnessRefusal(.conflict, "the last checkpoint cosigned for \(statement.origin) has size \(cosignedSize), not \(request.oldSize)",
                                 latestSize: cosignedSize)
        }
        if let latest, latest.size > 0 {
            if statement.size == latest.size {
                guard statement.rootHash == latest.rootHash else {
                    throw WitnessRefusal(.conflict, "\(statement.origin) forked: a second root for size \(statement.size)", latestSize: cosignedSize)
                }
            } else {
                do {
                    try MerkleVerifier.verifyConsistency(size1: latest.size, size2: statement.size, root1: latest.rootHash,
                                                         root2: statement.rootHash, proof: request.proof)
                } catch {
                    throw WitnessRefusal(.inconsistent, "the checkpoint of size \(statement.size) does not extend the one of size \(latest.size) cosigned before: \(error)")
                }
            }
        } else if !request.proof.isEmpty {
            throw WitnessRefusal(.inconsistent, "a proof from size 0 must be empty")
        }
        return (statement, statement.origin)
    }
}
