import CivitasCrypto
import Dispatch

/// A table of text cells with a header row, read from and written to CSV
/// (RFC 4180: quoted fields, doubled quotes, CRLF or LF line ends).
public struct CSVTable: Sendable, Equatable {
    public var columns: [String]
    public var rows: [[String]]

    public init(columns: [String], rows: [[String]]) {
        self.columns = columns
        self.rows = rows
    }

    /// Limits on what is read, so hostile input cannot exhaust memory.
    public struct Limits: Sendable {
        public var maximumRows = 5_000_000
        public var maximumColumns = 512
        public var maximumFieldLength = 64 * 1024
        public init() {}
    }

    /// The index of a column, or an error naming it and listing the columns.
    public func index(of column: String) throws -> Int {
        guard let index = columns.firstIndex(of: column) else {
            throw PrivacyError(.invalidParameter, "unknown column '\(column.prefix(80))' (columns: \(columns.joined(separator: ", ").prefix(300)))")
        }
        return index
    }

    /// Guesses the delimiter from the header line: the most frequent of `,` `;` tab `|` outside quotes.
    public static func detectDelimiter(_ bytes: [UInt8]) -> UInt8 {
        var counts: [UInt8: Int] = [0x2C: 0, 0x3B: 0, 0x09: 0, 0x7C: 0]
        var quoted = false
        for byte in bytes {
            if byte == 0x22 { quoted.toggle() }
            if !quoted && (byte == 0x0A || byte == 0x0D) { break }
            if !quoted, counts[byte] != nil { counts[byte, default: 0] += 1 }
        }
        return counts.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }?.key ?? 0x2C
    }

    /// The UTF-8 byte-order mark spreadsheet tools write first; skipped when reading.
    public static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// Parses CSV bytes into one table. Rows must have as many fields as the header; errors name the line.
    public static func parse(_ input: [UInt8], delimiter: UInt8? = nil, limits: Limits = Limits()) throws -> CSVTable {
        var table = CSVTable(columns: [], rows: [])
        try read(input, delimiter: delimiter, limits: limits, chunkRows: Int.max, header: { table.columns = $0 }) { rows, _ in
            table.rows += rows
        }
        return table
    }

    /// Reads CSV without holding it as one table: `header` gets the header row, then `rows` gets
    /// the data rows in chunks of at most `chunkRows`, each with the 1-based number of its first
    /// row. A leading UTF-8 byte-order mark is skipped. Errors name the line or row.
    public static func read(_ input: [UInt8], delimiter: UInt8? = nil, limits: Limits = Limits(), chunkRows: Int,
                            header: ([String]) throws -> Void, rows: (_ chunk: [[String]], _ firstRow: Int) throws -> Void) throws {
        try read(from: MemorySource(input), delimiter: delimiter, limits: limits, chunkRows: chunkRows, header: header, rows: rows)
    }

    /// Bytes read from a source at a time.
    public static let readBlockSize = 1 << 20

    /// Reads CSV from `source` a block at a time, so that only the block and the current chunk of
    /// rows are held, whatever the size of the input; otherwise as `read(_:)`.
    public static func read(from source: ByteSource, delimiter: UInt8? = nil, limits: Limits = Limits(), chunkRows: Int,
                            blockSize: Int = readBlockSize,
                            header: ([String]) throws -> Void, rows: (_ chunk: [[String]], _ firstRow: Int) throws -> Void) throws {
        var block = [UInt8](repeating: 0, count: max(blockSize, 1))
        /// Fills `block` from the source; the number of bytes read, 0 at the end.
        func fill() throws -> Int {
            var filled = 0
            while filled < block.count {
                let count = try block.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
                if count == 0 { break }
                filled += count
            }
            return filled
        }
        var length = try fill()
        // The byte-order mark and the delimiter are read from the first bytes (whatever the block size).
        var first: [UInt8] = []
        while length > 0 && first.count < 64 * 1024 {
            first += block[0..<length]
            length = try fill()
        }
        let skip = first.starts(with: byteOrderMark) ? byteOrderMark.count : 0
        let separator = delimiter ?? detectDelimiter(Array(first[skip...]))
        var reader = CSVReader(separator: separator, limits: limits, chunkRows: chunkRows)
        try first.withUnsafeBufferPointer { try reader.parse(UnsafeBufferPointer(rebasing: $0[skip...]), header: header, rows: rows) }
        first = []
        while length > 0 {
            try block.withUnsafeBufferPointer { try reader.parse(UnsafeBufferPointer(rebasing: $0[0..<length]), header: header, rows: rows) }
            length = try fill()
        }
        try reader.finish(header: header, rows: rows)
    }

    /// The table as CSV with the given delimiter, quoting fields that need it.
    public func csv(delimiter: UInt8 = 0x2C) -> [UInt8] {
        var writer = CSVWriter(columns: columns, delimiter: delimiter, expectedRows: rows.count)
        for row in rows { writer.append(row) }
        return writer.bytes
    }
}

