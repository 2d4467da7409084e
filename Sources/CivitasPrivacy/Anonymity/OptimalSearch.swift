/// Optimal full-domain generalization: searches the lattice of per-column
/// generalization levels for the node that meets k (and l) within the
/// suppression limit at the least loss.
///
/// The search follows the ideas of ARX's Flash (Kohlmayer et al. 2012):
/// feasibility is monotone in the lattice, so a node found feasible tags all
/// its generalizations feasible, and a node found infeasible tags all its
/// specializations infeasible (predictive tagging); unknown nodes are resolved
/// by binary search along upward paths, so only a fraction of the lattice is
/// ever checked against the data. Every metric is bounded below without the
/// node's own classes (the loss by the node's precision; discernibility and the
/// average class size by the most classes the node can have, which its labels
/// and the nodes already checked below it cap), so candidates are then scored
/// from the lowest bound up and the scan stops once no remaining node can do
/// better.
public struct OptimalSearch {
    /// How generalizations are compared; lower is better (docs/privacy.md).
    public enum Metric: String, Sendable, CaseIterable {
        /// Σ |class|² over released classes + suppressed × N (Bayardo and Agrawal): many small classes.
        case discernibility
        /// N / released classes: the average class size, suppressed subjects counted in N.
        case averageClassSize = "average-class-size"
        /// (released / N) · precision + suppressed / N: the mean normalized generalization level.
        case loss
    }

    /// The metric used when none is named: it keeps detail where the data allows (on Adult at
    /// k = 5, age stays in 5-year bands instead of being blanked, as the loss metric would).
    public static let defaultMetric = Metric.discernibility

    public let metric: Metric

    public init(metric: Metric = OptimalSearch.defaultMetric) {
        self.metric = metric
    }

    /// The largest lattice searched (nodes = product of hierarchy heights).
    public static let maximumLatticeSize = 4_000_000

    /// Encodes, searches and releases in one call.
    public func anonymize(_ table: CSVTable, quasiIdentifiers: [QuasiIdentifier], requirements: AnonymityRequirements,
                          keepColumns: [String] = []) throws -> AnonymizedTable {
        let columns = try ColumnarTable(table, columns: requirements.columnsRead(quasiIdentifiers: quasiIdentifiers, keepColumns: keepColumns))
        let released = try anonymize(columns, quasiIdentifiers: quasiIdentifiers, requirements: requirements, keepColumns: keepColumns)
        return AnonymizedTable(table: released.table, report: released.report)
    }

    /// Encodes, searches and releases in one call, keeping the release as codes over `table`.
    public func anonymize(_ table: ColumnarTable, quasiIdentifiers: [QuasiIdentifier], requirements: AnonymityRequirements,
                          keepColumns: [String] = []) throws -> AnonymizedColumns {
        let prepared = try prepare(table, quasiIdentifiers: quasiIdentifiers, requirements: requirements)
        // The search estimates what protecting linked records suppresses; the release counts it
        // exactly. When the release finds too much to suppress, the next best node is tried.
        var refused: Set<[Int]> = []
        while true {
            let solution = try prepared.search(excluding: refused)
            do {
                return try prepared.release(solution, keepColumns: keepColumns)
            } catch is PrivacyError where !requirements.linking.isEmpty && refused.count < Self.maximumRetries {
                refused.insert(solution.levels)
            }
        }
    }

    /// Most generalizations tried after the first when linked records cannot be protected within the limit.
    static let maximumRetries = 16

    /// Encodes the table for searching (the part that reads every row); `keepColumns` are the
    /// columns a later release passes through (no other column is read).
    public func prepare(_ table: CSVTable, quasiIdentifiers: [QuasiIdentifier], requirements: AnonymityRequirements,
                        keepColumns: [String] = []) throws -> Prepared {
        try prepare(try ColumnarTable(table, columns: requirements.columnsRead(quasiIdentifiers: quasiIdentifiers, keepColumns: keepColumns)),
                    quasiIdentifiers: quasiIdentifiers, requirements: requirements)
    }

    /// Encodes a columnar table for searching.
    public func prepare(_ table: ColumnarTable, quasiIdentifiers: [QuasiIdentifier], requirements: AnonymityRequirements) throws -> Prepared {
        let size = quasiIdentifiers.reduce(1.0) { $0 * Double($1.hierarchy.height) }
        guard size <= Double(Self.maximumLatticeSize) else {
            throw PrivacyError(.invalidParameter, "\(quasiIdentifiers.count) quasi-identifiers with these hierarchies give \(Int(size)) generalization combinations, above the optimal search's limit of \(Self.maximumLatticeSize); use --algorithm mondrian or shorter hierarchies")
        }
        let encoded = try EncodedTable(table: table, quasiIdentifiers: quasiIdentifiers, sensitive: requirements.sensitive,
                                       subject: requirements.subject)
        return Prepared(table: table, encoded: encoded, requirements: requirements,
                        evaluator: ClassEvaluator(table: encoded, requirements: requirements), metric: metric)
    }

