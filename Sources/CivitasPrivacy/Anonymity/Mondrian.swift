import Foundation

/// Mondrian multidimensional partitioning (LeFevre, DeWitt and Ramakrishnan,
/// ICDE 2006): records are split recursively at the median of the
/// quasi-identifier with the widest normalized range, as long as both halves
/// meet k (and l), counted in distinct subjects. On ranges the cut is relaxed
/// (records at the median shared out between the halves). Numbers and dates are
/// released as ranges `low..high`; other columns are ordered by their hierarchy
/// (siblings adjacent) and released as the lowest label that covers the partition.
public struct Mondrian {
    public init() {}

    public func anonymize(_ table: CSVTable, quasiIdentifiers: [QuasiIdentifier], requirements: AnonymityRequirements,
                          keepColumns: [String] = []) throws -> AnonymizedTable {
        let columns = try ColumnarTable(table, columns: requirements.columnsRead(quasiIdentifiers: quasiIdentifiers, keepColumns: keepColumns))
        let released = try anonymize(columns, quasiIdentifiers: quasiIdentifiers, requirements: requirements, keepColumns: keepColumns)
        return AnonymizedTable(table: released.table, report: released.report)
    }

    /// Partitions and releases, keeping the release as codes over `table`.
    public func anonymize(_ table: ColumnarTable, quasiIdentifiers: [QuasiIdentifier], requirements: AnonymityRequirements,
                          keepColumns: [String] = []) throws -> AnonymizedColumns {
        let encoded = try EncodedTable(table: table, quasiIdentifiers: quasiIdentifiers, sensitive: requirements.sensitive,
                                       subject: requirements.subject)
        var counter = DistinctSubjects(encoded: encoded)
        let dimensions = try quasiIdentifiers.enumerated().map { try Dimension(encoded: encoded, column: $0.offset) }
        let n = encoded.rowCount
        // rank[q][row]: the row's position in column q's order.
        let ranks: [[Int32]] = dimensions.enumerated().map { q, dimension in
            encoded.leafOfRow[q].map { dimension.rankOfLeaf[Int($0)] }
        }
        // With the subject's pseudonym released, a subject's records stay in one partition: every
        // split is decided on one representative record per subject, so linked records never span
        // classes (and the linkage rule of SubjectProtection holds by construction).
        let linksSubjects = requirements.subject.map { requirements.linking.contains($0) } ?? false
        var splitRanks = ranks
        if linksSubjects {
            var representative = [Int32](repeating: -1, count: encoded.subjectCount)
            for row in 0..<n where representative[Int(encoded.subjectOfRow[row])] < 0 {
                representative[Int(encoded.subjectOfRow[row])] = Int32(row)
            }
            splitRanks = ranks.map { column in (0..<n).map { column[Int(representative[Int(encoded.subjectOfRow[$0])])] } }
        }
        var partitions: [[Int32]] = []
        var work: [[Int32]] = [Array(0..<Int32(n))]
        let whole = Array(0..<Int32(n))
        guard allowed(whole, encoded: encoded, requirements: requirements, counter: &counter) else {
            throw PrivacyError(.invalidParameter, "the whole table (\(n) records of \(encoded.subjectCount) subjects) does not meet k = \(requirements.k)\(requirements.diversity.map { ", l = \($0.l)" } ?? ""); nothing can be released")
        }
        while let partition = work.popLast() {
            // Dimensions by normalized range, widest first.
            var order: [(Double, Int, Int32, Int32)] = []
            for (q, dimension) in dimensions.enumerated() {
                var low = Int32.max, high = Int32.min
                for row in partition {
                    let r = splitRanks[q][Int(row)]
                    low = min(low, r)
                    high = max(high, r)
                }
                let width = dimension.count > 1 ? Double(high - low) / Double(dimension.count - 1) : 0
                if high > low { order.append((width, q, low, high)) }
            }
            order.sort { ($0.0, -$0.1) > ($1.0, -$1.1) }
            var split = false
            for (_, q, _, _) in order {
                let sorted = partition.map { splitRanks[q][Int($0)] }.sorted()
                let median = sorted[(sorted.count - 1) / 2]
                // Cuts tried in turn: relaxed (records at the median shared out so the halves are
                // equal; only for ranges, whose two labels stay distinct, and not with linked
                // subjects, whose records must stay together), then the median on either side.
                var cuts: [(left: [Int32], right: [Int32])] = []
                var below: [Int32] = [], at: [Int32] = [], above: [Int32] = []
                for row in partition {
                    let rank = splitRanks[q][Int(row)]
                    if rank < median { below.append(row) } else if rank == median { at.append(row) } else { above.append(row) }
                }
                if !linksSubjects && dimensions[q].ranged && !at.isEmpty {
                    let fill = max(0, min(at.count, partition.count / 2 - below.count))
                    cuts.append((below + at.prefix(fill), Array(at.dropFirst(fill)) + above))
                }
                cuts.append((below + at, above))
                cuts.append((below, at + above))
                for (left, right) in cuts where !left.isEmpty && !right.isEmpty {
                    if allowed(left, encoded: encoded, requirements: requirements, counter: &counter),
                       allowed(right, encoded: encoded, requirements: requirements, counter: &counter) {
                        work.append(left)
                        work.append(right)
                        split = true
                        break
                    }
                }
                if split { break }
            }
            if !split { partitions.append(partition) }
        }

        // Release: per partition, each quasi-identifier's covering label.
        let q = quasiIdentifiers.count
        var labelOfRow = [[UInt32]](repeating: [UInt32](repeating: 0, count: n), count: q)
        var labelTexts = [[String]](repeating: [], count: q)
        var labelIndex = [[String: UInt32]](repeating: [:], count: q)
        var totalPenalty = 0.0
        for partition in partitions {
            for (column, dimension) in dimensions.enumerated() {
                let (label, penalty) = dimension.cover(partition.map { encoded.leafOfRow[column][Int($0)] })
                let code: UInt32
                if let known = labelIndex[column][label] { code = known } else {
                    code = UInt32(labelTexts[column].count)
                    labelIndex[column][label] = code
                    labelTexts[column].append(label)
                }
                for row in partition { labelOfRow[column][Int(row)] = code }
                totalPenalty += penalty * Double(partition.count)
            }
        }
        // Classes are what the partner sees: records with equal labels.
        var classOfLabels: [[UInt32]: Int32] = [:]
        var classOfRow = [Int32](repeating: 0, count: n)
        for r in 0..<n {
            let labels = (0..<q).map { labelOfRow[$0][r] }
            if let known = classOfLabels[labels] { classOfRow[r] = known } else {
                classOfRow[r] = Int32(classOfLabels.count)
                classOfLabels[labels] = classOfRow[r]
            }
        }
        var keep = [Bool](repeating: true, count: n)
        let summary = try SubjectProtection(requirements: requirements).enforce(table: table, encoded: encoded, classOfRow: classOfRow, keep: &keep)
        var report = Release.report(summary, requirements: requirements)
        report.algorithm = "mondrian"
        report.partitions = partitions.count
        report.loss = n > 0 ? totalPenalty / Double(n * q) : 0
        return try Release.columns(table: table, encoded: encoded, keep: keep, codeOfRow: labelOfRow,
                                   labelOfCode: labelTexts.map { Array(0..<UInt32($0.count)) }, labelTexts: labelTexts,
                                   requirements: requirements, keepColumns: keepColumns, report: report)
    }

