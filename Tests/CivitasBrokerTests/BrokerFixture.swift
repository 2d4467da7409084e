import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// A broker on a fresh database with a clinic publishing visit records, two partners, a consent
/// service and an auditor; records carry a public `ref` so tests can tell which person a released
/// record belongs to without the pseudonym key.
final class BrokerFixture {
    let directory: String
    let store: BrokerStore
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
    static let dataset = "clinic-visits"
    static let purpose = "public-health-surveillance"
    var now: UTCTime = "2026-11-27T10:00:00Z"

    static let schema = """
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Clinic visit", "type": "object",
         "additionalProperties": false, "required": ["person", "ref", "age", "zip", "diagnosis", "visits"],
         "x-privacy": {"subject": "person"},
         "properties": {
           "person": {"type": "string", "maxLength": 32, "x-privacy": {"class": "subject"}},
           "ref": {"type": "string", "maxLength": 32, "x-privacy": {"class": "public"}},
           "age": {"type": "integer", "minimum": 0, "maximum": 120, "x-privacy": {"class": "quasi-identifier", "hierarchy": {"intervals": [10, 20, 40]}}},
           "zip": {"type": "string", "pattern": "^[0-9]{5}$", "x-privacy": {"class": "quasi-identifier", "hierarchy": {"mask": [1, 1, 1]}}},
           "diagnosis": {"type": "string", "maxLength": 40, "x-privacy": {"class": "sensitive"}},
           "visits": {"type": "integer", "minimum": 0, "maximum": 50, "x-privacy": {"class": "measure", "bounds": ["0", "50"]}},
           "notes": {"type": "string", "maxLength": 200, "x-privacy": {"class": "drop"}}
         }}
        """

    init(randomness: (@Sendable () -> AnyRandomWords)? = nil) throws {
        directory = NSTemporaryDirectory() + "civitas-broker-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        store = try BrokerStore(path: directory + "/broker.sqlite", storageKey: try SealedStorageKey.generate())
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
        let t: UTCTime = "2026-11-27T09:00:00Z"
        let operator_ = try broker.registerOperator(brokerKeys.publicKeys, now: t)
        clinic = try broker.registerParticipant(clinicKeys.publicKeys, role: .agency, by: operator_, now: t)
        partnerA = try broker.registerParticipant(partnerAKeys.publicKeys, role: .partner, by: operator_, now: t)
        partnerB = try broker.registerParticipant(partnerBKeys.publicKeys, role: .partner, by: operator_, now: t)
        consentService = try broker.registerParticipant(try SecretKeys.generate(name: "consent-desk").publicKeys, role: .consentService, by: operator_, now: t)
        auditor = try broker.registerParticipant(try SecretKeys.generate(name: "auditor").publicKeys, role: .auditor, by: operator_, now: t)
        _ = try broker.registerDataset(id: Self.dataset, schema: try JSONParser.parse(Array(Self.schema.utf8)), purposes: [Self.purpose], by: clinic, now: t)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Person `i`'s id; the records of person i have refs "r<i>-<n>".
    static func person(_ i: Int) -> String { "P\(10000 + i)" }

    /// `people` persons with `visitsEach` records each; ages and zips repeat so k is reachable.
    static func records(people: Int, visitsEach: Int = 2, startingAt first: Int = 0) -> CSVTable {
        var rows: [[String]] = []
        for i in first..<(first + people) {
            for n in 0..<visitsEach {
                rows.append([person(i), "r\(i)-\(n)", String(20 + (i * 7) % 60), "1910\(i % 10)", ["flu", "asthma", "diabetes", "covid"][(i + n) % 4],
                             String((i + n) % 12), "free text \(i)"])
            }
        }
        return CSVTable(columns: ["person", "ref", "age", "zip", "diagnosis", "visits", "notes"], rows: rows)
    }

    @discardableResult
    func publish(_ table: CSVTable) throws -> Batch {
        try store.appendBatch(dataset: Self.dataset, columns: table.columns, rows: table.rows, idempotencyKey: nil, now: now)
    }

    /// A policy for `partner`, with overrides.
    func policy(id: String, partner: SecretKeys, basis: String = "consent", k: Int = 3, suppression: Double = 0.2,
                fields: [String] = ["person", "ref", "age", "zip", "diagnosis", "visits"], budget: Double = 1,
                extra: [String: JSONValue] = [:]) -> JSONValue {
        var object: [String: JSONValue] = [
            "agreement": .string(id), "dataset": .string(Self.dataset), "publisher": .string(clinicKeys.keyID.hex),
            "partner": .string(partner.keyID.hex), "purposes": [.string(Self.purpose)], "legal_basis": .string(basis),
            "fields": .array(fields.map(JSONValue.string)), "treatment": ["k": .number(Double(k)), "suppression_limit": .number(suppression)],
            "aggregates": ["group_by": ["zip"], "group_keys": ["zip": .array((0...9).map { .string("1910\($0)") })], "max_epsilon_per_query": 0.4], "epsilon_budget": .number(budget),
            "valid_from": "2026-11-01T00:00:00Z", "valid_until": "2026-12-31T23:59:59Z",
        ]
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
        let agreements = try store.agreements().map { "\($0.id):\($0.state.rawValue):\($0.spentMicro)" }.joined(separator: ",")
        let deliveries = try store.agreements().map { try store.deliveries(agreement: $0.id).count }.reduce(0, +)
        let feeds = try store.feeds().map { "\($0.id):\($0.nextBatch):\($0.delivered)" }.joined(separator: ",")
        return "log=\(store.logSize) deliveries=\(deliveries) agreements=\(agreements) feeds=\(feeds)"
    }

    /// The log export as an auditor receives it.
    func export() throws -> [UInt8] {
        let sink = MemorySink()
        try store.exportLog(signer: brokerKeys, to: sink)
        return sink.bytes
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