    /// The generalization the search chose.
    public struct Solution: Sendable, Equatable {
        public let levels: [Int]
        public let loss: Double
        /// The chosen metric's value (equal to `loss` under the loss metric).
        public let score: Double
        public let nodesChecked: Int
        public let latticeSize: Int
    }

    /// A table encoded for one set of quasi-identifiers and requirements.
    public final class Prepared {
        let table: ColumnarTable
        let encoded: EncodedTable
        let requirements: AnonymityRequirements
        let evaluator: ClassEvaluator
        let metric: Metric

        init(table: ColumnarTable, encoded: EncodedTable, requirements: AnonymityRequirements, evaluator: ClassEvaluator, metric: Metric) {
            self.table = table
            self.encoded = encoded
            self.requirements = requirements
            self.evaluator = evaluator
            self.metric = metric
        }

        /// Finds the least-loss generalization that meets the requirements, other than those
        /// `excluding` names (as levels); throws if none does.
        public func search(excluding: Set<[Int]> = []) throws -> Solution {
            evaluator.forgetSnapshots()
            let lattice = Lattice(heights: encoded.heights)
            let maxSuppressed = Int((requirements.maxSuppression * Double(encoded.subjectCount)).rounded(.down))
            var tags = [Tag](repeating: .unknown, count: lattice.size)
            var suppressedCache = [Int32](repeating: -1, count: lattice.size)
            var scoreCache = [Double](repeating: .nan, count: lattice.size)
            var checked = 0
            let n = Double(encoded.subjectCount)

            // Per node checked: its levels and its number of classes (an upper bound on the classes
            // of every generalization of it); per node checked that meets the limit: its levels and
            // its subjects counted once per class (a lower bound for every specialization of it,
            // since a subject's records fall into at least as many classes there).
            var checkedLevels: [[Int]] = []
            var checkedClasses: [Int] = []
            var feasibleLevels: [[Int]] = []
            var feasibleSubjectsInClasses: [Int] = []

            // A level with as many labels as the level below it splits the records exactly as that
            // one does (labels only merge going up), so a node is evaluated at its lowest such levels
            // and nodes that differ only there share one evaluation.
            let labelCounts = encoded.labels.map { $0.map(\.count) }
            func canonical(_ node: Int) -> Int {
                var result = node
                for (q, level) in lattice.levels(of: node).enumerated() {
                    var lowest = level
                    while lowest > 0 && labelCounts[q][lowest - 1] == labelCounts[q][level] { lowest -= 1 }
                    result -= (level - lowest) * lattice.strides[q]
                }
                return result
            }
            var outcomes: [Int: ClassEvaluator.Outcome] = [:]

            func check(_ node: Int) throws -> Bool {
                let levels = lattice.levels(of: node)
                let canonicalNode = canonical(node)
                let outcome: ClassEvaluator.Outcome
                if let known = outcomes[canonicalNode] {
                    outcome = known
                } else {
                    outcome = try evaluator.evaluate(levels: lattice.levels(of: canonicalNode), stopAbove: maxSuppressed)
                    outcomes[canonicalNode] = outcome
                    checked += 1
                }
                checkedLevels.append(levels)
                checkedClasses.append(outcome.classes)
                if outcome.suppressed <= maxSuppressed {
                    feasibleLevels.append(levels)
                    feasibleSubjectsInClasses.append(outcome.subjectsInClasses)
                }
                suppressedCache[node] = Int32(outcome.suppressed)
                switch metric {
                case .discernibility: scoreCache[node] = outcome.keptSquares + Double(outcome.suppressed) * n
                case .averageClassSize: scoreCache[node] = n / Double(max(outcome.keptClasses, 1))
                case .loss: break
                }
                let feasible = outcome.suppressed <= maxSuppressed
                if feasible { lattice.tagUp(node, as: .feasible, in: &tags) } else { lattice.tagDown(node, as: .infeasible, in: &tags) }
                return feasible
            }

            // Phase 1: resolve every node's feasibility with as few checks as possible.
            for start in lattice.bottomUpOrder where tags[start] == .unknown {
                var path = [start]
                while let next = lattice.successors(of: path[path.count - 1]).first(where: { tags[$0] == .unknown }) {
                    path.append(next)
                }
                var low = 0, high = path.count - 1
                while low <= high {
                    let middle = (low + high) / 2
                    let node = path[middle]
                    let feasible = tags[node] == .unknown ? try check(node) : tags[node] == .feasible
                    if feasible { high = middle - 1 } else { low = middle + 1 }
                }
            }

            // Phase 2: score the feasible nodes, skipping those whose bound shows they cannot win.
            let candidates = (0..<lattice.size).filter { tags[$0] == .feasible }.sorted {
                (lattice.precision($0), $0) < (lattice.precision($1), $1)
            }
            guard !candidates.isEmpty else {
                throw PrivacyError(.invalidParameter, "k = \(requirements.k)\(requirements.diversity.map { ", l = \($0.l)" } ?? "") cannot be reached with at most \(maxSuppressed) of \(encoded.subjectCount) subjects suppressed, even with every column fully generalized")
            }
            func loss(_ node: Int) -> Double {
                let suppressed = Double(suppressedCache[node])
                return (n - suppressed) / n * lattice.precision(node) + suppressed / n
            }
            // The most classes a node can have: no more than the label combinations its levels
            // allow, or than any node checked that it generalizes.
            func mostClasses(_ node: Int) -> Double {
                let levels = lattice.levels(of: node)
                var bound = encoded.domainSizes(levels).reduce(1.0) { $0 * Double(max($1, 1)) }
                for (index, finer) in checkedLevels.enumerated() where Double(checkedClasses[index]) < bound {
                    if zip(finer, levels).allSatisfy({ $0 <= $1 }) { bound = Double(checkedClasses[index]) }
                }
                return max(bound, 1)
            }
            // The fewest subjects counted once per class a node can have: every subject once, or
            // as many as any node checked that generalizes it.
            func leastSubjectsInClasses(_ node: Int) -> Double {
                let levels = lattice.levels(of: node)
                var bound = n
                for (index, coarser) in feasibleLevels.enumerated() where Double(feasibleSubjectsInClasses[index]) > bound {
                    if zip(levels, coarser).allSatisfy({ $0 <= $1 }) { bound = Double(feasibleSubjectsInClasses[index]) }
                }
                return bound
            }
            func scoreBound(_ node: Int) -> Double {
                // The loss's bound needs neither count (and is taken for every candidate).
                if metric == .loss { return lattice.precision(node) }
                return Self.scoreBound(metric: metric, subjects: n, maxSuppressed: Double(maxSuppressed), classes: mostClasses(node),
                                       subjectsInClasses: leastSubjectsInClasses(node), precision: lattice.precision(node))
            }
            // Candidates are scored from the lowest bound up; once the bound reaches the best score
            // found, no later candidate can do better. Equal scores go to the lower precision, then
            // the lower node, whatever the order they were scored in.
            let bounds = candidates.map(scoreBound)
            let order = candidates.indices.sorted { (bounds[$0], lattice.precision(candidates[$0]), candidates[$0]) < (bounds[$1], lattice.precision(candidates[$1]), candidates[$1]) }
            var best: (node: Int, score: Double)?
            func better(_ node: Int, _ score: Double, than best: (node: Int, score: Double)?) -> Bool {
                guard let best else { return true }
                return (score, lattice.precision(node), node) < (best.score, lattice.precision(best.node), best.node)
            }
            func beyond(_ bound: Double, _ best: (node: Int, score: Double)?) -> Bool {
                guard skipsBeyondBound, let best else { return false }
                return bound > best.score * (1 + Self.boundMargin)
            }
            for position in order {
                let node = candidates[position]
                if beyond(bounds[position], best) { break }
                if !excluding.isEmpty && excluding.contains(lattice.levels(of: node)) { continue }
                // A node that splits the records as a candidate of lower precision does ties with it at best.
                let canonicalNode = canonical(node)
                if canonicalNode != node && tags[canonicalNode] == .feasible
                    && (excluding.isEmpty || !excluding.contains(lattice.levels(of: canonicalNode))) { continue }
                if suppressedCache[node] < 0 || (metric != .loss && scoreCache[node].isNaN) {
                    // Nodes checked since the bounds were sorted may have tightened this one.
                    if beyond(scoreBound(node), best) { continue }
                    _ = try check(node)
                }
                guard suppressedCache[node] <= maxSuppressed else { continue }
                let score = metric == .loss ? loss(node) : scoreCache[node]
                if better(node, score, than: best) { best = (node, score) }
            }
            guard let (node, score) = best else {
                throw PrivacyError(.invalidParameter, "no generalization meets the requirements")
            }
            return Solution(levels: lattice.levels(of: node), loss: loss(node), score: score, nodesChecked: checked, latticeSize: lattice.size)
        }

