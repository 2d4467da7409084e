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
    private var index: [[String: UInt32]]
    /// Set once values were transformed or the look-up dropped: no more records may be appended.
    private var closed = false

    public init(columns: [String]) {
        self.columns = columns
        codes = Array(repeating: [], count: columns.count)
        values = Array(repeating: [], count: columns.count)
        index = Array(repeating: [:], count: columns.count)
    }

    /// The named columns of a table of rows (all of them when `columns` is nil).
    public init(_ table: CSVTable, columns: [String]? = nil) throws {
        let names = columns ?? table.columns
        let positions = try names.map { try table.index(of: $0) }
        self.init(columns: names)
        reserveCapacity(table.rows.count)
        for row in table.rows { append(positions.map { row[$0] }) }
    }

    public mutating func reserveCapacity(_ records: Int) {
        for c in codes.indices { codes[c].reserveCapacity(records) }
    }

    /// Appends one record; `record` holds one value per column, in column order.
    public mutating func append(_ record: [String]) {
        precondition(!closed && record.count == columns.count, "a record appended to a closed table, or of the wrong width")
        for (c, value) in record.enumerated() {
            if let code = index[c][value] {
                codes[c].append(code)
            } else {
                let code = UInt32(values[c].count)
                index[c][value] = code
                values[c].append(value)
                codes[c].append(code)
            }
        }
        rowCount += 1
    }

    /// Drops the look-up kept for appending (about as large as the distinct values); the table
    /// takes no more records.
    public mutating func finishAppending() {
        index = Array(repeating: [:], count: columns.count)
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
    }

    /// Keeps only the records at the given positions, in order.
    public func rows(_ positions: [Int]) -> CSVTable {
        CSVTable(columns: columns, rows: positions.map { r in columns.indices.map { value(row: r, column: $0) } })
    }

    /// The whole table as rows of strings.
    public var table: CSVTable { rows(Array(0..<rowCount)) }
}
