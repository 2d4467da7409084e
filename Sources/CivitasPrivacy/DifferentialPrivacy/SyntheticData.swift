import CivitasCrypto
/// One field of a synthetic release and its public, declared domain: a list of categories, or
/// bins over a numeric field (edges ascending; values below the first edge or above the last
/// fall in the end bins).
public struct SyntheticField: Sendable, Equatable {
    public enum Domain: Sendable, Equatable {
        case categories([String])
        case bins(edges: [Double], labels: [String])
    }

    public let name: String
    public let domain: Domain

    /// Most cells one field's domain may have.
    public static let maximumCells = 10_000

    public init(name: String, categories: [String]) throws {
        guard (1...Self.maximumCells).contains(categories.count), Set(categories).count == categories.count else {
            throw PrivacyError(.invalidParameter, "field '\(name)': a domain of 1 to \(Self.maximumCells) distinct values is needed")
        }
        self.name = name
        domain = .categories(categories)
    }

    /// Bins between consecutive edges, given as decimals; each bin is labelled `[lower,upper)`.
    public init(name: String, binEdges: [String]) throws {
        let edges = binEdges.compactMap { Double($0) }
        guard edges.count == binEdges.count, (2...(Self.maximumCells + 1)).contains(edges.count),
              zip(edges, edges.dropFirst()).allSatisfy({ $0 < $1 }), edges.allSatisfy(\.isFinite) else {
            throw PrivacyError(.invalidParameter, "field '\(name)': bins need 2 to \(Self.maximumCells + 1) ascending decimal edges")
        }
        self.name = name
        domain = .bins(edges: edges, labels: zip(binEdges, binEdges.dropFirst()).map { "[\($0),\($1))" })
    }

    /// The cells' labels, as written in synthetic rows.
    public var labels: [String] {
        switch domain {
        case .categories(let values): values
        case .bins(_, let labels): labels
        }
    }

    /// The cell of a value, or nil when a categorical value is outside the declared domain (or a
    /// binned value is not a number).
    func cell(of value: String) -> Int? {
        switch domain {
        case .categories(let values):
            return values.firstIndex(of: value)
        case .bins(let edges, _):
            guard let number = Double(value), number.isFinite else { return nil }
            // The last edge at or below the value, within the bins.
            var low = 0, high = edges.count - 2
            while low < high {
                let middle = (low + high + 1) / 2
                if edges[middle] <= number { low = middle } else { high = middle - 1 }
            }
            return low
        }
    }
}

/// Differentially private synthetic rows from noisy marginals (ρ-zCDP): every one-way marginal
/// and the two-way marginals along a tree of fields are counted over the records, each subject
/// contributing at most `maxRecordsPerSubject` of them, and given discrete Gaussian noise; the
/// noisy counts are made consistent (no negative counts; each pair agrees with its one-way
/// marginals) and rows are drawn from the tree's factorization. The number of rows is the noisy
/// total, never the true count. Everything after the noise is post-processing, so the rows are
/// ρ-zCDP with respect to adding or removing one subject.
public struct MarginalSynthesizer: Sendable {
    public let fields: [SyntheticField]
    /// Pairs of field positions whose two-way marginal is measured; they form a forest.
    public let tree: [(Int, Int)]
    public let rho: Rational
    /// The column naming the data subject; without it every record is its own subject.
    public let subject: String?
    public let maxRecordsPerSubject: Int

    /// Most cells of one two-way marginal.
    public static let maximumPairCells = 1_000_000
    /// Most rows one synthetic release may hold, whatever the noisy total.
    public static let maximumRows = 10_000_000