        /// Whether candidates whose bound exceeds the best score are left unchecked (turned off
        /// only to show what the bound spares).
        var skipsBeyondBound = true

        /// Relative slack under which a bound is not trusted to exceed a score (rounding).
        static let boundMargin = 1e-9

        /// The lowest score a node that meets the limit can have, knowing only that it has at most
        /// `classes` classes, at least `subjectsInClasses` subjects counted once per class (T), and
        /// `precision`. Under discernibility, suppressing S subjects leaves at least T − S of
        /// those counts in kept classes, and Σ|C|² over at most `classes` classes is at least
        /// (T − S)² / classes (Cauchy–Schwarz); the bound is the least of that plus S·N over S up
        /// to the limit. The average class size is at least N / classes; the loss at least the precision.
        static func scoreBound(metric: Metric, subjects n: Double, maxSuppressed: Double, classes: Double, subjectsInClasses t: Double,
                               precision: Double) -> Double {
            switch metric {
            case .discernibility:
                // Convex in S, least at T − classes·N/2, clamped to what the node may suppress.
                let s = min(max(t - classes * n / 2, 0), maxSuppressed)
                let kept = max(t - s, 0)
                return kept * kept / classes + s * n
            case .averageClassSize:
                return n / classes
            case .loss:
                return precision
            }
        }

