import CivitasCrypto
import CivitasLog
import Foundation

/// The exchange log on PostgreSQL: entries and checkpoints in tables every node shares, the
/// head row as the one place appends are sequenced, and each node's tree a cache of the entries.
extension PostgresStore {
    /// Entries read per statement when the log is checked or a node catches up.
    static let logPage: Int64 = 10_000

    /// Checks the whole stored log as of one snapshot (every entry, its head row, its checkpoints
    /// and the deliveries it records) and returns it as this node's cache.
    static func loadLog(_ connections: PostgresConnections, origin: String) throws -> ExchangeLog {
        try mapped {
            try connections.withConnection { session in
                try session.execute("INSERT INTO store_meta (name, value) VALUES ('log_origin', $1) ON CONFLICT (name) DO NOTHING", [.text(origin)])
                return try session.inSnapshot {
                    let stored = try session.row("SELECT value FROM store_meta WHERE name = 'log_origin'")?.text("value")
                    guard stored == origin else { throw StoreError(.invalidArgument, "this store holds the log \(stored ?? "?"), not \(origin)") }
                    var log = try ExchangeLog(origin: origin, keepsEntries: false)
                    let releases = try extend(&log, session: session)
                    try checkHead(session, log: log)
                    let checkpoints = try session.rows("SELECT size, note FROM log_checkpoint ORDER BY size").map {
                        (size: try $0.optionalInteger("size"), note: try $0.optionalText("note"))
                    }
                    let deliveries = try session.rows("SELECT id, log_index FROM delivery").map {
                        (id: try $0.optionalText("id"), logIndex: try $0.optionalInteger("log_index"))
                    }
                    try StoredLogCheck.verify(checkpoints: checkpoints, deliveries: deliveries, log: log, releases: releases)
                    return log
                }
            }
        }
    }

    /// Reads the entries after `log`'s last into it, each checked as at start (its position, its
    /// leaf hash, its link to the one before, its time); returns, per delivery id, its entry.
    @discardableResult
    static func extend(_ log: inout ExchangeLog, session: PostgresSession) throws -> [String: UInt64] {
        let check = StoredLogCheck(from: Int(log.size), previousLeaf: log.lastLeafHash, previousTime: log.lastTime)
        var last: [UInt8]?
        var next = Int64(log.size)
        while true {
            let page = try session.rows("SELECT position, leaf, bytes FROM log_entry WHERE position >= $1 ORDER BY position LIMIT $2",
                                        [.integer(next), .integer(logPage)])
            for row in page {
                let bytes = try row.optionalBytes("bytes")
                try check.add(position: try row.optionalInteger("position"), leaf: try row.optionalBytes("leaf"), bytes: bytes)
                last = bytes
            }
            next += Int64(page.count)
            if page.count < Int(logPage) { break }
        }
        let (leaves, releases) = try check.finish()
        if let last {
            do { try log.extend(leafHashes: leaves, lastEntry: last) } catch let error as LogError {
                throw StoreError(.corrupt, "the exchange log's last entry: \(error.message)")
            }
        }
        return releases
    }

    /// The head row agrees with the entries: their number, the last one's leaf hash and time, and
    /// a right edge whose root is the tree's.
    static func checkHead(_ session: PostgresSession, log: ExchangeLog) throws {
        guard let head = try session.row("SELECT size, last_leaf, last_time, frontier FROM log_head") else {
            throw StoreError(.corrupt, "the exchange log has no head row")
        }
        let size = try head.integer("size")
        let frontier = try MerkleFrontier(size: UInt64(max(size, 0)), encoded: try head.bytes("frontier"))
        guard UInt64(size) == log.size, try head.bytes("last_leaf") == log.lastLeafHash, try head.text("last_time") == log.lastTime,
              frontier.root == (try log.tree.root()) else {
            throw StoreError(.corrupt, "the exchange log's head row (\(size) entries) does not match its \(log.size) stored entries")
        }
    }

    /// This node's cache, caught up with what every node has committed.
    func currentLog<T>(_ body: (ExchangeLog) throws -> T) throws -> T {
        try cachedLog.withLock { log in
            try withSession { session in
                let size = try session.row("SELECT size FROM log_head")?.integer("size") ?? 0
                if UInt64(max(size, 0)) > log.size { try Self.extend(&log, session: session) }
            }
            return try body(log)
        }
    }

    public var logSize: UInt64 {
        (try? withSession { session in try session.row("SELECT size FROM log_head")?.integer("size") }).flatMap { $0.map { UInt64(max($0, 0)) } }
            ?? cachedLog.withLock { $0.size }
    }

    /// Signs a checkpoint of the log as it is now, from the head row's right edge (any node signs
    /// the same note for the same size: Ed25519 is deterministic), unless the latest covers every
    /// entry; returns the latest.
    public var logOrigin: String { cachedLog.withLock { $0.origin } }

