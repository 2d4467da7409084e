import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// A broker on a fresh database set up as `Tests/Fixtures/clinic-exchange.json` says (the
/// Python oracle tests start theirs from the same file): a clinic publishing visit records, two
/// partners, a consent service and an auditor; records carry a public `ref` so tests can tell
/// which person a released record belongs to without the pseudonym key.
final class BrokerFixture {
    let directory: String
    /// Where the broker keeps its state: SQLite in `directory` unless the fixture was given another store.
    let store: any BrokerStorage
    /// The SQLite store, when the fixture runs on one (for tests of the file itself).
    let sqlite: BrokerStore?
    let broker: Broker
    let brokerKeys: SecretKeys
    let clinic: Participant
    let clinicKeys: SecretKeys
    let partnerA: Participant
    let partnerAKeys: SecretKeys
    let partnerB: Participant
    let partnerBKeys: SecretKeys
    let consentService: Participant
    let auditor: Participant
    static let dataset = scenario.string("dataset")
    static let purpose = scenario.string("purpose")
    var now = UTCTime(rfc3339: scenario.string("now")) ?? UTCTime(secondsSince1970: 0)

    /// The shared description of this broker.
    static let scenario: Scenario = {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/clinic-exchange.json").path
        do {
            return Scenario(json: try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path)))))
        } catch {
            preconditionFailure("\(path) does not read as JSON: \(error)")
        }
    }()

    /// The fixture file, read.
    struct Scenario {
        let json: JSONValue
        func string(_ key: String) -> String { json[key]?.stringValue ?? "" }
        /// The keys of the participant named `name` get the role the file gives it.
        func role(of name: String) -> Participant.Role? {
            guard case .array(let participants)? = json["participants"] else { return nil }
            return participants.first { $0["name"]?.stringValue == name }.flatMap { $0["role"]?.stringValue }.flatMap(Participant.Role.init(rawValue:))
        }
    }

    init(store given: (any BrokerStorage)? = nil, randomness: (@Sendable () -> AnyRandomWords)? = nil) throws {
        directory = NSTemporaryDirectory() + "civitas-broker-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if let given {
            store = given
            sqlite = nil
        } else {
            let sqlite = try BrokerStore(path: directory + "/broker.sqlite", storageKey: try SealedStorageKey.generate())
            store = sqlite
            self.sqlite = sqlite
        }
        brokerKeys = try SecretKeys.generate(name: "broker")
        let (store, brokerKeys) = (self.store, self.brokerKeys)
        if let randomness {
            broker = try Broker(store: store, keys: brokerKeys, randomness: randomness)
        } else {
            broker = try Broker(store: store, keys: brokerKeys)
        }
        clinicKeys = try SecretKeys.generate(name: "clinic")
        partnerAKeys = try SecretKeys.generate(name: "health")
        partnerBKeys = try SecretKeys.generate(name: "university")
        let scenario = Self.scenario
        let t = UTCTime(rfc3339: scenario.string("registered")) ?? UTCTime(secondsSince1970: 0)
        let operator_ = try broker.registerOperator(brokerKeys.publicKeys, now: t)
        let broker = self.broker
        let register = { (keys: PublicKeys) throws -> Participant in
            guard let role = scenario.role(of: keys.name) else { throw BrokerError(.notFound, "\(keys.name) is not in the fixture file") }
            return try broker.registerParticipant(keys, role: role, by: operator_, now: t)
        }
        clinic = try register(clinicKeys.publicKeys)
        partnerA = try register(partnerAKeys.publicKeys)
        partnerB = try register(partnerBKeys.publicKeys)
        consentService = try register(try SecretKeys.generate(name: "consent-desk").publicKeys)
        auditor = try register(try SecretKeys.generate(name: "auditor").publicKeys)
        guard let schema = scenario.json["schema"], case .array(let purposes)? = scenario.json["policy"]?["purposes"] else {
            throw BrokerError(.invalid, "the fixture file has no schema or purposes")
        }
        _ = try broker.registerDataset(id: Self.dataset, schema: schema, purposes: purposes.compactMap(\.stringValue), by: clinic, now: t)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Person `i`'s id; the records of person i have refs "r<i>-<n>".
    static func person(_ i: Int) -> String { "P\(10000 + i)" }

    /// `people` persons with `visitsEach` records each, by the fixture file's rule; ages and zips
    /// repeat so k is reachable.
    static func records(people: Int, visitsEach: Int = 2, startingAt first: Int = 0) -> CSVTable {
        let diagnoses = (scenario.json["records"]?["diagnoses"]).flatMap { value -> [String]? in
            guard case .array(let items) = value else { return nil }
            return items.compactMap(\.stringValue)
        } ?? []
        var rows: [[String]] = []
        for i in first..<(first + people) {
            for n in 0..<visitsEach {
                rows.append([person(i), "r\(i)-\(n)", String(20 + (i * 7) % 60), "1910\(i % 10)", diagnoses[(i + n) % diagnoses.count],
                             String((i + n) % 12), "free text \(i)"])
            }
        }
        return CSVTable(columns: ["person", "ref", "age", "zip", "diagnosis", "visits", "notes"], rows: rows)
    }

    @discardableResult
    func publish(_ table: CSVTable) throws -> Batch {
        try store.appendBatch(dataset: Self.dataset, columns: table.columns, rows: table.rows, idempotencyKey: nil, now: now)
    }

    /// The fixture file's policy for `partner`, with overrides.
    func policy(id: String, partner: SecretKeys, basis: String? = nil, k: Int? = nil, suppression: Double? = nil,
                fields: [String]? = nil, budget: Double? = nil, extra: [String: JSONValue] = [:]) -> JSONValue {
        guard case .object(var object)? = Self.scenario.json["policy"] else { return .null }
        object["agreement"] = .string(id)
        object["dataset"] = .string(Self.dataset)
        object["publisher"] = .string(clinicKeys.keyID.hex)
        object["partner"] = .string(partner.keyID.hex)
        if let basis { object["legal_basis"] = .string(basis) }
        if let fields { object["fields"] = .array(fields.map(JSONValue.string)) }
        if let budget { object["epsilon_budget"] = .number(budget) }
        if k != nil || suppression != nil, case .object(var treatment)? = object["treatment"] {
            if let k { treatment["k"] = .number(Double(k)) }
            if let suppression { treatment["suppression_limit"] = .number(suppression) }
            object["treatment"] = .object(treatment)
        }
        object.merge(extra) { _, new in new }
        return .object(object)
    }

    /// Offers and accepts an agreement; returns its id.
    @discardableResult
    func agree(_ policy: JSONValue, partner: SecretKeys) throws -> String {
        let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
        let agreement = try broker.offerAgreement(policy: policy, signature: clinicKeys.sign(AgreementPolicy.offerMessage(policySHA256: hash)),
                                                  by: clinic, now: now)
        let participant = partner.keyID == partnerAKeys.keyID ? partnerA : partnerB
        _ = try broker.acceptAgreement(agreement.id, signature: partner.sign(AgreementPolicy.acceptMessage(policySHA256: hash)), by: participant, now: now)
        return agreement.id
    }

    func consent(_ people: [Int], granted: Bool) throws {
        _ = try broker.recordConsent(people.map {
            ConsentRequest(dataset: Self.dataset, subject: Self.person($0), purpose: Self.purpose, granted: granted,
                           notice: "notice-v1", collectionMethod: "web-form", jurisdiction: "EU")
        }, by: clinic, now: now)
    }

    /// Opens a delivery as its partner.
    func open(_ delivery: Delivery, as partner: SecretKeys) throws -> CSVTable {
        let sink = MemorySink()
        _ = try EnvelopeOpener(recipient: partner, issuer: brokerKeys.publicKeys).open(MemorySource(delivery.envelope), to: sink)
        return try CSVTable.parse(sink.bytes, delimiter: 0x2C)
    }

    /// What can change when something is refused: the log, deliveries, budgets.
    func stateFingerprint() throws -> String {
        let agreements = try store.agreements(involving: nil).map { "\($0.id):\($0.state.rawValue):\($0.spentMicro)" }.joined(separator: ",")
        let deliveries = try store.deliveryCounts().values.reduce(0, +)
        let feeds = try store.feeds().map { "\($0.id):\($0.nextBatch):\($0.delivered)" }.joined(separator: ",")
        return "log=\(store.logSize) deliveries=\(deliveries) agreements=\(agreements) feeds=\(feeds)"
    }

    /// The log export as an auditor receives it.
    func export() throws -> [UInt8] {
        let exporter = try store.logExporter(signer: brokerKeys, pageEntries: 10_000)
        var export: [UInt8] = []
        while let page = try exporter.nextPage() { export += page }
        return export
    }
}

/// A seeded generator (SplitMix64) for tests that pin what randomness the broker is given.
struct SeededRandomness: RandomWords {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
