import Testing
@testable import CivitasPrivacy

/// Reproducible words for the synthesizer's sampler (SplitMix64).
struct SplitMixWords: RandomWords {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("DP synthetic data")
struct SyntheticDataTests {
    let spec = SyntheticSpec(fields: ["zone", "age", "kind"], domains: ["zone": ["n", "s", "e", "w"], "kind": ["fire", "ems", "traffic"]],
                             bins: ["age": ["0", "18", "40", "65", "120"]])

    /// Records of `people` subjects, each with 1 to `most` records.
    func table(people: Int, most: Int, seed: UInt64) -> ColumnarTable {
        var numbers = SeededNumbers(seed: seed)
        var table = ColumnarTable(columns: ["zone", "age", "kind", "person"])
        let zones = ["n", "s", "e", "w"], kinds = ["fire", "ems", "traffic"]
        for person in 0..<people {
            for _ in 0..<(1 + numbers.next(most)) {
                table.append([zones[numbers.next(4)], String(numbers.next(100)), kinds[numbers.next(3)], "p\(person)"])
            }
        }
        return table
    }

    func without(_ table: ColumnarTable, subject: String) -> ColumnarTable {
        var result = ColumnarTable(columns: table.columns)
        for r in 0..<table.rowCount {
            let record = table.columns.indices.map { c in table.values[c][Int(table.codes[c][r])] }
            if record[3] != subject { result.append(record) }
        }
        return result
    }

    /// The L2 distance between two marginal vectors, per marginal.
    func distances(_ a: [[Int64]], _ b: [[Int64]]) -> [Double] {
        zip(a, b).map { x, y in zip(x, y).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }.squareRoot() }
    }

