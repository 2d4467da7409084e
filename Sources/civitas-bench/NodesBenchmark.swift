import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation
import Synchronization

/// The broker on SQLite, then as one, two and three nodes on one PostgreSQL database (the
/// nodes in this process, each with its own store and connections, as separate processes
/// would have): consent events, releases, DP aggregates on separate agreements and on one
/// agreement, and bare log appends, each from several threads spread over the nodes.
/// Run from the repository root: `scripts/bench-nodes` starts a throwaway PostgreSQL cluster.
func runNodesBenchmark(postgres url: String, records: Int) throws {
    let server = try PostgresLocation(url: url)
    print("Generated 911 calls: \(records.formatted()) records, \((records / 3).formatted()) callers; \(NodesWorkload.threads) threads spread over the nodes.\n")
    print("| store | nodes | consent events/s (\(NodesWorkload.consentRequests) requests of 1,000) | releases/s (\(NodesWorkload.partners) partners, k = 5) | aggregates/s, one agreement each (\(NodesWorkload.partners) agreements) | aggregates/s, all on one agreement | log appends/s (one entry per transaction) | busy refusals |")
    print("|---|---|---|---|---|---|---|---|")
    let sqliteDirectory = NSTemporaryDirectory() + "civitas-bench-nodes-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: sqliteDirectory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: sqliteDirectory) }
    let sqlite = try BrokerStore(path: sqliteDirectory + "/broker.sqlite", storageKey: try SealedStorageKey.generate())
    print(try NodesWorkload(stores: [sqlite], records: records).run(label: "SQLite"))
    for count in 1...3 {
        let name = "civitas_bench_" + Hex.encode(Sodium.randomBytes(6))
        try PostgresStore.createDatabase(name, at: server)
        let key = try SealedStorageKey.generate()
        let stores = try (0..<count).map { _ in try PostgresStore(location: server.database(name), storageKey: key, connections: NodesWorkload.threads) }
        print(try NodesWorkload(stores: stores, records: records).run(label: "PostgreSQL"))
    }
}

/// One broker (its nodes) set up with an agency, partners, a dataset of generated calls with
/// consent, and one agreement per partner; then each workload, timed.
struct NodesWorkload {
    static let threads = 8
    static let partners = 16
    static let consentRequests = 24
    static let aggregatesEach = 16
    static let contendedAggregates = 160
    static let appends = 3_000
    static let purpose = "public-health-surveillance"
    static let now: UTCTime = "2026-11-27T10:00:00Z"

    let nodes: [Broker]
    let agency: Participant
    let partners: [Participant]
    let records: Int

    init(stores: [any BrokerStorage], records: Int) throws {
        let brokerKeys = try SecretKeys.generate(name: "broker")
        nodes = try stores.map { try Broker(store: $0, keys: brokerKeys) }
        let broker = nodes[0]
        let agencyKeys = try SecretKeys.generate(name: "agency")
        let operator_ = try broker.registerOperator(brokerKeys.publicKeys, now: Self.now)
        agency = try broker.registerParticipant(agencyKeys.publicKeys, role: .agency, by: operator_, now: Self.now)
        let schema = try Array(Data(contentsOf: URL(fileURLWithPath: "Schemas/datasets/emergency-call.schema.json")))
        _ = try broker.registerDataset(id: "calls", schema: try JSONParser.parse(schema), purposes: [Self.purpose], by: agency, now: Self.now)
        let table = BenchCalls.table(rows: records, callers: records / 3)
        _ = try broker.store.appendBatch(dataset: "calls", columns: table.columns, rows: table.rows, idempotencyKey: nil, now: Self.now)
        let callers = (0..<(records / 3)).map(BenchCalls.caller)
        for start in stride(from: 0, to: callers.count, by: 10_000) {
            _ = try broker.recordConsent(callers[start..<min(callers.count, start + 10_000)].map {
                ConsentRequest(dataset: "calls", subject: $0, purpose: Self.purpose, granted: true, notice: "n-1", collectionMethod: "web-form", jurisdiction: "US-PA")
            }, by: agency, now: Self.now)
        }
        var partners: [Participant] = []
        for index in 0..<Self.partners {
            let keys = try SecretKeys.generate(name: "partner-\(index)")
            let partner = try broker.registerParticipant(keys.publicKeys, role: .partner, by: operator_, now: Self.now)
            let policy: JSONValue = [
                "agreement": .string("ag-\(index)"), "dataset": "calls", "publisher": .string(agencyKeys.keyID.hex), "partner": .string(keys.keyID.hex),
                "purposes": [.string(Self.purpose)], "legal_basis": "consent", "fields": ["caller", "lat", "lng", "zip", "title", "timeStamp", "twp", "e"],
                "treatment": ["k": 5, "suppression_limit": 0.1],
                "aggregates": ["group_by": ["twp"], "group_keys": ["twp": .array(BenchCalls.towns.map(JSONValue.string))], "max_epsilon_per_query": 0.1],
                "epsilon_budget": 1000, "valid_from": "2026-11-01T00:00:00Z", "valid_until": "2027-11-01T00:00:00Z",
            ]
            let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
            _ = try broker.offerAgreement(policy: policy, signature: agencyKeys.sign(AgreementPolicy.offerMessage(policySHA256: hash)), by: agency, now: Self.now)
            _ = try broker.acceptAgreement("ag-\(index)", signature: keys.sign(AgreementPolicy.acceptMessage(policySHA256: hash)), by: partner, now: Self.now)
            partners.append(partner)
        }
        self.partners = partners
        self.records = records
    }

