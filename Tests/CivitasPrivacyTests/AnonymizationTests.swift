import Testing
@testable import CivitasPrivacy

/// A small generated table with values already '*' and missing values.
func sampleTable(rows: Int, seed: UInt64) -> CSVTable {
    var numbers = SeededNumbers(seed: seed)
    let zips = ["19401", "19403", "19406", "19422", "19446", "*", ""]
    let data = (0..<rows).map { _ in
        [String(18 + numbers.next(60)), zips[numbers.next(zips.count)], ["F", "M", "*"][numbers.next(3)], ["a", "b", "c", "d"][numbers.next(4)]]
    }
    return CSVTable(columns: ["age", "zip", "sex", "disease"], rows: data)
}

let sampleQIs = [
    QuasiIdentifier(column: "age", hierarchy: .intervals(widths: [5, 10, 20])),
    QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [1, 1, 2])),
    QuasiIdentifier(column: "sex", hierarchy: .suppressionOnly),
]

/// Class sizes by plain equality of the released quasi-identifier values, as an outside checker computes them.
func releasedClasses(_ table: CSVTable, qi: [String]) throws -> [[String]: [String]] {
    let indexes = try qi.map { try table.index(of: $0) }
    var classes: [[String]: [String]] = [:]
    for row in table.rows { classes[indexes.map { row[$0] }, default: []].append(row.last ?? "") }
    return classes
}

/// 1,500 people, one in three with four records (so linked groups count when the subject is released).
func linkedPeopleTable() -> CSVTable {
    var rows: [[String]] = []
    var numbers = SeededNumbers(seed: 11)
    for person in 0..<1_500 {
        let age = 18 + numbers.next(60), zip = ["19401", "19403", "19406", "19422", "19446"][numbers.next(5)]
        for record in 0..<(person % 3 == 0 ? 4 : 1) {
            rows.append([String(age + (record == 2 ? 9 : 0)), record == 3 ? "19446" : zip, ["F", "M"][person % 2], "P\(person)"])
        }
    }
    return CSVTable(columns: ["age", "zip", "sex", "person"], rows: rows)
}

@Suite("Anonymization engine")
struct AnonymizationTests {
    @Test("The optimal search finds the same best node as brute force over the whole lattice, under every metric",
          arguments: [2, 3, 5, 8], OptimalSearch.Metric.allCases)
    func optimalMatchesBruteForce(k: Int, metric: OptimalSearch.Metric) throws {
        let table = sampleTable(rows: 400, seed: UInt64(k))
        let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.05)
        let prepared = try OptimalSearch(metric: metric).prepare(table, quasiIdentifiers: sampleQIs, requirements: requirements)
        let solution = try prepared.search()
        // Brute force: evaluate every node from the cells, and score it from the released classes.
        let lattice = Lattice(heights: prepared.encoded.heights)
        var best = Double.infinity
        let evaluator = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let limit = Int(0.05 * 400)
        for node in 0..<lattice.size {
            let outcome = try evaluator.evaluate(levels: lattice.levels(of: node), fromCells: true)
            guard outcome.suppressed <= limit else { continue }
            let sizes = (0..<Int32(evaluator.classCount)).filter { evaluator.kept[Int($0)] }.map { Double(evaluator.size(ofClass: $0)) }
            let score: Double
            switch metric {
            case .loss: score = Double(400 - outcome.suppressed) / 400 * lattice.precision(node) + Double(outcome.suppressed) / 400
            case .discernibility: score = sizes.reduce(0) { $0 + $1 * $1 } + Double(outcome.suppressed) * 400
            case .averageClassSize: score = 400 / Double(max(sizes.count, 1))
            }
            best = min(best, score)
        }
        #expect(abs(solution.score - best) < 1e-9, "search found \(solution.score), brute force \(best)")
        if metric == .loss { #expect(solution.nodesChecked < lattice.size) }
    }

    /// Every node of the lattice evaluated from the cells: its classes, and its score when it meets the limit.
    private func everyNode(_ prepared: OptimalSearch.Prepared, requirements: AnonymityRequirements, metric: OptimalSearch.Metric)
        throws -> [(node: Int, classes: Int, subjectsInClasses: Int, score: Double?)] {
        let lattice = Lattice(heights: prepared.encoded.heights)
        let evaluator = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let n = Double(prepared.encoded.subjectCount)
        let limit = Int((requirements.maxSuppression * n).rounded(.down))
        return try (0..<lattice.size).map { node in
            let outcome = try evaluator.evaluate(levels: lattice.levels(of: node), fromCells: true)
            guard outcome.suppressed <= limit else { return (node, outcome.classes, outcome.subjectsInClasses, nil) }
            let sizes = (0..<Int32(evaluator.classCount)).filter { evaluator.kept[Int($0)] }.map { Double(evaluator.size(ofClass: $0)) }
            let suppressed = Double(outcome.suppressed)
            let score = switch metric {
            case .loss: (n - suppressed) / n * lattice.precision(node) + suppressed / n
            case .discernibility: sizes.reduce(0) { $0 + $1 * $1 } + suppressed * n
            case .averageClassSize: n / Double(max(sizes.count, 1))
            }
            return (node, outcome.classes, outcome.subjectsInClasses, score)
        }
    }