    public init(fields: [SyntheticField], tree: [(Int, Int)]? = nil, rho: Rational, subject: String? = nil, maxRecordsPerSubject: Int = 1) throws {
        guard !fields.isEmpty, fields.count <= 64, Set(fields.map(\.name)).count == fields.count else {
            throw PrivacyError(.invalidParameter, "a synthetic release needs 1 to 64 distinct fields")
        }
        guard !rho.isZero else { throw PrivacyError(.invalidParameter, "ρ must be positive") }
        guard (1...1000).contains(maxRecordsPerSubject) else { throw PrivacyError(.invalidParameter, "records per subject must be 1 to 1000") }
        // The fixed order when no tree is declared: a chain through the fields as listed.
        let edges = tree ?? (fields.count > 1 ? (1..<fields.count).map { ($0 - 1, $0) } : [])
        var component = Array(fields.indices)
        func root(_ i: Int) -> Int {
            var i = i
            while component[i] != i { i = component[i] }
            return i
        }
        for (a, b) in edges {
            guard fields.indices.contains(a), fields.indices.contains(b), a != b else {
                throw PrivacyError(.invalidParameter, "a tree edge must join two different synthetic fields")
            }
            let (ra, rb) = (root(a), root(b))
            guard ra != rb else {
                throw PrivacyError(.invalidParameter, "the edges \(fields[a].name)–\(fields[b].name) close a cycle: the pairs must form a tree")
            }
            component[ra] = rb
            guard fields[a].labels.count * fields[b].labels.count <= Self.maximumPairCells else {
                throw PrivacyError(.invalidParameter, "the pair \(fields[a].name)–\(fields[b].name) has more than \(Self.maximumPairCells) cells")
            }
        }
        self.fields = fields
        self.tree = edges
        self.rho = rho
        self.subject = subject
        self.maxRecordsPerSubject = maxRecordsPerSubject
    }

    /// The marginals measured: each one-way, then each pair of the tree, as lists of field names.
    public var marginals: [[String]] {
        fields.map { [$0.name] } + tree.map { [fields[$0.0].name, fields[$0.1].name] }
    }

    /// σ² of the noise on every count: each marginal's L2 sensitivity is `maxRecordsPerSubject`
    /// (a subject's records all in one cell at worst), and ρ is split evenly over the marginals.
    public var sigmaSquared: Rational {
        get throws { try mechanism.sigmaSquared }
    }

    var mechanism: DiscreteGaussianMechanism {
        get throws {
            let share = try Rational(rho.numerator, rho.denominator * UInt128(marginals.count))
            return try DiscreteGaussianMechanism(rho: share, sensitivity: UInt64(maxRecordsPerSubject))
        }
    }

    /// What a release costs: ρ, the sum of the marginals' shares.
    public func charge() throws -> PrivacyCharge { PrivacyCharge(rhoMicro: try PrivacyCharge.micro(rho)) }

    /// The noisy measurements, as released to post-processing: one list of counts per marginal
    /// (a pair's cells row-major, the first field's cell major).
    public struct Measurements: Sendable {
        public let counts: [[Int64]]
    }

    /// The synthetic rows and the measurements they were drawn from. The rows are held as one
    /// cell number per field and row, and written as CSV without holding them as text.
    public struct Output: Sendable {
        public let columns: [String]
        /// Per field, its cells' labels; per field and row, the row's cell.
        let labels: [[String]]
        let cells: [[Int32]]
        public let measurements: Measurements
        /// The noisy total: the number of rows.
        public let total: Int

        /// The rows as text (for small releases and tests; ``csv(delimiter:)`` writes them without this copy).
        public var rows: [[String]] {
            (0..<total).map { row in labels.indices.map { f in labels[f][Int(cells[f][row])] } }
        }

        public func csv(delimiter: UInt8 = 0x2C) -> [UInt8] {
            var writer = CSVWriter(columns: columns, delimiter: delimiter, expectedRows: total)
            var record = [String](repeating: "", count: columns.count)
            for row in 0..<total {
                for f in labels.indices { record[f] = labels[f][Int(cells[f][row])] }
                writer.append(record)
            }
            return writer.bytes
        }
    }

    /// Measures the marginals of `table` (which holds the fields and the subject column) with
    /// noise, and draws the synthetic rows.
    public func run<R: RandomWords>(_ table: ColumnarTable, using sampler: inout ExactSampler<R>) throws -> Output {
        let counts = try trueCounts(table, using: &sampler)
        let mechanism = try self.mechanism
        let noisy = counts.map { marginal in marginal.map { mechanism.release($0, using: &sampler) } }
        let measurements = Measurements(counts: noisy)
        let model = try consistentModel(measurements)
        return Output(columns: fields.map(\.name), labels: fields.map(\.labels), cells: try sample(model, using: &sampler),
                      measurements: measurements, total: model.total)
    }

    // MARK: Measuring

