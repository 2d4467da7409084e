import CivitasCrypto
import CivitasLog

/// One consent event's ISO/IEC TS 27560 record as the broker issues it.
struct ConsentRecord {
    var recordID: String
    /// The subject's keyed hash (never the subject id).
    var principal: [UInt8]
    var controller: KeyID
    var dataset: String
    var purpose: String
    var notice: String
    var collectionMethod: String
    var jurisdiction: String
    var granted: Bool
    /// RFC 3339 UTC.
    var time: String
    var recordedBy: KeyID

    static let schemaVersion = "ISO/IEC TS 27560:2023"

    /// The record as a JSON object.
    var jsonValue: JSONValue {
        ["schema_version": .string(Self.schemaVersion), "record_id": .string(recordID),
         "pii_principal_id": .string(Hex.encode(principal)), "pii_controller": .string(controller.hex),
         "dataset": .string(dataset), "purposes": [["purpose": .string(purpose), "lawful_basis": "consent"]],
         "notice": .string(notice), "consent_type": "explicit", "collection_method": .string(collectionMethod),
         "jurisdiction": .string(jurisdiction),
         "event": ["type": .string(granted ? "given" : "withdrawn"), "time": .string(time), "recorded_by": .string(recordedBy.hex)],
         "state": .string(granted ? "active" : "withdrawn")]
    }