/// Writes CSV one record at a time: the header first, fields quoted where they need it.
public struct CSVWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public private(set) var records = 0
    let delimiter: UInt8

    public init(columns: [String], delimiter: UInt8 = 0x2C, expectedRows: Int = 0) {
        self.delimiter = delimiter
        bytes.reserveCapacity(max(expectedRows, 1) * max(columns.count, 1) * 12)
        write(columns)
    }

    public mutating func append(_ record: [String]) {
        write(record)
        records += 1
    }

    /// Appends one record given as a code per column, each column's values already written as
    /// fields by ``fields(_:)``: the same bytes as ``append(_:)`` of the values.
    public mutating func append(codes: [Int], of columns: [Fields]) {
        for (c, code) in codes.enumerated() {
            if c > 0 { bytes.append(delimiter) }
            let fields = columns[c]
            fields.bytes.withUnsafeBufferPointer { all in
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: all[fields.starts[code]..<fields.starts[code + 1]]))
            }
        }
        bytes.append(0x0A)
        records += 1
    }

    /// Appends `count` records given a block at a time: `codes(block, &codes)` writes the codes of
    /// the records of `block`, one per column of `columns`, record after record. The bytes are
    /// those of ``append(codes:of:)`` for each record in turn, written on two cores, each into its
    /// own part of the output (whose place is known from the records' lengths).
    public mutating func append(records count: Int, of columns: [Fields], codes: @Sendable (_ block: Range<Int>, _ codes: inout [Int]) -> Void) {
        let width = columns.count
        guard count > 0, width > 0 else {
            for _ in 0..<count { append(codes: [], of: []) }
            return
        }
        let parts = count >= Self.parallelFrom ? 2 : 1
        let bounds = (0...parts).map { count * $0 / parts }
        let blockSize = Self.blockSize
        // Each part's length: its fields, and per record the delimiters and the line end.
        let lengths = PartLengths(parts: parts)
        defer { lengths.free() }
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            var blockCodes = [Int](repeating: 0, count: blockSize * width)
            var total = (bounds[part + 1] - bounds[part]) * width
            for first in stride(from: bounds[part], to: bounds[part + 1], by: blockSize) {
                let block = first..<min(first + blockSize, bounds[part + 1])
                codes(block, &blockCodes)
                for c in 0..<width {
                    let starts = columns[c].starts
                    for i in 0..<block.count { total += starts[blockCodes[i * width + c] + 1] - starts[blockCodes[i * width + c]] }
                }
            }
            lengths.values[part] = total
        }
        let start = bytes.count, total = lengths.values.reduce(0, +)
        let delimiter = self.delimiter
        // The output is a new array whose bytes after those already written are first touched by
        // the core that writes them (not zeroed beforehand on one); the parts write every one of
        // them, since their lengths were counted from the same codes.
        let written = bytes
        bytes = []
        bytes = [UInt8](unsafeUninitializedCapacity: start + total) { out, initialized in
          _ = UnsafeMutableBufferPointer(rebasing: out[0..<start]).initialize(fromContentsOf: written)
          Self.withBuffers(columns) { fieldBytes, fieldStarts in
            let output = Output(bytes: out, fieldBytes: fieldBytes, fieldStarts: fieldStarts)
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                var offset = start + lengths.values[..<part].reduce(0, +)
                var blockCodes = [Int](repeating: 0, count: blockSize * width)
                for first in stride(from: bounds[part], to: bounds[part + 1], by: blockSize) {
                    let block = first..<min(first + blockSize, bounds[part + 1])
                    codes(block, &blockCodes)
                    for i in 0..<block.count {
                        for c in 0..<width {
                            if c > 0 {
                                output.bytes[offset] = delimiter
                                offset += 1
                            }
                            let code = blockCodes[i * width + c], starts = output.fieldStarts[c]
                            let from = starts[code], length = starts[code + 1] - from
                            if let source = output.fieldBytes[c].baseAddress, let target = output.bytes.baseAddress, length > 0 {
                                (target + offset).update(from: source + from, count: length)
                            }
                            offset += length
                        }
                        output.bytes[offset] = 0x0A
                        offset += 1
                    }
                }
            }
          }
          initialized = start + total
        }
        records += count
    }

    /// Calls `body` with every column's field bytes and starts in place (no reference counting per field written).
    private static func withBuffers(_ columns: [Fields], from index: Int = 0, bytes: [UnsafeBufferPointer<UInt8>] = [],
                                    starts: [UnsafeBufferPointer<Int>] = [],
                                    _ body: ([UnsafeBufferPointer<UInt8>], [UnsafeBufferPointer<Int>]) -> Void) {
        guard index < columns.count else { return body(bytes, starts) }
        columns[index].bytes.withUnsafeBufferPointer { columnBytes in
            columns[index].starts.withUnsafeBufferPointer { columnStarts in
                withBuffers(columns, from: index + 1, bytes: bytes + [columnBytes], starts: starts + [columnStarts], body)
            }
        }
    }

    /// Records whose codes ``append(records:of:codes:)`` asks for at once.
    static let blockSize = 4_096

    /// Records from which ``append(records:of:codes:)`` writes on two cores.
    static let parallelFrom = 10_000

    /// Per part of the output, its length (written by the part's core).
    private struct PartLengths: @unchecked Sendable {
        let values: UnsafeMutableBufferPointer<Int>
        init(parts: Int) { values = .allocate(capacity: parts); values.initialize(repeating: 0) }
        func free() { values.deallocate() }
    }

    /// The output, written by both cores in disjoint places, and the fields they copy from.
    private struct Output: @unchecked Sendable {
        let bytes: UnsafeMutableBufferPointer<UInt8>
        let fieldBytes: [UnsafeBufferPointer<UInt8>]
        let fieldStarts: [UnsafeBufferPointer<Int>]
    }

    /// Distinct values written once each as CSV fields (quoted where they need it), to be
    /// appended by code: value `i`'s field is `bytes[starts[i]..<starts[i + 1]]`.
    public struct Fields: Sendable {
        let bytes: [UInt8]
        let starts: [Int]
    }

    /// The fields of `values`, with this writer's delimiter.
    public func fields(_ values: [String]) -> Fields {
        var bytes: [UInt8] = []
        var starts = [0]
        starts.reserveCapacity(values.count + 1)
        for value in values {
            Self.writeField(value, delimiter: delimiter, to: &bytes)
            starts.append(bytes.count)
        }
        return Fields(bytes: bytes, starts: starts)
    }

    private mutating func write(_ record: [String]) {
        for (i, cell) in record.enumerated() {
            if i > 0 { bytes.append(delimiter) }
            Self.writeField(cell, delimiter: delimiter, to: &bytes)
        }
        bytes.append(0x0A)
    }

    private static func writeField(_ cell: String, delimiter: UInt8, to bytes: inout [UInt8]) {
        var cell = cell
        cell.withUTF8 { utf8 in
            var needsQuotes = false
            for byte in utf8 where byte == delimiter || byte == 0x22 || byte == 0x0A || byte == 0x0D {
                needsQuotes = true
                break
            }
            guard needsQuotes else { return bytes.append(contentsOf: utf8) }
            bytes.append(0x22)
            for byte in utf8 {
                if byte == 0x22 { bytes.append(0x22) }
                bytes.append(byte)
            }
            bytes.append(0x22)
        }
    }
}