    private func allowed(_ rows: [Int32], encoded: EncodedTable, requirements: AnonymityRequirements, counter: inout DistinctSubjects) -> Bool {
        guard rows.count >= requirements.k, counter.count(rows) >= requirements.k else { return false }
        guard let diversity = requirements.diversity else { return true }
        var holders = Set<UInt64>()
        var counts: [UInt32: Int] = [:]
        for row in rows {
            let value = encoded.sensitiveOfRow[Int(row)]
            if holders.insert(UInt64(value) << 32 | UInt64(encoded.subjectOfRow[Int(row)])).inserted { counts[value, default: 0] += 1 }
        }
        return diversity.isMet(by: Array(counts.values))
    }
}

/// Counts the distinct subjects of a set of rows, reusing one marker array.
private struct DistinctSubjects {
    let subjectOfRow: [UInt32]
    var mark: [UInt32]
    var round: UInt32 = 0

    init(encoded: EncodedTable) {
        subjectOfRow = encoded.subjectOfRow
        mark = [UInt32](repeating: 0, count: encoded.subjectCount)
    }

    mutating func count(_ rows: [Int32]) -> Int {
        round += 1
        var distinct = 0
        for row in rows {
            let subject = Int(subjectOfRow[Int(row)])
            if mark[subject] != round {
                mark[subject] = round
                distinct += 1
            }
        }
        return distinct
    }
}