    /// The exact counts of every marginal over the records kept by contribution bounding; records
    /// with a value outside a declared domain are left out of all of them.
    func trueCounts<R: RandomWords>(_ table: ColumnarTable, using sampler: inout ExactSampler<R>) throws -> [[Int64]] {
        let columns = try fields.map { try table.index(of: $0.name) }
        // Each distinct value's cell, once per column.
        let cellOfCode: [[Int32]] = fields.enumerated().map { f, field in
            table.values[columns[f]].map { Int32(field.cell(of: $0) ?? -1) }
        }
        var counts: [[Int64]] = fields.map { [Int64](repeating: 0, count: $0.labels.count) }
        counts += tree.map { [Int64](repeating: 0, count: fields[$0.0].labels.count * fields[$0.1].labels.count) }
        var cells = [Int](repeating: 0, count: fields.count)
        func count(_ row: Int) {
            for f in fields.indices {
                let cell = cellOfCode[f][Int(table.codes[columns[f]][row])]
                if cell < 0 { return }
                cells[f] = Int(cell)
            }
            for f in fields.indices { counts[f][cells[f]] += 1 }
            for (e, (a, b)) in tree.enumerated() { counts[fields.count + e][cells[a] * fields[b].labels.count + cells[b]] += 1 }
        }
        guard let subject else {
            for r in 0..<table.rowCount { count(r) }
            return counts
        }
        // Rows grouped by subject (a counting sort over the subject codes); per subject, a random
        // choice of at most `maxRecordsPerSubject` of its records.
        let (ordered, starts) = table.recordsGrouped(by: try table.index(of: subject))
        for s in 0..<(starts.count - 1) where starts[s] < starts[s + 1] {
            var rows = Array(ordered[starts[s]..<starts[s + 1]])
            if rows.count > maxRecordsPerSubject { DPAggregate.shuffle(&rows, using: &sampler) }
            for r in rows.prefix(maxRecordsPerSubject) { count(Int(r)) }
        }
        return counts
    }

    // MARK: Post-processing

    /// Cell probabilities that agree with each other: one-way distributions, and per tree pair a
    /// joint distribution whose margins are those one-way distributions.
    struct Model {
        var total: Int
        var oneWay: [[Double]]
        var pairs: [[Double]]
    }

    /// Makes the noisy counts consistent. The total is the inverse-variance weighted mean of the
    /// marginals' sums; each field's distribution combines its one-way counts with the margins
    /// of its pairs (weighted by their variance), projected onto the counts that are non-negative
    /// and sum to the total; each pair is projected the same way, then scaled to its margins by
    /// iterative proportional fitting.
    func consistentModel(_ measurements: Measurements) throws -> Model {
        let sizes = fields.map { $0.labels.count }
        // A marginal's sum has variance (cells × σ²): weight 1 / cells.
        var weighted = 0.0, weights = 0.0
        for marginal in measurements.counts {
            let sum = marginal.reduce(0.0) { $0 + Double($1) }
            weighted += sum / Double(marginal.count)
            weights += 1 / Double(marginal.count)
        }
        let total = min(max(Int((weighted / weights).rounded()), 0), Self.maximumRows)
        let mass = Double(total)

        var oneWay: [[Double]] = []
        for f in fields.indices {
            // Per cell: the one-way count (variance σ²) and each pair's margin (variance other × σ²).
            var estimate = measurements.counts[f].map(Double.init)
            var precision = [Double](repeating: 1, count: sizes[f])
            for (e, (a, b)) in tree.enumerated() where a == f || b == f {
                let pair = measurements.counts[fields.count + e]
                let other = a == f ? sizes[b] : sizes[a]
                for cell in 0..<sizes[f] {
                    var margin = 0.0
                    for o in 0..<other { margin += Double(a == f ? pair[cell * other + o] : pair[o * sizes[f] + cell]) }
                    let weight = 1 / Double(other)
                    estimate[cell] = (estimate[cell] * precision[cell] + margin * weight) / (precision[cell] + weight)
                    precision[cell] += weight
                }
            }
            oneWay.append(Self.projectOntoSimplex(estimate, total: mass))
        }
        var pairs: [[Double]] = []
        for (e, (a, b)) in tree.enumerated() {
            var joint = Self.projectOntoSimplex(measurements.counts[fields.count + e].map(Double.init), total: mass)
            Self.fitToMargins(&joint, rows: oneWay[a], columns: oneWay[b])
            pairs.append(joint)
        }
        return Model(total: total, oneWay: oneWay, pairs: pairs)
    }

