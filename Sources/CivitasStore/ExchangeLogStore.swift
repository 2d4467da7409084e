import CivitasCrypto
import CivitasLog
import Foundation
import GRDB

/// Appends log entries inside a store transaction. The entries become part of the
/// in-memory tree only once the transaction commits, so a failed change leaves the log as it was.
public struct LogWriter {
    let db: Database
    var prepared: [ExchangeLog.PreparedEntry] = []
    var nextIndex: UInt64
    var previous: MerkleDigest
    /// The last entry's time: entries never go back in time, even if the clock does.
    /// The latest entry's time: no entry is logged earlier (nil while the log is empty).
    var floorTime: UTCTime?

    /// Appends an event at `time` (or at the previous entry's time, if that is later); returns its index in the log.
    @discardableResult
    public mutating func append(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> UInt64 {
        try appendEntry(time: time, type: type, members: members).entry.index
    }

    /// Appends an event as ``append(time:type:members:)`` does; returns the entry with its canonical bytes.
    public mutating func appendEntry(time: UTCTime, type: LogEntryType, members: [String: JSONValue]) throws -> ExchangeLog.PreparedEntry {
        let time = max(time, floorTime ?? time)
        floorTime = time
        let entry = try ExchangeLog.prepare(index: nextIndex, previous: previous, time: time.rfc3339, type: type, members: members)
        try db.execute(sql: "INSERT INTO log_entry (position, bytes, leaf) VALUES (?, ?, ?)",
                       arguments: [Int64(nextIndex), Data(entry.bytes), Data(entry.leafHash)])
        prepared.append(entry)
        previous = entry.leafHash
        nextIndex += 1
        return entry
    }

    /// Index the next appended entry will have.
    public var upcomingIndex: UInt64 { nextIndex }
}

/// The in-memory log behind a lock, so that preparing, committing and mirroring entries is one step.
final class LockedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var log: ExchangeLog

    init(_ log: ExchangeLog) { self.log = log }

    func withLock<T>(_ body: (inout ExchangeLog) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&log)
    }
}

extension BrokerStore {
    /// The log's origin when none is given.
    public static let defaultLogOrigin = "civitas.local/exchange-log"

    static func loadLog(_ pool: DatabasePool, origin: String) throws -> ExchangeLog {
        do {
            return try pool.write { db in
                if let stored = try String.fetchOne(db, sql: "SELECT value FROM store_meta WHERE name = 'log_origin'") {
                    guard stored == origin else {
                        throw StoreError(.invalidArgument, "this store holds the log \(stored), not \(origin)")
                    }
                } else {
                    try db.execute(sql: "INSERT INTO store_meta (name, value) VALUES ('log_origin', ?)", arguments: [origin])
                }
                var log = try ExchangeLog(origin: origin, keepsEntries: false)
                let (leaves, releases) = try verifyStoredLog(db)
                if let last = try Data.fetchOne(db, sql: "SELECT bytes FROM log_entry ORDER BY position DESC LIMIT 1") {
                    do { try log.extend(leafHashes: leaves, lastEntry: Array(last)) } catch let error as LogError {
                        throw StoreError(.corrupt, "the exchange log's last entry: \(error.message)")
                    }
                }
                try verifyCheckpointsAndDeliveries(db, log: log, releases: releases)
                return log
            }
        } catch let error as DatabaseError {
            throw StoreError(.database, "cannot read the exchange log: \(error.message ?? "\(error.resultCode)")")
        }
    }

    /// Checks every stored entry before the log is served (``StoredLogCheck``).
    /// Returns the leaf hashes and, per delivery id, its entry.
    static func verifyStoredLog(_ db: Database) throws -> ([MerkleDigest], [String: UInt64]) {
        let check = StoredLogCheck()
        let rows = try Row.fetchCursor(db, sql: "SELECT position, leaf, bytes FROM log_entry ORDER BY position")
        while let row = try rows.next() {
            try check.add(position: try row.optionalInteger("position"), leaf: try row.optionalBytes("leaf"), bytes: try row.optionalBytes("bytes"))
        }
        return try check.finish()
    }

