import CivitasCrypto

/// An append-only exchange log held in memory: the entries' canonical bytes
/// and the Merkle tree over them. Storage backends persist what it produces;
/// the export and the auditor read the same bytes back.
public struct ExchangeLog: Sendable {
    /// The log's origin line, also the checkpoint key name.
    public let origin: String
    public private(set) var tree = MerkleTree()
    /// The entries' canonical bytes, when the log keeps them in memory (see `keepsEntries`).
    public private(set) var entries: [[UInt8]] = []
    /// Whether entries are kept in memory; a database-backed log keeps only the tree.
    public let keepsEntries: Bool
    /// Leaf hash of the last entry (32 zero bytes while the log is empty): the next entry's `prev`.
    public private(set) var lastLeafHash: MerkleDigest = [UInt8](repeating: 0, count: MerkleHash.size)
    /// Time of the last entry ("" while the log is empty).
    public private(set) var lastTime = ""

    public init(origin: String, keepsEntries: Bool = true) throws {
        try NoteKey.validateName(origin, what: "origin")
        self.origin = origin
        self.keepsEntries = keepsEntries
    }

    /// Extends the tree of a stored log with the leaf hashes of the entries after its last, and the
    /// last of them (parsed and checked against the last leaf hash), without keeping the entries.
    public mutating func extend(leafHashes: [MerkleDigest], lastEntry: [UInt8]) throws {
        precondition(!keepsEntries, "extend rebuilds a log that does not keep entries")
        guard let last = leafHashes.last else { return }
        let lastIndex = tree.size + UInt64(leafHashes.count) - 1
        let entry = try LogEntry.parse(lastEntry, position: lastIndex)
        guard MerkleHash.leaf(lastEntry) == last, entry.index == lastIndex else {
            throw LogError(.invalidEntry, "the stored last entry does not match its stored leaf hash")
        }
        for leaf in leafHashes { tree.append(leafHash: leaf) }
        lastLeafHash = last
        lastTime = entry.time
    }

    /// Number of entries.
    public var size: UInt64 { tree.size }

    /// Appends an event; returns the entry as stored.
    @discardableResult
    public mutating func append(time: String, type: LogEntryType, members: [String: JSONValue]) throws -> LogEntry {
        let prepared = try Self.prepare(index: tree.size, previous: lastLeafHash, time: time, type: type, members: members)
        commit(prepared)
        return prepared.entry
    }

    /// An entry encoded and hashed but not yet added, so that a store can write it first.
    public struct PreparedEntry: Sendable {
        public let entry: LogEntry
        public let bytes: [UInt8]
        public let leafHash: MerkleDigest
    }

    /// Builds the entry that would follow `previous` at `index`, without changing any log.
    public static func prepare(index: UInt64, previous: MerkleDigest, time: String, type: LogEntryType,
                               members: [String: JSONValue]) throws -> PreparedEntry {
        let entry = try LogEntry(index: index, previous: previous, time: time, type: type, members: members)
        let bytes = try entry.canonicalBytes()
        return PreparedEntry(entry: entry, bytes: bytes, leafHash: MerkleHash.leaf(bytes))
    }

    /// Adds a prepared entry; it must be the next one (built from ``size`` and ``lastLeafHash``).
    public mutating func commit(_ prepared: PreparedEntry) {
        precondition(prepared.entry.index == tree.size && prepared.entry.previous == lastLeafHash,
                     "a prepared entry must follow the log's last entry")
        lastLeafHash = prepared.leafHash
        lastTime = prepared.entry.time
        tree.append(leafHash: prepared.leafHash)
        if keepsEntries { entries.append(prepared.bytes) }
    }

    /// A signed checkpoint of the log as it is now.
    public func checkpoint(signer: SecretKeys) throws -> String {
        try Checkpoint(origin: origin, size: tree.size, rootHash: try tree.root()).signedNote(signer: signer, keyName: origin)
    }
}
