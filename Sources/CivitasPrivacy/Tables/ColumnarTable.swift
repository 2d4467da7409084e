import CivitasModel
import Dispatch

/// A table held column by column: each column keeps every distinct value once and a code per
/// record, in order of first appearance. Records are appended one at a time, so a table far
/// larger than any one batch is built without holding rows of strings; the privacy engine reads
/// the codes directly.
public struct ColumnarTable: Sendable {
    public let columns: [String]
    public private(set) var rowCount = 0
    /// Per column: the code of every record.
    public private(set) var codes: [[UInt32]]
    /// Per column: code → value.
    public private(set) var values: [[String]]
    private var index: [ValueIndex]
    /// Per column: whether its values are still pairwise distinct (a transform may have merged some).
    public private(set) var hasDistinctValues: [Bool]
    /// Set once values were transformed or the look-up dropped: no more records may be appended.
    private var closed = false
    /// Per column: whether records left out may have added values no record kept holds.
    private var mayHoldUnusedValues: [Bool]

    public init(columns: [String]) {
        self.columns = columns
        codes = Array(repeating: [], count: columns.count)
        values = Array(repeating: [], count: columns.count)
        index = Array(repeating: ValueIndex(), count: columns.count)
        hasDistinctValues = Array(repeating: true, count: columns.count)
        mayHoldUnusedValues = Array(repeating: false, count: columns.count)
    }

    /// The named columns of a table of rows (all of them when `columns` is nil).
    public init(_ table: CSVTable, columns: [String]? = nil) throws {
        let names = columns ?? table.columns
        let positions = try names.map { try table.index(of: $0) }
        self.init(columns: names)
        reserveCapacity(table.rows.count)
        for row in table.rows { append(positions.map { row[$0] }) }
    }

    /// The records grouped by their value of `column` (a counting sort over its codes): record
    /// numbers in `ordered`, the group of code c at `starts[c]..<starts[c + 1]`.
    func recordsGrouped(by column: Int) -> (ordered: [Int32], starts: [Int]) {
        recordsGroupedByCode(codes[column], codeCount: values[column].count)
    }

    public mutating func reserveCapacity(_ records: Int) {
        for c in codes.indices { codes[c].reserveCapacity(records) }
    }

    /// Appends one record; `record` holds one value per column, in column order.
    public mutating func append(_ record: [String]) {
        precondition(!closed && record.count == columns.count, "a record appended to a closed table, or of the wrong width")
        for (c, value) in record.enumerated() {
            codes[c].append(index[c].code(of: value, in: &values[c]))
        }
        rowCount += 1
    }

    /// ``append(_:positions:subject:announce:admit:)`` without announcing new subjects.
    public mutating func append(_ chunk: RecordChunk, positions: [Int?], subject: Int?,
                                admit: (_ code: Int, _ newValue: String?) throws -> Bool) rethrows {
        try append(chunk, positions: positions, subject: subject, announce: { _ in }, admit: admit)
    }

    /// Appends the records of `chunk` that `admit` lets in, in order: column `c` takes value
    /// `positions[c]` of the record (an empty value when the position is nil or past the row's
    /// end). With `subject`, each record's value of that column is coded first and `admit` is
    /// asked with its code and, the first time a code is seen, its value; without, every record is
    /// let in. Before `admit` is first asked about a chunk, `announce` is given the chunk's new
    /// subject values in code order (all at once, so that they can be judged together). The other
    /// columns are filled on all cores, each column by one of them, so the outcome is that of
    /// appending one by one.
    public mutating func append(_ chunk: RecordChunk, positions: [Int?], subject: Int?,
                                announce: (_ newValues: ArraySlice<String>) throws -> Void,
                                admit: (_ code: Int, _ newValue: String?) throws -> Bool) rethrows {
        precondition(!closed && positions.count == columns.count, "records appended to a closed table, or of the wrong width")
        let width = columns.count
        try chunk.withValues { records in
            var kept: [Int32] = []
            kept.reserveCapacity(records.rowCount)
            if let subject {
                let position = positions[subject]
                var chunkCodes: [UInt32] = []
                chunkCodes.reserveCapacity(records.rowCount)
                // New values get the next codes in the order their first records come.
                var nextNew = values[subject].count
                index[subject].appendCodes(count: records.rowCount, of: { records.bytes(row: $0, position: position) },
                                           in: &values[subject], to: &chunkCodes)
                try announce(values[subject][nextNew...])
                for (row, code) in chunkCodes.enumerated() {
                    let isNew = Int(code) == nextNew
                    if isNew { nextNew += 1 }
                    if try admit(Int(code), isNew ? values[subject][Int(code)] : nil) {
                        codes[subject].append(code)
                        kept.append(Int32(row))
                    } else {
                        // A value only records left out hold is dropped when appending ends.
                        mayHoldUnusedValues[subject] = true
                    }
                }
            } else {
                kept = (0..<Int32(records.rowCount)).map { $0 }
            }
            guard !kept.isEmpty else { return }
            codes.withUnsafeMutableBufferPointer { codes in
                values.withUnsafeMutableBufferPointer { values in
                    index.withUnsafeMutableBufferPointer { index in
                        kept.withUnsafeBufferPointer { kept in
                            // Each worker touches only the columns it owns.
                            let columns = ColumnBuffers(codes: codes, values: values, index: index)
                            let keptRows = KeptRows(rows: kept)
                            // One column per task, taken by whichever core is free, the columns with
                            // the most values (the slowest to look up) first.
                            let order = (0..<width).filter { $0 != subject }.sorted { (-columns.values[$0].count, $0) < (-columns.values[$1].count, $1) }
                            DispatchQueue.concurrentPerform(iterations: order.count) { task in
                                let c = order[task]
                                let position = positions[c]
                                columns.index[c].appendCodes(count: keptRows.rows.count, of: { records.bytes(row: Int(keptRows.rows[$0]), position: position) },
                                                             in: &columns.values[c], to: &columns.codes[c])
                            }
                        }
                    }
                }
            }
            rowCount += kept.count
        }
    }

