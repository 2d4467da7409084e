/// Builds the released table from a chosen generalization: quasi-identifiers
/// replaced by their labels, suppressed records removed entirely, the
/// sensitive column and any kept columns passed through, everything else dropped.
enum Release {
    static func build(table: CSVTable, encoded: EncodedTable, evaluator: ClassEvaluator, levels: [Int],
                      requirements: AnonymityRequirements, keepColumns: [String]) throws -> AnonymizedTable {
        _ = try evaluator.evaluate(levels: levels, fromCells: true)
        var classOfRow = [Int32](repeating: 0, count: table.rows.count)
        var keep = [Bool](repeating: false, count: table.rows.count)
        for r in 0..<table.rows.count {
            let slot = evaluator.slotOfCell[Int(encoded.cellOfRow[r])]
            classOfRow[r] = slot
            keep[r] = evaluator.kept[Int(slot)]
        }
        let summary = try SubjectProtection(requirements: requirements).enforce(table: table, encoded: encoded, classOfRow: classOfRow, keep: &keep)
        let released = try rows(table: table, encoded: encoded, keep: keep, requirements: requirements, keepColumns: keepColumns) { q, r in
            let leaf = Int(encoded.leafOfRow[q][r])
            return encoded.labels[q][levels[q]][Int(encoded.codes[q][levels[q]][leaf])]
        }
        return AnonymizedTable(table: released, report: report(summary, requirements: requirements))
    }

    /// The released table: per kept record, each quasi-identifier's label, then the sensitive and kept columns.
    static func rows(table: CSVTable, encoded: EncodedTable, keep: [Bool], requirements: AnonymityRequirements, keepColumns: [String],
                     label: (_ column: Int, _ row: Int) -> String) throws -> CSVTable {
        let keptIndexes = try keepColumns.map { try table.index(of: $0) }
        var columns = encoded.quasiIdentifiers.map(\.column)
        if let sensitive = requirements.sensitive { columns.append(sensitive) }
        columns += keepColumns.filter { !columns.contains($0) }
        var rows: [[String]] = []
        rows.reserveCapacity(table.rows.count)
        for (r, row) in table.rows.enumerated() where keep[r] {
            var out: [String] = []
            out.reserveCapacity(columns.count)
            for q in 0..<encoded.quasiIdentifiers.count { out.append(label(q, r)) }
            if let index = encoded.sensitiveIndex { out.append(row[index]) }
            for index in keptIndexes where !encoded.columnIndexes.contains(index) && index != encoded.sensitiveIndex {
                out.append(row[index])
            }
            rows.append(out)
        }
        return CSVTable(columns: columns, rows: rows)
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
