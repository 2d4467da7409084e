import CivitasCrypto
import Foundation

/// A log kept in a directory, for a single process (the demo and local tools):
/// `entries.jsonl` holds each entry's canonical bytes on a line,
/// `checkpoints.jsonl` each signed checkpoint as a `{"checkpoint":…}` line.
/// Both files are only ever appended to. The broker's database store writes the
/// same entries and checkpoints; the export an auditor reads is the same either way.
public final class LogDirectory {
    public let path: String
    public private(set) var log: ExchangeLog
    public private(set) var checkpoints: [String] = []
    private let signer: SecretKeys

    private var entriesPath: String { path + "/entries.jsonl" }
    private var checkpointsPath: String { path + "/checkpoints.jsonl" }
    private var originPath: String { path + "/origin" }

    /// Opens the log in `path`, creating it with `origin` if it does not exist.
    public init(path: String, origin: String, signer: SecretKeys) throws {
        self.path = path
        self.signer = signer
        let files = FileManager.default
        if !files.fileExists(atPath: path + "/origin") {
            try files.createDirectory(atPath: path, withIntermediateDirectories: true)
            try Data((origin + "\n").utf8).write(to: URL(fileURLWithPath: path + "/origin"))
            _ = files.createFile(atPath: path + "/entries.jsonl", contents: nil)
            _ = files.createFile(atPath: path + "/checkpoints.jsonl", contents: nil)
        }
        let stored = try String(contentsOfFile: path + "/origin", encoding: .utf8).trimmingCharacters(in: .newlines)
        guard stored == origin else {
            throw LogError(.invalidArgument, "\(path) holds the log \(stored), not \(origin)")
        }
        log = try ExchangeLog(origin: origin)
        try Self.dropUnfinishedLine(of: path + "/entries.jsonl")
        for (number, line) in try Self.lines(of: path + "/entries.jsonl").enumerated() {
            let entry = try LogEntry.parse(line, position: UInt64(number))
            let appended = try log.append(time: entry.time, type: entry.type, members: entry.members)
            guard try appended.canonicalBytes() == line else {
                throw LogError(.invalidEntry, "\(path)/entries.jsonl line \(number + 1) does not follow from the lines before it")
            }
        }
        for line in try Self.lines(of: path + "/checkpoints.jsonl") {
            guard let note = (try? JSONParser.parse(line))?["checkpoint"]?.stringValue else {
                throw LogError(.malformedExport, "\(path)/checkpoints.jsonl holds a line that is not a checkpoint")
            }
            checkpoints.append(note)
        }
    }

    /// Appends an event and writes it through to disk.
    @discardableResult
    public func append(time: String, type: LogEntryType, members: [String: JSONValue]) throws -> LogEntry {
        let prepared = try ExchangeLog.prepare(index: log.size, previous: log.lastLeafHash, time: time, type: type, members: members)
        try Self.append(line: prepared.bytes, to: entriesPath)
        log.commit(prepared)
        return prepared.entry
    }

    /// Appends several events with one write and one flush to disk: all of them or, on error, none.
    public func append(batch events: [(time: String, type: LogEntryType, members: [String: JSONValue])]) throws {
        var prepared: [ExchangeLog.PreparedEntry] = []
        var bytes: [UInt8] = []
        var previous = log.lastLeafHash
        for (offset, event) in events.enumerated() {
            let next = try ExchangeLog.prepare(index: log.size + UInt64(offset), previous: previous,
                                               time: event.time, type: event.type, members: event.members)
            previous = next.leafHash
            bytes += next.bytes
            bytes.append(0x0A)
            prepared.append(next)
        }
        try Self.append(raw: bytes, to: entriesPath)
        for entry in prepared { log.commit(entry) }
    }

    /// Signs and stores a checkpoint of the log as it is now; returns its note.
    @discardableResult
    public func checkpoint() throws -> String {
        let note = try log.checkpoint(signer: signer)
        try Self.append(line: try LogExport.checkpointLine(note), to: checkpointsPath)
        checkpoints.append(note)
        return note
    }

    /// Writes the export an auditor takes away: header, entries, and each checkpoint after the entries it covers.
    public func export(to sink: ByteSink) throws {
        let key = try NoteKey(name: log.origin, publicKey: signer.publicKeys.signingKey)
        let covered = try checkpoints.map { (size: try Checkpoint.verify(note: $0, key: key).size, note: $0) }
        let writer = try LogExport.Writer(origin: log.origin, logKey: key, checkpoints: covered, to: sink)
        for entry in log.entries { try writer.append(entry: entry) }
        try writer.finish()
    }

    /// A crash between writing a batch and flushing it can leave a partial last line.
    /// That batch was never acknowledged, so the partial line is removed.
    private static func dropUnfinishedLine(of path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let last = data.last, last != 0x0A else { return }
        let keep = (data.lastIndex(of: 0x0A).map { $0 + 1 }) ?? 0
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw LogError(.invalidArgument, "cannot repair \(path)")
        }
        defer { try? handle.close() }
        try handle.truncate(atOffset: UInt64(keep))
        try handle.synchronize()
    }

    private static func lines(of path: String) throws -> [[UInt8]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.split(separator: 0x0A).map(Array.init)
    }

    private static func append(line: [UInt8], to path: String) throws {
        try append(raw: line + [0x0A], to: path)
    }

    private static func append(raw bytes: [UInt8], to path: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw LogError(.invalidArgument, "cannot append to \(path)")
        }
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: bytes)
        try handle.synchronize()
    }
}