/// The state of reading CSV records byte by byte (RFC 4180 quoting), handing full chunks of rows
/// on. Kept in one value so the byte loop works on it in place.
private struct CSVReader {
    let separator: UInt8
    let limits: CSVTable.Limits
    let chunkRows: Int
    var columns: [String]?
    var chunk: [[String]] = []
    var rowsRead = 0
    var record: [String] = []
    var field: [UInt8] = []
    var quoted = false
    /// Inside a quoted field, a quote was read: the next byte says whether it was doubled.
    var quotePending = false
    var line = 1
    var fieldStarted = false

    init(separator: UInt8, limits: CSVTable.Limits, chunkRows: Int) {
        self.separator = separator
        self.limits = limits
        self.chunkRows = chunkRows
    }

    mutating func endField() throws {
        try field.withUnsafeBufferPointer { try endField($0) }
        field.removeAll(keepingCapacity: true)
    }

    /// Ends the field holding `bytes` (the collected field, or a run read straight from the input).
    mutating func endField(_ bytes: UnsafeBufferPointer<UInt8>) throws {
        guard bytes.count <= limits.maximumFieldLength else {
            throw PrivacyError(.invalidValue, "line \(line): a field is longer than \(limits.maximumFieldLength) bytes")
        }
        // ASCII is valid UTF-8 as it stands (most fields); anything else is validated.
        let ascii = bytes.allSatisfy { $0 < 0x80 }
        guard let text = ascii ? String(decoding: bytes, as: UTF8.self) : String(validating: bytes, as: UTF8.self) else {
            throw PrivacyError(.invalidValue, "line \(line): a field is not valid UTF-8")
        }
        if record.isEmpty { record.reserveCapacity(columns?.count ?? 8) }
        record.append(text)
        fieldStarted = false
        guard record.count <= limits.maximumColumns else {
            throw PrivacyError(.invalidValue, "line \(line): more than \(limits.maximumColumns) fields")
        }
    }