    /// Every stored checkpoint states a size the log reaches and the root the log has at that size;
    /// every delivery points at the log entry that records it.
    static func verifyCheckpointsAndDeliveries(_ db: Database, log: ExchangeLog, releases: [String: UInt64]) throws {
        let checkpoints = try Row.fetchAll(db, sql: "SELECT size, note FROM log_checkpoint ORDER BY size").map {
            (size: try $0.optionalInteger("size"), note: try $0.optionalText("note"))
        }
        let deliveries = try Row.fetchAll(db, sql: "SELECT id, log_index FROM delivery").map {
            (id: try $0.optionalText("id"), logIndex: try $0.optionalInteger("log_index"))
        }
        try StoredLogCheck.verify(checkpoints: checkpoints, deliveries: deliveries, log: log, releases: releases)
    }

    /// Runs `body` in one write transaction with a log writer: the change and its log entries
    /// commit together or not at all.
    public func writeLogged<T>(_ body: (Database, inout LogWriter) throws -> T) throws -> T {
        try logState.withLock { log in
            var pending: [ExchangeLog.PreparedEntry] = []
            let result = try wrap {
                try pool.write { db -> T in
                    var writer = LogWriter(db: db, nextIndex: log.size, previous: log.lastLeafHash, floorTime: UTCTime(rfc3339: log.lastTime))
                    let value = try body(db, &writer)
                    pending = writer.prepared
                    return value
                }
            }
            for entry in pending { log.commit(entry) }
            return result
        }
    }

    /// Number of entries in the exchange log.
    public var logSize: UInt64 { logState.withLock { $0.size } }

    /// The log's origin line.
    public var logOrigin: String { logState.withLock { $0.origin } }