    /// Appends the record's canonical JSON (RFC 8785): the same bytes as
    /// `CanonicalJSON.encode(jsonValue)`, written member by member in their sorted order.
    func appendCanonical(to out: inout [UInt8]) {
        func key(_ name: StaticString) {
            out.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        }
        key(#"{"collection_method":"#)
        CanonicalJSON.appendString(collectionMethod, to: &out)
        key(#","consent_type":"explicit","dataset":"#)
        CanonicalJSON.appendString(dataset, to: &out)
        key(#","event":{"recorded_by":""#)
        out.append(contentsOf: recordedBy.hex.utf8)
        key(#"","time":"#)
        CanonicalJSON.appendString(time, to: &out)
        key(granted ? #","type":"given"},"jurisdiction":"# : #","type":"withdrawn"},"jurisdiction":"#)
        CanonicalJSON.appendString(jurisdiction, to: &out)
        key(#","notice":"#)
        CanonicalJSON.appendString(notice, to: &out)
        key(#","pii_controller":""#)
        out.append(contentsOf: controller.hex.utf8)
        key(#"","pii_principal_id":""#)
        Hex.append(principal, to: &out)
        key(#"","purposes":[{"lawful_basis":"consent","purpose":"#)
        CanonicalJSON.appendString(purpose, to: &out)
        key(#"}],"record_id":"#)
        CanonicalJSON.appendString(recordID, to: &out)
        key(#","schema_version":"ISO/IEC TS 27560:2023","state":"#)
        key(granted ? #""active"}"# : #""withdrawn"}"#)
    }
}

/// The receipts of one consent request: every event's ISO/IEC TS 27560 record, the RFC 9162
/// Merkle tree over them, and the `consent.recorded` log entry, signed by the broker, whose
/// `receipts_root` is that tree's root. Each receipt proves itself with its inclusion proof and
/// the one signature, and the entry sits in the broker's append-only log.
public struct ConsentReceipts: Sendable {
    /// What the broker signs: this context, then the log entry's canonical JSON.
    public static let signatureContext = Array("civitas-consent-receipts/1".utf8) + [0]

    /// Each event's record as canonical JSON, in the order of the request.
    public let records: [[UInt8]]
    let tree: MerkleTree
    /// The `consent.recorded` entry as logged (canonical JSON).
    public let logEntry: [UInt8]
    public let logIndex: UInt64
    public let brokerKey: KeyID
    /// Ed25519 over ``signatureContext`` + ``logEntry``.
    public let signature: [UInt8]
    /// True when these are the receipts of an earlier request with the same idempotency key.
    public internal(set) var replayed = false

    /// The Merkle tree over the records, leaf i being `SHA-256(0x00 || records[i])`.
    static func tree(of records: [[UInt8]]) -> MerkleTree {
        var tree = MerkleTree()
        for record in records { tree.append(entry: record) }
        return tree
    }

    public var count: Int { records.count }

    /// The RFC 9162 inclusion proof of receipt `index` in the tree of ``count`` receipts.
    public func inclusionProof(_ index: Int) throws -> [MerkleDigest] {
        try tree.inclusionProof(index: UInt64(index))
    }

    /// `{"broker_key", "log_entry", "signature"}`: what every receipt of the request is checked against.
    public func batchJSON() throws -> JSONValue {
        ["broker_key": .string(brokerKey.hex), "log_entry": try JSONParser.parse(logEntry),
         "signature": .string(Base64.encode(signature))]
    }

    /// `{"inclusion_proof" (base64 hashes, as RFC 6962's JSON audit paths), "receipt" (the record), "receipt_index"}`.
    public func receiptJSON(_ index: Int) throws -> JSONValue {
        ["inclusion_proof": .array(try inclusionProof(index).map { .string(Base64.encode($0)) }),
         "receipt": try JSONParser.parse(records[index]), "receipt_index": .number(Double(index))]
    }

    /// JSON Lines, each line canonical JSON: `{"batch": …}` first, then one receipt per event in
    /// the order of the request, as ``receiptJSON(_:)`` gives it.
    public func jsonLines() throws -> [UInt8] {
        var lines = try self.lines()
        var out: [UInt8] = []
        while lines.write(to: &out, atLeast: .max) {}
        return out
    }

    /// The ``jsonLines()`` text, to be written piece by piece (``Lines/write(to:atLeast:)``), so
    /// that no piece needs a large allocation.
    public func lines() throws -> Lines {
        var batch = Self.batchOpening
        batch += try CanonicalJSON.encode(try batchJSON())
        batch += Self.lineEnd
        return Lines(receipts: self, batchLine: batch)
    }

    /// The receipts' JSON Lines text, written a piece at a time.
    public struct Lines: Sendable {
        private let receipts: ConsentReceipts
        private var batchLine: [UInt8]?
        private let proofs: InclusionProofTable
        /// Each node hash of the tree as a quoted base64 string, once: the proofs of ten thousand
        /// receipts hold 140,000 hashes, of some 20,000 nodes.
        private let quoted: [UInt8]
        private static let quotedSize = 46
        private var next = 0
        private var proof: [Int32] = []

        init(receipts: ConsentReceipts, batchLine: [UInt8]) {
            self.receipts = receipts
            self.batchLine = batchLine
            let proofs = receipts.tree.allInclusionProofs()
            var quoted: [UInt8] = []
            quoted.reserveCapacity(proofs.nodeCount * Self.quotedSize)
            proofs.hashes.withUnsafeBytes { hashes in
                for node in 0..<proofs.nodeCount {
                    quoted.append(UInt8(ascii: "\""))
                    Base64.appendPublic(raw: UnsafeRawBufferPointer(rebasing: hashes[(node * MerkleHash.size)..<((node + 1) * MerkleHash.size)]), to: &quoted)
                    quoted.append(UInt8(ascii: "\""))
                }
            }
            self.proofs = proofs
            self.quoted = quoted
        }

        /// Appends whole lines to `out` until it holds `atLeast` bytes or the text ends; false
        /// when the text had already ended.
        public mutating func write(to out: inout [UInt8], atLeast minimum: Int) -> Bool {
            if let batchLine {
                out += batchLine
                self.batchLine = nil
            } else if next == receipts.records.count {
                return false
            }
            let records = receipts.records
            quoted.withUnsafeBufferPointer { quoted in
                while next < records.count && out.count < minimum {
                    out += ConsentReceipts.proofOpening
                    proofs.proof(UInt64(next), into: &proof)
                    for (number, node) in proof.enumerated() {
                        if number > 0 { out.append(UInt8(ascii: ",")) }
                        out.append(contentsOf: UnsafeBufferPointer(rebasing: quoted[(Int(node) * Self.quotedSize)..<((Int(node) + 1) * Self.quotedSize)]))
                    }
                    out += ConsentReceipts.receiptOpening
                    out += records[next]
                    out += ConsentReceipts.indexOpening
                    out.append(contentsOf: String(next).utf8)
                    out += ConsentReceipts.lineEnd
                    next += 1
                }
            }
            return true
        }
    }

    fileprivate static let batchOpening = Array(#"{"batch":"#.utf8)
    fileprivate static let proofOpening = Array(#"{"inclusion_proof":["#.utf8)
    fileprivate static let receiptOpening = Array(#"],"receipt":"#.utf8)
    fileprivate static let indexOpening = Array(#","receipt_index":"#.utf8)
    fileprivate static let lineEnd = Array("}\n".utf8)

    /// Checks one receipt against its batch: the broker's signature over the log entry, and the
    /// inclusion proof from the record to the entry's `receipts_root`. Returns the log entry.
    public static func verify(receipt: JSONValue, batch: JSONValue, broker: PublicKeys) throws -> LogEntry {
        guard let entryValue = batch["log_entry"], let signature = batch["signature"]?.stringValue.flatMap(Base64.decode),
              let record = receipt["receipt"], let index = receipt["receipt_index"]?.exactUnsignedInteger,
              case .array(let hashes)? = receipt["inclusion_proof"], hashes.count <= 64 else {
            throw BrokerError(.invalid, "a consent receipt needs receipt, receipt_index and inclusion_proof; its batch log_entry and signature")
        }
        let entryBytes = try CanonicalJSON.encode(entryValue)
        guard broker.isValidSignature(signature, for: signatureContext + entryBytes) else {
            throw BrokerError(.invalid, "the broker's signature over the consent batch does not verify")
        }
        guard let logIndex = entryValue["index"]?.exactUnsignedInteger else { throw BrokerError(.invalid, "the consent batch's log entry has no index") }
        let entry = try LogEntry.parse(entryBytes, position: logIndex)
        guard entry.type == .consentRecorded, let size = entry.count("receipts"),
              let root = entry.string("receipts_root").flatMap(Hex.decode) else {
            throw BrokerError(.invalid, "the consent batch's log entry is not a consent.recorded entry")
        }
        let proof = try hashes.map { item -> MerkleDigest in
            guard let hash = item.stringValue.flatMap(Base64.decode), hash.count == MerkleHash.size else {
                throw BrokerError(.invalid, "a receipt's inclusion proof holds a hash that is not 32 bytes of base64")
            }
            return hash
        }
        do {
            try MerkleVerifier.verifyInclusion(leafHash: MerkleHash.leaf(try CanonicalJSON.encode(record)), index: index, treeSize: size,
                                               proof: proof, root: root)
        } catch let error as MerkleProofError {
            throw BrokerError(.invalid, "receipt \(index) is not among the \(size) receipts the broker signed: \(error.message)")
        }
        return entry
    }
}
