import Dispatch

/// A released table kept as codes over the table it was made from: which records stay, each
/// quasi-identifier's label per record, and the sensitive and kept columns passed through. Rows
/// are produced one at a time, so a large release is written out without being held as strings.
public struct AnonymizedColumns: Sendable {
    /// The released columns: the quasi-identifiers, then the sensitive column, then the kept columns.
    public let columns: [String]
    public internal(set) var report: AnonymizationReport
    let source: ColumnarTable
    let keep: [Bool]
    /// Per quasi-identifier: a code per record, the label each code is released as, and label → text.
    let codeOfRow: [[UInt32]]
    let labelOfCode: [[UInt32]]
    let labelTexts: [[String]]
    /// Positions in `source` of the columns after the quasi-identifiers.
    let passThrough: [Int]

    /// Records released.
    public var count: Int { report.released }

    /// Calls `body` with each released record's position in the source table and its values, in
    /// the source's order.
    public func forEachRow(_ body: (_ source: Int, _ values: [String]) throws -> Void) rethrows {
        var out = [String](repeating: "", count: columns.count)
        let q = codeOfRow.count
        for r in 0..<source.rowCount where keep[r] {
            for column in 0..<q { out[column] = labelTexts[column][Int(labelOfCode[column][Int(codeOfRow[column][r])])] }
            for (offset, column) in passThrough.enumerated() { out[q + offset] = source.value(row: r, column: column) }
            try body(r, out)
        }
    }

    /// Appends every released record to `writer`, in the source's order: the same bytes as
    /// appending each row ``forEachRow(_:)`` gives, with each distinct value written once.
    public func write(to writer: inout CSVWriter) {
        let q = codeOfRow.count
        // Each column's fields on a core of its own, then the records on both.
        let texts = labelTexts + passThrough.map { source.values[$0] }
        let fields = FieldsMade(count: texts.count)
        defer { fields.free() }
        let maker = writer
        DispatchQueue.concurrentPerform(iterations: texts.count) { column in
            fields.values[column] = maker.fields(texts[column])
        }
        let rows = (0..<source.rowCount).filter { keep[$0] }
        let width = columns.count
        writer.append(records: rows.count, of: Array(fields.values)) { [self] block, codes in
            // Column by column, each column's arrays taken once per block.
            for column in 0..<q {
                let labels = labelOfCode[column], rowCodes = codeOfRow[column]
                for (i, record) in block.enumerated() { codes[i * width + column] = Int(labels[Int(rowCodes[rows[record]])]) }
            }
            for (offset, column) in passThrough.enumerated() {
                let rowCodes = source.codes[column]
                for (i, record) in block.enumerated() { codes[i * width + q + offset] = Int(rowCodes[rows[record]]) }
            }
        }
    }

    /// Each column's fields, made on several cores.
    private struct FieldsMade: @unchecked Sendable {
        let values: UnsafeMutableBufferPointer<CSVWriter.Fields>
        init(count: Int) {
            values = .allocate(capacity: count)
            values.initialize(repeating: CSVWriter.Fields(bytes: [], starts: [0]))
        }
        func free() {
            values.deinitialize()
            values.deallocate()
        }
    }

    /// The released records as rows of strings.
    public var table: CSVTable {
        var rows: [[String]] = []
        rows.reserveCapacity(count)
        forEachRow { _, values in rows.append(values) }
        return CSVTable(columns: columns, rows: rows)
    }
}

/// Builds the released table from a chosen generalization: quasi-identifiers
/// replaced by their labels, suppressed records removed entirely, the
/// sensitive column and any kept columns passed through, everything else dropped.
enum Release {
    static func build(table: ColumnarTable, encoded: EncodedTable, evaluator: ClassEvaluator, levels: [Int],
                      requirements: AnonymityRequirements, keepColumns: [String]) throws -> AnonymizedColumns {
        _ = try evaluator.evaluate(levels: levels, fromCells: true)
        var classOfRow = [Int32](repeating: 0, count: table.rowCount)
        var keep = [Bool](repeating: false, count: table.rowCount)
        for r in 0..<table.rowCount {
            let id = evaluator.classOfCell[Int(encoded.cellOfRow[r])]
            classOfRow[r] = id
            keep[r] = evaluator.kept[Int(id)]
        }
        let summary = try SubjectProtection(requirements: requirements).enforce(table: table, encoded: encoded, classOfRow: classOfRow, keep: &keep)
        // Each record's leaf, released as its label at the chosen level.
        return try columns(table: table, encoded: encoded, keep: keep, codeOfRow: encoded.leafOfRow,
                           labelOfCode: encoded.codes.enumerated().map { q, byLevel in byLevel[levels[q]] },
                           labelTexts: encoded.labels.enumerated().map { q, byLevel in byLevel[levels[q]] },
                           requirements: requirements, keepColumns: keepColumns, report: report(summary, requirements: requirements))
    }

    /// The released table: per kept record, each quasi-identifier's label, then the sensitive and kept columns.
    static func columns(table: ColumnarTable, encoded: EncodedTable, keep: [Bool], codeOfRow: [[UInt32]], labelOfCode: [[UInt32]], labelTexts: [[String]],
                        requirements: AnonymityRequirements, keepColumns: [String], report: AnonymizationReport) throws -> AnonymizedColumns {
        var columns = encoded.quasiIdentifiers.map(\.column)
        var passThrough: [Int] = []
        if let sensitive = requirements.sensitive, let index = encoded.sensitiveIndex {
            columns.append(sensitive)
            passThrough.append(index)
        }
        for name in keepColumns where !columns.contains(name) {
            let index = try table.index(of: name)
            columns.append(name)
            passThrough.append(index)
        }
        return AnonymizedColumns(columns: columns, report: report, source: table, keep: keep, codeOfRow: codeOfRow,
                                 labelOfCode: labelOfCode, labelTexts: labelTexts, passThrough: passThrough)
    }

    static func report(_ summary: SubjectProtection.Summary, requirements: AnonymityRequirements) -> AnonymizationReport {
        var histogram: [Int: Int] = [:]
        for size in summary.classSubjects { histogram[size, default: 0] += 1 }
        let smallest = summary.classSubjects.min() ?? 0
        let diversity = requirements.diversity.map { d -> String in
            switch d {
            case .distinct(let l): "distinct l=\(l)"
            case .entropy(let l): "entropy l=\(l)"
            }
        }
        return AnonymizationReport(
            algorithm: "", k: requirements.k, diversity: diversity, subjectColumn: requirements.subject,
            records: summary.records, released: summary.recordsReleased, suppressed: summary.records - summary.recordsReleased,
            subjects: summary.subjects, subjectsReleased: summary.subjectsReleased, subjectsSuppressed: summary.subjectsSuppressed,
            kAchieved: smallest, levels: [:], partitions: 0, classes: summary.classSubjects.count,
            classSizeHistogram: histogram, loss: 0,
            maximumProsecutorRisk: smallest > 0 ? 1 / Double(smallest) : 0,
            averageProsecutorRisk: summary.classSubjects.isEmpty ? 0 : Double(summary.classSubjects.count) / Double(summary.classSubjects.reduce(0, +)),
            nodesChecked: 0, latticeSize: 0)
    }
}
