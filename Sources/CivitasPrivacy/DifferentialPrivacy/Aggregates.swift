/// Differentially private aggregates over a table: counts, sums and means per
/// group, with each subject's contribution bounded (at most `maxGroupsPerSubject`
/// groups and `maxRowsPerSubject` rows in each), values clamped to declared bounds,
/// and exact discrete noise calibrated to the resulting sensitivity.
///
/// Group keys are not protected by noise: the caller declares them, every declared
/// group is output (empty ones noised too), and rows outside them are ignored, so
/// which groups appear never depends on who is in the data.
public struct DPAggregate: Sendable {
    public enum Statistic: Sendable, Equatable {
        case count
        /// Sum of a column clamped to [lower, upper] (decimals).
        case sum(column: String, lower: String, upper: String)
        /// Mean of a column clamped to [lower, upper]: a noisy sum over a noisy count, the budget split evenly.
        case mean(column: String, lower: String, upper: String)
    }

    public enum NoiseMechanism: Sendable, Equatable {
        /// Pure ε-DP with discrete Laplace noise.
        case laplace(epsilon: Rational)
        /// ρ-zCDP with discrete Gaussian noise.
        case gaussian(rho: Rational)
    }

    public let statistic: Statistic
    public let groupBy: [String]
    public let mechanism: NoiseMechanism
    /// The column naming the data subject; without it every row is its own subject.
    public let subject: String?
    public let maxGroupsPerSubject: Int
    public let maxRowsPerSubject: Int

    public init(statistic: Statistic, groupBy: [String], mechanism: NoiseMechanism, subject: String? = nil,
                maxGroupsPerSubject: Int = 1, maxRowsPerSubject: Int = 1) throws {
        guard (1...1000).contains(maxGroupsPerSubject), (1...1000).contains(maxRowsPerSubject) else {
            throw PrivacyError(.invalidParameter, "contribution bounds must be 1 to 1000")
        }
        switch mechanism {
        case .laplace(let epsilon) where epsilon.isZero, .gaussian(let epsilon) where epsilon.isZero:
            throw PrivacyError(.invalidParameter, "the privacy parameter must be positive")
        default: break
        }
        self.statistic = statistic
        self.groupBy = groupBy
        self.mechanism = mechanism
        self.subject = subject
        self.maxGroupsPerSubject = maxGroupsPerSubject
        self.maxRowsPerSubject = maxRowsPerSubject
    }

    /// What running this aggregate costs, for the budget.
    public func charge() throws -> PrivacyCharge {
        switch mechanism {
        case .laplace(let epsilon): return PrivacyCharge(epsilonMicro: try PrivacyCharge.micro(epsilon))
        case .gaussian(let rho): return PrivacyCharge(rhoMicro: try PrivacyCharge.micro(rho))
        }
    }

    /// Computes the noisy aggregate for every group in `groups` (public group keys, in
    /// `groupBy` order); rows in other groups are ignored. Returns a table: the group
    /// columns, then `count`, `sum` or `mean`.
    public func run<R: RandomWords>(_ table: CSVTable, groups: [[String]], using sampler: inout ExactSampler<R>) throws -> CSVTable {
        var read = groupBy
        for column in [subject, measureColumn].compactMap({ $0 }) where !read.contains(column) { read.append(column) }
        return try run(ColumnarTable(table, columns: read), groups: groups, using: &sampler)
    }

    /// The column summed or averaged, if any.
    var measureColumn: String? {
        switch statistic {
        case .count: return nil
        case .sum(let column, _, _), .mean(let column, _, _): return column
        }
    }

