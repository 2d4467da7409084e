/// A chunk of records as the store hands them over: the column names, and every value's UTF-8
/// bytes in one buffer with where each value starts and ends, row after row. Values are read in
/// place, without a string per value; a row may hold fewer values than there are columns.
public struct RecordChunk: Sendable {
    public let columns: [String]
    /// The values' bytes (possibly with other bytes between them).
    public let bytes: [UInt8]
    /// Per value, row after row: its start and its end in `bytes` (two entries per value).
    public let valueBounds: [Int]
    /// Per row: the number of its first value; the last entry is the number of values.
    public let rowStarts: [Int]

    public var rowCount: Int { rowStarts.count - 1 }

    /// Values already laid out, each valid UTF-8 (as ``init(columns:rows:)`` and the store's
    /// reading make them); bounds outside `bytes` or rows out of order are a programming error.
    public init(columns: [String], bytes: [UInt8], valueBounds: [Int], rowStarts: [Int]) {
        precondition(rowStarts.first == 0 && rowStarts.last.map { $0 * 2 == valueBounds.count } == true
                     && zip(rowStarts, rowStarts.dropFirst()).allSatisfy { $0 <= $1 }
                     && stride(from: 0, to: valueBounds.count, by: 2).allSatisfy { 0 <= valueBounds[$0] && valueBounds[$0] <= valueBounds[$0 + 1] && valueBounds[$0 + 1] <= bytes.count },
                     "a chunk's rows and values do not lie within its bytes")
        self.columns = columns
        self.bytes = bytes
        self.valueBounds = valueBounds
        self.rowStarts = rowStarts
    }

    /// The records of rows of strings.
    public init(columns: [String], rows: [[String]]) {
        var bytes: [UInt8] = [], bounds: [Int] = [], starts = [0]
        bounds.reserveCapacity(rows.reduce(0) { $0 + $1.count } * 2)
        for row in rows {
            for value in row {
                bounds.append(bytes.count)
                bytes.append(contentsOf: value.utf8)
                bounds.append(bytes.count)
            }
            starts.append(bounds.count / 2)
        }
        self.init(columns: columns, bytes: bytes, valueBounds: bounds, rowStarts: starts)
    }

    /// Value `position` of row `row` as a string ("" when the row holds fewer values).
    public func value(row: Int, position: Int) -> String {
        let value = rowStarts[row] + position
        guard position >= 0, value < rowStarts[row + 1] else { return "" }
        return String(decoding: bytes[valueBounds[2 * value]..<valueBounds[2 * value + 1]], as: UTF8.self)
    }

    /// The records as rows of strings.
    public var rows: [[String]] {
        (0..<rowCount).map { row in (0..<(rowStarts[row + 1] - rowStarts[row])).map { value(row: row, position: $0) } }
    }

    /// Calls `body` with a view that reads values in place, valid only during the call.
    public func withValues<T>(_ body: (Values) throws -> T) rethrows -> T {
        try bytes.withUnsafeBytes { bytes in
            try valueBounds.withUnsafeBufferPointer { bounds in
                try rowStarts.withUnsafeBufferPointer { starts in
                    try body(Values(bytes: bytes, bounds: bounds, starts: starts))
                }
            }
        }
    }

    /// A chunk's values read in place (valid while ``withValues(_:)`` runs; may be read from several threads).
    public struct Values: @unchecked Sendable {
        let bytes: UnsafeRawBufferPointer
        let bounds: UnsafeBufferPointer<Int>
        let starts: UnsafeBufferPointer<Int>

        public var rowCount: Int { starts.count - 1 }

        /// The bytes of value `position` of row `row`; empty when the position is nil or past the row's end.
        @inline(__always)
        public func bytes(row: Int, position: Int?) -> UnsafeRawBufferPointer {
            guard let position else { return UnsafeRawBufferPointer(start: nil, count: 0) }
            let value = starts[row] &+ position
            guard value < starts[row &+ 1] else { return UnsafeRawBufferPointer(start: nil, count: 0) }
            return UnsafeRawBufferPointer(rebasing: bytes[bounds[2 &* value]..<bounds[2 &* value &+ 1]])
        }
    }
}
