import CivitasCrypto

/// An append-only exchange log held in memory: the entries' canonical bytes
/// and the Merkle tree over them. Storage backends persist what it produces;
/// the export and the auditor read the same bytes back.
public struct ExchangeLog: Sendable {
    /// The log's origin line, also the checkpoint key name.
    public let origin: String
    public private(set) var tree = MerkleTree()
    public private(set) var entries: [[UInt8]] = []
    private var lastLeafHash: MerkleDigest = [UInt8](repeating: 0, count: MerkleHash.size)

    public init(origin: String) throws {
        try NoteKey.validateName(origin, what: "origin")
        self.origin = origin
    }

    /// Number of entries.
    public var size: UInt64 { tree.size }

    /// Appends an event; returns the entry as stored.
    @discardableResult
    public mutating func append(time: String, type: LogEntryType, members: [String: JSONValue]) throws -> LogEntry {
        let entry = try LogEntry(index: tree.size, previous: lastLeafHash, time: time, type: type, members: members)
        let bytes = try entry.canonicalBytes()
        lastLeafHash = MerkleHash.leaf(bytes)
        tree.append(leafHash: lastLeafHash)
        entries.append(bytes)
        return entry
    }

    /// A signed checkpoint of the log as it is now.
    public func checkpoint(signer: SecretKeys) throws -> String {
        try Checkpoint(origin: origin, size: tree.size, rootHash: try tree.root()).signedNote(signer: signer, keyName: origin)
    }
}