    /// The same aggregate over a table held as columns of codes (it needs the group-by
    /// columns, the subject column and the measure, if any).
    public func run<R: RandomWords>(_ table: ColumnarTable, groups: [[String]], using sampler: inout ExactSampler<R>) throws -> CSVTable {
        let groupColumns = try groupBy.map { try table.index(of: $0) }
        let subjectColumn = try subject.map { try table.index(of: $0) }
        guard groups.allSatisfy({ $0.count == groupBy.count }) else {
            throw PrivacyError(.invalidParameter, "every declared group needs one value per group-by column")
        }
        var orderedGroups: [[String]] = []
        var seenGroups = Set<[String]>()
        for group in groups where seenGroups.insert(group).inserted { orderedGroups.append(group) }

        // The measured column on its grid.
        var grid = try DecimalGrid(fractionDigits: 0)
        var lower: Int64 = 0, upper: Int64 = 0, valueColumn: Int?
        switch statistic {
        case .count: break
        case .sum(let column, let low, let high), .mean(let column, let low, let high):
            let digits = max(Self.fractionDigits(low), Self.fractionDigits(high))
            grid = try DecimalGrid(fractionDigits: digits)
            lower = try grid.units(of: low)
            upper = try grid.units(of: high)
            guard lower < upper else { throw PrivacyError(.invalidParameter, "bounds \(low):\(high) must have lower < upper") }
            valueColumn = try table.index(of: column)
        }
        let groupOfRow = Self.groupNumbers(table, columns: groupColumns, groups: orderedGroups)
        // Each distinct value of the measure is read on the grid once.
        var clamped: [Int64?] = []
        if let valueColumn {
            clamped = table.values[valueColumn].map { text in (try? grid.units(of: text)).map { min(max($0, lower), upper) } }
        }

        // Contribution bounding: per subject, a random choice of at most G groups and R rows in each.
        var counts = [Int64](repeating: 0, count: orderedGroups.count)
        var sums = [Int64](repeating: 0, count: orderedGroups.count)
        func contribute(_ rows: ArraySlice<Int32>) throws {
            var byGroup: [Int: [Int32]] = [:]
            for r in rows where groupOfRow[Int(r)] >= 0 { byGroup[Int(groupOfRow[Int(r)]), default: []].append(r) }
            var chosenGroups = Array(byGroup.keys).sorted()
            Self.shuffle(&chosenGroups, using: &sampler)
            for g in chosenGroups.prefix(maxGroupsPerSubject) {
                guard var groupRows = byGroup[g] else { continue }
                Self.shuffle(&groupRows, using: &sampler)
                for r in groupRows.prefix(maxRowsPerSubject) {
                    counts[g] += 1
                    if let valueColumn {
                        let code = Int(table.codes[valueColumn][Int(r)])
                        guard let value = clamped[code] else {
                            throw PrivacyError(.invalidValue, "row \(Int(r) + 1), column '\(table.columns[valueColumn])': \(Self.gridError(grid, table.values[valueColumn][code]))")
                        }
                        sums[g] += value
                    }
                }
            }
        }
        if let subjectColumn {
            // Rows grouped by subject, subjects in order of first appearance.
            let (ordered, starts) = table.recordsGrouped(by: subjectColumn)
            for s in 0..<(starts.count - 1) where starts[s] < starts[s + 1] { try contribute(ordered[starts[s]..<starts[s + 1]]) }
        } else {
            for r in 0..<table.rowCount where groupOfRow[r] >= 0 { try contribute([Int32(r)]) }
        }

        // Noise. Sensitivities: a subject changes at most G groups by at most R rows each.
        let g = UInt64(maxGroupsPerSubject), r = UInt64(maxRowsPerSubject)
        let magnitude = UInt64(max(lower.magnitude, upper.magnitude))
        let parts: Int
        switch statistic {
        case .mean: parts = 2
        default: parts = 1
        }
        func noise(_ value: Int64, perGroup: UInt64) throws -> Int64 {
            switch mechanism {
            case .laplace(let epsilon):
                let share = try Rational(epsilon.numerator, epsilon.denominator * UInt128(parts))
                return try DiscreteLaplaceMechanism(epsilon: share, sensitivity: g * perGroup).release(value, using: &sampler)
            case .gaussian(let rho):
                // L2 sensitivity² = G · (per-group)²; as an integer mechanism: σ² = G · per² / (2ρ).
                let share = try Rational(rho.numerator, rho.denominator * UInt128(parts) * UInt128(g))
                return try DiscreteGaussianMechanism(rho: share, sensitivity: perGroup).release(value, using: &sampler)
            }
        }
        var columns = groupBy
        var rows: [[String]] = []
        switch statistic {
        case .count:
            columns.append("count")
            for (i, group) in orderedGroups.enumerated() {
                rows.append(group + [String(try noise(counts[i], perGroup: r))])
            }
        case .sum:
            columns.append("sum")
            for (i, group) in orderedGroups.enumerated() {
                rows.append(group + [grid.text(of: try noise(sums[i], perGroup: r * magnitude))])
            }
        case .mean:
            columns.append("mean")
            for (i, group) in orderedGroups.enumerated() {
                let noisySum = try noise(sums[i], perGroup: r * magnitude)
                let noisyCount = max(try noise(counts[i], perGroup: r), 1)
                // Post-processing: round the quotient to the grid, then clamp to the bounds.
                let quotient = Self.roundedDivision(noisySum, noisyCount)
                rows.append(group + [grid.text(of: min(max(quotient, lower), upper))])
            }
        }
        return CSVTable(columns: columns, rows: rows)
    }

