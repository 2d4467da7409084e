import CivitasCrypto

/// The file an auditor takes away (docs/log-format.md): JSON Lines. The first
/// line is a header; every other line is either an entry, exactly its
/// canonical bytes, or `{"checkpoint":"<signed note>"}` for a checkpoint
/// covering the entries before it.
public enum LogExport {
    public static let formatName = "civitas-log-export/1"
    /// Longest line accepted.
    public static let maximumLineLength = 1 << 20

    /// One line of an export after the header.
    public enum Line: Sendable {
        case entry([UInt8])
        case checkpoint(String)
    }

    /// The header line: format, origin and the log's note verifier key.
    public static func header(origin: String, logKey: NoteKey) throws -> [UInt8] {
        try CanonicalJSON.encode(.object([
            "format": .string(formatName),
            "origin": .string(origin),
            "log_key": .string(logKey.verifierKey),
        ]))
    }

    /// A checkpoint line.
    public static func checkpointLine(_ note: String) throws -> [UInt8] {
        try CanonicalJSON.encode(.object(["checkpoint": .string(note)]))
    }

    /// Writes a whole log with one checkpoint at the end.
    public static func write(_ log: ExchangeLog, checkpoints: [String], to sink: ByteSink, logKey: NoteKey) throws {
        var out = try header(origin: log.origin, logKey: logKey) + [0x0A]
        for entry in log.entries { out += entry + [0x0A] }
        for note in checkpoints { out += try checkpointLine(note) + [0x0A] }
        try out.withUnsafeBytes { try sink.write($0) }
    }

    /// Writes an export incrementally: the header first, then each entry, with every checkpoint
    /// placed after the entries it covers. Buffers up to 1 MiB before writing to the sink.
    public final class Writer {
        private let sink: ByteSink
        private let checkpoints: [(size: UInt64, note: String)]
        private var nextCheckpoint = 0
        private var written: UInt64 = 0
        private var buffer: [UInt8] = []

        /// `checkpoints` are signed notes with the log size each covers, in increasing size.
        public init(origin: String, logKey: NoteKey, checkpoints: [(size: UInt64, note: String)], to sink: ByteSink) throws {
            self.sink = sink
            self.checkpoints = checkpoints
            buffer = try LogExport.header(origin: origin, logKey: logKey) + [0x0A]
            try placeCheckpoints()
        }

        /// Appends the next entry's canonical bytes.
        public func append(entry: [UInt8]) throws {
            buffer += entry
            buffer.append(0x0A)
            written += 1
            try placeCheckpoints()
            if buffer.count > 1 << 20 { try flush() }
        }

        /// Writes what is buffered.
        public func finish() throws { try flush() }

        private func placeCheckpoints() throws {
            while nextCheckpoint < checkpoints.count, checkpoints[nextCheckpoint].size <= written {
                buffer += try LogExport.checkpointLine(checkpoints[nextCheckpoint].note) + [0x0A]
                nextCheckpoint += 1
            }
        }

        private func flush() throws {
            try buffer.withUnsafeBytes { try sink.write($0) }
            buffer.removeAll(keepingCapacity: true)
        }
    }

    /// Parsed header.
    public struct Header: Sendable {
        public let origin: String
        public let logKey: NoteKey
    }

    /// Parses the header line.
    public static func parseHeader(_ line: [UInt8]) throws -> Header {
        guard let object = (try? JSONParser.parse(line))?.objectValue,
              object["format"]?.stringValue == formatName,
              let origin = object["origin"]?.stringValue,
              let key = object["log_key"]?.stringValue else {
            throw LogError(.malformedExport, "line 1 is not a \(formatName) header")
        }
        return Header(origin: origin, logKey: try NoteKey(verifierKey: key))
    }

    /// Classifies a line after the header; `number` is its 1-based line number, for errors.
    public static func parseLine(_ line: [UInt8], number: Int) throws -> Line {
        if line.starts(with: Array(#"{"checkpoint":"#.utf8)) {
            guard let note = (try? JSONParser.parse(line))?["checkpoint"]?.stringValue else {
                throw LogError(.malformedExport, "line \(number) is not a checkpoint line")
            }
            return .checkpoint(note)
        }
        return .entry(line)
    }

    /// Splits a byte source into lines, refusing lines longer than the limit.
    public final class LineReader {
        private let source: ByteSource
        private var buffer = [UInt8](repeating: 0, count: 1 << 20)
        private var start = 0
        private var end = 0
        private var finished = false
        public private(set) var lineNumber = 0

        public init(_ source: ByteSource) { self.source = source }

        /// The next line without its newline, or nil at the end.
        public func next() throws -> [UInt8]? {
            var line: [UInt8] = []
            while true {
                if start < end {
                    if let newline = buffer[start..<end].firstIndex(of: 0x0A) {
                        line += buffer[start..<newline]
                        start = newline + 1
                        lineNumber += 1
                        return line
                    }
                    line += buffer[start..<end]
                    start = end
                    guard line.count <= LogExport.maximumLineLength else {
                        throw LogError(.malformedExport, "line \(lineNumber + 1) is longer than \(LogExport.maximumLineLength) bytes")
                    }
                }
                if finished {
                    guard !line.isEmpty else { return nil }
                    lineNumber += 1
                    return line
                }
                let count = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
                start = 0
                end = count
                if count < buffer.count { finished = true }
            }
        }
    }
}