    @Test("With linked records protected, the search picks brute force's node: the least score, then the least precision, then the first node",
          arguments: [2, 3, 5], OptimalSearch.Metric.allCases)
    func boundedSearchMatchesBruteForce(k: Int, metric: OptimalSearch.Metric) throws {
        let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.2, subject: "person", linking: ["person"])
        let prepared = try OptimalSearch(metric: metric).prepare(linkedPeopleTable(), quasiIdentifiers: sampleQIs, requirements: requirements)
        let lattice = Lattice(heights: prepared.encoded.heights)
        let nodes = try everyNode(prepared, requirements: requirements, metric: metric)
        let best = nodes.compactMap { node in node.score.map { (score: $0, precision: lattice.precision(node.node), node: node.node) } }.min { $0 < $1 }
        let solution = try prepared.search()
        #expect(solution.levels == best.map { lattice.levels(of: $0.node) })
        #expect(abs(solution.score - (best?.score ?? .nan)) <= 1e-9 * solution.score)
        #expect(nodes.filter { $0.score != nil }.count > 3, "several nodes must meet the limit, or the choice shows nothing")
    }

    @Test("No node that meets the limit scores below its metric's bound from its own classes and subjects; a bound half as large again would be broken",
          arguments: OptimalSearch.Metric.allCases)
    func scoreBoundHolds(metric: OptimalSearch.Metric) throws {
        var broken = 0, brokenIfLarger = 0, scored = 0
        for k in [2, 3, 5, 8] {
            let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.2, subject: "person", linking: ["person"])
            let prepared = try OptimalSearch(metric: metric).prepare(linkedPeopleTable(), quasiIdentifiers: sampleQIs, requirements: requirements)
            let lattice = Lattice(heights: prepared.encoded.heights)
            let n = Double(prepared.encoded.subjectCount)
            let limit = (requirements.maxSuppression * n).rounded(.down)
            for node in try everyNode(prepared, requirements: requirements, metric: metric) {
                guard let score = node.score else { continue }
                let bound = OptimalSearch.Prepared.scoreBound(metric: metric, subjects: n, maxSuppressed: limit, classes: Double(node.classes),
                                                              subjectsInClasses: Double(node.subjectsInClasses), precision: lattice.precision(node.node))
                scored += 1
                if bound > score * (1 + OptimalSearch.Prepared.boundMargin) { broken += 1 }
                if bound * 1.5 > score { brokenIfLarger += 1 }
            }
        }
        #expect(broken == 0)
        #expect(scored > 20)
        // Positive control: the bound is close enough to some scores that a larger one would fail the check.
        #expect(brokenIfLarger > 0)
    }

    @Test("On many linked people, the bound spares checks and leaves the choice unchanged")
    func boundSparesChecks() throws {
        var rows: [[String]] = []
        var numbers = SeededNumbers(seed: 23)
        for person in 0..<6_000 {
            let zip = ["19401", "19403", "19406", "19422", "19446"][numbers.next(5)]
            for _ in 0..<(1 + numbers.next(3)) {
                rows.append([String(18 + numbers.next(60)), zip, ["F", "M"][person % 2], "P\(person)"])
            }
        }
        let table = CSVTable(columns: ["age", "zip", "sex", "person"], rows: rows)
        let requirements = try AnonymityRequirements(k: 5, maxSuppression: 0.1, subject: "person", linking: ["person"])
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: sampleQIs, requirements: requirements)
        let lattice = Lattice(heights: prepared.encoded.heights)
        let nodes = try everyNode(prepared, requirements: requirements, metric: .discernibility)
        let best = nodes.compactMap { node in node.score.map { (score: $0, precision: lattice.precision(node.node), node: node.node) } }.min { $0 < $1 }
        let solution = try prepared.search()
        #expect(solution.levels == best.map { lattice.levels(of: $0.node) })
        prepared.skipsBeyondBound = false
        let unbounded = try prepared.search()
        #expect(unbounded.levels == solution.levels)
        #expect(solution.nodesChecked < unbounded.nodesChecked, "the bound spared nothing: \(solution.nodesChecked) nodes checked")
    }

    /// The rule of linked records read plainly, with sets: drop classes of fewer than k subjects (or
    /// fewer than l sensitive values), then every linking value whose set of classes is shared by
    /// values of fewer than k subjects, until nothing changes.
    private func protectedByReference(k: Int, l: Int?, classOfRow: [Int32], subjectOfRow: [UInt32], sensitive: [String], links: [[String]],
                                      keep start: [Bool]) -> [Bool] {
        var keep = start
        var changed = true
        while changed {
            changed = false
            var subjectsOf: [Int32: Set<UInt32>] = [:], valuesOf: [Int32: Set<String>] = [:]
            for r in keep.indices where keep[r] {
                subjectsOf[classOfRow[r], default: []].insert(subjectOfRow[r])
                valuesOf[classOfRow[r], default: []].insert(sensitive[r])
            }
            let failing = Set(subjectsOf.keys.filter { id in
                (subjectsOf[id]?.count ?? 0) < k || (l.map { least in (valuesOf[id]?.count ?? 0) < least } ?? false)
            })
            for r in keep.indices where keep[r] && failing.contains(classOfRow[r]) {
                keep[r] = false
                changed = true
            }
            for values in links {
                var classesOfValue: [String: Set<Int32>] = [:], subjectsOfValue: [String: Set<UInt32>] = [:]
                for r in keep.indices where keep[r] {
                    classesOfValue[values[r], default: []].insert(classOfRow[r])
                    subjectsOfValue[values[r], default: []].insert(subjectOfRow[r])
                }
                var subjectsOfSet: [Set<Int32>: Set<UInt32>] = [:]
                for (value, classes) in classesOfValue { subjectsOfSet[classes, default: []].formUnion(subjectsOfValue[value] ?? []) }
                let dropped = Set(classesOfValue.keys.filter { (subjectsOfSet[classesOfValue[$0] ?? []]?.count ?? 0) < k })
                for r in keep.indices where keep[r] && dropped.contains(values[r]) {
                    keep[r] = false
                    changed = true
                }
            }
        }
        return keep
    }

    @Test("Linked records are protected exactly as a plain reading of the rule with sets protects them, at every node, on one core or two",
          arguments: [3, 5], [(false, false), (true, false), (false, true)])
    func subjectProtectionMatchesReference(k: Int, variant: (diverse: Bool, halved: Bool)) throws {
        let diverse = variant.diverse
        var numbers = SeededNumbers(seed: UInt64(k))
        var rows: [[String]] = []
        for person in 0..<900 {
            let zip = ["19401", "19403", "19406", "19422", "19446"][numbers.next(5)]
            for _ in 0..<(1 + numbers.next(4)) {
                rows.append([String(18 + numbers.next(60)), numbers.next(6) == 0 ? "19446" : zip, ["F", "M"][person % 2], ["a", "b", "c"][numbers.next(3)],
                             "P\(person)", "H\(person / 2)"])
            }
        }
        let table = try ColumnarTable(CSVTable(columns: ["age", "zip", "sex", "disease", "person", "household"], rows: rows))
        let requirements = try AnonymityRequirements(k: k, sensitive: "disease", diversity: diverse ? .distinct(2) : nil, maxSuppression: 1,
                                                     subject: "person", linking: ["person", "household"])
        var protection = SubjectProtection(requirements: requirements)
        if variant.halved { protection.concurrentValuesFrom = 0 }
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: sampleQIs, requirements: requirements)
        let evaluator = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let lattice = Lattice(heights: prepared.encoded.heights)
        let sensitive = rows.map { $0[3] }, links = [rows.map { $0[4] }, rows.map { $0[5] }]
        var differing = 0, droppedForLinks = 0
        for node in 0..<lattice.size {
            _ = try evaluator.evaluate(levels: lattice.levels(of: node), fromCells: true)
            let classOfRow = prepared.encoded.cellOfRow.map { evaluator.classOfCell[Int($0)] }
            let start = classOfRow.map { evaluator.kept[Int($0)] }
            var keep = start
            let summary = try protection.enforce(table: table, encoded: prepared.encoded, classOfRow: classOfRow, keep: &keep)
            let expected = protectedByReference(k: k, l: diverse ? 2 : nil, classOfRow: classOfRow, subjectOfRow: prepared.encoded.subjectOfRow,
                                                sensitive: sensitive, links: links, keep: start)
            if keep != expected || summary.recordsReleased != expected.filter({ $0 }).count { differing += 1 }
            let onlyClasses = protectedByReference(k: k, l: diverse ? 2 : nil, classOfRow: classOfRow, subjectOfRow: prepared.encoded.subjectOfRow,
                                                   sensitive: sensitive, links: [], keep: start)
            if onlyClasses != expected { droppedForLinks += 1 }
        }
        #expect(differing == 0)
        // Positive control: at some nodes the linked records drop more than the classes alone.
        #expect(droppedForLinks > 0)
    }

    @Test("Subjects counted on two cores give every node the same outcome as counted on one", arguments: [3, 5])
    func subjectsCountedInTwoHalves(k: Int) throws {
        let table = linkedPeopleTable()
        let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.2, subject: "person", linking: ["person"])
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: sampleQIs, requirements: requirements)
        let one = ClassEvaluator(table: prepared.encoded, requirements: requirements), two = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        one.parallelFrom = .max
        two.parallelFrom = 0
        let lattice = Lattice(heights: prepared.encoded.heights)
        var differing = 0
        for node in 0..<lattice.size {
            let levels = lattice.levels(of: node)
            if try one.evaluate(levels: levels) != (try two.evaluate(levels: levels)) { differing += 1 }
        }
        #expect(differing == 0)
        #expect(try one.evaluate(levels: lattice.levels(of: 0)).suppressed > 0, "the finest node must have people to suppress, or the test shows nothing")
    }

    @Test("Classes rolled up from stored coarser classes give every node the outcome counted from the cells", arguments: [3, 5])
    func rolledUpClassesMatchCells(k: Int) throws {
        let table = linkedPeopleTable()
        let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.2, subject: "person", linking: ["person"])
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: sampleQIs, requirements: requirements)
        let rolling = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let cells = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let lattice = Lattice(heights: prepared.encoded.heights)
        var differing = 0
        // Finest first, so that every coarser node can be rolled up from classes stored before it.
        for node in lattice.bottomUpOrder {
            let levels = lattice.levels(of: node)
            if try rolling.evaluate(levels: levels) != (try cells.evaluate(levels: levels, fromCells: true)) { differing += 1 }
        }
        #expect(differing == 0)
        #expect(rolling.rolledUp > lattice.size / 2, "most nodes must be rolled up, or the test shows nothing")
    }

    @Test("Classes numbered in partitions, or in two halves, on two cores give every node the outcome and the classes of one table", arguments: [3, 5])
    func partitionedGroupingMatchesOneTable(k: Int) throws {
        let table = linkedPeopleTable()
        let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.2, subject: "person", linking: ["person"])
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: sampleQIs, requirements: requirements)
        let one = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let partitioned = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let halved = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        one.partitionFrom = .max
        one.halvedGroupingFrom = .max
        partitioned.partitionFrom = 0
        halved.partitionFrom = .max
        halved.halvedGroupingFrom = 0
        let lattice = Lattice(heights: prepared.encoded.heights)
        var differing = 0, split = 0, mostClasses = 0
        for node in lattice.bottomUpOrder {
            let levels = lattice.levels(of: node)
            // Rolled up from stored classes (numbered in partitions too), then from the cells.
            if try one.evaluate(levels: levels) != (try partitioned.evaluate(levels: levels)) { differing += 1 }
            if try one.evaluate(levels: levels, fromCells: true) != (try partitioned.evaluate(levels: levels, fromCells: true)) { differing += 1 }
            // Numbered in two halves: the very numbers of one pass.
            if try halved.evaluate(levels: levels, fromCells: true) != (try one.evaluate(levels: levels, fromCells: true)) || halved.classOfCell != one.classOfCell {
                differing += 1
            }
            // The same classes under other numbers: each class of one table is exactly one partitioned class.
            var renamed: [Int32: Int32] = [:], back: [Int32: Int32] = [:]
            for cell in one.classOfCell.indices {
                let mine = one.classOfCell[cell], theirs = partitioned.classOfCell[cell]
                if renamed[mine, default: theirs] != theirs || back[theirs, default: mine] != mine { split += 1 }
                renamed[mine] = theirs
                back[theirs] = mine
            }
            mostClasses = max(mostClasses, one.classCount)
        }
        #expect(differing == 0)
        #expect(split == 0)
        #expect(mostClasses > 100, "some nodes must have many classes, or the test shows nothing")
    }

    @Test("An evaluation that stops at the suppression limit decides feasibility as the whole evaluation does, also when the linked people are counted slice by slice",
          arguments: [3, 5], [Int.max, 0])
    func stoppedEvaluationKeepsFeasibility(k: Int, slicedFrom: Int) throws {
        let table = linkedPeopleTable()
        let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.02, subject: "person", linking: ["person"])
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: sampleQIs, requirements: requirements)
        let whole = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let stopping = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        stopping.parallelFrom = slicedFrom
        let limit = Int(0.02 * Double(prepared.encoded.subjectCount))
        let lattice = Lattice(heights: prepared.encoded.heights)
        var disagreeing = 0, stopped = 0, feasible = 0
        for node in 0..<lattice.size {
            let levels = lattice.levels(of: node)
            let full = try whole.evaluate(levels: levels, fromCells: true)
            let early = try stopping.evaluate(levels: levels, fromCells: true, stopAbove: limit)
            if (full.suppressed <= limit) != (early.suppressed <= limit) { disagreeing += 1 }
            if early.complete { if early != full { disagreeing += 1 } } else { stopped += 1 }
            if full.suppressed <= limit { feasible += 1 }
        }
        #expect(disagreeing == 0)
        #expect(stopped > 0 && feasible > 0, "some nodes must stop early and some be feasible, or the test shows nothing")
        if slicedFrom == 0 { #expect(stopping.stoppedBeforeLastSlice > 0, "some counts of linked people must stop before their last slice, or the slices show nothing") }
    }

    @Test("A column's labels whose records weigh fewer than k subjects never count more than a node suppresses, and a search stopped by them decides as a full evaluation",
          arguments: [5, 8])
    func failingLabelsBoundSuppression(k: Int) throws {
        // People with one to three calls, each at its own minute: fine minutes fail, coarse ones pass.
        var numbers = SeededNumbers(seed: 23)
        var rows: [[String]] = []
        for person in 0..<1_200 {
            let zip = ["19401", "19403", "19406", "19422"][numbers.next(4)]
            for _ in 0...(person % 3) {
                let minute = String(format: "2016-%02d-%02d %02d:%02d:00", numbers.next(3) + 1, numbers.next(28) + 1, numbers.next(24), numbers.next(60))
                rows.append([minute, zip, String(18 + numbers.next(40)), "P\(person)"])
            }
        }
        let table = CSVTable(columns: ["time", "zip", "age", "person"], rows: rows)
        let identifiers = [QuasiIdentifier(column: "time", hierarchy: .dateTruncation(units: [.hour, .day, .month, .year])),
                           QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [1, 1, 1])),
                           QuasiIdentifier(column: "age", hierarchy: .intervals(widths: [10, 20]))]
        let requirements = try AnonymityRequirements(k: k, maxSuppression: 0.05, subject: "person", linking: ["person"])
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: identifiers, requirements: requirements)
        let whole = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let stopping = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        let limit = Int(0.05 * Double(prepared.encoded.subjectCount))
        let lattice = Lattice(heights: prepared.encoded.heights)
        var overcounting = 0, disagreeing = 0, feasible = 0
        for node in 0..<lattice.size {
            let levels = lattice.levels(of: node)
            let full = try whole.evaluate(levels: levels, fromCells: true)
            for (column, level) in levels.enumerated() where whole.failingLabels(column: column, level: level) > full.suppressed { overcounting += 1 }
            let early = try stopping.evaluate(levels: levels, stopAbove: limit)
            if (full.suppressed <= limit) != (early.suppressed <= limit) { disagreeing += 1 }
            if full.suppressed <= limit { feasible += 1 }
        }
        #expect(overcounting == 0)
        #expect(disagreeing == 0)
        // Records as their own subjects: where one column is kept and the others fully generalized,
        // the classes are that column's labels, and those below k are exactly the labels counted.
        let records = try AnonymityRequirements(k: k, maxSuppression: 0.05)
        let perRecord = ClassEvaluator(table: try OptimalSearch().prepare(table, quasiIdentifiers: identifiers, requirements: records).encoded, requirements: records)
        var miscounted = 0, failingSeen = 0
        for (column, height) in prepared.encoded.heights.enumerated() {
            for level in 0..<height {
                var levels = prepared.encoded.heights.map { $0 - 1 }
                levels[column] = level
                _ = try perRecord.evaluate(levels: levels, fromCells: true)
                let failing = (0..<perRecord.classCount).filter { perRecord.size(ofClass: Int32($0)) < k }.count
                if perRecord.failingLabels(column: column, level: level) != failing { miscounted += 1 }
                failingSeen += failing
            }
        }
        #expect(miscounted == 0)
        #expect(failingSeen > 0)
        #expect(stopping.labelBoundStops > 0 && feasible > 0, "some nodes must be decided by their labels and some be feasible, or the test shows nothing")
        // The search finds the same generalization whether or not the labels decide some nodes.
        let grouping = try OptimalSearch().prepare(table, quasiIdentifiers: identifiers, requirements: requirements)
        grouping.evaluator.decidesByLabels = false
        let searched = try prepared.search(), grouped = try grouping.search()
        #expect(searched.levels == grouped.levels && searched.score == grouped.score)
        #expect(prepared.evaluator.labelBoundStops > 0 && grouping.evaluator.labelBoundStops == 0)
    }

    @Test("Released tables are k-anonymous under plain equality; suppressed records leave entirely", arguments: ["optimal", "mondrian"])
    func releasedTablesAreKAnonymous(algorithm: String) throws {
        for k in [2, 4, 10] {
            let table = sampleTable(rows: 600, seed: 99)
            let requirements = try AnonymityRequirements(k: k, sensitive: "disease", diversity: .distinct(2), maxSuppression: 0.1)
            let result = algorithm == "optimal"
                ? try OptimalSearch().anonymize(table, quasiIdentifiers: sampleQIs, requirements: requirements)
                : try Mondrian().anonymize(table, quasiIdentifiers: sampleQIs, requirements: requirements)
            let classes = try releasedClasses(result.table, qi: ["age", "zip", "sex"])
            #expect(classes.values.allSatisfy { $0.count >= k }, "\(algorithm) k=\(k)")
            #expect(classes.values.allSatisfy { Set($0).count >= 2 })
            #expect(result.table.rows.count + result.report.suppressed == 600)
            #expect(result.table.columns == ["age", "zip", "sex", "disease"])
            #expect(result.report.released == result.table.rows.count)
            #expect(result.report.maximumProsecutorRisk == 1 / Double(classes.values.map(\.count).min() ?? 1))
            #expect(abs(result.report.averageProsecutorRisk - Double(classes.count) / Double(result.table.rows.count)) < 1e-12)
        }
    }

    @Test("Writing a release by codes gives the bytes of writing it row by row, quoted fields included", arguments: ["optimal", "mondrian"])
    func codedWritingMatchesRows(algorithm: String) throws {
        var numbers = SeededNumbers(seed: 7)
        let notes = ["plain", "with, comma", "with \"quote\"", "two\nlines", "", "é"]
        let rows = (0..<400).map { _ in
            [String(18 + numbers.next(60)), ["19401", "19403", "19422", "*"][numbers.next(4)], notes[numbers.next(notes.count)], notes[numbers.next(notes.count)]]
        }
        let table = try ColumnarTable(CSVTable(columns: ["age", "zip", "disease", "note"], rows: rows))
        let requirements = try AnonymityRequirements(k: 5, sensitive: "disease", maxSuppression: 0.1)
        let quasiIdentifiers = [sampleQIs[0], sampleQIs[1]]
        let result = algorithm == "optimal"
            ? try OptimalSearch().anonymize(table, quasiIdentifiers: quasiIdentifiers, requirements: requirements, keepColumns: ["note"])
            : try Mondrian().anonymize(table, quasiIdentifiers: quasiIdentifiers, requirements: requirements, keepColumns: ["note"])
        var byRows = CSVWriter(columns: result.columns)
        result.forEachRow { _, values in byRows.append(values) }
        var byCodes = CSVWriter(columns: result.columns)
        result.write(to: &byCodes)
        #expect(byCodes.records == byRows.records && byCodes.records == result.count && result.count > 300)
        #expect(byCodes.bytes == byRows.bytes)
        // Positive control: the quoting shows in the bytes compared.
        #expect(String(decoding: byCodes.bytes, as: UTF8.self).contains("\"with, comma\""))
    }

    @Test("Records written on two cores, each into its own part of the output, are the bytes of writing them one by one")
    func recordsWrittenInParts() {
        let values = [["a", "b,c", "", "say \"hi\""], ["1", "22", "333", "line\nbreak", "é"]]
        // Several blocks per part, the last one short.
        let count = max(CSVWriter.parallelFrom, CSVWriter.blockSize * 4) * 2 + 7
        let code: @Sendable (Int, Int) -> Int = { record, column in (record &* 7_919 &+ column &* 31) % values[column].count }
        var oneByOne = CSVWriter(columns: ["x", "y"]), inParts = oneByOne
        let fields = values.map { oneByOne.fields($0) }
        for record in 0..<count { oneByOne.append(codes: [code(record, 0), code(record, 1)], of: fields) }
        inParts.append(records: count, of: fields) { block, codes in
            for (i, record) in block.enumerated() {
                codes[i * 2] = code(record, 0)
                codes[i * 2 + 1] = code(record, 1)
            }
        }
        #expect(inParts.records == count && oneByOne.records == count)
        #expect(inParts.bytes == oneByOne.bytes)
        #expect(oneByOne.bytes.contains(0x22), "some fields must be quoted, or the test shows nothing")
    }

    @Test("An input '*' and a generalized '*' are one released value, counted as one class")
    func starsAreNotWildcards() throws {
        // Two records already '*' in zip, two generalized to '*': one class of four, not two of two.
        let table = CSVTable(columns: ["zip", "x"], rows: [["*", "1"], ["*", "2"], ["19401", "3"], ["19502", "4"]])
        let result = try OptimalSearch().anonymize(table, quasiIdentifiers: [QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [5]))],
                                                   requirements: try AnonymityRequirements(k: 4))
        #expect(result.table.rows.map { $0[0] } == ["*", "*", "*", "*"])
        #expect(result.report.classes == 1)
        // And with k = 2 the input '*' records form their own class without borrowing others.
        let looser = try OptimalSearch().anonymize(table, quasiIdentifiers: [QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [3, 2]))],
                                                   requirements: try AnonymityRequirements(k: 2))
        let classes = try releasedClasses(looser.table, qi: ["zip"])
        #expect(classes.values.allSatisfy { $0.count >= 2 })
    }

    @Test("Generalization hierarchies produce the documented labels")
    func hierarchies() throws {
        #expect(try Hierarchy.intervals(widths: [5, 10]).labels(for: "37") == ["37", "35-39", "30-39", "*"])
        #expect(try Hierarchy.intervals(widths: [10]).labels(for: "-3") == ["-3", "-10--1", "*"])
        // Decimals and negative values get the interval that really holds them, written exactly.
        #expect(try Hierarchy.intervals(widths: [1]).labels(for: "1.6") == ["1.6", "[1,2)", "*"])
        #expect(try Hierarchy.intervals(widths: [10]).labels(for: "-0.5") == ["-0.5", "[-10,0)", "*"])
        #expect(try Hierarchy.intervals(widths: [10]).labels(for: "19.0") == ["19.0", "10-19", "*"])
        #expect(try Hierarchy.intervals(widths: [10]).labels(for: "19.5") == ["19.5", "[10,20)", "*"])
        #expect(try Hierarchy.masking(steps: [1, 2]).labels(for: "19422.0") == ["19422.0", "1942*", "19***", "*"])
        #expect(try Hierarchy.dateTruncation(units: [.hour, .day, .year]).labels(for: "2019-07-31 05:13:54")
                == ["2019-07-31 05:13:54", "2019-07-31 05", "2019-07-31", "2019", "*"])
        #expect(try Hierarchy.geoGrid(fractionDigits: [2, 0]).labels(for: "-75.2497639") == ["-75.2497639", "-75.25", "-76", "*"])
        #expect(try Hierarchy.geoGrid(fractionDigits: [1]).labels(for: "40.169545") == ["40.169545", "40.1", "*"])
        #expect(throws: PrivacyError(.invalidValue, "")) { try Hierarchy.intervals(widths: [5]).labels(for: "abc") }
        let tree = try Hierarchy.arx([["F", "*"], ["M", "*"]])
        #expect(throws: PrivacyError(.invalidValue, "")) { try tree.labels(for: "X") }
        #expect(throws: PrivacyError(.invalidValue, "")) { try Hierarchy.arx([["F", "*"], ["F", "*"]]) }
    }

    @Test("A level's label made alone is that level of the whole chain, and the same values are refused with the same message")
    func levelLabelsMatchChains() {
        let hierarchies: [Hierarchy] = [
            .intervals(widths: [5, 10, 20]), .dateTruncation(units: [.minute, .hour, .day, .month, .year]), .masking(steps: [1, 2, 9]),
            .geoGrid(fractionDigits: [3, 2, 0]), .suppressionOnly,
            .explicit(levels: ["a": ["ab", "*"], "b": ["ab", "*"], "c": ["c"]], height: 3),
        ]
        let values = ["", "7", "-12.5", "40.12345", "-75.9", "1e3", "abc", "19401", "1940", "é1", "2016-02-29 13:45:10", "2016-02-29T13:45:10",
                      "2016-02-29T13:45:10\r", "2016-02-29 13:45:1é", "a", "b", "c", "+3.75", "٣"]
        var differing: [String] = [], refused = 0
        for hierarchy in hierarchies {
            for value in values {
                let chain = Result { try hierarchy.labels(for: value) }
                for level in 0..<hierarchy.height {
                    let alone = Result { try hierarchy.label(for: value, atLevel: level) }
                    switch (chain, alone) {
                    case (.success(let labels), .success(let label)) where labels[level] == label: continue
                    case (.failure(let one as PrivacyError), .failure(let other as PrivacyError)) where one.message == other.message:
                        refused += 1
                        continue
                    default: differing.append("\(hierarchy) \(value) level \(level)")
                    }
                }
            }
        }
        #expect(differing.isEmpty, "\(differing.prefix(5))")
        #expect(refused > 0, "some values must be refused, or the refusals are not compared")
    }

    @Test("Decimals and timestamps generalized on their bytes get the labels read character by character")
    func byteLabelsMatchCharacterLabels() throws {
        var numbers = SeededNumbers(seed: 5)
        var decimals = ["0", "-0", "-0.0", "-0.5", "9.999", "-9.999", "-99.9991", "-0.0001", "7.", "-7.", "12.30", "-12.300", "40.169545", "-75.2497639"]
        for _ in 0..<3_000 {
            let whole = (0..<(1 + numbers.next(3))).map { _ in String(numbers.next(10)) }.joined()
            let fraction = (0..<numbers.next(8)).map { _ in ["0", "9", String(numbers.next(10))][numbers.next(3)] }.joined()
            decimals.append((numbers.next(2) == 0 ? "-" : "") + whole + (fraction.isEmpty && numbers.next(2) == 0 ? "" : "." + fraction))
        }
        var compared = 0
        for value in decimals {
            for digits in 0...4 {
                #expect(Hierarchy.truncatePlainDecimal(value, fractionDigits: digits) == Hierarchy.truncateDecimalText(value, fractionDigits: digits), "\(value) at \(digits)")
                compared += 1
            }
        }
        #expect(compared == decimals.count * 5)
        // Text that is not a plain decimal is left to the character-by-character reading.
        for value in ["", "-", ".5", "+1.5", "1.2.3", "1e5", "١٢", "1.5 "] {
            #expect(Hierarchy.truncatePlainDecimal(value, fractionDigits: 1) == nil, "\(value)")
        }
        let units: [Hierarchy.DateUnit] = [.minute, .hour, .day, .month, .year]
        let hierarchy = Hierarchy.dateTruncation(units: units)
        for value in ["2019-07-31 05:13:54", "2019-07-31T05:13:54", "2019-07-31 05:13", "2019", "", "2019-07-31 05:1\u{301}3:54", "2019-07-31 05\r\n13"] {
            let expected = [value] + units.map { String(value.replacingOccurrences(of: "T", with: " ").prefix($0.prefixLength)) } + ["*"]
            #expect(try hierarchy.labels(for: value) == expected, "\(value)")
        }
    }

    @Test("Records merge into one cell exactly when all their quasi-identifiers and sensitive value are equal, however wide the key")
    func cellsMergeEqualRecords() throws {
        // Eight columns of up to 400 values: the mixed-radix key passes 64 bits and is renumbered on the way.
        var numbers = SeededNumbers(seed: 3)
        let columns = (0..<8).map { "c\($0)" }
        var rows: [[String]] = []
        for _ in 0..<3_000 {
            if !rows.isEmpty, numbers.next(3) == 0 { rows.append(rows[numbers.next(rows.count)]) } else { rows.append(columns.map { _ in String(numbers.next(400)) }) }
        }
        let table = try ColumnarTable(CSVTable(columns: columns, rows: rows))
        let encoded = try EncodedTable(table: table, quasiIdentifiers: columns.dropLast().map { QuasiIdentifier(column: $0, hierarchy: .suppressionOnly) },
                                       sensitive: columns.last)
        #expect(encoded.cellCount.count == Set(rows).count)
        var cellOfRecord: [[String]: Int32] = [:]
        var consistent = 0
        for (r, row) in rows.enumerated() where cellOfRecord.updateValue(encoded.cellOfRow[r], forKey: row).map({ $0 == encoded.cellOfRow[r] }) ?? true {
            consistent += 1
        }
        #expect(consistent == rows.count)
        #expect(encoded.cellCount.reduce(0, +) == Int32(rows.count))
    }

    @Test("Levels labelled from one value per finer label are the labels of every value, for each kind of hierarchy", arguments: [
        Hierarchy.dateTruncation(units: [.hour, .day, .month, .year]), .dateTruncation(units: [.minute, .minute, .day]),
        .geoGrid(fractionDigits: [3, 2, 1, 0]), .geoGrid(fractionDigits: [2, 2, 0]), .masking(steps: [1, 0, 2]),
        .intervals(widths: [5, 10, 20, 40]), .intervals(widths: [1, 3, 6]),
    ])
    func derivedLevelsMatchEveryValue(_ hierarchy: Hierarchy) throws {
        var numbers = SeededNumbers(seed: 41)
        var values: [String] = []
        for _ in 0..<4_000 {
            switch hierarchy {
            case .dateTruncation:
                // Plain stamps, a `T`, a CR (one character with the LF after it) and letters beyond ASCII.
                let stamp = String(format: "20%02d-%02d-%02d %02d:%02d:%02d", 15 + numbers.next(3), 1 + numbers.next(12), 1 + numbers.next(28),
                                   numbers.next(24), numbers.next(60), numbers.next(60))
                values.append([stamp, stamp.replacingOccurrences(of: " ", with: "T"), String(stamp.prefix(12)) + "\r\n" + "5",
                               "é" + stamp, String(stamp.prefix(numbers.next(19)))][numbers.next(5)])
            case .geoGrid:
                // Plain decimals around carries, negatives and leading zeros.
                let whole = [0, 9, 10, 75, 99, 100][numbers.next(6)]
                let fraction = (0..<numbers.next(6)).map { _ in ["0", "9"][numbers.next(2)] }.joined()
                let digits = numbers.next(3) == 0 ? String(numbers.next(1_000_000)) : fraction
                values.append((numbers.next(2) == 0 ? "-" : "") + (numbers.next(5) == 0 ? "0" : "") + String(whole) + (digits.isEmpty && numbers.next(2) == 0 ? "" : "." + digits))
            case .masking:
                values.append([String(19_400 + numbers.next(100)), String(19_400 + numbers.next(100)) + ".0", "1" + String(numbers.next(10)),
                               "A" + String(numbers.next(1_000)) + "*", ""][numbers.next(5)])
            default:
                values.append([String(numbers.next(200) - 100), String(numbers.next(200) - 100) + "." + String(numbers.next(10)), "", "7.0"][numbers.next(4)])
            }
        }
        let table = try ColumnarTable(CSVTable(columns: ["q", "s"], rows: values.map { [$0, "x"] }))
        let qi = [QuasiIdentifier(column: "q", hierarchy: hierarchy)]
        #expect(hierarchy.coarserLevelsFollowFromFiner(values: table.values[0]), "the test must take the derived path")
        let derived = try EncodedTable(table: table, quasiIdentifiers: qi, sensitive: nil)
        let everyValue = try EncodedTable(table: table, quasiIdentifiers: qi, sensitive: nil, deriving: false)
        #expect(derived.codes == everyValue.codes)
        #expect(derived.labels == everyValue.labels)
        // And each leaf's label at each level is the hierarchy's label of its value.
        var wrong = 0
        for (leaf, value) in table.values[0].enumerated() {
            let expected = try hierarchy.labels(for: value)
            for level in 0..<hierarchy.height where derived.labels[0][level][Int(derived.codes[0][level][leaf])] != expected[level] { wrong += 1 }
        }
        #expect(wrong == 0)
        #expect(derived.labels[0][1].count > derived.labels[0][hierarchy.height - 2].count, "coarser levels must merge labels, or the test shows nothing")
    }

    @Test("Hierarchies whose coarser labels need not follow from finer ones are labelled value by value", arguments: [
        Hierarchy.dateTruncation(units: [.day, .hour]), .intervals(widths: [5, 7]), .geoGrid(fractionDigits: [1, 2]), .masking(steps: [2, -1]),
        .explicit(levels: ["a": ["x", "*"], "b": ["y", "*"]], height: 3),
    ])
    func nonNestedHierarchiesAreNotDerived(_ hierarchy: Hierarchy) throws {
        #expect(!hierarchy.coarserLevelsFollowFromFiner(values: ["1.5", "-02.25", "7"]))
        // Grid digits that decrease still need plain decimals.
        #expect(!Hierarchy.geoGrid(fractionDigits: [2, 1]).coarserLevelsFollowFromFiner(values: ["1.25", "+1.25"]))
        #expect(Hierarchy.geoGrid(fractionDigits: [2, 1]).coarserLevelsFollowFromFiner(values: ["1.25", "-01.", "7"]))
    }

    @Test("Date units that do not shorten still refuse as not a tree")
    func unitsOutOfOrderAreRefused() throws {
        let table = try ColumnarTable(CSVTable(columns: ["t", "s"], rows: [["2016-01-01 03:00:00", "a"], ["2016-01-01 04:00:00", "b"]]))
        #expect(throws: PrivacyError.self) {
            _ = try EncodedTable(table: table, quasiIdentifiers: [QuasiIdentifier(column: "t", hierarchy: .dateTruncation(units: [.day, .hour]))], sensitive: nil)
        }
    }

    @Test("Values a transform merged are one released value, counted as one class")
    func mergedValuesAreOneClass() throws {
        var table = try ColumnarTable(CSVTable(columns: ["zip", "sex"], rows: [["19401", "F"], ["19402", "F"], ["19403", "M"], ["19404", "M"]]))
        // 19401 and 19402 both become 1940x: one class of two, not two classes of one.
        try table.transformValues(ofColumn: 0) { String($0.prefix(4)) + (($0.last ?? "0") <= "2" ? "x" : "y") }
        let qis = [QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [1])), QuasiIdentifier(column: "sex", hierarchy: .suppressionOnly)]
        let requirements = try AnonymityRequirements(k: 2)
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: qis, requirements: requirements)
        let outcome = try ClassEvaluator(table: prepared.encoded, requirements: requirements).evaluate(levels: [0, 0], fromCells: true)
        #expect(outcome.classes == 2)
        #expect(outcome.suppressed == 0)
    }

    @Test("Records stay in their own cells when a transform merged values of a later column")
    func mergedValuesKeepCellsApart() throws {
        var table = try ColumnarTable(CSVTable(columns: ["sex", "zip"], rows: [["x", "a1"], ["x", "a2"], ["x", "b"], ["y", "a1"]]))
        // a1 and a2 both become a: three distinct zips in the table, two released texts.
        table.transformValues(ofColumn: 1) { $0.hasPrefix("a") ? "a" : $0 }
        let qis = [QuasiIdentifier(column: "sex", hierarchy: .suppressionOnly), QuasiIdentifier(column: "zip", hierarchy: .suppressionOnly)]
        let requirements = try AnonymityRequirements(k: 1)
        let prepared = try OptimalSearch().prepare(table, quasiIdentifiers: qis, requirements: requirements)
        #expect(prepared.encoded.cellCount.count == 4)
        let evaluator = ClassEvaluator(table: prepared.encoded, requirements: requirements)
        #expect(try evaluator.evaluate(levels: [0, 0], fromCells: true).classes == 3)
        #expect((0..<Int32(evaluator.classCount)).map { evaluator.size(ofClass: $0) }.sorted() == [1, 1, 2])
    }

    @Test("A hierarchy that is not a tree, unknown columns and impossible requirements are refused with their names")
    func refusals() throws {
        let notATree = try Hierarchy.arx([["a", "x", "*"], ["b", "x", "*"], ["c", "y", "*"], ["d", "y", "**"]])
        let table = CSVTable(columns: ["v"], rows: [["a"], ["b"], ["c"], ["d"]])
        #expect(throws: PrivacyError(.invalidValue, "")) {
            try OptimalSearch().anonymize(table, quasiIdentifiers: [QuasiIdentifier(column: "v", hierarchy: notATree)],
                                          requirements: try AnonymityRequirements(k: 2))
        }
        #expect(throws: PrivacyError(.invalidParameter, "")) {
            try OptimalSearch().anonymize(table, quasiIdentifiers: [QuasiIdentifier(column: "w", hierarchy: .suppressionOnly)],
                                          requirements: try AnonymityRequirements(k: 2))
        }
        #expect(throws: PrivacyError(.invalidParameter, "")) {
            try OptimalSearch().anonymize(table, quasiIdentifiers: [QuasiIdentifier(column: "v", hierarchy: .suppressionOnly)],
                                          requirements: try AnonymityRequirements(k: 5))
        }
        #expect(throws: PrivacyError(.invalidParameter, "")) { try AnonymityRequirements(k: 2, diversity: .distinct(2)) }
        let wide = CSVTable(columns: (0..<12).map { "c\($0)" }, rows: [Array(repeating: "1", count: 12)])
        #expect(throws: PrivacyError(.invalidParameter, "")) {
            try OptimalSearch().anonymize(wide, quasiIdentifiers: wide.columns.map { QuasiIdentifier(column: $0, hierarchy: .intervals(widths: [2, 4, 8])) },
                                          requirements: try AnonymityRequirements(k: 1))
        }
        #expect(throws: PrivacyError(.invalidParameter, "")) { try AnonymityRequirements(k: 2, maxSuppression: 1.5) }
    }

    @Test("CSV round trip with quotes, delimiters and line breaks; ragged rows are named")
    func csv() throws {
        let text = "a;b;c\r\n1;\"x;y\";\"he said \"\"hi\"\"\"\n2;\"line\nbreak\";\n"
        let table = try CSVTable.parse(Array(text.utf8))
        #expect(table.columns == ["a", "b", "c"])
        #expect(table.rows == [["1", "x;y", "he said \"hi\""], ["2", "line\nbreak", ""]])
        #expect(try CSVTable.parse(table.csv(delimiter: 0x3B), delimiter: 0x3B) == table)
        #expect(throws: PrivacyError(.invalidValue, "")) { try CSVTable.parse(Array("a,b\n1,2,3\n".utf8)) }
        #expect(throws: PrivacyError(.invalidValue, "")) { try CSVTable.parse(Array("a,a\n1,2\n".utf8)) }
        #expect(throws: PrivacyError(.invalidValue, "")) { try CSVTable.parse(Array("a,b\n\"1,2\n".utf8)) }
    }
}
