/// Builds the released table from a chosen generalization: quasi-identifiers
/// replaced by their labels, suppressed records removed entirely, the
/// sensitive column and any kept columns passed through, everything else dropped.
enum Release {
    static func build(table: CSVTable, encoded: EncodedTable, evaluator: ClassEvaluator, levels: [Int],
                      requirements: AnonymityRequirements, keepColumns: [String]) throws -> AnonymizedTable {
        _ = try evaluator.evaluate(levels: levels, fromCells: true)
        let keptIndexes = try keepColumns.map { try table.index(of: $0) }
        var columns = encoded.quasiIdentifiers.map(\.column)
        if let sensitive = requirements.sensitive { columns.append(sensitive) }
        columns += keepColumns.filter { !columns.contains($0) }
        var rows: [[String]] = []
        rows.reserveCapacity(table.rows.count)
        var classSizes: [Int32: Int] = [:]
        for (r, row) in table.rows.enumerated() {
            let slot = evaluator.slotOfCell[Int(encoded.cellOfRow[r])]
            guard evaluator.kept[Int(slot)] else { continue }
            classSizes[slot, default: 0] += 1
            var out: [String] = []
            out.reserveCapacity(columns.count)
            for (q, level) in levels.enumerated() {
                let leaf = Int(encoded.leafOfRow[q][r])
                out.append(encoded.labels[q][level][Int(encoded.codes[q][level][leaf])])
            }
            if let index = encoded.sensitiveIndex { out.append(row[index]) }
            for index in keptIndexes where !encoded.columnIndexes.contains(index) && index != encoded.sensitiveIndex {
                out.append(row[index])
            }
            rows.append(out)
        }
        return AnonymizedTable(table: CSVTable(columns: columns, rows: rows),
                               report: report(records: table.rows.count, classSizes: Array(classSizes.values), requirements: requirements))
    }

    static func report(records: Int, classSizes: [Int], requirements: AnonymityRequirements) -> AnonymizationReport {
        let released = classSizes.reduce(0, +)
        var histogram: [Int: Int] = [:]
        for size in classSizes { histogram[size, default: 0] += 1 }
        let smallest = classSizes.min() ?? 0
        let diversity = requirements.diversity.map { d -> String in
            switch d {
            case .distinct(let l): "distinct l=\(l)"
            case .entropy(let l): "entropy l=\(l)"
            }
        }
        return AnonymizationReport(
            algorithm: "", k: requirements.k, diversity: diversity, records: records, released: released,
            suppressed: records - released, levels: [:], partitions: 0, classes: classSizes.count,
            classSizeHistogram: histogram, loss: 0,
            maximumProsecutorRisk: smallest > 0 ? 1 / Double(smallest) : 0,
            averageProsecutorRisk: released > 0 ? Double(classSizes.count) / Double(released) : 0,
            nodesChecked: 0, latticeSize: 0)
    }
}
