import Testing
@testable import CivitasPrivacy

@Suite("DP aggregates")
struct AggregateTests {
    /// 3 subjects; subject "heavy" has 50 rows in group A and 50 in group B.
    func table() -> CSVTable {
        var rows: [[String]] = []
        for _ in 0..<50 { rows.append(["heavy", "A", "10"]); rows.append(["heavy", "B", "10"]) }
        rows.append(["light", "A", "4"])
        rows.append(["other", "B", "1000"])   // clamped to the upper bound
        return CSVTable(columns: ["person", "group", "value"], rows: rows)
    }

    func averaged(_ aggregate: DPAggregate, runs: Int = 400) throws -> [String: Double] {
        var totals: [String: Double] = [:]
        var sampler = ExactSampler(random: SystemRandomness())
        for _ in 0..<runs {
            let result = try aggregate.run(table(), groups: [["A"], ["B"], ["C"]], using: &sampler)
            for row in result.rows { totals[row[0], default: 0] += Double(row[1]) ?? .nan }
        }
        return totals.mapValues { $0 / Double(runs) }
    }

    @Test("Each subject counts in at most G groups with at most R rows each")
    func contributionBounding() throws {
        let aggregate = try DPAggregate(statistic: .count, groupBy: ["group"], mechanism: .laplace(epsilon: try Rational(decimal: "4")),
                                        subject: "person", maxGroupsPerSubject: 1, maxRowsPerSubject: 2)
        let means = try averaged(aggregate)
        // heavy contributes 2 rows to one of A or B (each half the time); light 1 to A; other 1 to B.
        #expect(abs((means["A"] ?? 0) - 2.0) < 0.3, "\(means)")
        #expect(abs((means["B"] ?? 0) - 2.0) < 0.3, "\(means)")
        #expect(abs(means["C"] ?? 9) < 0.3, "declared groups with no rows are released too: \(means)")
        #expect(try aggregate.charge() == PrivacyCharge(epsilonMicro: 4_000_000))
    }

    @Test("Sums clamp each value to the bounds before noise")
    func clampedSums() throws {
        let aggregate = try DPAggregate(statistic: .sum(column: "value", lower: "0", upper: "20"), groupBy: ["group"],
                                        mechanism: .laplace(epsilon: try Rational(decimal: "20")), subject: "person",
                                        maxGroupsPerSubject: 2, maxRowsPerSubject: 1)
        let means = try averaged(aggregate)
        // A: heavy 10 + light 4 = 14; B: heavy 10 + other 1000→20 = 30.
        #expect(abs((means["A"] ?? 0) - 14) < 1.5, "\(means)")
        #expect(abs((means["B"] ?? 0) - 30) < 1.5, "\(means)")
    }

    @Test("Rows are counted in their declared group by every group-by column; undeclared combinations are left out")
    func severalGroupByColumns() throws {
        // Per (zone, kind): how many rows, one subject each. ("north", "x") is declared but empty;
        // ("east", "fire") and ("south", "ems") are not declared.
        let counts = [["north", "fire"]: 3, ["north", "ems"]: 5, ["south", "fire"]: 7, ["east", "fire"]: 11, ["south", "ems"]: 2]
        var rows: [[String]] = []
        for (group, count) in counts.sorted(by: { $0.key.joined() < $1.key.joined() }) {
            for i in 0..<count { rows.append(["p-\(group.joined())-\(i)", group[0], group[1]]) }
        }
        let table = CSVTable(columns: ["person", "zone", "kind"], rows: rows)
        let declared = [["north", "fire"], ["north", "ems"], ["south", "fire"], ["north", "x"]]
        // ε = 60 per row: the discrete Laplace noise is 0 except with probability about 2e-26.
        let aggregate = try DPAggregate(statistic: .count, groupBy: ["zone", "kind"], mechanism: .laplace(epsilon: try Rational(60, 1)), subject: "person")
        var sampler = ExactSampler(random: SystemRandomness())
        for source in [try aggregate.run(table, groups: declared, using: &sampler),
                       try aggregate.run(try ColumnarTable(table, columns: ["kind", "person", "zone"]), groups: declared, using: &sampler)] {
            #expect(source.columns == ["zone", "kind", "count"])
            #expect(source.rows == [["north", "fire", "3"], ["north", "ems", "5"], ["south", "fire", "7"], ["north", "x", "0"]])
        }
    }

    @Test("A measure that is not a number on the grid is refused naming its row and column")
    func unreadableMeasure() throws {
        let table = CSVTable(columns: ["person", "group", "value"], rows: [["a", "A", "3"], ["b", "A", "three"]])
        let aggregate = try DPAggregate(statistic: .sum(column: "value", lower: "0", upper: "10"), groupBy: ["group"],
                                        mechanism: .laplace(epsilon: try Rational(1, 1)), subject: "person", maxRowsPerSubject: 5)
        var sampler = ExactSampler(random: SystemRandomness())
        do {
            _ = try aggregate.run(table, groups: [["A"]], using: &sampler)
            Issue.record("a value that is not a number was summed")
        } catch let error as PrivacyError {
            #expect(error.code == .invalidValue && error.message.hasPrefix("row 2, column 'value'"), "\(error.message)")
        }
    }

    @Test("Gaussian aggregates charge ρ, and parameters are checked up front")
    func gaussianAndParameters() throws {
        let aggregate = try DPAggregate(statistic: .mean(column: "value", lower: "0", upper: "20"), groupBy: ["group"],
                                        mechanism: .gaussian(rho: try Rational(decimal: "0.5")))
        #expect(try aggregate.charge() == PrivacyCharge(rhoMicro: 500_000))
        var sampler = ExactSampler(random: SystemRandomness())
        let result = try aggregate.run(table(), groups: [["A"]], using: &sampler)
        #expect(result.columns == ["group", "mean"])
        let mean = try #require(Double(result.rows[0][1]))
        #expect((0...20).contains(mean))
        #expect(throws: PrivacyError(.invalidParameter, "")) {
            try DPAggregate(statistic: .count, groupBy: [], mechanism: .laplace(epsilon: try Rational(0)))
        }
        #expect(throws: PrivacyError(.invalidParameter, "")) {
            try DPAggregate(statistic: .count, groupBy: [], mechanism: .laplace(epsilon: try Rational(1)), maxRowsPerSubject: 0)
        }
        let bad = try DPAggregate(statistic: .sum(column: "group", lower: "0", upper: "1"), groupBy: [],
                                  mechanism: .laplace(epsilon: try Rational(1)))
        #expect(throws: PrivacyError(.invalidValue, "")) { try bad.run(table(), groups: [[]], using: &sampler) }
        let unknown = try DPAggregate(statistic: .count, groupBy: ["nope"], mechanism: .laplace(epsilon: try Rational(1)))
        #expect(throws: PrivacyError(.invalidParameter, "")) { try unknown.run(table(), groups: [["x"]], using: &sampler) }
    }
}