    /// The closest vector (Euclidean) with non-negative entries summing to `total`.
    static func projectOntoSimplex(_ values: [Double], total: Double) -> [Double] {
        guard total > 0 else { return [Double](repeating: 0, count: values.count) }
        let sorted = values.sorted(by: >)
        var running = 0.0, threshold = 0.0
        for (i, value) in sorted.enumerated() {
            running += value
            let candidate = (running - total) / Double(i + 1)
            if value - candidate > 0 { threshold = candidate }
        }
        return values.map { max($0 - threshold, 0) }
    }

    /// Iterative proportional fitting of a non-negative joint table (row-major) to the given row
    /// and column sums, which have the same total. Empty rows or columns with mass to receive get
    /// it spread evenly over the cells the other margin allows.
    static func fitToMargins(_ joint: inout [Double], rows: [Double], columns: [Double]) {
        let r = rows.count, c = columns.count
        let total = rows.reduce(0, +)
        guard total > 0 else {
            joint = [Double](repeating: 0, count: r * c)
            return
        }
        // A small floor keeps every cell both margins allow reachable.
        let floor = total * 1e-9 / Double(r * c)
        for i in 0..<r where rows[i] > 0 {
            for j in 0..<c where columns[j] > 0 { joint[i * c + j] = max(joint[i * c + j], floor) }
        }
        for i in 0..<r where rows[i] == 0 { for j in 0..<c { joint[i * c + j] = 0 } }
        for j in 0..<c where columns[j] == 0 { for i in 0..<r { joint[i * c + j] = 0 } }
        for _ in 0..<200 {
            for i in 0..<r {
                var sum = 0.0
                for j in 0..<c { sum += joint[i * c + j] }
                if sum > 0 { let scale = rows[i] / sum; for j in 0..<c { joint[i * c + j] *= scale } }
            }
            var worst = 0.0
            var sums = [Double](repeating: 0, count: c)
            for i in 0..<r { for j in 0..<c { sums[j] += joint[i * c + j] } }
            for j in 0..<c {
                worst = max(worst, abs(sums[j] - columns[j]))
                if sums[j] > 0 { let scale = columns[j] / sums[j]; for i in 0..<r { joint[i * c + j] *= scale } }
            }
            if worst <= total * 1e-10 { break }
        }
    }

    // MARK: Sampling

    /// `model.total` rows drawn with the sampler's CSPRNG, as one cell number per field and row: in
    /// each tree, the first field from its distribution, every other from its pair given the field before it.
    func sample<R: RandomWords>(_ model: Model, using sampler: inout ExactSampler<R>) throws -> [[Int32]] {
        // Orient the forest: visit fields in order, each unvisited one a root.
        var parent = [(edge: Int, isFirst: Bool)?](repeating: nil, count: fields.count)
        var order: [Int] = []
        var visited = [Bool](repeating: false, count: fields.count)
        for start in fields.indices where !visited[start] {
            visited[start] = true
            var queue = [start], head = 0
            while head < queue.count {
                let f = queue[head]
                head += 1
                order.append(f)
                for (e, (a, b)) in tree.enumerated() where a == f || b == f {
                    let other = a == f ? b : a
                    if visited[other] { continue }
                    visited[other] = true
                    parent[other] = (e, a == f)
                    queue.append(other)
                }
            }
        }
        let labels = fields.map(\.labels)
        let roots = model.oneWay.map(CumulativeDistribution.init)
        // Per non-root field: one distribution per cell of its parent.
        var conditionals: [[CumulativeDistribution]] = Array(repeating: [], count: fields.count)
        for f in fields.indices {
            guard let (e, parentIsFirst) = parent[f] else { continue }
            let (a, b) = tree[e]
            let p = parentIsFirst ? a : b
            let (pn, fn) = (labels[p].count, labels[f].count)
            let joint = model.pairs[e], width = labels[b].count
            conditionals[f] = (0..<pn).map { pc in
                CumulativeDistribution((0..<fn).map { fc in parentIsFirst ? joint[pc * width + fc] : joint[fc * width + pc] })
            }
        }
        // Systematic sampling: each field's cells are allocated in proportion to the model (a
        // cell expecting 10.4 rows gets 10 or 11), then shuffled over the rows; a child field is
        // allocated within each cell of its parent. Far less sampling noise than drawing rows one
        // by one, with the same expected counts.
        let total = model.total
        var cells = [[Int32]](repeating: [], count: fields.count)
        for f in order {
            if let (e, parentIsFirst) = parent[f] {
                let p = parentIsFirst ? tree[e].0 : tree[e].1
                var rowsOf = [[Int32]](repeating: [], count: labels[p].count)
                for (row, cell) in cells[p].enumerated() { rowsOf[Int(cell)].append(Int32(row)) }
                var column = [Int32](repeating: 0, count: total)
                for (pc, rows) in rowsOf.enumerated() where !rows.isEmpty {
                    var drawn = conditionals[f][pc].systematic(rows.count, using: &sampler)
                        ?? roots[f].systematic(rows.count, using: &sampler) ?? [Int32](repeating: 0, count: rows.count)
                    DPAggregate.shuffle(&drawn, using: &sampler)
                    for (row, cell) in zip(rows, drawn) { column[Int(row)] = cell }
                }
                cells[f] = column
            } else {
                var drawn = roots[f].systematic(total, using: &sampler) ?? [Int32](repeating: 0, count: total)
                DPAggregate.shuffle(&drawn, using: &sampler)
                cells[f] = drawn
            }
        }
        return cells
    }
}