    @Test("Removing one subject moves every measured marginal by at most the sensitivity the noise is calibrated to")
    func sensitivityUnderRemovingOneSubject() throws {
        for (seed, bound) in [(1, 1), (2, 2), (3, 3)] as [(UInt64, Int)] {
            let synthesizer = try spec.synthesizer(rho: try Rational(decimal: "1"), subject: "person", maxRecordsPerSubject: bound, schema: nil)
            // Every subject has at most `bound` records, so no random choice is made: the counts are a function of the table.
            let full = table(people: 60, most: bound, seed: seed)
            var sampler = ExactSampler(random: SplitMixWords(state: seed))
            let counts = try synthesizer.trueCounts(full, using: &sampler)
            #expect(counts.count == 5)  // three one-way marginals, two pairs along the chain
            for person in ["p0", "p7", "p59"] {
                let smaller = try synthesizer.trueCounts(without(full, subject: person), using: &sampler)
                for distance in distances(counts, smaller) { #expect(distance <= Double(bound)) }
            }
        }
        // Positive control: without the bound (a subject's 3 records counted in full against a
        // sensitivity of 1), some marginal moves by more than the noise is calibrated to.
        let unbounded = try spec.synthesizer(rho: try Rational(decimal: "1"), subject: "person", maxRecordsPerSubject: 3, schema: nil)
        var heavy = ColumnarTable(columns: ["zone", "age", "kind", "person"])
        for _ in 0..<3 { heavy.append(["n", "30", "ems", "heavy"]) }
        heavy.append(["s", "70", "fire", "other"])
        var sampler = ExactSampler(random: SplitMixWords(state: 9))
        let moved = distances(try unbounded.trueCounts(heavy, using: &sampler),
                              try unbounded.trueCounts(without(heavy, subject: "heavy"), using: &sampler))
        #expect(moved.contains { $0 > 1 })
    }

    @Test("A subject with more records than the bound contributes exactly the bound to every marginal")
    func contributionBounding() throws {
        let synthesizer = try spec.synthesizer(rho: try Rational(decimal: "1"), subject: "person", maxRecordsPerSubject: 2, schema: nil)
        var table = ColumnarTable(columns: ["zone", "age", "kind", "person"])
        for i in 0..<40 { table.append([["n", "s"][i % 2], "30", "ems", "heavy"]) }
        var sampler = ExactSampler(random: SplitMixWords(state: 4))
        for counts in try synthesizer.trueCounts(table, using: &sampler) { #expect(counts.reduce(0, +) == 2) }
    }

    @Test("Records with a value outside a declared domain count in no marginal; numbers outside the bins in the end bins")
    func declaredDomains() throws {
        let synthesizer = try spec.synthesizer(rho: try Rational(decimal: "1"), subject: nil, maxRecordsPerSubject: 1, schema: nil)
        var table = ColumnarTable(columns: ["zone", "age", "kind"])
        table.append(["north", "30", "ems"])  // not a declared zone
        table.append(["n", "-5", "ems"])      // below the first edge: the first bin
        table.append(["n", "500", "fire"])    // above the last: the last bin
        var sampler = ExactSampler(random: SplitMixWords(state: 5))
        let counts = try synthesizer.trueCounts(table, using: &sampler)
        #expect(counts[0] == [2, 0, 0, 0])
        #expect(counts[1] == [1, 0, 0, 1])
        #expect(counts[2] == [1, 1, 0])
    }

    @Test("The noise on each count has the variance σ² the calibration gives, and ρ is what is charged")
    func noiseScale() throws {
        let synthesizer = try spec.synthesizer(rho: try Rational(decimal: "0.5"), subject: "person", maxRecordsPerSubject: 1, schema: nil)
        #expect(try synthesizer.charge() == PrivacyCharge(rhoMicro: 500_000))
        // σ² = Δ² · marginals / (2ρ) = 1 · 5 / 1.
        #expect(try synthesizer.sigmaSquared == Rational(5, 1))
        let data = table(people: 300, most: 1, seed: 11)
        var sampler = ExactSampler(random: SplitMixWords(state: 12))
        let truth = try synthesizer.trueCounts(data, using: &sampler)
        var squares = 0.0, n = 0.0
        for _ in 0..<200 {
            let output = try synthesizer.run(data, using: &sampler)
            for (noisy, exact) in zip(output.measurements.counts, truth) {
                for (a, b) in zip(noisy, exact) { squares += Double((a - b) * (a - b)); n += 1 }
            }
        }
        // 200 × 53 counts: the sample variance is within 5% of σ² = 5 with overwhelming probability.
        #expect(abs(squares / n - 5) < 0.25)
    }

    @Test("The number of rows is the noisy total: it varies between runs and matches the measurements, never the true count by construction")
    func rowCountFollowsTheNoisyTotal() throws {
        let synthesizer = try spec.synthesizer(rho: try Rational(decimal: "0.01"), subject: "person", maxRecordsPerSubject: 1, schema: nil)
        let data = table(people: 500, most: 1, seed: 21)
        var sampler = ExactSampler(random: SplitMixWords(state: 22))
        var totals = Set<Int>()
        for _ in 0..<20 {
            let output = try synthesizer.run(data, using: &sampler)
            #expect(output.rows.count == output.total)
            // The total is the inverse-variance weighted mean of the noisy marginals' sums.
            var weighted = 0.0, weights = 0.0
            for counts in output.measurements.counts {
                weighted += Double(counts.reduce(0, +)) / Double(counts.count)
                weights += 1 / Double(counts.count)
            }
            #expect(output.total == Int((weighted / weights).rounded()))
            totals.insert(output.total)
        }
        #expect(totals.count > 5)
    }

    @Test("Consistent model: no negative cell, every pair's margins equal its fields' distributions, which sum to the total")
    func consistency() throws {
        let synthesizer = try spec.synthesizer(rho: try Rational(decimal: "0.05"), subject: "person", maxRecordsPerSubject: 1, schema: nil)
        let data = table(people: 200, most: 1, seed: 31)
        var sampler = ExactSampler(random: SplitMixWords(state: 32))
        let output = try synthesizer.run(data, using: &sampler)
        let model = try synthesizer.consistentModel(output.measurements)
        let total = Double(model.total)
        for distribution in model.oneWay {
            #expect(distribution.allSatisfy { $0 >= 0 })
            #expect(abs(distribution.reduce(0, +) - total) < 1e-6 * max(total, 1))
        }
        for (e, (a, b)) in synthesizer.tree.enumerated() {
            let joint = model.pairs[e], rows = model.oneWay[a].count, columns = model.oneWay[b].count
            #expect(joint.allSatisfy { $0 >= 0 })
            for i in 0..<rows { #expect(abs((0..<columns).reduce(0.0) { $0 + joint[i * columns + $1] } - model.oneWay[a][i]) < 1e-6 * max(total, 1)) }
            for j in 0..<columns { #expect(abs((0..<rows).reduce(0.0) { $0 + joint[$1 * columns + j] } - model.oneWay[b][j]) < 1e-6 * max(total, 1)) }
        }
        // Rows carry only declared labels.
        let labels = synthesizer.fields.map { Set($0.labels) }
        for row in output.rows { for (f, value) in row.enumerated() { #expect(labels[f].contains(value)) } }
        // The CSV written from the cells holds the same rows, quoted where a bin label has a comma.
        let written = try CSVTable.parse(output.csv(), delimiter: 0x2C)
        #expect(written.columns == ["zone", "age", "kind"] && written.rows == output.rows)
    }

    @Test("With little noise the synthetic rows reproduce the one-way and the tree's two-way marginals")
    func utility() throws {
        let synthesizer = try spec.synthesizer(rho: try Rational(decimal: "100"), subject: "person", maxRecordsPerSubject: 1, schema: nil)
        let data = table(people: 20_000, most: 1, seed: 41)
        var sampler = ExactSampler(random: SplitMixWords(state: 42))
        let truth = try synthesizer.trueCounts(data, using: &sampler)
        let output = try synthesizer.run(data, using: &sampler)
        var synthetic = ColumnarTable(columns: ["zone", "age", "kind"])
        for row in output.rows { synthetic.append(row) }
        // The synthetic rows carry bin labels: counted with the labels as the age domain.
        let labelled = SyntheticSpec(fields: spec.fields, domains: spec.domains.merging(["age": synthesizer.fields[1].labels]) { a, _ in a })
        let plain = try labelled.synthesizer(rho: try Rational(decimal: "1"), subject: nil, maxRecordsPerSubject: 1, schema: nil)
        let measured = try plain.trueCounts(synthetic, using: &sampler)
        for (a, b) in zip(truth, measured) {
            let n = Double(a.reduce(0, +)), m = Double(b.reduce(0, +))
            let variation = zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) / n - Double($1.1) / m) } / 2
            #expect(variation < 0.03)
        }
    }

    @Test("A tree with a cycle, a pair naming an unknown field, or a field without a declared domain is refused")
    func refusals() throws {
        let cycle = SyntheticSpec(fields: spec.fields, domains: spec.domains, bins: spec.bins,
                                  tree: [["zone", "age"], ["age", "kind"], ["kind", "zone"]])
        #expect(throws: PrivacyError.self) { try cycle.synthesizer(rho: try Rational(decimal: "1"), subject: nil, maxRecordsPerSubject: 1, schema: nil) }
        let undeclared = SyntheticSpec(fields: ["zone", "street"], domains: ["zone": ["n"]])
        #expect(throws: PrivacyError.self) { try undeclared.synthesizer(rho: try Rational(decimal: "1"), subject: nil, maxRecordsPerSubject: 1, schema: nil) }
        #expect(throws: PrivacyError.self) {
            try SyntheticSpec.parse(["fields": ["zone"], "tree": [["zone", "kind"]]], member: "synthetic")
        }
    }
}