    mutating func flush(rows: (_ chunk: [[String]], _ firstRow: Int) throws -> Void) throws {
        guard !chunk.isEmpty else { return }
        try rows(chunk, rowsRead - chunk.count + 1)
        chunk.removeAll(keepingCapacity: true)
    }

    mutating func endRecord(header: ([String]) throws -> Void, rows: (_ chunk: [[String]], _ firstRow: Int) throws -> Void) throws {
        try endField()
        defer { record = [] }
        if record.count == 1 && record[0].isEmpty { return }
        guard let columns else {
            guard Set(record).count == record.count else { throw PrivacyError(.invalidValue, "the header names a column twice") }
            columns = record
            try header(record)
            return
        }
        rowsRead += 1
        guard rowsRead <= limits.maximumRows else { throw PrivacyError(.invalidValue, "more than \(limits.maximumRows) rows") }
        guard record.count == columns.count else {
            throw PrivacyError(.invalidValue, "row \(rowsRead): \(record.count) fields, the header has \(columns.count)")
        }
        chunk.append(record)
        if chunk.count >= chunkRows { try flush(rows: rows) }
    }

    mutating func parse(_ bytes: UnsafeBufferPointer<UInt8>, header: ([String]) throws -> Void,
                        rows: (_ chunk: [[String]], _ firstRow: Int) throws -> Void) throws {
        var index = 0
        let count = bytes.count
        while index < count {
            // Outside quotes, a run of plain bytes is taken whole: a field that starts and ends in
            // this block becomes a string straight from the input, others are collected.
            if !quoted && !quotePending {
                var end = index
                while end < count {
                    let byte = bytes[end]
                    if byte == separator || byte == 0x0A || byte == 0x0D || byte == 0x22 { break }
                    end += 1
                }
                if end > index {
                    let run = UnsafeBufferPointer(rebasing: bytes[index..<end])
                    if field.isEmpty && !fieldStarted && end < count && bytes[end] == separator {
                        try endField(run)
                        index = end + 1
                        continue
                    }
                    guard field.count + run.count <= limits.maximumFieldLength else {
                        throw PrivacyError(.invalidValue, "line \(line): a field is longer than \(limits.maximumFieldLength) bytes")
                    }
                    field.append(contentsOf: run)
                    fieldStarted = true
                    index = end
                    continue
                }
            }
            let byte = bytes[index]
            index += 1
            if quotePending {
                quotePending = false
                if byte == 0x22 {
                    field.append(0x22)
                    continue
                }
                quoted = false
            }
            if quoted {
                if byte == 0x22 {
                    quotePending = true
                } else {
                    if byte == 0x0A { line += 1 }
                    field.append(byte)
                }
            } else if byte == 0x22 && !fieldStarted && field.isEmpty {
                quoted = true
                fieldStarted = true
            } else if byte == separator {
                try endField()
            } else if byte == 0x0A {
                try endRecord(header: header, rows: rows)
                line += 1
            } else if byte == 0x0D {
                // CR of CRLF: the LF ends the record.
            } else {
                field.append(byte)
                fieldStarted = true
            }
        }
    }

    /// The end of the input: the last record, then the last chunk.
    mutating func finish(header: ([String]) throws -> Void, rows: (_ chunk: [[String]], _ firstRow: Int) throws -> Void) throws {
        if quotePending { quoted = false }
        guard !quoted else { throw PrivacyError(.invalidValue, "line \(line): a quoted field is not closed") }
        if !field.isEmpty || !record.isEmpty { try endRecord(header: header, rows: rows) }
        guard columns != nil else { throw PrivacyError(.invalidValue, "the CSV has no header row") }
        try flush(rows: rows)
    }
}