/// One quasi-identifier's order and how a set of its values is released.
private struct Dimension {
    let rankOfLeaf: [Int32]
    let count: Int
    let numeric: [Double]?
    /// Dates: ordered as text (ISO 8601 sorts in time order) and released as ranges `first..last`.
    let dates: Bool
    /// Released as a range of values rather than a hierarchy label.
    var ranged: Bool { numeric != nil || dates }
    let encoded: EncodedTable
    let column: Int

    init(encoded: EncodedTable, column: Int) throws {
        self.encoded = encoded
        self.column = column
        let leaves = encoded.labels[column][0]
        let hierarchy = encoded.quasiIdentifiers[column].hierarchy
        // Numbers (an interval or geo hierarchy, or a column without one whose values are all
        // numbers) and dates are released as ranges; other columns through their hierarchy.
        var isNumeric = false
        var isDate = false
        switch hierarchy {
        case .intervals, .geoGrid: isNumeric = true
        case .suppressionOnly: isNumeric = !leaves.isEmpty && leaves.allSatisfy { Double($0)?.isFinite == true }
        case .dateTruncation: isDate = true
        default: break
        }
        dates = isDate
        var order: [Int]
        if isDate {
            numeric = nil
            order = Array(leaves.indices).sorted { (leaves[$0], $0) < (leaves[$1], $1) }
        } else if isNumeric {
            let values = leaves.map { Double($0) }
            numeric = values.map { $0 ?? -.infinity }
            order = Array(leaves.indices).sorted { (values[$0] ?? -.infinity, $0) < (values[$1] ?? -.infinity, $1) }
        } else {
            numeric = nil
            // Siblings adjacent: order leaves by their labels from the root down.
            let height = hierarchy.height
            let paths = leaves.indices.map { leaf in
                (0..<height).reversed().map { encoded.labels[column][$0][Int(encoded.codes[column][$0][leaf])] }
            }
            order = Array(leaves.indices).sorted { paths[$0].lexicographicallyPrecedes(paths[$1]) }
        }
        var rank = [Int32](repeating: 0, count: leaves.count)
        // Equal numeric values share a rank.
        var current: Int32 = -1
        var previous: Double?
        for leaf in order {
            if let numeric {
                if previous != numeric[leaf] { current += 1 }
                previous = numeric[leaf]
            } else {
                current += 1
            }
            rank[leaf] = current
        }
        rankOfLeaf = rank
        count = Int(current) + 1
    }

    /// The label released for a partition holding these leaves, and its normalized penalty (0…1).
    func cover(_ leaves: [UInt32]) -> (String, Double) {
        let values = encoded.labels[column][0]
        if let numeric {
            var low = leaves[0], high = leaves[0]
            for leaf in leaves {
                if numeric[Int(leaf)] < numeric[Int(low)] { low = leaf }
                if numeric[Int(leaf)] > numeric[Int(high)] { high = leaf }
            }
            let finite = numeric.filter(\.isFinite)
            let span = (finite.max() ?? 0) - (finite.min() ?? 0)
            if low == high || numeric[Int(low)] == numeric[Int(high)] {
                return (values[Int(low)], 0)
            }
            let width = numeric[Int(high)] - numeric[Int(low)]
            return ("\(values[Int(low)])..\(values[Int(high)])", span > 0 && width.isFinite ? width / span : 1)
        }
        if dates {
            var low = leaves[0], high = leaves[0]
            for leaf in leaves {
                if rankOfLeaf[Int(leaf)] < rankOfLeaf[Int(low)] { low = leaf }
                if rankOfLeaf[Int(leaf)] > rankOfLeaf[Int(high)] { high = leaf }
            }
            if low == high { return (values[Int(low)], 0) }
            return ("\(values[Int(low)])..\(values[Int(high)])", count > 1 ? Double(rankOfLeaf[Int(high)] - rankOfLeaf[Int(low)]) / Double(count - 1) : 0)
        }
        let height = encoded.quasiIdentifiers[column].hierarchy.height
        for level in 0..<height {
            let first = encoded.codes[column][level][Int(leaves[0])]
            if leaves.allSatisfy({ encoded.codes[column][level][Int($0)] == first }) {
                let label = encoded.labels[column][level][Int(first)]
                // Penalty: share of the domain's leaves under this label.
                let covered = encoded.codes[column][level].filter { $0 == first }.count
                let total = values.count
                return (label, total > 1 ? Double(covered - 1) / Double(total - 1) : 0)
            }
        }
        return ("*", 1)
    }
}
