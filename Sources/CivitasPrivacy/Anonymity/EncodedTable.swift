/// A table's quasi-identifiers encoded for fast search: every value becomes a
/// leaf code, every label at every level a dense code; records with the same
/// leaf codes and sensitive value are merged into weighted cells. Each cell also
/// counts the distinct subjects it holds, and subjects whose records fall into
/// several cells are listed, so that classes can be measured in people.
struct EncodedTable {
    let quasiIdentifiers: [QuasiIdentifier]
    let columnIndexes: [Int]
    let sensitiveIndex: Int?
    let rowCount: Int
    /// Per QI: the leaf code of every row.
    let leafOfRow: [[UInt32]]
    /// Per QI, per level: leaf code → label code.
    let codes: [[[UInt32]]]
    /// Per QI, per level: label code → label text.
    let labels: [[[String]]]
    /// Per row: sensitive value code (0 when there is no sensitive column).
    let sensitiveOfRow: [UInt32]
    let sensitiveValues: [String]
    /// Merged records: leaf codes (flattened, `quasiIdentifiers.count` per cell), sensitive code, weight.
    let cellLeaves: [UInt32]
    let cellSensitive: [UInt32]
    let cellCount: [Int32]
    /// Per row: the cell it was merged into.
    let cellOfRow: [Int32]
    /// Per row: the subject code (the row number when there is no subject column).
    let subjectOfRow: [UInt32]
    /// Number of distinct subjects.
    let subjectCount: Int
    /// Per cell: distinct subjects with a record in it (equal to `cellCount` without a subject column).
    let cellSubjects: [Int32]
    /// The cells of every subject whose records fall into more than one cell, one list per subject.
    let spanningSubjects: [[Int32]]

    var heights: [Int] { quasiIdentifiers.map(\.hierarchy.height) }

