import CivitasBroker
import CivitasCrypto
import CivitasPrivacy
import CivitasStore
import Foundation

/// How soon a waiting partner holds a feed window after the upload that completes it is
/// answered: the broker's signal beside polling every 200 ms (how waiters worked before), in
/// the same run. Each round a partner waits, the agency uploads 1,000 calls (one window) at a
/// random moment, and the partner reads the window once it is woken (or its poll finds it).
func runFeedBenchmark(rounds: Int) throws {
    let directory = NSTemporaryDirectory() + "civitas-bench-feed-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let schema = try Array(Data(contentsOf: URL(fileURLWithPath: "Schemas/datasets/emergency-call.schema.json")))
    let store = try BrokerStore(path: directory + "/broker.sqlite", storageKey: try SealedStorageKey.generate())
    let brokerKeys = try SecretKeys.generate(name: "broker")
    let broker = try Broker(store: store, keys: brokerKeys)
    let agencyKeys = try SecretKeys.generate(name: "agency"), partnerKeys = try SecretKeys.generate(name: "partner")
    let now: UTCTime = "2026-11-27T10:00:00Z", purpose = "public-health-surveillance"
    let operator_ = try broker.registerOperator(brokerKeys.publicKeys, now: now)
    let agency = try broker.registerParticipant(agencyKeys.publicKeys, role: .agency, by: operator_, now: now)
    let partner = try broker.registerParticipant(partnerKeys.publicKeys, role: .partner, by: operator_, now: now)
    _ = try broker.registerDataset(id: "calls", schema: try JSONParser.parse(schema), purposes: [purpose], by: agency, now: now)
    let policy: JSONValue = [
        "agreement": "ag-feed", "dataset": "calls", "publisher": .string(agencyKeys.keyID.hex), "partner": .string(partnerKeys.keyID.hex),
        "purposes": [.string(purpose)], "legal_basis": "public-task", "fields": ["zip", "title", "twp"],
        "treatment": ["k": 2, "suppression_limit": 1], "epsilon_budget": 1,
        "feed": ["window_records": 1000, "window_seconds": 3600, "below_k": "suppress"],
        "valid_from": "2026-11-01T00:00:00Z", "valid_until": "2027-11-01T00:00:00Z",
    ]
    let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
    _ = try broker.offerAgreement(policy: policy, signature: agencyKeys.sign(AgreementPolicy.offerMessage(policySHA256: hash)), by: agency, now: now)
    _ = try broker.acceptAgreement("ag-feed", signature: partnerKeys.sign(AgreementPolicy.acceptMessage(policySHA256: hash)), by: partner, now: now)
    let feed = try broker.subscribe(agreement: "ag-feed", purpose: purpose, webhook: nil, by: partner, now: now).id

    /// When the partner first held the window, in uptime nanoseconds.
    final class Received: @unchecked Sendable {
        private let lock = NSLock()
        private var value: UInt64 = 0
        func set(_ time: UInt64) { lock.withLock { value = time } }
        var time: UInt64 { lock.withLock { value } }
    }
    var delivered: Int64 = 0
    print("| waiting | rounds | p50 after the upload's answer | p99 | most |")
    print("|---|---|---|---|---|")
    for polling in [false, true] {
        var latencies: [Double] = []
        for round in 0..<rounds {
            let received = Received(), done = DispatchSemaphore(value: 0)
            let after = delivered
            let version = broker.feedSignals.version(of: feed)
            Task.detached {
                var seen = version
                while true {
                    if let windows = try? broker.windows(of: feed, after: after, limit: 10, for: partner), !windows.isEmpty {
                        received.set(DispatchTime.now().uptimeNanoseconds)
                        break
                    }
                    if polling {
                        try? await Task.sleep(for: .milliseconds(200))
                    } else {
                        await broker.feedSignals.wait(for: feed, after: seen, until: .now + .seconds(30))
                        seen = broker.feedSignals.version(of: feed)
                    }
                }
                done.signal()
            }
            usleep(UInt32.random(in: 0..<200_000))  // the batch arrives at a random point of the poll cycle
            let batch = BenchCalls.table(rows: 1000, callers: 100_000, offset: (polling ? rounds : 0) * 1000 + round * 1000)
            let csv = batch.csv()
            _ = try broker.publishBatch(dataset: "calls", format: .csv, body: { MemorySource(csv) }, idempotencyKey: nil, by: agency, now: now)
            let answered = DispatchTime.now().uptimeNanoseconds
            done.wait()
            delivered += 1
            latencies.append((Double(received.time) - Double(answered)) / 1e6)
        }
        latencies.sort()
        func quantile(_ q: Double) -> Double { latencies[min(latencies.count - 1, Int((Double(latencies.count) * q).rounded(.up)) - 1)] }
        print(String(format: "| %@ | %d | %.1f ms | %.1f ms | %.1f ms |", polling ? "polling every 200 ms (before)" : "woken by the broker",
                     rounds, quantile(0.5), quantile(0.99), latencies.last ?? 0))
    }
}
