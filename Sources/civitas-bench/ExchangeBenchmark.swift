import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// The exchange pipeline on a SQLite store in a temporary folder: consent events, a whole
/// release (consent, projection, pseudonyms, optimal k = 5, seal, one-transaction commit),
/// a DP aggregate and a feed window, at two dataset sizes. Run from the repository root.
func runExchangeBenchmark(sizes: [Int]) throws {
    let schema = try Array(Data(contentsOf: URL(fileURLWithPath: "Schemas/datasets/emergency-call.schema.json")))
    print("| records | consent events/s (10,000 in one request) | release: records/s (k = 5, optimal) | release wall time | release peak RSS | aggregate (count by township) | aggregate peak RSS | feed window of 1,000 | peak RSS of the run |")
    print("|---|---|---|---|---|---|---|---|---|")
    var peerRows: [String] = []
    defer {
        if !peerRows.isEmpty {
            print("\nThe release beside the Python pipeline (scripts/peers/release_peer.py), the same records and consent:\n")
            print("| records | Civitas release | Civitas peak RSS | Python release | Python peak RSS | Civitas faster by | records released (Civitas / Python) | k in callers | nodes checked | same rows | Python stages (s) |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            peerRows.forEach { print($0) }
        }
    }
    for records in sizes {
        let directory = NSTemporaryDirectory() + "civitas-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = Memory.resetPeak()
        let store = try BrokerStore(path: directory + "/broker.sqlite", storageKey: try SealedStorageKey.generate())
        let brokerKeys = try SecretKeys.generate(name: "broker")
        let broker = try Broker(store: store, keys: brokerKeys)
        let agencyKeys = try SecretKeys.generate(name: "agency"), partnerKeys = try SecretKeys.generate(name: "partner")
        let now: UTCTime = "2026-11-27T10:00:00Z"
        let operator_ = try broker.registerOperator(brokerKeys.publicKeys, now: now)
        let agency = try broker.registerParticipant(agencyKeys.publicKeys, role: .agency, by: operator_, now: now)
        let partner = try broker.registerParticipant(partnerKeys.publicKeys, role: .partner, by: operator_, now: now)
        let purpose = "public-health-surveillance"
        _ = try broker.registerDataset(id: "calls", schema: try JSONParser.parse(schema), purposes: [purpose], by: agency, now: now)
        for start in stride(from: 0, to: records, by: 100_000) {
            let table = BenchCalls.table(rows: min(records, start + 100_000) - start, callers: records / 3, offset: start)
            _ = try store.appendBatch(dataset: "calls", columns: table.columns, rows: table.rows, idempotencyKey: nil, now: now)
        }
        let callers = (0..<(records / 3)).map(BenchCalls.caller).filter { !$0.hasSuffix("0") }
        var consentSeconds = 0.0
        for start in stride(from: 0, to: callers.count, by: 10_000) {
            let chunk = callers[start..<min(callers.count, start + 10_000)]
            consentSeconds += try seconds {
                _ = try broker.recordConsent(chunk.map {
                    ConsentRequest(dataset: "calls", subject: $0, purpose: purpose, granted: true, notice: "n-1", collectionMethod: "web-form", jurisdiction: "US-PA")
                }, by: agency, now: now).jsonLines()
            }
        }
        let policy: JSONValue = [
            "agreement": "ag-bench", "dataset": "calls", "publisher": .string(agencyKeys.keyID.hex), "partner": .string(partnerKeys.keyID.hex),
            "purposes": [.string(purpose)], "legal_basis": "consent", "fields": ["caller", "lat", "lng", "zip", "title", "timeStamp", "twp", "e"],
            "treatment": ["k": 5, "suppression_limit": 0.1], "aggregates": ["group_by": ["twp"], "group_keys": ["twp": .array(BenchCalls.towns.map(JSONValue.string))], "max_epsilon_per_query": 0.1],
            "epsilon_budget": 10, "feed": ["window_records": 1000, "window_seconds": 3600, "below_k": "suppress"],
            "valid_from": "2026-11-01T00:00:00Z", "valid_until": "2027-11-01T00:00:00Z",
        ]
        let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
        _ = try broker.offerAgreement(policy: policy, signature: agencyKeys.sign(AgreementPolicy.offerMessage(policySHA256: hash)), by: agency, now: now)
        _ = try broker.acceptAgreement("ag-bench", signature: partnerKeys.sign(AgreementPolicy.acceptMessage(policySHA256: hash)), by: partner, now: now)
        var release: ReleaseResult?
        let runPeak = Memory.peak()
        _ = Memory.resetPeak()
        let releaseSeconds = try seconds { release = try broker.release(agreement: "ag-bench", purpose: purpose, by: partner, now: now) }
        let releasePeak = Memory.peak()
        if let release, let peer = try ReleasePeer.run(records: records, callers: callers, directory: directory) {
            let ours = try ReleasePeer.rowsDigest(envelope: release.delivery.envelope, recipient: partnerKeys, issuer: brokerKeys.publicKeys)
            peerRows.append("| \(records.formatted()) | \(String(format: "%.2f s", releaseSeconds)) | \(mib(releasePeak)) | \(peer.seconds) | \(mib(peer.peak)) | \(String(format: "%.1f×", peer.secondsValue / releaseSeconds)) | \(release.delivery.records.formatted()) / \(peer.released.formatted()) | \(release.outcome?.kAchieved ?? 0) / \(peer.k) | \(release.outcome?.report?.nodesChecked ?? 0) / \(peer.nodesChecked) | \(ours == peer.rowsDigest ? "yes" : "NO") | \(peer.stages) |")
        }
        let aggregate = AggregateRequest(purpose: purpose, statistic: .count, measure: nil, groupBy: ["twp"], epsilonMicro: 100_000)
        _ = Memory.resetPeak()
        let aggregateSeconds = try seconds { _ = try broker.aggregate(agreement: "ag-bench", request: aggregate, by: partner, now: now) }
        let aggregatePeak = Memory.peak()
        _ = try broker.subscribe(agreement: "ag-bench", purpose: purpose, webhook: nil, by: partner, now: now)
        let later = BenchCalls.table(rows: 1000, callers: records / 3, offset: records)
        _ = try store.appendBatch(dataset: "calls", columns: later.columns, rows: later.rows, idempotencyKey: nil, now: now)
        var windows = 0
        let windowSeconds = try seconds { windows = try broker.closeDueWindows(now: now).count }
        guard windows == 1, let release else { throw BenchError("the feed window was not delivered") }
        print("| \(records.formatted()) | \(Int(Double(callers.count) / consentSeconds).formatted()) | \(Int(Double(records) / releaseSeconds).formatted()) (\(release.delivery.records.formatted()) released, k \(release.outcome?.kAchieved ?? 0) callers, \(release.outcome?.report?.nodesChecked ?? 0) nodes checked) | \(String(format: "%.2f s", releaseSeconds)) | \(mib(releasePeak)) | \(String(format: "%.1f ms", aggregateSeconds * 1000)) | \(mib(aggregatePeak)) | \(String(format: "%.1f ms", windowSeconds * 1000)) | \(mib(max(runPeak, releasePeak, aggregatePeak, Memory.peak()))) |")
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Generated 911-shaped calls with caller numbers (deterministic; not real people).
enum BenchCalls {
    static func caller(_ index: Int) -> String { String(format: "215-%07d", index) }

    static let towns = ["NORRISTOWN", "LOWER MERION", "ABINGTON", "CHELTENHAM", "POTTSTOWN", "UPPER MERION", "HORSHAM", "AMBLER"]

    static func table(rows: Int, callers: Int, offset: Int = 0) -> CSVTable {
        let titles = ["EMS: FALL VICTIM", "EMS: RESPIRATORY EMERGENCY", "Fire: VEHICLE ACCIDENT", "Traffic: DISABLED VEHICLE -", "EMS: CARDIAC EMERGENCY"]
        var state: UInt64 = 0x9E3779B97F4A7C15 &+ UInt64(offset)
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        // Record i goes to caller i·step mod callers, with a step prime to the number of callers,
        // so that every caller has records / callers of them (3 in the exchange benchmark).
        let step = [7, 11, 13, 17, 19, 23].first { greatestCommonDivisor($0, max(callers, 1)) == 1 } ?? 1
        var out: [[String]] = []
        out.reserveCapacity(rows)
        for index in 0..<rows {
            let town = next(towns.count)
            out.append([String(format: "40.%06d", 100_000 + next(300_000)), String(format: "-75.%06d", 200_000 + next(300_000)), "x;",
                        String(19400 + town * 5 + next(5)), titles[next(titles.count)],
                        String(format: "2016-%02d-%02d %02d:%02d:00", next(12) + 1, next(28) + 1, next(24), next(60)),
                        towns[town], "MAIN ST", "1", caller(((offset + index) * step) % max(callers, 1))])
        }
        return CSVTable(columns: ["lat", "lng", "desc", "zip", "title", "timeStamp", "twp", "addr", "e", "caller"], rows: out)
    }
}

func greatestCommonDivisor(_ a: Int, _ b: Int) -> Int { b == 0 ? a : greatestCommonDivisor(b, a % b) }

/// The Python release pipeline run on the same records and consent, and the comparison of its rows with ours.
enum ReleasePeer {
    struct Outcome {
        let secondsValue: Double
        let peak: Int
        let released: Int
        let k: Int
        let nodesChecked: Int
        let rowsDigest: String
        let stages: String
        var seconds: String { String(format: "%.2f s", secondsValue) }
    }

    /// Runs the peer from the venv scripts/bench prepares (nil when it is missing or CIVITAS_RELEASE_PEER=0).
    static func run(records: Int, callers: [String], directory: String) throws -> Outcome? {
        let environment = ProcessInfo.processInfo.environment
        let python = environment["CIVITAS_PEERS_PYTHON"] ?? ".venv-peers/bin/python"
        guard environment["CIVITAS_RELEASE_PEER"] != "0", FileManager.default.isExecutableFile(atPath: python) else { return nil }
        let recordsPath = directory + "/peer-records.csv", callersPath = directory + "/peer-callers.txt"
        guard FileManager.default.createFile(atPath: recordsPath, contents: nil) else { throw BenchError("cannot write \(recordsPath)") }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: recordsPath))
        for start in stride(from: 0, to: records, by: 100_000) {
            let table = BenchCalls.table(rows: min(records, start + 100_000) - start, callers: records / 3, offset: start)
            var text = start == 0 ? table.columns.joined(separator: ",") + "\n" : ""
            for row in table.rows { text += row.joined(separator: ",") + "\n" }
            out.write(Data(text.utf8))
        }
        try out.close()
        try Data((callers.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: callersPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["scripts/peers/release_peer.py", recordsPath, callersPath, directory + "/peer", "5", "0.1"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, let object = try JSONParser.parse(Array(output)).objectValue else {
            throw BenchError("the release peer failed")
        }
        let stages = (object["stages"]?.objectValue ?? [:]).sorted { $0.key < $1.key }
            .map { "\($0.key) \(String(format: "%.2f", $0.value.numberValue ?? 0))" }.joined(separator: ", ")
        return Outcome(secondsValue: object["seconds"]?.numberValue ?? 0, peak: Int(object["peak_rss"]?.numberValue ?? 0),
                       released: Int(object["released"]?.numberValue ?? 0), k: Int(object["k"]?.numberValue ?? 0),
                       nodesChecked: Int(object["nodes_checked"]?.numberValue ?? 0),
                       rowsDigest: object["rows_sha256"]?.stringValue ?? "", stages: stages)
    }

    /// SHA-256 of the released rows (no header) with each pseudonym replaced by the order of its first
    /// appearance, as the peer computes it: equal digests mean the same rows, linked the same way.
    static func rowsDigest(envelope: [UInt8], recipient: SecretKeys, issuer: PublicKeys) throws -> String {
        let sink = MemorySink(capacity: envelope.count)
        _ = try EnvelopeOpener(recipient: recipient, issuer: issuer).open(MemorySource(envelope), to: sink)
        let lines = String(decoding: sink.bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard let header = lines.first?.split(separator: ","), let caller = header.firstIndex(of: "caller"), !sink.bytes.contains(0x22) else {
            throw BenchError("the released CSV has no caller column or has quoted fields")
        }
        var order: [Substring: Int] = [:]
        var text = ""
        for line in lines.dropFirst() where !line.isEmpty {
            var fields = line.split(separator: ",", omittingEmptySubsequences: false)
            let ordinal = order[fields[caller]] ?? order.count
            order[fields[caller]] = ordinal
            fields[caller] = Substring(String(ordinal))
            text += fields.joined(separator: ",") + "\n"
        }
        return Hex.encode(SHA256Hasher.hash(Array(text.utf8)))
    }
}