    init(table: CSVTable, quasiIdentifiers: [QuasiIdentifier], sensitive: String?, subject: String? = nil) throws {
        guard !quasiIdentifiers.isEmpty else { throw PrivacyError(.invalidParameter, "at least one quasi-identifier is needed") }
        guard Set(quasiIdentifiers.map(\.column)).count == quasiIdentifiers.count else {
            throw PrivacyError(.invalidParameter, "a quasi-identifier is named twice")
        }
        self.quasiIdentifiers = quasiIdentifiers
        columnIndexes = try quasiIdentifiers.map { try table.index(of: $0.column) }
        sensitiveIndex = try sensitive.map { try table.index(of: $0) }
        if let sensitive, quasiIdentifiers.contains(where: { $0.column == sensitive }) {
            throw PrivacyError(.invalidParameter, "column '\(sensitive)' cannot be both quasi-identifying and sensitive")
        }
        rowCount = table.rows.count
        let q = quasiIdentifiers.count
        var leafOfRow = [[UInt32]](repeating: [UInt32](repeating: 0, count: table.rows.count), count: q)
        var leafIndex = [[String: UInt32]](repeating: [:], count: q)
        var codes = quasiIdentifiers.map { [[UInt32]](repeating: [], count: $0.hierarchy.height) }
        var labels = quasiIdentifiers.map { [[String]](repeating: [], count: $0.hierarchy.height) }
        var labelIndex = quasiIdentifiers.map { [[String: UInt32]](repeating: [:], count: $0.hierarchy.height) }
        let columnIndexes = self.columnIndexes
        for (r, row) in table.rows.enumerated() {
            for column in 0..<q {
                let value = row[columnIndexes[column]]
                if let existing = leafIndex[column][value] {
                    leafOfRow[column][r] = existing
                    continue
                }
                let qi = quasiIdentifiers[column]
                let chain: [String]
                do { chain = try qi.hierarchy.labels(for: value) } catch let error as PrivacyError {
                    throw PrivacyError(.invalidValue, "row \(r + 1), column '\(qi.column)': \(error.message)")
                }
                let leaf = UInt32(leafIndex[column].count)
                leafIndex[column][value] = leaf
                leafOfRow[column][r] = leaf
                for level in 0..<qi.hierarchy.height {
                    let label = chain[level]
                    let code: UInt32
                    if let known = labelIndex[column][level][label] { code = known } else {
                        code = UInt32(labels[column][level].count)
                        labelIndex[column][level][label] = code
                        labels[column][level].append(label)
                    }
                    codes[column][level].append(code)
                }
            }
        }
        var sensitiveOfRow = [UInt32](repeating: 0, count: table.rows.count)
        var sensitiveValues: [String] = []
        if let sensitiveIndex {
            var index: [String: UInt32] = [:]
            for (r, row) in table.rows.enumerated() {
                let value = row[sensitiveIndex]
                if let known = index[value] { sensitiveOfRow[r] = known } else {
                    let code = UInt32(sensitiveValues.count)
                    index[value] = code
                    sensitiveValues.append(value)
                    sensitiveOfRow[r] = code
                }
            }
        }
        // Merge identical (leaves, sensitive) records into weighted cells, keyed by a
        // mixed-radix number when it fits in 64 bits (it does for typical tables).
        let radixes = quasiIdentifiers.indices.map { UInt64(max(labels[$0][0].count, 1)) } + [UInt64(max(sensitiveValues.count, 1))]
        var fits = true
        var product: UInt64 = 1
        for radix in radixes {
            let (next, overflow) = product.multipliedReportingOverflow(by: radix)
            if overflow { fits = false; break }
            product = next
        }
        var cellLeaves: [UInt32] = []
        var cellSensitive: [UInt32] = []
        var cellCount: [Int32] = []
        var cellOfRow = [Int32](repeating: 0, count: table.rows.count)
        func addCell(row r: Int) {
            cellOfRow[r] = Int32(cellCount.count)
            for column in 0..<q { cellLeaves.append(leafOfRow[column][r]) }
            cellSensitive.append(sensitiveOfRow[r])
            cellCount.append(1)
        }
        if fits {
            var cellIndex: [UInt64: Int32] = [:]
            cellIndex.reserveCapacity(table.rows.count / 2)
            for r in 0..<table.rows.count {
                var key: UInt64 = 0
                var multiplier: UInt64 = 1
                for column in 0..<q {
                    key &+= UInt64(leafOfRow[column][r]) &* multiplier
                    multiplier &*= radixes[column]
                }
                key &+= UInt64(sensitiveOfRow[r]) &* multiplier
                if let existing = cellIndex[key] {
                    cellCount[Int(existing)] += 1
                    cellOfRow[r] = existing
                } else {
                    cellIndex[key] = Int32(cellCount.count)
                    addCell(row: r)
                }
            }
        } else {
            var cellIndex: [[UInt32]: Int32] = [:]
            var key = [UInt32](repeating: 0, count: q + 1)
            for r in 0..<table.rows.count {
                for column in 0..<q { key[column] = leafOfRow[column][r] }
                key[q] = sensitiveOfRow[r]
                if let existing = cellIndex[key] {
                    cellCount[Int(existing)] += 1
                    cellOfRow[r] = existing
                } else {
                    cellIndex[key] = Int32(cellCount.count)
                    addCell(row: r)
                }
            }
        }
        self.leafOfRow = leafOfRow
        self.codes = codes
        self.labels = labels
        self.sensitiveOfRow = sensitiveOfRow
        self.sensitiveValues = sensitiveValues
        self.cellLeaves = cellLeaves
        self.cellSensitive = cellSensitive
        self.cellCount = cellCount
        self.cellOfRow = cellOfRow
        if let subject {
            let subjectIndex = try table.index(of: subject)
            if quasiIdentifiers.contains(where: { $0.column == subject }) || subject == sensitive {
                throw PrivacyError(.invalidParameter, "column '\(subject)' names the subject and cannot be quasi-identifying or sensitive")
            }
            var codeOf: [String: UInt32] = [:]
            var subjectOfRow = [UInt32](repeating: 0, count: table.rows.count)
            for (r, row) in table.rows.enumerated() {
                let value = row[subjectIndex]
                if let known = codeOf[value] { subjectOfRow[r] = known } else {
                    let code = UInt32(codeOf.count)
                    codeOf[value] = code
                    subjectOfRow[r] = code
                }
            }
            // Distinct (cell, subject) pairs: a cell's weight in people, and each subject's cells.
            var cellSubjects = [Int32](repeating: 0, count: cellCount.count)
            var firstCell = [Int32](repeating: -1, count: codeOf.count)
            var moreCells: [UInt32: [Int32]] = [:]
            var pairs = Set<UInt64>(minimumCapacity: table.rows.count)
            for r in 0..<table.rows.count {
                let cell = cellOfRow[r], person = subjectOfRow[r]
                guard pairs.insert(UInt64(UInt32(bitPattern: cell)) << 32 | UInt64(person)).inserted else { continue }
                cellSubjects[Int(cell)] += 1
                if firstCell[Int(person)] < 0 { firstCell[Int(person)] = cell } else { moreCells[person, default: []].append(cell) }
            }
            self.subjectOfRow = subjectOfRow
            subjectCount = codeOf.count
            self.cellSubjects = cellSubjects
            spanningSubjects = moreCells.keys.sorted().map { [firstCell[Int($0)]] + (moreCells[$0] ?? []) }
        } else {
            subjectOfRow = (0..<table.rows.count).map { UInt32($0) }
            subjectCount = table.rows.count
            cellSubjects = cellCount
            spanningSubjects = []
        }
        var rollup: [[[[UInt32]]]] = []
        for (q, qi) in quasiIdentifiers.enumerated() {
            let height = qi.hierarchy.height
            var byFrom: [[[UInt32]]] = []
            for from in 0..<height {
                var byTo: [[UInt32]] = []
                for to in 0..<height {
                    guard to >= from else { byTo.append([]); continue }
                    var map = [UInt32](repeating: UInt32.max, count: labels[q][from].count)
                    for leaf in 0..<labels[q][0].count {
                        let source = Int(codes[q][from][leaf]), target = codes[q][to][leaf]
                        if map[source] == UInt32.max {
                            map[source] = target
                        } else if map[source] != target {
                            throw PrivacyError(.invalidValue, "the hierarchy of '\(qi.column)' is not a tree: '\(labels[q][from][source].prefix(40))' at level \(from) generalizes to both '\(labels[q][to][Int(map[source])].prefix(40))' and '\(labels[q][to][Int(target)].prefix(40))' at level \(to)")
                        }
                    }
                    byTo.append(map)
                }
                byFrom.append(byTo)
            }
            rollup.append(byFrom)
        }
        self.rollup = rollup
    }

    /// Per column, per pair of levels from ≤ to: label code at `from` → label code at `to`.
    /// Exists because hierarchies are trees: equal labels stay equal when generalized further.
    let rollup: [[[[UInt32]]]]

    /// Number of distinct labels of each QI at the given levels.
    func domainSizes(_ levels: [Int]) -> [Int] {
        levels.enumerated().map { labels[$0.offset][$0.element].count }
    }
}