    /// Signs a checkpoint of the log as it is now with the broker's key and keeps it, unless the
    /// latest kept checkpoint already covers every entry; returns the latest checkpoint.
    @discardableResult
    public func checkpointLog(signer: SecretKeys) throws -> String {
        try logState.withLock { log in
            try wrap {
                try pool.write { db in
                    if let latest = try Row.fetchOne(db, sql: "SELECT size, note FROM log_checkpoint ORDER BY size DESC LIMIT 1"),
                       UInt64(latest["size"] as Int64) == log.size {
                        return latest["note"] as String
                    }
                    let note = try log.checkpoint(signer: signer)
                    try db.execute(sql: "INSERT INTO log_checkpoint (size, note, signed) VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                                   arguments: [Int64(log.size), note])
                    return note
                }
            }
        }
    }

    public func addSignatures(toCheckpointOfSize size: UInt64, lines: [String]) throws -> String {
        try wrap {
            try pool.write { db in
                guard let note = try String.fetchOne(db, sql: "SELECT note FROM log_checkpoint WHERE size = ?", arguments: [Int64(size)]) else {
                    throw StoreError(.notFound, "no checkpoint of \(size) entries is kept")
                }
                let signed = Cosignature.merged(note, adding: lines)
                if signed != note {
                    try db.execute(sql: "UPDATE log_checkpoint SET note = ? WHERE size = ?", arguments: [signed, Int64(size)])
                }
                return signed
            }
        }
    }

    /// Evidence that entry `index` is in the log: the entry, its inclusion proof and a checkpoint
    /// signed now that covers it.
    public func logInclusionEvidence(index: UInt64, signer: SecretKeys) throws -> InclusionEvidence {
        let note = try checkpointLog(signer: signer)
        let checkpoint = try Checkpoint.verify(note: note, key: try NoteKey(name: logOrigin, publicKey: signer.publicKeys.signingKey))
        guard index < checkpoint.size else { throw StoreError(.notFound, "the log has \(checkpoint.size) entries; there is no entry \(index)") }
        let proof = try logState.withLock { try $0.tree.inclusionProof(index: index, treeSize: checkpoint.size) }
        return InclusionEvidence(entry: try logEntry(at: index), index: index, proof: proof, checkpoint: note)
    }

    public func logEntry(at index: UInt64) throws -> [UInt8] {
        guard index < logSize else { throw StoreError(.notFound, "the log has \(logSize) entries; there is no entry \(index)") }
        guard let entry = try wrap({ try pool.read { db in try Data.fetchOne(db, sql: "SELECT bytes FROM log_entry WHERE position = ?", arguments: [Int64(index)]) } }) else {
            throw StoreError(.corrupt, "log entry \(index) is not stored")
        }
        return Array(entry)
    }

    public func latestCheckpointNote() throws -> String? {
        try wrap { try pool.read { db in try String.fetchOne(db, sql: "SELECT note FROM log_checkpoint ORDER BY size DESC LIMIT 1") } }
    }

    /// The log's size and its latest checkpoint's, with when that was signed.
    public func logStatus() throws -> LogStatus {
        let entries = logSize
        let latest = try wrap { try pool.read { db in try Row.fetchOne(db, sql: "SELECT size, signed FROM log_checkpoint ORDER BY size DESC LIMIT 1") } }
        return LogStatus(entries: entries, checkpointEntries: latest.map { UInt64($0["size"] as Int64) } ?? 0,
                         checkpointSigned: (latest?["signed"] as String?).flatMap(UTCTime.init(rfc3339:)))
    }

    /// The RFC 9162 consistency proof from the log's first `size1` entries to its first `size2`
    /// (at most the log's size); refuses a first size of 0 (`invalidArgument`: no proof starts
    /// from the empty tree) and sizes with no proof between them (`notFound`).
    public func logConsistencyProof(from size1: UInt64, to size2: UInt64) throws -> [MerkleDigest] {
        try logState.withLock { log in
            guard size1 >= 1 else { throw StoreError(.invalidArgument, "a consistency proof runs from a tree of 1 entry or more") }
            guard size1 <= size2, size2 <= log.size else {
                throw StoreError(.notFound, "no consistency proof from \(size1) to \(size2) entries: the log has \(log.size), and a proof runs to as many entries or more")
            }
            return try log.tree.consistencyProof(from: size1, to: size2)
        }
    }

    /// Writes the export an auditor takes away (docs/log-format.md): header, entries, and each
    /// kept checkpoint after the entries it covers. Checkpoints the log first.
    public func exportLog(signer: SecretKeys, to sink: ByteSink) throws {
        let exporter = try logExporter(signer: signer)
        while let page = try exporter.nextPage() {
            try page.withUnsafeBytes { try sink.write($0) }
        }
    }

    /// An export of the log as it is now (checkpointed first), read page by page so that
    /// neither the broker nor a slow reader holds the whole log in memory. Entries never change
    /// once written, so pages read in separate transactions form one consistent export.
    public func logExporter(signer: SecretKeys, pageEntries: Int = 10_000) throws -> LogExporter {
        try checkpointLog(signer: signer)
        let key = try NoteKey(name: logOrigin, publicKey: signer.publicKeys.signingKey)
        return try wrap {
            try pool.read { db in
                let checkpoints = try Row.fetchAll(db, sql: "SELECT size, note FROM log_checkpoint ORDER BY size")
                    .map { (size: UInt64($0["size"] as Int64), note: $0["note"] as String) }
                return try LogExporter(key: key, checkpoints: checkpoints, size: checkpoints.last?.size ?? 0, pageEntries: pageEntries) { from, to in
                    try self.wrap {
                        try self.pool.read { db in
                            try Data.fetchAll(db, sql: "SELECT bytes FROM log_entry WHERE position >= ? AND position < ? ORDER BY position",
                                              arguments: [Int64(from), Int64(to)]).map { Array($0) }
                        }
                    }
                }
            }
        }
    }

    /// A secret kept in the store wrapped by the storage key, created (32 random bytes) on first use.
    /// The caller wipes the returned bytes.
    public func secret(named name: String) throws -> [UInt8] {
        let associatedData = Array("store-secret:\(name)".utf8)
        return try wrap {
            try pool.write { db in
                if let wrapped = try Data.fetchOne(db, sql: "SELECT wrapped FROM store_secret WHERE name = ?", arguments: [name]) {
                    do { return try storageKey.open(Array(wrapped), associatedData: associatedData) } catch {
                        throw StoreError(.corrupt, "the store secret \(name) does not open with this storage key")
                    }
                }
                var fresh = Sodium.randomBytes(32)
                let wrapped = storageKey.seal(fresh, associatedData: associatedData)
                try db.execute(sql: "INSERT INTO store_secret (name, wrapped) VALUES (?, ?)", arguments: [name, Data(wrapped)])
                defer { Sodium.wipe(&fresh) }
                return fresh
            }
        }
    }
}

/// Reads a log export page by page (``BrokerStore/logExporter(signer:pageEntries:)``). Pages are
/// taken one at a time under a lock, so the exporter may be handed to another task.
public final class LogExporter: LogPages, @unchecked Sendable {
    private let lock = NSLock()
    private let readEntries: (_ from: UInt64, _ to: UInt64) throws -> [[UInt8]]
    private let size: UInt64
    private let pageEntries: Int
    private let sink = PageSink()
    private let writer: LogExport.Writer
    private var next: UInt64 = 0
    private var done = false

