import CivitasCrypto
import CivitasPrivacy
import CSodium
import Foundation

/// Privacy benchmarks (see BENCHMARKS.md): optimal search and Mondrian on the
/// ARX Adult file, pseudonyms, discrete Laplace samples, and a generated
/// 1.2 M-row census-shaped table.
func runPrivacyBenchmark(shared: String) throws {
    func time(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        var best = Double.infinity
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        return best
    }
    // Peers run in the same invocation, from the Python venv scripts/bench prepares.
    var peers: [String: Double] = [:]
    let python = ProcessInfo.processInfo.environment["CIVITAS_PEERS_PYTHON"] ?? ".venv-peers/bin/python"
    if FileManager.default.isExecutableFile(atPath: python) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["scripts/peers/privacy_peers.py", shared]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        if let object = (try? JSONParser.parse(Array(output)))?.objectValue {
            for (key, value) in object { peers[key] = value.numberValue }
        }
    }
    func peer(_ key: String, _ format: String, _ scale: Double = 1) -> String {
        peers[key].map { String(format: format, $0 * scale) } ?? "not measured (run scripts/bench)"
    }
    print("| what | Civitas | peer |")
    print("|---|---|---|")
    let adultPath = shared + "/arx-adult/adult.csv"
    if FileManager.default.fileExists(atPath: adultPath) {
        let table = try CSVTable.parse(Array(try Data(contentsOf: URL(fileURLWithPath: adultPath))))
        let columns = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass", "occupation"]
        let qis = try columns.map { column -> QuasiIdentifier in
            let file = try CSVTable.parse(Array(try Data(contentsOf: URL(fileURLWithPath: shared + "/adult-hierarchies/adult_hierarchy_\(column).csv"))), delimiter: 0x3B)
            return QuasiIdentifier(column: column, hierarchy: try Hierarchy.arx([file.columns] + file.rows))
        }
        let k5 = try AnonymityRequirements(k: 5)
        var checked = 0
        let search = OptimalSearch()
        let prepared = try search.prepare(table, quasiIdentifiers: qis, requirements: k5)
        let searchTime = try time(20) { checked = try prepared.search().nodesChecked }
        let endToEnd = try time(20) { _ = try search.anonymize(table, quasiIdentifiers: qis, requirements: k5) }
        print(String(format: "| optimal k=5, arx-adult, 8 QIs, ARX hierarchies, 0%% suppression: lattice search (%d of 6,480 nodes checked) | %.1f ms | ARX Flash: 28.4 ms (published, 2014 quad-core); goal ≤ 20 ms |", checked, searchTime))
        print(String(format: "| the same, end to end: encode 30,162 rows, search, release the table | %.1f ms | |", endToEnd))
        var mondrianQIs = qis
        mondrianQIs[1] = QuasiIdentifier(column: "age", hierarchy: .intervals(widths: [5, 10, 20]))
        let k10 = try AnonymityRequirements(k: 10)
        let mondrian = try time(10) { _ = try Mondrian().anonymize(table, quasiIdentifiers: mondrianQIs, requirements: k10) }
        let anonypy = peers["anonypy_mondrian_k10_ms"]
        print(String(format: "| Mondrian k=10, arx-adult, 8 QIs, whole file | %.1f ms | anonypy 0.2.1: %@%@ |", mondrian,
                     peer("anonypy_mondrian_k10_ms", "%.0f ms"), anonypy.map { String(format: " (Civitas %.0f× faster; goal ≥ 100×)", $0 / mondrian) } ?? ""))
        // k in people: the first 12,000 rows belong to 4,000 people with three records each (a
        // generated subject column; Adult has none), the other 18,162 each to a person of their own.
        var withSubjects = table
        withSubjects.columns.append("person")
        for r in withSubjects.rows.indices { withSubjects.rows[r].append(r < 12_000 ? "p\(r / 3)" : "q\(r)") }
        let k5People = try AnonymityRequirements(k: 5, subject: "person")
        let preparedPeople = try search.prepare(withSubjects, quasiIdentifiers: qis, requirements: k5People)
        var checkedPeople = 0
        let peopleSearch = try time(20) { checkedPeople = try preparedPeople.search().nodesChecked }
        print(String(format: "| the same search with k counted in people (22,162 people, 4,000 with three records) (%d nodes checked) | %.1f ms | |", checkedPeople, peopleSearch))
        let k10People = try AnonymityRequirements(k: 10, subject: "person")
        let mondrianPeople = try time(10) { _ = try Mondrian().anonymize(withSubjects, quasiIdentifiers: mondrianQIs, requirements: k10People) }
        print(String(format: "| Mondrian k=10 with k counted in people (the same 22,162 people) | %.1f ms | |", mondrianPeople))
    } else {
        print("| (../shared/data absent: Adult rows skipped) | | |")
    }

    // Pseudonyms: HMAC-SHA-256 under a per-domain key, 16-byte identifiers, hex output.
    let master = try PseudonymMasterKey.generate()
    let prf = try master.prf(domain: "agreement=a1;partner=p1;purpose=research;epoch=2026")
    let identifiers = (0..<200_000).map { String(format: "%016d", $0 &* 7919) }
    var sink = 0
    let ours = time(5) { for id in identifiers { sink &+= Int(prf.mac(id)[0]) } }
    var key = [UInt8](repeating: 7, count: 32)
    var out = [UInt8](repeating: 0, count: 32)
    let raw = time(5) {
        for id in identifiers {
            let bytes = Array(id.utf8)
            crypto_auth_hmacsha256(&out, bytes, UInt64(bytes.count), &key)
            sink &+= Int(out[0])
        }
    }
    print(String(format: "| pseudonyms (HMAC-SHA-256, per-domain key, 16-character ids) | %.0f /s | raw libsodium crypto_auth_hmacsha256: %.0f /s (%.2f×) |",
                 Double(identifiers.count) / ours * 1000, Double(identifiers.count) / raw * 1000, raw / ours))

    // Discrete Laplace samples at scale 1/ε = 2.
    var sampler = ExactSampler(random: SystemRandomness())
    let samples = 1_000_000
    let laplace = time(3) { for _ in 0..<samples { sink &+= Int(sampler.discreteLaplace(scaleNumerator: 2, scaleDenominator: 1)) } }
    let ourRate = Double(samples) / laplace * 1000
    let vectorRate = peers["opendp_discrete_laplace_vector_per_s"]
    print(String(format: "| discrete Laplace samples, scale 2 (CKS20, CSPRNG) | %.0f /s | OpenDP 0.16 from Python: %@ vectorized, %@ one call per sample%@ |", ourRate,
                 peer("opendp_discrete_laplace_vector_per_s", "%.0f /s"), peer("opendp_discrete_laplace_calls_per_s", "%.0f /s"),
                 vectorRate.map { String(format: " (Civitas %.0f× the vectorized rate; goal ≥ 10×)", ourRate / $0) } ?? ""))
    let four = try Rational(4)
    let gaussian = time(3) { for _ in 0..<samples / 4 { sink &+= Int(sampler.discreteGaussian(sigmaSquared: four)) } }
    print(String(format: "| discrete Gaussian samples, σ² = 4 | %.0f /s | |", Double(samples / 4) / gaussian * 1000))

    // A DP count over 40,000 declared groups (every one output, empty or not).
    let groupRows = (0..<200_000).map { i in ["g\((i &* 7919) % 30_000)", "s\(i % 50_000)"] }
    let groupTable = CSVTable(columns: ["cell", "person"], rows: groupRows)
    let declared = (0..<40_000).map { ["g\($0)"] }
    let query = try DPAggregate(statistic: .count, groupBy: ["cell"], mechanism: .laplace(epsilon: try Rational(1)), subject: "person")
    var aggregateSampler = ExactSampler(random: SystemRandomness())
    let aggregateTime = try time(3) { sink &+= try query.run(groupTable, groups: declared, using: &aggregateSampler).rows.count }
    print(String(format: "| DP count, 200,000 rows of 50,000 people, 40,000 declared groups | %.0f ms | |", aggregateTime))

    // A generated census-shaped table of 1.2 M rows.
    let census = CensusGenerator.table(rows: 1_200_000)
    let censusQIs = [
        QuasiIdentifier(column: "age", hierarchy: .intervals(widths: [5, 10, 20, 40])),
        QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [1, 1, 1, 2])),
        QuasiIdentifier(column: "sex", hierarchy: .suppressionOnly),
        QuasiIdentifier(column: "education", hierarchy: .suppressionOnly),
        QuasiIdentifier(column: "marital", hierarchy: .suppressionOnly),
    ]
    var censusChecked = 0
    let censusRequirements = try AnonymityRequirements(k: 10, maxSuppression: 0.01)
    var censusPrepared: OptimalSearch.Prepared?
    let encodeTime = try time(1) { censusPrepared = try OptimalSearch().prepare(census, quasiIdentifiers: censusQIs, requirements: censusRequirements) }
    var solution: OptimalSearch.Solution?
    let censusSearch = try time(1) { solution = try censusPrepared?.search(); censusChecked = solution?.nodesChecked ?? 0 }
    let censusRelease = try time(1) { if let solution { _ = try censusPrepared?.release(solution) } }
    print(String(format: "| optimal k=10, generated census table, 1.2 M rows, 5 QIs, 1%% suppression: search (%d nodes checked) | %.0f ms | goal ≤ 2000 ms |", censusChecked, censusSearch))
    print(String(format: "| the same: encoding the 1.2 M rows / releasing the table | %.0f ms / %.0f ms | |", encodeTime, censusRelease))
    // k in people: one row in five belongs to a person with four other rows.
    var censusPeople = census
    censusPeople.columns.append("person")
    for r in censusPeople.rows.indices { censusPeople.rows[r].append(r % 5 == 0 ? "m\(r / 25)" : "s\(r)") }
    let peopleRequirements = try AnonymityRequirements(k: 10, maxSuppression: 0.01, subject: "person")
    var peoplePrepared: OptimalSearch.Prepared?
    let peopleEncode = try time(1) { peoplePrepared = try OptimalSearch().prepare(censusPeople, quasiIdentifiers: censusQIs, requirements: peopleRequirements) }
    var peopleChecked = 0
    let peopleSearch = try time(1) { peopleChecked = try peoplePrepared?.search().nodesChecked ?? 0 }
    print(String(format: "| the same search with k counted in people (1,008,000 people; 48,000 with five rows) (%d nodes checked) / encoding | %.0f ms / %.0f ms | |", peopleChecked, peopleSearch, peopleEncode))
    if sink == 42 { print("") }
}

/// A deterministic census-shaped table (not real people).
enum CensusGenerator {
    static func table(rows: Int) -> CSVTable {
        var state: UInt64 = 0x2545F4914F6CDD1D
        func next(_ bound: Int) -> Int {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(state % UInt64(bound))
        }
        let educations = ["Bachelors", "HS-grad", "Masters", "Some-college", "Doctorate", "Assoc", "11th", "9th"]
        let marital = ["Never-married", "Married", "Divorced", "Widowed", "Separated"]
        var data: [[String]] = []
        data.reserveCapacity(rows)
        for _ in 0..<rows {
            data.append([String(17 + next(74)), String(19000 + next(900)), next(2) == 0 ? "F" : "M",
                         educations[next(educations.count)], marital[next(marital.count)]])
        }
        return CSVTable(columns: ["age", "zip", "sex", "education", "marital"], rows: data)
    }
}