/// Drawing a cell in proportion to non-negative weights.
struct CumulativeDistribution {
    let cumulative: [Double]

    init(_ weights: [Double]) {
        var running = 0.0
        cumulative = weights.map { running += max($0, 0); return running }
    }

    /// `n` cells by systematic sampling (one uniform offset, then every W/n of the cumulative
    /// weight), in ascending order; nil when every weight is zero.
    func systematic<R: RandomWords>(_ n: Int, using sampler: inout ExactSampler<R>) -> [Int32]? {
        guard let total = cumulative.last, total > 0 else { return nil }
        let step = total / Double(n), offset = sampler.uniformUnitInterval()
        var drawn = [Int32](), cell = 0
        drawn.reserveCapacity(n)
        for k in 0..<n {
            let point = min((offset + Double(k)) * step, total.nextDown)
            while cell < cumulative.count - 1 && cumulative[cell] <= point { cell += 1 }
            drawn.append(Int32(cell))
        }
        return drawn
    }
}

extension ExactSampler {
    /// A uniform double in [0, 1) with 53 random bits.
    mutating func uniformUnitInterval() -> Double {
        Double(UInt64(randomUniform(below: 1 << 53))) / 9_007_199_254_740_992
    }
}

/// What a synthetic release measures, as a publisher declares it (in an agreement's `synthetic`
/// terms, or a file for `civitas synthesize`): the fields, their domains (declared categories,
/// numeric bins, or the schema's own domain), and optionally the tree of pairs.
public struct SyntheticSpec: Sendable, Equatable {
    public let fields: [String]
    public let domains: [String: [String]]
    public let bins: [String: [String]]
    /// Pairs of fields; nil: a chain through the fields as listed.
    public let tree: [[String]]?

    /// The members this part of a document may carry.
    public static let members: Set<String> = ["fields", "domains", "bins", "tree"]

    public init(fields: [String], domains: [String: [String]] = [:], bins: [String: [String]] = [:], tree: [[String]]? = nil) {
        self.fields = fields
        self.domains = domains
        self.bins = bins
        self.tree = tree
    }