    public func checkpointLog(signer: SecretKeys) throws -> String {
        let origin = cachedLog.withLock { $0.origin }
        return try withSession { session in
            guard let head = try session.row("SELECT size, frontier FROM log_head") else { throw StoreError(.corrupt, "the exchange log has no head row") }
            let size = try head.integer("size")
            if let latest = try session.row("SELECT size, note FROM log_checkpoint ORDER BY size DESC LIMIT 1"), try latest.integer("size") >= size {
                return try latest.text("note")
            }
            let frontier = try MerkleFrontier(size: UInt64(max(size, 0)), encoded: try head.bytes("frontier"))
            let note = try Checkpoint(origin: origin, size: frontier.size, rootHash: frontier.root).signedNote(signer: signer, keyName: origin)
            try session.execute("""
                INSERT INTO log_checkpoint (size, note, signed) VALUES ($1, $2, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
                ON CONFLICT (size) DO NOTHING
                """, [.integer(size), .text(note)])
            return try session.row("SELECT note FROM log_checkpoint WHERE size = $1", [.integer(size)])?.text("note") ?? note
        }
    }

    public func addSignatures(toCheckpointOfSize size: UInt64, lines: [String]) throws -> String {
        try withSession { session in
            try session.inTransaction {
                guard let note = try session.row("SELECT note FROM log_checkpoint WHERE size = $1 FOR UPDATE", [.integer(Int64(size))])?.text("note") else {
                    throw StoreError(.notFound, "no checkpoint of \(size) entries is kept")
                }
                let signed = Cosignature.merged(note, adding: lines)
                if signed != note {
                    _ = try session.execute("UPDATE log_checkpoint SET note = $1 WHERE size = $2", [.text(signed), .integer(Int64(size))])
                }
                return signed
            }
        }
    }

    public func logInclusionEvidence(index: UInt64, signer: SecretKeys) throws -> InclusionEvidence {
        let note = try checkpointLog(signer: signer)
        let checkpoint = try Checkpoint.verify(note: note, key: try NoteKey(name: cachedLog.withLock { $0.origin }, publicKey: signer.publicKeys.signingKey))
        guard index < checkpoint.size else { throw StoreError(.notFound, "the log has \(checkpoint.size) entries; there is no entry \(index)") }
        let proof = try currentLog { try $0.tree.inclusionProof(index: index, treeSize: checkpoint.size) }
        return InclusionEvidence(entry: try logEntry(at: index), index: index, proof: proof, checkpoint: note)
    }

    public func logEntry(at index: UInt64) throws -> [UInt8] {
        guard let entry = try withSession({ try $0.row("SELECT bytes FROM log_entry WHERE position = $1", [.integer(Int64(min(index, UInt64(Int64.max))))])?.bytes("bytes") }) else {
            throw StoreError(.notFound, "there is no log entry \(index)")
        }
        return entry
    }

    public func latestCheckpointNote() throws -> String? {
        try withSession { try $0.row("SELECT note FROM log_checkpoint ORDER BY size DESC LIMIT 1")?.text("note") }
    }

    public func logStatus() throws -> LogStatus {
        try withSession { session in
            let entries = try session.row("SELECT size FROM log_head")?.integer("size") ?? 0
            let latest = try session.row("SELECT size, signed FROM log_checkpoint ORDER BY size DESC LIMIT 1")
            return LogStatus(entries: UInt64(max(entries, 0)), checkpointEntries: UInt64(max(try latest?.integer("size") ?? 0, 0)),
                             checkpointSigned: try latest?.optionalText("signed").flatMap(UTCTime.init(rfc3339:)))
        }
    }

    public func logConsistencyProof(from size1: UInt64, to size2: UInt64) throws -> [MerkleDigest] {
        try currentLog { log in
            guard size1 >= 1 else { throw StoreError(.invalidArgument, "a consistency proof runs from a tree of 1 entry or more") }
            guard size1 <= size2, size2 <= log.size else {
                throw StoreError(.notFound, "no consistency proof from \(size1) to \(size2) entries: the log has \(log.size), and a proof runs to as many entries or more")
            }
            return try log.tree.consistencyProof(from: size1, to: size2)
        }
    }

    public func logExporter(signer: SecretKeys, pageEntries: Int) throws -> LogExporter {
        try checkpointLog(signer: signer)
        let key = try NoteKey(name: cachedLog.withLock { $0.origin }, publicKey: signer.publicKeys.signingKey)
        let checkpoints = try withSession { session in
            try session.rows("SELECT size, note FROM log_checkpoint ORDER BY size").map { (size: UInt64(max(try $0.integer("size"), 0)), note: try $0.text("note")) }
        }
        return try LogExporter(key: key, checkpoints: checkpoints, size: checkpoints.last?.size ?? 0, pageEntries: pageEntries) { from, to in
            try self.withSession { session in
                try session.rows("SELECT bytes FROM log_entry WHERE position >= $1 AND position < $2 ORDER BY position",
                                 [.integer(Int64(from)), .integer(Int64(to))]).map { try $0.bytes("bytes") }
            }
        }
    }
}
