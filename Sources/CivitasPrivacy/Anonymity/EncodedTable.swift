import Dispatch

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
    /// The distinct cells of every subject whose records fall into more than one cell, one list per subject.
    let spanningSubjects: Lists

    var heights: [Int] { quasiIdentifiers.map(\.hierarchy.height) }

    /// `columnIndexes` and `sensitiveIndex` are positions in `table`, whose codes are the leaf codes.
    /// With `deriving`, a column whose hierarchy makes each coarser label a function of the finer
    /// one (``Hierarchy/coarserLevelsFollowFromFiner(values:)``) has its levels above the first
    /// labelled from one value per finer label; without, every level from every value.
    init(table: ColumnarTable, quasiIdentifiers: [QuasiIdentifier], sensitive: String?, subject: String? = nil, deriving: Bool = true) throws {
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
        rowCount = table.rowCount
        let q = quasiIdentifiers.count
        // Leaves are the table's distinct values; each is generalized once, not once per record.
        let leafOfRow = columnIndexes.map { table.codes[$0] }
        // Each level of each column is labelled on its own (the levels spread over both cores, the
        // columns with the most values first), or, where coarser labels follow from finer ones, a
        // column's levels from the first up in one task; the first column's error in column order
        // is the one reported.
        let columnIndexes = self.columnIndexes
        var tasks: [(column: Int, levels: Range<Int>)] = []
        for column in quasiIdentifiers.indices {
            let hierarchy = quasiIdentifiers[column].hierarchy, values = table.values[columnIndexes[column]]
            let first = table.hasDistinctValues[columnIndexes[column]] ? 1 : 0
            if deriving && hierarchy.height > 2 && hierarchy.coarserLevelsFollowFromFiner(values: values) {
                if first == 0 { tasks.append((column, 0..<1)) }
                tasks.append((column, 1..<hierarchy.height))
            } else {
                for level in first..<hierarchy.height { tasks.append((column, level..<(level + 1))) }
            }
        }
        tasks.sort { (-table.values[columnIndexes[$0.column]].count, $0.column, $0.levels.lowerBound) < (-table.values[columnIndexes[$1.column]].count, $1.column, $1.levels.lowerBound) }
        let sensitiveOfRow = sensitiveIndex.map { table.codes[$0] } ?? [UInt32](repeating: 0, count: table.rowCount)
        let sensitiveValues = sensitiveIndex.map { table.values[$0] } ?? []
        let subjectIndex = try subject.map { subject in
            if quasiIdentifiers.contains(where: { $0.column == subject }) || subject == sensitive {
                throw PrivacyError(.invalidParameter, "column '\(subject)' names the subject and cannot be quasi-identifying or sensitive")
            }
            return try table.index(of: subject)
        }
        // The records are merged into cells on one core while the levels are labelled on the other
        // (and then on both): the cells need only the leaf codes, not the labels.
        let labelled = tasks.map { _ in LabelledLevel() }
        let merged = MergedCells()
        let levelTasks = tasks
        let radixes = columnIndexes.map { table.values[$0].count } + [sensitiveValues.count]
        DispatchQueue.concurrentPerform(iterations: levelTasks.count + 1) { task in
            guard task > 0 else {
                merged.cells = Cells(table: table, leafOfRow: leafOfRow + [sensitiveOfRow], radixes: radixes, subjectIndex: subjectIndex)
                return
            }
            let (column, levels) = levelTasks[task - 1]
            labelled[task - 1].result = Self.label(quasiIdentifiers[column], levels: levels, values: table.values[columnIndexes[column]])
        }
        var codes: [[[UInt32]]] = [], labels: [[[String]]] = []
        for (column, qi) in quasiIdentifiers.enumerated() {
            let values = table.values[columnIndexes[column]]
            var columnCodes = [[UInt32]](repeating: [], count: qi.hierarchy.height)
            var columnLabels = [[String]](repeating: [], count: qi.hierarchy.height)
            if table.hasDistinctValues[columnIndexes[column]] {
                columnLabels[0] = values
                columnCodes[0] = (0..<UInt32(values.count)).map { $0 }
            }
            // The first value (in code order) that a level refuses.
            var refused: (leaf: Int, error: PrivacyError)?
            for (task, (taskColumn, levels)) in tasks.enumerated() where taskColumn == column {
                switch labelled[task].result {
                case .success(let labelledLevels):
                    for (level, labelled) in zip(levels, labelledLevels) {
                        columnCodes[level] = labelled.codes
                        columnLabels[level] = labelled.labels
                    }
                case .failure(let failure):
                    if refused.map({ failure.leaf < $0.leaf }) ?? true { refused = (failure.leaf, failure.error) }
                }
            }
            if let refused {
                let row = (leafOfRow[column].firstIndex(of: UInt32(refused.leaf)) ?? 0) + 1
                throw PrivacyError(.invalidValue, "row \(row), column '\(qi.column)': \(refused.error.message)")
            }
            codes.append(columnCodes)
            labels.append(columnLabels)
        }
        let cells = merged.cells
        self.leafOfRow = leafOfRow
        self.codes = codes
        self.labels = labels
        self.sensitiveOfRow = sensitiveOfRow
        self.sensitiveValues = sensitiveValues
        cellLeaves = cells.leaves
        cellSensitive = cells.sensitive
        cellCount = cells.count
        cellOfRow = cells.ofRow
        subjectOfRow = cells.subjectOfRow
        subjectCount = cells.subjectCount
        cellSubjects = cells.subjects
        spanningSubjects = cells.spanning
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

    /// The records merged into weighted cells, and the subjects that span several cells.
    private struct Cells {
        /// Per cell, its leaf code in each quasi-identifier (cell-major).
        var leaves: [UInt32] = []
        var sensitive: [UInt32] = []
        /// Records per cell.
        var count: [Int32] = []
        var ofRow: [Int32] = []
        var subjectOfRow: [UInt32] = []
        var subjectCount = 0
        /// Subjects per cell (records per cell when records are their own subjects).
        var subjects: [Int32] = []
        var spanning = Lists()

        init() {}

        /// Merges identical (leaves, sensitive) records into cells: rows are numbered column by
        /// column as mixed-radix keys (`columns` the leaf codes, the sensitive codes last; `radixes`
        /// the numbers of their codes), renumbered densely whenever the next column would overflow
        /// 64 bits. With a subject column, rows are taken subject by subject (a counting sort), so
        /// that a subject's cells have neighbouring numbers; each subject's distinct cells give the
        /// cells' weights in people and the subjects that span several cells.
        init(table: ColumnarTable, leafOfRow columns: [[UInt32]], radixes: [Int], subjectIndex: Int?) {
            let q = columns.count - 1
            var rowKeys = [UInt64](repeating: 0, count: table.rowCount)
            var span: UInt64 = 1
            for (column, radix) in zip(columns, radixes) {
                let radix = UInt64(max(radix, 1))
                if span.multipliedReportingOverflow(by: radix).overflow {
                    span = UInt64(EncodedTable.renumber(&rowKeys).count)
                }
                rowKeys.withUnsafeMutableBufferPointer { keys in
                    column.withUnsafeBufferPointer { leaves in
                        for r in 0..<leaves.count { keys[r] = keys[r] &* radix &+ UInt64(leaves[r]) }
                    }
                }
                span &*= radix
            }
            let bySubject = subjectIndex.map { table.recordsGrouped(by: $0) }
            let firstRow = EncodedTable.renumber(&rowKeys, order: bySubject?.ordered ?? [])
            ofRow = rowKeys.map { Int32(truncatingIfNeeded: $0) }
            rowKeys = []
            count = [Int32](repeating: 0, count: firstRow.count)
            for cell in ofRow { count[Int(cell)] += 1 }
            leaves = [UInt32](repeating: 0, count: firstRow.count * q)
            for column in 0..<q {
                columns[column].withUnsafeBufferPointer { columnLeaves in
                    for (cell, row) in firstRow.enumerated() { leaves[cell * q + column] = columnLeaves[Int(row)] }
                }
            }
            let sensitiveOfRow = columns[q]
            sensitive = firstRow.map { sensitiveOfRow[Int($0)] }
            guard let subjectIndex, let bySubject else {
                subjectOfRow = (0..<table.rowCount).map { UInt32($0) }
                subjectCount = table.rowCount
                subjects = count
                return
            }
            subjectOfRow = table.codes[subjectIndex]
            subjectCount = bySubject.starts.count - 1
            let starts = bySubject.starts, rowsBySubject = bySubject.ordered
            subjects = [Int32](repeating: 0, count: count.count)
            var cells: [Int32] = []
            for person in 0..<subjectCount {
                cells.removeAll(keepingCapacity: true)
                for i in starts[person]..<starts[person + 1] { cells.append(ofRow[Int(rowsBySubject[i])]) }
                if cells.count > 1 { cells.sort() }
                var distinct = 0
                for (i, cell) in cells.enumerated() where i == 0 || cells[i - 1] != cell {
                    cells[distinct] = cell
                    distinct += 1
                    subjects[Int(cell)] += 1
                }
                if distinct > 1 { spanning.append(cells[0..<distinct]) }
            }
        }
    }

    /// The cells, handed back by the core that merged them.
    private final class MergedCells: @unchecked Sendable {
        var cells = Cells()
    }

    /// Some levels' labels, handed back by the core that made them.
    private final class LabelledLevel: @unchecked Sendable {
        var result: Result<[(codes: [UInt32], labels: [String])], RefusedLeaf> = .success([])
    }

    /// The first value of a column, in code order, that its hierarchy refuses.
    private struct RefusedLeaf: Error {
        let leaf: Int
        let error: PrivacyError
    }

    /// At the first of `levels`, each leaf's label code and the labels in code order, from every
    /// value; at each further level (only where coarser labels follow from finer ones), the same
    /// from one value per label of the level below: the first leaf, in code order, that has it.
    /// The codes are those that labelling every value would give (numbered in order of first leaf).
    private static func label(_ qi: QuasiIdentifier, levels: Range<Int>, values: [String]) -> Result<[(codes: [UInt32], labels: [String])], RefusedLeaf> {
        var labelled: [(codes: [UInt32], labels: [String])] = []
        for level in levels {
            guard let finer = labelled.last else {
                switch label(qi, level: level, values: values) {
                case .success(let first): labelled.append(first)
                case .failure(let refused): return .failure(refused)
                }
                continue
            }
            var representative = [Int](repeating: -1, count: finer.labels.count)
            for (leaf, code) in finer.codes.enumerated() where representative[Int(code)] < 0 { representative[Int(code)] = leaf }
            var coarserOfFiner: [UInt32] = [], labels: [String] = []
            coarserOfFiner.reserveCapacity(representative.count)
            var index = ValueIndex()
            for leaf in representative {
                do {
                    coarserOfFiner.append(index.code(of: try qi.hierarchy.label(for: values[leaf], atLevel: level), in: &labels))
                } catch {
                    return .failure(RefusedLeaf(leaf: leaf, error: error as? PrivacyError ?? PrivacyError(.invalidValue, "\(error)")))
                }
            }
            labelled.append((finer.codes.map { coarserOfFiner[Int($0)] }, labels))
        }
        return .success(labelled)
    }

    /// At one level of `qi`'s hierarchy: each leaf's label code, and the labels in code order.
    private static func label(_ qi: QuasiIdentifier, level: Int, values: [String]) -> Result<(codes: [UInt32], labels: [String]), RefusedLeaf> {
        var codes: [UInt32] = [], labels: [String] = []
        codes.reserveCapacity(values.count)
        var index = ValueIndex()
        for (leaf, value) in values.enumerated() {
            do {
                codes.append(index.code(of: try qi.hierarchy.label(for: value, atLevel: level), in: &labels))
            } catch let error as PrivacyError {
                return .failure(RefusedLeaf(leaf: leaf, error: error))
            } catch {
                return .failure(RefusedLeaf(leaf: leaf, error: PrivacyError(.invalidValue, "\(error)")))
            }
        }
        return .success((codes, labels))
    }

    /// Replaces every key by a dense number (0, 1, … in order of first appearance, the keys taken
    /// in `order` when it lists their positions); returns the first position of each number.
    static func renumber(_ keys: inout [UInt64], order: [Int32] = []) -> [Int32] {
        var capacity = 1024
        while capacity < keys.count * 2 { capacity <<= 1 }
        let mask = capacity - 1
        var slotKeys = [UInt64](repeating: 0, count: capacity)
        var slotNumbers = [Int32](repeating: -1, count: capacity)
        var first: [Int32] = []
        let ordered = !order.isEmpty
        keys.withUnsafeMutableBufferPointer { keys in
          order.withUnsafeBufferPointer { order in
            slotKeys.withUnsafeMutableBufferPointer { slotKeys in
                slotNumbers.withUnsafeMutableBufferPointer { slotNumbers in
                    for i in 0..<keys.count {
                        let r = ordered ? Int(order[i]) : i
                        let key = keys[r]
                        var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
                        while slotNumbers[slot] >= 0 && slotKeys[slot] != key { slot = (slot &+ 1) & mask }
                        if slotNumbers[slot] < 0 {
                            slotKeys[slot] = key
                            slotNumbers[slot] = Int32(first.count)
                            first.append(Int32(r))
                        }
                        keys[r] = UInt64(slotNumbers[slot])
                    }
                }
            }
          }
        }
        return first
    }

    /// Per column, per pair of levels from ≤ to: label code at `from` → label code at `to`.
    /// Exists because hierarchies are trees: equal labels stay equal when generalized further.
    let rollup: [[[[UInt32]]]]

    /// Number of distinct labels of each QI at the given levels.
    func domainSizes(_ levels: [Int]) -> [Int] {
        levels.enumerated().map { labels[$0.offset][$0.element].count }
    }
}

/// Lists of cells (or classes) stored one after another, with where each list starts: many short
/// lists without one allocation per list.
struct Lists {
    private(set) var items: [Int32] = []
    private(set) var starts: [Int] = [0]

    var count: Int { starts.count - 1 }
    var isEmpty: Bool { count == 0 }

    subscript(index: Int) -> ArraySlice<Int32> { items[starts[index]..<starts[index + 1]] }

    mutating func append(_ list: some Sequence<Int32>) {
        items.append(contentsOf: list)
        starts.append(items.count)
    }

    /// Appends every list of `other`, in order.
    mutating func append(contentsOf other: Lists) {
        let shift = items.count
        items.append(contentsOf: other.items)
        starts.append(contentsOf: other.starts.dropFirst().map { $0 + shift })
    }

    mutating func removeAll() {
        items.removeAll(keepingCapacity: true)
        starts.removeAll(keepingCapacity: true)
        starts.append(0)
    }
}