    /// One table row: each workload's rate.
    func run(label: String) throws -> String {
        let busy = Mutex(0)
        /// Runs `count` operations on `threads` threads, operation `i` on node `i % nodes`; returns operations per second.
        func rate(_ count: Int, _ operation: @escaping @Sendable (_ node: Broker, _ index: Int) throws -> Void) throws -> Double {
            let next = Mutex(0), failures = Mutex<[String]>([])
            let nodes = self.nodes
            let elapsed = seconds {
                let group = DispatchGroup()
                for _ in 0..<Self.threads {
                    group.enter()
                    Thread.detachNewThread {
                        defer { group.leave() }
                        while true {
                            let index = next.withLock { value -> Int in
                                defer { value += 1 }
                                return value
                            }
                            guard index < count else { return }
                            do { try operation(nodes[index % nodes.count], index) } catch let error as BrokerError where error.code == .busy {
                                busy.withLock { $0 += 1 }
                            } catch {
                                failures.withLock { $0.append("\(error)") }
                            }
                        }
                    }
                }
                group.wait()
            }
            if let failure = failures.withLock({ $0.first }) { throw BenchmarkFailure(message: failure) }
            return Double(count) / elapsed
        }
        let (agency, partners) = (self.agency, self.partners)
        let consent = try rate(Self.consentRequests) { node, index in
            _ = try node.recordConsent((0..<1_000).map {
                ConsentRequest(dataset: "calls", subject: BenchCalls.caller(index * 1_000 + $0), purpose: Self.purpose, granted: true,
                               notice: "n-2", collectionMethod: "web-form", jurisdiction: "US-PA")
            }, by: agency, now: Self.now)
        }
        let releases = try rate(Self.partners) { node, index in
            _ = try node.release(agreement: "ag-\(index)", purpose: Self.purpose, by: partners[index], now: Self.now)
        }
        let query = AggregateRequest(purpose: Self.purpose, statistic: .count, measure: nil, groupBy: ["twp"], epsilonMicro: 1_000)
        let spread = try rate(Self.partners * Self.aggregatesEach) { node, index in
            _ = try node.aggregate(agreement: "ag-\(index % Self.partners)", request: query, by: partners[index % Self.partners], now: Self.now)
        }
        let contended = try rate(Self.contendedAggregates) { node, _ in
            _ = try node.aggregate(agreement: "ag-0", request: query, by: partners[0], now: Self.now)
        }
        let appends = try rate(Self.appends) { node, index in
            try node.store.transaction { transaction in
                _ = try transaction.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": .string("bench-\(index)")])
            }
        }
        func perSecond(_ value: Double) -> String { value >= 100 ? Int(value.rounded()).formatted() : String(format: "%.1f", value) }
        return "| \(label) | \(nodes.count) | \(perSecond(consent * 1_000)) | \(perSecond(releases)) | \(perSecond(spread)) | \(perSecond(contended)) | \(perSecond(appends)) | \(busy.withLock { $0 }) |"
    }
}

struct BenchmarkFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