    /// An export of the first `size` entries, read through `readEntries` (the entries from one
    /// position up to another, excluded) one page at a time.
    init(key: NoteKey, checkpoints: [(size: UInt64, note: String)], size: UInt64, pageEntries: Int,
         readEntries: @escaping (_ from: UInt64, _ to: UInt64) throws -> [[UInt8]]) throws {
        self.readEntries = readEntries
        self.size = size
        self.pageEntries = max(1, pageEntries)
        writer = try LogExport.Writer(origin: key.name, logKey: key, checkpoints: checkpoints, to: sink)
    }

    /// The next part of the export, or nil when it is complete.
    public func nextPage() throws -> [UInt8]? {
        lock.lock()
        defer { lock.unlock() }
        guard !done else { return nil }
        let end = min(size, next + UInt64(pageEntries))
        let entries = try readEntries(next, end)
        guard entries.count == Int(end - next) else { throw StoreError(.corrupt, "log entries \(next) to \(end - 1) are not all stored") }
        for bytes in entries { try writer.append(entry: bytes) }
        next = end
        if next == size {
            try writer.finish()
            done = true
        }
        return sink.take()
    }
}

/// Collects what a writer produces until it is taken.
final class PageSink: ByteSink {
    private var bytes: [UInt8] = []
    func write(_ buffer: UnsafeRawBufferPointer) throws { bytes += buffer }
    func take() -> [UInt8] {
        defer { bytes.removeAll(keepingCapacity: true) }
        return bytes
    }
}

/// Checks a stored log entry by entry before it is served: positions run 0, 1, 2, … without
/// gaps; each entry parses as canonical JSON of a valid entry, carries its own position as
/// index, links to the previous entry's leaf hash and is not earlier than it; each stored leaf
/// hash is SHA-256(0x00 ‖ the entry). Entries are checked in chunks on every core.
final class StoredLogCheck {
    private(set) var leaves: [MerkleDigest] = []
    private var releases: [String: UInt64] = [:]
    private var previousTime: String
    private var chunk: [(leaf: [UInt8], bytes: [UInt8])] = []
    private let first: Int
    private let firstPreviousLeaf: MerkleDigest

    /// A check of the entries from `position` on, after an entry with this leaf hash and time.
    init(from position: Int = 0, previousLeaf: MerkleDigest = [UInt8](repeating: 0, count: MerkleHash.size), previousTime: String = "") {
        first = position
        firstPreviousLeaf = previousLeaf
        self.previousTime = previousTime
    }

    /// Takes the next stored entry's columns, as read.
    func add(position: Int64?, leaf: [UInt8]?, bytes: [UInt8]?) throws {
        let expected = first + leaves.count + chunk.count
        guard let position, let leaf, let bytes else { throw StoreError(.corrupt, "log entry \(expected) has a missing column") }
        guard position == Int64(expected) else {
            throw StoreError(.corrupt, "log entry \(expected) is missing (the next stored position is \(position))")
        }
        chunk.append((leaf, bytes))
        if chunk.count == StoredEntryCheck.chunkSize { try verifyChunk() }
    }

    /// The leaf hashes of the entries checked and, per delivery id, its entry.
    func finish() throws -> ([MerkleDigest], [String: UInt64]) {
        try verifyChunk()
        return (leaves, releases)
    }

    private func verifyChunk() throws {
        let start = first + leaves.count
        let outcomes = StoredEntryCheck.run(chunk, firstPosition: start, previousLeaf: leaves.last ?? firstPreviousLeaf)
        for (offset, outcome) in outcomes.enumerated() {
            let position = start + offset
            switch outcome {
            case .failure(let message): throw StoreError(.corrupt, "log entry \(position)\(message)")
            case .success(let checked):
                guard checked.time >= previousTime else {
                    throw StoreError(.corrupt, "log entry \(position) is dated \(checked.time), before the entry before it (\(previousTime))")
                }
                previousTime = checked.time
                if let release = checked.release { releases[release] = UInt64(position) }
                leaves.append(chunk[offset].leaf)
            }
        }
        chunk.removeAll(keepingCapacity: true)
    }

