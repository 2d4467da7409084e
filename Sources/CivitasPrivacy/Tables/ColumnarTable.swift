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

    public init(columns: [String]) {
        self.columns = columns
        codes = Array(repeating: [], count: columns.count)
        values = Array(repeating: [], count: columns.count)
        index = Array(repeating: ValueIndex(), count: columns.count)
        hasDistinctValues = Array(repeating: true, count: columns.count)
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

    /// Appends the records of `rows` that `keep` marks, in order: column `c` takes `row[positions[c]]`
    /// (an empty value when the position is nil or past the row's end). Columns are filled on
    /// both cores, each column by one of them, so the outcome is that of appending one by one.
    public mutating func append(rows: [[String]], positions: [Int?], keep: [Bool]) {
        precondition(!closed && positions.count == columns.count && keep.count == rows.count, "records appended to a closed table, or of the wrong width")
        let added = keep.lazy.filter { $0 }.count
        guard added > 0 else { return }
        let width = columns.count
        codes.withUnsafeMutableBufferPointer { codes in
            values.withUnsafeMutableBufferPointer { values in
                index.withUnsafeMutableBufferPointer { index in
                    // Each worker touches only the columns it owns.
                    let columns = ColumnBuffers(codes: codes, values: values, index: index)
                    DispatchQueue.concurrentPerform(iterations: min(2, width)) { part in
                        for c in stride(from: part, to: width, by: 2) {
                            let position = positions[c]
                            for (r, row) in rows.enumerated() where keep[r] {
                                let value = position.map { $0 < row.count ? row[$0] : "" } ?? ""
                                columns.codes[c].append(columns.index[c].code(of: value, in: &columns.values[c]))
                            }
                        }
                    }
                }
            }
        }
        rowCount += added
    }

    /// Drops the look-up kept for appending (about as large as the distinct values); the table
    /// takes no more records.
    public mutating func finishAppending() {
        index = Array(repeating: ValueIndex(), count: columns.count)
        closed = true
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

    /// Keeps only the records at the given positions, in order.
    public func rows(_ positions: [Int]) -> CSVTable {
        CSVTable(columns: columns, rows: positions.map { r in columns.indices.map { value(row: r, column: $0) } })
    }

    /// The whole table as rows of strings.
    public var table: CSVTable { rows(Array(0..<rowCount)) }
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