    /// Per row, the number of its group among `groups`, or -1 for a row in no declared group.
    static func groupNumbers(_ table: ColumnarTable, columns: [Int], groups: [[String]]) -> [Int32] {
        // Per column, each distinct value's position among the keys declared for that column.
        var keyPositions: [[String: Int]] = Array(repeating: [:], count: columns.count)
        for group in groups {
            for (c, key) in group.enumerated() where keyPositions[c][key] == nil { keyPositions[c][key] = keyPositions[c].count }
        }
        // A row's group is found by the positions of its keys (a reused buffer: no copy per row).
        var numberOf: [[Int]: Int32] = [:]
        for (g, group) in groups.enumerated() {
            numberOf[group.enumerated().map { c, key in keyPositions[c][key] ?? 0 }] = Int32(g)
        }
        let codeKeys = columns.enumerated().map { c, column in table.values[column].map { keyPositions[c][$0] ?? -1 } }
        var numbers = [Int32](repeating: -1, count: table.rowCount)
        var positions = [Int](repeating: 0, count: columns.count)
        rows: for r in 0..<table.rowCount {
            for (c, column) in columns.enumerated() {
                let position = codeKeys[c][Int(table.codes[column][r])]
                if position < 0 { continue rows }
                positions[c] = position
            }
            numbers[r] = numberOf[positions] ?? -1
        }
        return numbers
    }

    /// Why a value is not a number on the grid.
    static func gridError(_ grid: DecimalGrid, _ text: String) -> String {
        do {
            _ = try grid.units(of: text)
            return "not a number on the grid"
        } catch {
            return (error as? PrivacyError)?.message ?? "\(error)"
        }
    }

    static func fractionDigits(_ decimal: String) -> Int {
        decimal.split(separator: ".", maxSplits: 1).dropFirst().first.map { $0.count } ?? 0
    }

    static func roundedDivision(_ numerator: Int64, _ denominator: Int64) -> Int64 {
        let (quotient, remainder) = numerator.quotientAndRemainder(dividingBy: denominator)
        if 2 * remainder.magnitude >= denominator.magnitude { return quotient + (numerator < 0 ? -1 : 1) }
        return quotient
    }

    /// Fisher–Yates with the sampler's CSPRNG.
    static func shuffle<T, R: RandomWords>(_ items: inout [T], using sampler: inout ExactSampler<R>) {
        guard items.count > 1 else { return }
        for i in stride(from: items.count - 1, to: 0, by: -1) {
            let j = Int(sampler.uniformIndex(below: UInt64(i + 1)))
            items.swapAt(i, j)
        }
    }
}

extension ExactSampler {
    /// A uniform integer in 0..<bound.
    mutating func uniformIndex(below bound: UInt64) -> UInt64 {
        UInt64(randomUniform(below: UInt128(bound)))
    }
}