    /// Every stored checkpoint states a size the log reaches and the root the log has at that size;
    /// every delivery points at the log entry that records it.
    static func verify(checkpoints: [(size: Int64?, note: String?)], deliveries: [(id: String?, logIndex: Int64?)],
                       log: ExchangeLog, releases: [String: UInt64]) throws {
        for (storedSize, note) in checkpoints {
            let size = storedSize ?? -1
            let checkpoint: Checkpoint
            do { checkpoint = try Checkpoint.statement(of: note ?? "") } catch let error as LogError {
                throw StoreError(.corrupt, "the stored checkpoint at size \(size): \(error.message)")
            }
            guard checkpoint.size == UInt64(max(size, 0)), checkpoint.origin == log.origin, checkpoint.size <= log.size,
                  let root = try? log.tree.root(atSize: checkpoint.size), root == checkpoint.rootHash else {
                throw StoreError(.corrupt, "the stored checkpoint at size \(size) does not match the log (\(log.size) entries): entries were altered or removed")
            }
        }
        for (storedID, storedIndex) in deliveries {
            let id = storedID ?? "?", index = storedIndex ?? -1
            guard index >= 0, releases[id] == UInt64(index) else {
                throw StoreError(.corrupt, "delivery \(id) points at log entry \(index), which does not record it (the log has \(log.size) entries)")
            }
        }
    }
}

/// The checks of one stored entry that need nothing but the entry and the leaf before it, run
/// for a chunk of entries on every core.
enum StoredEntryCheck {
    static let chunkSize = 16_384

    struct Checked {
        let time: String
        let release: String?
    }

    enum Outcome {
        case success(Checked)
        /// What is wrong, as the end of a sentence that starts with "log entry N".
        case failure(String)
    }

    static func run(_ entries: [(leaf: [UInt8], bytes: [UInt8])], firstPosition: Int, previousLeaf: [UInt8]) -> [Outcome] {
        var outcomes = [Outcome](repeating: .failure(" was not checked"), count: entries.count)
        let slices = min(max(ProcessInfo.processInfo.activeProcessorCount, 1), max(entries.count / 256, 1))
        outcomes.withUnsafeMutableBufferPointer { results in
            let results = UncheckedBuffer(base: results)
            DispatchQueue.concurrentPerform(iterations: slices) { slice in
                let start = entries.count * slice / slices, end = entries.count * (slice + 1) / slices
                for offset in start..<end {
                    let previous = offset == 0 ? previousLeaf : entries[offset - 1].leaf
                    results.base[offset] = check(entries[offset], position: firstPosition + offset, previousLeaf: previous)
                }
            }
        }
        return outcomes
    }

    static func check(_ stored: (leaf: [UInt8], bytes: [UInt8]), position: Int, previousLeaf: [UInt8]) -> Outcome {
        guard MerkleHash.leaf(stored.bytes) == stored.leaf else {
            return .failure(" does not match its stored leaf hash: the entry or the hash was altered")
        }
        let entry: LogEntry
        do { entry = try LogEntry.parse(stored.bytes, position: UInt64(position)) } catch let error as LogError {
            return .failure(": \(error.message)")
        } catch {
            return .failure(": \(error)")
        }
        guard entry.index == UInt64(position), entry.previous == previousLeaf else {
            return .failure(" does not link to entry \(position - 1): its index or previous hash is wrong")
        }
        return .success(Checked(time: entry.time, release: entry.type == .releaseDelivered ? entry.string("release") : nil))
    }

    /// A buffer written by disjoint slices of concurrent iterations.
    struct UncheckedBuffer: @unchecked Sendable {
        let base: UnsafeMutableBufferPointer<Outcome>
    }
}

/// How far the exchange log is checkpointed.
public struct LogStatus: Sendable, Equatable {
    public let entries: UInt64
    /// Entries the latest signed checkpoint covers (0: none signed yet).
    public let checkpointEntries: UInt64
    /// When the latest checkpoint was signed, if known.
    public let checkpointSigned: UTCTime?

    public init(entries: UInt64, checkpointEntries: UInt64, checkpointSigned: UTCTime?) {
        self.entries = entries
        self.checkpointEntries = checkpointEntries
        self.checkpointSigned = checkpointSigned
    }
}