    /// Drops the look-up kept for appending (about as large as the distinct values), and the
    /// values that only records left out held; the table takes no more records.
    public mutating func finishAppending() {
        index = Array(repeating: ValueIndex(), count: columns.count)
        closed = true
        for c in columns.indices where mayHoldUnusedValues[c] {
            mayHoldUnusedValues[c] = false
            // Codes renumbered in the order of the values kept, which is their order of first appearance among the records kept.
            var renumbered = [UInt32](repeating: UInt32.max, count: values[c].count)
            for code in codes[c] { renumbered[Int(code)] = 0 }
            var kept: [String] = []
            for (code, value) in values[c].enumerated() where renumbered[code] == 0 {
                renumbered[code] = UInt32(kept.count)
                kept.append(value)
            }
            guard kept.count < values[c].count else { continue }
            values[c] = kept
            codes[c] = codes[c].map { renumbered[Int($0)] }
        }
    }

    /// The position of a column, or an error naming it and listing the columns.
    public func index(of column: String) throws -> Int {
        guard let index = columns.firstIndex(of: column) else {
            throw PrivacyError(.invalidParameter, "unknown column '\(column.prefix(80))' (columns: \(columns.joined(separator: ", ").prefix(300)))")
        }
        return index
    }

    public func value(row: Int, column: Int) -> String {
        values[column][Int(codes[column][row])]
    }

    /// Replaces every distinct value of a column (one call per value, not per record); codes stay,
    /// so values that `transform` maps to the same text keep distinct codes. Closes the table.
    public mutating func transformValues(ofColumn column: Int, _ transform: (String) throws -> String) rethrows {
        finishAppending()
        values[column] = try values[column].map(transform)
        hasDistinctValues[column] = false
    }

    /// ``transformValues(ofColumn:_:)`` with the values split between both cores; the first
    /// value's error in code order is the one thrown.
    public mutating func transformValuesConcurrently(ofColumn column: Int, _ transform: @Sendable (String) throws -> String) throws {
        finishAppending()
        let source = values[column]
        let parts = source.count >= Self.concurrentTransformFrom ? 2 : 1
        let halves = (0..<parts).map { _ in TransformedHalf() }
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let range = (source.count * part / parts)..<(source.count * (part + 1) / parts)
            halves[part].result = Result { try source[range].map(transform) }
        }
        var transformed: [String] = []
        transformed.reserveCapacity(source.count)
        for half in halves { transformed += try half.result.get() }
        values[column] = transformed
        hasDistinctValues[column] = false
    }

    /// Values from which ``transformValuesConcurrently(ofColumn:_:)`` uses both cores.
    static let concurrentTransformFrom = 4_096

    /// Keeps only the records at the given positions, in order.
    public func rows(_ positions: [Int]) -> CSVTable {
        CSVTable(columns: columns, rows: positions.map { r in columns.indices.map { value(row: r, column: $0) } })
    }

    /// The whole table as rows of strings.
    public var table: CSVTable { rows(Array(0..<rowCount)) }
}

/// One half of a column's values transformed, handed back by the core that made it.
private final class TransformedHalf: @unchecked Sendable {
    var result: Result<[String], any Error> = .success([])
}

/// The records of a chunk kept, read by both workers.
private struct KeptRows: @unchecked Sendable {
    let rows: UnsafeBufferPointer<Int32>
}

/// The per-column storage of a table, shared by workers that each fill their own columns.
private struct ColumnBuffers: @unchecked Sendable {
    let codes: UnsafeMutableBufferPointer<[UInt32]>
    let values: UnsafeMutableBufferPointer<[String]>
    let index: UnsafeMutableBufferPointer<ValueIndex>
}

/// Records grouped by a code below `codeCount` (a counting sort): record numbers in `ordered`, in
/// their order within each group, the group of code c at `starts[c]..<starts[c + 1]`.
func recordsGroupedByCode(_ codes: [UInt32], codeCount: Int) -> (ordered: [Int32], starts: [Int]) {
    var starts = [Int](repeating: 0, count: codeCount + 1)
    for code in codes { starts[Int(code) + 1] += 1 }
    for s in 1..<starts.count { starts[s] += starts[s - 1] }
    var next = starts
    var ordered = [Int32](repeating: 0, count: codes.count)
    for (r, code) in codes.enumerated() {
        ordered[next[Int(code)]] = Int32(r)
        next[Int(code)] += 1
    }
    return (ordered, starts)
}
