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

    /// Parses CSV bytes. Rows must have as many fields as the header; errors name the line.
    /// The UTF-8 byte-order mark spreadsheet tools write first; skipped when reading.
    public static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    public static func parse(_ input: [UInt8], delimiter: UInt8? = nil, limits: Limits = Limits()) throws -> CSVTable {
        let bytes = input.starts(with: byteOrderMark) ? Array(input.dropFirst(byteOrderMark.count)) : input
        let separator = delimiter ?? detectDelimiter(bytes)
        var records: [[String]] = []
        var record: [String] = []
        var field: [UInt8] = []
        var quoted = false
        var index = 0
        var line = 1
        var fieldStarted = false
        func endField() throws {
            guard field.count <= limits.maximumFieldLength else {
                throw PrivacyError(.invalidValue, "line \(line): a field is longer than \(limits.maximumFieldLength) bytes")
            }
            guard let text = String(validating: field, as: UTF8.self) else {
                throw PrivacyError(.invalidValue, "line \(line): a field is not valid UTF-8")
            }
            record.append(text)
            field.removeAll(keepingCapacity: true)
            fieldStarted = false
            guard record.count <= limits.maximumColumns else {
                throw PrivacyError(.invalidValue, "line \(line): more than \(limits.maximumColumns) fields")
            }
        }
        func endRecord() throws {
            try endField()
            if !(record.count == 1 && record[0].isEmpty) { records.append(record) }
            record = []
            guard records.count <= limits.maximumRows + 1 else {
                throw PrivacyError(.invalidValue, "more than \(limits.maximumRows) rows")
            }
        }
        while index < bytes.count {
            let byte = bytes[index]
            if quoted {
                if byte == 0x22 {
                    if index + 1 < bytes.count && bytes[index + 1] == 0x22 {
                        field.append(0x22)
                        index += 1
                    } else {
                        quoted = false
                    }
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
                try endRecord()
                line += 1
            } else if byte == 0x0D {
                // CR of CRLF: the LF ends the record.
            } else {
                field.append(byte)
                fieldStarted = true
            }
            index += 1
        }
        guard !quoted else { throw PrivacyError(.invalidValue, "line \(line): a quoted field is not closed") }
        if !field.isEmpty || !record.isEmpty { try endRecord() }
        guard let header = records.first else { throw PrivacyError(.invalidValue, "the CSV has no header row") }
        guard Set(header).count == header.count else {
            throw PrivacyError(.invalidValue, "the header names a column twice")
        }
        for (number, row) in records.enumerated().dropFirst() where row.count != header.count {
            throw PrivacyError(.invalidValue, "row \(number): \(row.count) fields, the header has \(header.count)")
        }
        return CSVTable(columns: header, rows: Array(records.dropFirst()))
    }

    /// The table as CSV with the given delimiter, quoting fields that need it.
    public func csv(delimiter: UInt8 = 0x2C) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(rows.count * columns.count * 12)
        func write(_ text: String) {
            let needsQuotes = text.utf8.contains { $0 == delimiter || $0 == 0x22 || $0 == 0x0A || $0 == 0x0D }
            if needsQuotes {
                out.append(0x22)
                for byte in text.utf8 {
                    if byte == 0x22 { out.append(0x22) }
                    out.append(byte)
                }
                out.append(0x22)
            } else {
                out.append(contentsOf: text.utf8)
            }
        }
        for row in [columns] + rows {
            for (i, cell) in row.enumerated() {
                if i > 0 { out.append(delimiter) }
                write(cell)
            }
            out.append(0x0A)
        }
        return out
    }
}