        /// Builds the released table for a solution.
        public func release(_ solution: Solution, keepColumns: [String] = []) throws -> AnonymizedColumns {
            var released = try Release.build(table: table, encoded: encoded, evaluator: evaluator, levels: solution.levels,
                                             requirements: requirements, keepColumns: keepColumns)
            released.report.algorithm = "optimal"
            released.report.levels = Dictionary(uniqueKeysWithValues: zip(encoded.quasiIdentifiers.map(\.column), solution.levels))
            released.report.loss = solution.loss
            released.report.metric = metric.rawValue
            released.report.metricValue = solution.score
            released.report.nodesChecked = solution.nodesChecked
            released.report.latticeSize = solution.latticeSize
            return released
        }
    }
}

enum Tag: UInt8 { case unknown, feasible, infeasible }

/// The generalization lattice: one node per combination of levels.
struct Lattice {
    let heights: [Int]
    let strides: [Int]
    let size: Int
    let bottomUpOrder: [Int]
    private let precisionOf: [Double]

    init(heights: [Int]) {
        self.heights = heights
        var strides: [Int] = []
        var size = 1
        for height in heights {
            strides.append(size)
            size *= height
        }
        self.strides = strides
        self.size = size
        var levelSums = [Int](repeating: 0, count: size)
        var precision = [Double](repeating: 0, count: size)
        for node in 0..<size {
            var rest = node
            var sum = 0, fraction = 0.0
            for height in heights {
                let level = rest % height
                rest /= height
                sum += level
                fraction += height > 1 ? Double(level) / Double(height - 1) : 0
            }
            levelSums[node] = sum
            precision[node] = fraction / Double(heights.count)
        }
        bottomUpOrder = (0..<size).sorted { (levelSums[$0], $0) < (levelSums[$1], $1) }
        precisionOf = precision
    }

    func levels(of node: Int) -> [Int] {
        var rest = node
        return heights.map { height in
            defer { rest /= height }
            return rest % height
        }
    }

    /// Mean normalized level: the node's generalization, without looking at data.
    func precision(_ node: Int) -> Double { precisionOf[node] }

    func successors(of node: Int) -> [Int] {
        var result: [Int] = []
        for (q, height) in heights.enumerated() where (node / strides[q]) % height < height - 1 {
            result.append(node + strides[q])
        }
        return result
    }

    func predecessors(of node: Int) -> [Int] {
        var result: [Int] = []
        for (q, height) in heights.enumerated() where (node / strides[q]) % height > 0 {
            result.append(node - strides[q])
        }
        return result
    }

    /// Tags `node` and every generalization of it.
    func tagUp(_ node: Int, as tag: Tag, in tags: inout [Tag]) {
        var stack = [node]
        while let current = stack.popLast() {
            guard tags[current] != tag else { continue }
            tags[current] = tag
            stack += successors(of: current).filter { tags[$0] != tag }
        }
    }

    /// Tags `node` and every specialization of it.
    func tagDown(_ node: Int, as tag: Tag, in tags: inout [Tag]) {
        var stack = [node]
        while let current = stack.popLast() {
            guard tags[current] != tag else { continue }
            tags[current] = tag
            stack += predecessors(of: current).filter { tags[$0] != tag }
        }
    }
}