    /// Reads `fields`, `domains`, `bins` (edges as numbers or decimal strings) and `tree` from an
    /// object; other members are the caller's to check.
    public static func parse(_ object: [String: JSONValue], member: String) throws -> SyntheticSpec {
        func invalid(_ message: String) -> PrivacyError { PrivacyError(.invalidParameter, "\(member).\(message)") }
        func strings(_ value: JSONValue?, _ name: String, maximum: Int) throws -> [String] {
            guard case .array(let items)? = value, (1...maximum).contains(items.count),
                  let texts = Optional(items.compactMap(\.stringValue)), texts.count == items.count,
                  texts.allSatisfy({ $0.utf8.count <= 256 }), Set(texts).count == texts.count else {
                throw invalid("\(name) must be a list of 1 to \(maximum) distinct strings of at most 256 bytes")
            }
            return texts
        }
        let fields = try strings(object["fields"], "fields", maximum: 64)
        var domains: [String: [String]] = [:]
        if let value = object["domains"] {
            guard let map = value.objectValue else { throw invalid("domains must map fields to their values") }
            for (field, list) in map { domains[field] = try strings(list, "domains.\(field.prefix(60))", maximum: SyntheticField.maximumCells) }
        }
        var bins: [String: [String]] = [:]
        if let value = object["bins"] {
            guard let map = value.objectValue else { throw invalid("bins must map fields to their edges") }
            for (field, list) in map {
                guard case .array(let items) = list, (2...(SyntheticField.maximumCells + 1)).contains(items.count) else {
                    throw invalid("bins.\(field.prefix(60)) must list 2 to \(SyntheticField.maximumCells + 1) edges")
                }
                bins[field] = try items.map { item in
                    if let text = item.stringValue { return text }
                    if let number = item.numberValue, let text = try? ECMAScriptNumber.format(number) { return text }
                    throw invalid("bins.\(field.prefix(60)) edges must be numbers")
                }
            }
        }
        var tree: [[String]]?
        if let value = object["tree"] {
            guard case .array(let pairs) = value, pairs.count < fields.count || pairs.isEmpty else {
                throw invalid("tree must be a list of fewer pairs than fields")
            }
            tree = try pairs.map { pair in
                let names = try strings(pair, "tree", maximum: 2)
                guard names.count == 2 else { throw invalid("tree must hold pairs of two fields") }
                return names
            }
        }
        for name in Set(domains.keys).union(bins.keys).union((tree ?? []).joined()).sorted() where !fields.contains(name) {
            throw invalid("names '\(name.prefix(60))', which is not among its fields")
        }
        if let both = Set(domains.keys).intersection(bins.keys).sorted().first {
            throw invalid("gives '\(both.prefix(60))' both a domain and bins")
        }
        return SyntheticSpec(fields: fields, domains: domains, bins: bins, tree: tree)
    }

    /// The spec as JSON, as it is written in a policy.
    public var jsonValue: JSONValue {
        var object: [String: JSONValue] = ["fields": .array(fields.map(JSONValue.string))]
        if !domains.isEmpty { object["domains"] = .object(domains.mapValues { .array($0.map(JSONValue.string)) }) }
        if !bins.isEmpty { object["bins"] = .object(bins.mapValues { .array($0.map(JSONValue.string)) }) }
        if let tree { object["tree"] = .array(tree.map { .array($0.map(JSONValue.string)) }) }
        return .object(object)
    }

    /// The fields with their domains: the declared categories or bins, else the schema's own
    /// declared domain (an enum, a boolean, a bounded integer).
    public func syntheticFields(schema: DatasetSchema?) throws -> [SyntheticField] {
        try fields.map { name in
            if let edges = bins[name] { return try SyntheticField(name: name, binEdges: edges) }
            if let values = domains[name] ?? schema?.field(name)?.declaredDomain { return try SyntheticField(name: name, categories: values) }
            throw PrivacyError(.invalidParameter, "field '\(name)' has no declared domain: list its values in domains, or its edges in bins")
        }
    }

    /// A synthesizer for the spec at ρ.
    public func synthesizer(rho: Rational, subject: String?, maxRecordsPerSubject: Int, schema: DatasetSchema?) throws -> MarginalSynthesizer {
        let tree = try self.tree.map { pairs in
            try pairs.map { pair -> (Int, Int) in
                guard let a = fields.firstIndex(of: pair[0]), let b = fields.firstIndex(of: pair[1]) else {
                    throw PrivacyError(.invalidParameter, "tree pair \(pair.joined(separator: "–")) names a field not in the release")
                }
                return (a, b)
            }
        }
        return try MarginalSynthesizer(fields: try syntheticFields(schema: schema), tree: tree, rho: rho, subject: subject,
                                       maxRecordsPerSubject: maxRecordsPerSubject)
    }
}
