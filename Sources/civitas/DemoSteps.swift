import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasServer
import CivitasStore
import Foundation

/// The demo's participants' keys, written to `directory` (secret keys 0600).
struct DemoKeys {
    let directory: String
    let broker: SecretKeys
    let emergency: SecretKeys
    let transport: SecretKeys
    let health: SecretKeys
    let auditor: SecretKeys
}

/// The running demo broker (one node, or two on PostgreSQL) and one signed client per participant.
struct DemoSession {
    let directory: String
    let keys: DemoKeys
    let servers: [DemoServer]
    let operatorClient: BrokerClient
    let emergencyClient: BrokerClient
    let transportClient: BrokerClient
    let healthClient: BrokerClient
    let auditorClient: BrokerClient
}

/// The demo's steps, in the order `DemoCommand.run` calls them, and what they share.
extension DemoCommand {
    func createKeys(in directory: String) throws -> DemoKeys {
        let keyDirectory = "\(directory)/Keys"
        step(1, "The broker and each participant create their keys (Ed25519 to sign, X25519 to receive).")
        var keys: [String: SecretKeys] = [:]
        for name in ["broker", "emergency-services", "transport", "health", "auditor"] {
            keys[name] = try KeyGeneration.generate(name: name, directory: keyDirectory, force: true, passphrase: nil, cost: .interactive).keys
        }
        guard let brokerKeys = keys["broker"], let emergency = keys["emergency-services"], let transport = keys["transport"],
              let health = keys["health"], let auditor = keys["auditor"] else { throw CLIError("demo keys were not created") }
        for name in keys.keys.sorted() {
            detail("\(name.padding(toLength: 19, withPad: " ", startingAt: 0)) key id \(keys[name]?.keyID.hex ?? "")  (\(keyDirectory)/\(name).secret, mode 0600)")
        }
        return DemoKeys(directory: keyDirectory, broker: brokerKeys, emergency: emergency, transport: transport, health: health, auditor: auditor)
    }

    func startBroker(in directory: String, keys demoKeys: DemoKeys) async throws -> DemoSession {
        let (brokerKeys, emergency, transport, health, auditor) = (demoKeys.broker, demoKeys.emergency, demoKeys.transport, demoKeys.health, demoKeys.auditor)
        for schema in ["emergency-call", "traffic-flow-observed"] where !FileManager.default.fileExists(atPath: "\(schemas)/\(schema).schema.json") {
            throw CLIError("\(schemas)/\(schema).schema.json not found: run the demo from the repository root or pass --schemas")
        }
        let servers: [DemoServer]
        if let postgres {
            step(2, "Two broker nodes start on one PostgreSQL database; the operator registers the participants over signed HTTP requests.")
            let location = try PostgresLocation(url: postgres)
            let storageKey = try StorageKeyFile.loadOrCreate("\(directory)/postgres.storage-key")
            // Two nodes, as two processes would be: each with its own store on the same database, the same keys.
            let stores = try (0..<2).map { _ in try PostgresStore(location: location, storageKey: storageKey, logOrigin: Self.logOrigin, connections: 8) }
            guard stores[0].logSize == 0 else {
                throw CLIError("the demo needs an empty database, and \(location) already holds a log: create another (createdb) and name it")
            }
            let nodes = try stores.map { try Broker(store: $0, keys: brokerKeys) }
            try nodes[0].registerOperator(brokerKeys.publicKeys, now: .now)
            servers = [try await DemoServer.start(broker: nodes[0]), try await DemoServer.start(broker: nodes[1])]
            detail("node 1 listening on \(servers[0].url), node 2 on \(servers[1].url) (database \(location), records encrypted at rest)")
            detail("the operator and the agencies talk to node 1; health and the auditor to node 2")
        } else {
            step(2, "The broker starts on SQLite; its operator registers the participants over signed HTTP requests.")
            let store = try BrokerStore(path: "\(directory)/broker.sqlite",
                                        storageKey: try StorageKeyFile.loadOrCreate("\(directory)/broker.sqlite.storage-key"),
                                        logOrigin: Self.logOrigin)
            let broker = try Broker(store: store, keys: brokerKeys)
            try broker.registerOperator(brokerKeys.publicKeys, now: .now)
            servers = [try await DemoServer.start(broker: broker)]
            detail("broker listening on \(servers[0].url) (database \(directory)/broker.sqlite, records encrypted at rest)")
        }
        let (first, last) = (servers[0].url, servers[servers.count - 1].url)
        let operatorClient = BrokerClient(baseURL: first, keys: brokerKeys)
        let emergencyClient = BrokerClient(baseURL: first, keys: emergency)
        let transportClient = BrokerClient(baseURL: first, keys: transport)
        let healthClient = BrokerClient(baseURL: last, keys: health)
        let auditorClient = BrokerClient(baseURL: last, keys: auditor)
        for (participant, role) in [(emergency, "agency"), (transport, "agency"), (health, "partner"), (auditor, "auditor")] {
            try await operatorClient.registerParticipant(participant.publicKeys, role: role)
            detail("POST /admin/participants  \(participant.publicKeys.name) as \(role): 201")
        }
        try await expectRefusal(403, "the same request signed by health") {
            _ = try await healthClient.send("POST", "/admin/participants", body: Array("{}".utf8))
        }
        return DemoSession(directory: directory, keys: demoKeys, servers: servers, operatorClient: operatorClient, emergencyClient: emergencyClient,
                           transportClient: transportClient, healthClient: healthClient, auditorClient: auditorClient)
    }

    func publish(_ session: DemoSession) async throws -> (calls: CSVTable, later: CSVTable) {
        let emergencyClient = session.emergencyClient
        let transportClient = session.transportClient
        let directory = session.directory
        step(3, "The agencies register their datasets with annotated schemas and publish batches; the broker validates and encrypts them.")
        let calls = try prepareCalls(in: directory)
        let firstCalls = CSVTable(columns: calls.columns, rows: Array(calls.rows.dropLast(Self.laterCalls)))
        let laterCalls = CSVTable(columns: calls.columns, rows: Array(calls.rows.suffix(Self.laterCalls)))
        let firstPath = "\(directory)/911-calls.first.csv"
        try Data(firstCalls.csv()).write(to: URL(fileURLWithPath: firstPath))
        try await register(emergencyClient, id: "montgomery-911", schema: "\(schemas)/emergency-call.schema.json", purposes: [Self.healthPurpose])
        try await expectRefusal(422, "a batch whose second row has latitude 140") {
            let bad = "lat,lng,desc,zip,title,timeStamp,twp,addr,e\n40.1,-75.3,x,19401,EMS: FALL VICTIM,2016-03-01 09:00:00,NORRISTOWN,MAIN ST,1\n140.1,-75.3,x,19401,EMS: FALL VICTIM,2016-03-01 09:00:00,NORRISTOWN,MAIN ST,1\n"
            _ = try await emergencyClient.send("POST", "/datasets/montgomery-911/batches", body: Array(bad.utf8), contentType: "text/csv")
        }
        let upload = try UploadFile(path: firstPath, limit: BrokerAPI.maximumBodySize)
        let quiet = UploadProgress(total: upload.size, label: "", enabled: false)
        let published = try await emergencyClient.upload("/datasets/montgomery-911/batches", file: upload, contentType: "text/csv",
                                                         headers: ["Idempotency-Key": Hex.encode(upload.sha256)], progress: quiet)
        let retried = try await emergencyClient.upload("/datasets/montgomery-911/batches", file: upload, contentType: "text/csv",
                                                       headers: ["Idempotency-Key": Hex.encode(upload.sha256)], progress: quiet)
        detail("POST /datasets/montgomery-911/batches  \(integer(published.json["records"])) calls (\(upload.size) bytes): \(published.status), validated and stored encrypted")
        detail("the same upload retried: \(retried.status), already stored as batch \(integer(retried.json["sequence"])); nothing stored twice")
        try await register(transportClient, id: "traffic-flow", schema: "\(schemas)/traffic-flow-observed.schema.json",
                           purposes: ["transport-planning", Self.healthPurpose])
        let traffic = TrafficSample.csv(rows: 2000)
        let trafficBatch = try await transportClient.send("POST", "/datasets/traffic-flow/batches", body: Array(traffic.utf8), contentType: "text/csv")
        detail("POST /datasets/traffic-flow/batches  \(integer(trafficBatch.json["records"])) TrafficFlowObserved records: \(trafficBatch.status)")
        return (calls, laterCalls)
    }

    func consent(_ session: DemoSession, calls: CSVTable) async throws -> [String] {
        let brokerKeys = session.keys.broker
        let emergencyClient = session.emergencyClient
        step(4, "Emergency services records its callers' consent; the broker keeps keyed hashes only and signs a receipt for each event.")
        let callerColumn = try calls.index(of: "caller")
        let callers = Set(calls.rows.map { $0[callerColumn] }).sorted()
        let consenting = callers.filter { !DemoCallers.neverConsents($0) }
        let grants = try await recordConsent(emergencyClient, callers: consenting, granted: true)
        detail("POST /consent  \(grants.receipts.count) grants for \(Self.healthPurpose) (\(callers.count - consenting.count) of \(callers.count) callers never consented): 201")
        if let first = grants.receipts.first, let receipt = first["receipt"] {
            let entry = try ConsentReceipts.verify(receipt: first, batch: grants.batch, broker: brokerKeys.publicKeys)
            detail("receipt \(receipt["record_id"]?.stringValue ?? "?"): ISO/IEC TS 27560 record, subject \(receipt["pii_principal_id"]?.stringValue?.prefix(16) ?? "?")… (a keyed hash), inclusion proof of \(first["inclusion_proof"].map { if case .array(let hashes) = $0 { hashes.count } else { 0 } } ?? 0) hashes into the receipts root that log entry \(entry.index) carries and the broker signed: valid")
        }
        return callers
    }

    func offerAgreements(_ session: DemoSession) async throws {
        let emergency = session.keys.emergency
        let transport = session.keys.transport
        let health = session.keys.health
        let emergencyClient = session.emergencyClient
        let transportClient = session.transportClient
        let healthClient = session.healthClient
        let directory = session.directory
        step(5, "The agencies offer health agreements, signing the canonical policy hash; health checks and countersigns.")
        let now = UTCTime.now
        let validFrom = now.adding(seconds: -3600).rfc3339, validUntil = now.adding(seconds: 365 * 86400).rfc3339
        let callsPolicy: JSONValue = [
            "agreement": "ag-911-health", "dataset": "montgomery-911", "publisher": .string(emergency.keyID.hex), "partner": .string(health.keyID.hex),
            "purposes": [.string(Self.healthPurpose)], "legal_basis": "consent",
            "fields": ["caller", "lat", "lng", "zip", "title", "timeStamp", "twp", "e"],
            "treatment": ["k": 5, "suppression_limit": 0.1, "algorithm": "optimal", "pseudonym_epoch": "2026"],
            "feed": ["window_records": 500, "window_seconds": 3600, "below_k": "suppress"],
            // Synthetic calls: where calls come from on a grid of public cells, and whether they are
            // emergencies; ρ (zCDP) is counted against a budget of 1.
            "synthetic": ["fields": ["lat", "lng", "e"], "tree": [["lat", "lng"], ["lat", "e"]],
                          "bins": ["lat": .array(stride(from: 39.95, through: 40.451, by: 0.05).map { .number(($0 * 100).rounded() / 100) }),
                                   "lng": .array(stride(from: -75.7, through: -74.949, by: 0.05).map { .number(($0 * 100).rounded() / 100) })],
                          "max_rho_per_release": 0.5],
            "rho_budget": 1,
            "valid_from": .string(validFrom), "valid_until": .string(validUntil),
        ]
        let trafficPolicy: JSONValue = [
            "agreement": "ag-traffic-health", "dataset": "traffic-flow", "publisher": .string(transport.keyID.hex), "partner": .string(health.keyID.hex),
            "purposes": [.string(Self.healthPurpose)], "legal_basis": "public-task",
            "fields": ["laneId", "laneDirection", "dateObserved", "intensity", "averageVehicleSpeed"],
            "treatment": ["k": 1],
            "aggregates": ["group_by": ["laneId", "laneDirection"], "group_keys": ["laneId": .array((1...6).map { .string(String($0)) })],
                           "max_epsilon_per_query": 0.5],
            "epsilon_budget": 1, "valid_from": .string(validFrom), "valid_until": .string(validUntil),
        ]
        for (client, policy) in [(emergencyClient, callsPolicy), (transportClient, trafficPolicy)] {
            let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
            let offer = try CanonicalJSON.encode(["policy": policy, "signature": .string(Base64.encode(client.keys.sign(AgreementPolicy.offerMessage(policySHA256: hash))))])
            let offered = try await client.send("POST", "/agreements", body: offer)
            let id = offered.json["id"]?.stringValue ?? "?"
            try Data(try CanonicalJSON.encode(policy) + [0x0A]).write(to: URL(fileURLWithPath: "\(directory)/\(id).policy.json"))
            let shown = try await healthClient.send("GET", "/agreements/\(id)")
            let rehashed = SHA256Hasher.hash(try CanonicalJSON.encode(shown.json["policy"] ?? .null))
            guard Hex.encode(rehashed) == shown.json["policy_sha256"]?.stringValue else { throw CLIError("the policy health fetched does not hash as stated") }
            let accept = try CanonicalJSON.encode(["signature": .string(Base64.encode(health.sign(AgreementPolicy.acceptMessage(policySHA256: rehashed))))])
            _ = try await healthClient.send("POST", "/agreements/\(id)/accept", body: accept)
            let budget = shown.json["rho_budget"]?.stringValue.map { "ρ budget \($0) (zCDP)" } ?? "ε budget \(shown.json["epsilon_budget"]?.stringValue ?? "0")"
            detail("\(id): offered by \(client.keys.publicKeys.name), accepted by health; policy sha256 \(Hex.encode(rehashed).prefix(16))…, \(budget)")
        }
        let odrl = try await healthClient.send("GET", "/agreements/ag-911-health/odrl")
        let odrlPath = "\(directory)/ag-911-health.odrl.jsonld"
        try Data(try CanonicalJSON.encode(odrl.json) + [0x0A]).write(to: URL(fileURLWithPath: odrlPath))
        var duties = 0
        if case .array(let permissions)? = odrl.json["permission"], case .array(let list)? = permissions.first?["duty"] { duties = list.count }
        detail("GET /agreements/ag-911-health/odrl  an ODRL \(odrl.json["@type"]?.stringValue ?? "?") with \(duties) duties (\(odrlPath))")
    }

    func releaseCalls(_ session: DemoSession, callers: [String]) async throws -> (envelope: [UInt8], path: String) {
        let brokerKeys = session.keys.broker
        let health = session.keys.health
        let healthClient = session.healthClient
        let directory = session.directory
        step(6, "Health asks for the 911 calls: consent, projection, pseudonyms, k-anonymity, signed and encrypted for health alone.")
        let release = try await healthClient.send("POST", "/agreements/ag-911-health/releases",
                                                  body: try CanonicalJSON.encode(["purpose": .string(Self.healthPurpose)]))
        let r = release.json
        detail("\(integer(r["records_selected"])) calls selected; \(integer(r["records_without_consent"])) left out (their caller has no active consent);")
        detail("\(integer(r["records_suppressed"])) suppressed (\(integer(r["subjects_suppressed"])) callers) to reach k = 5 people; \(integer(r["records"])) released from \(integer(r["subjects_released"])) callers")
        detail("k achieved: every class holds calls of at least \(integer(r["k_achieved"])) distinct callers (k counts \(r["k_counts"]?.stringValue ?? "?"), not calls)")
        let releaseID = r["id"]?.stringValue ?? ""
        let (envelope, _) = try await healthClient.fetch("/deliveries/\(releaseID)")
        let envelopePath = "\(directory)/\(releaseID).envelope"
        try Data(envelope).write(to: URL(fileURLWithPath: envelopePath))
        let (received, summary) = try DeliveryText.open(envelope, keys: health, broker: brokerKeys.publicKeys)
        let receivedPath = "\(directory)/\(releaseID).received.csv"
        try Data(received.csv()).write(to: URL(fileURLWithPath: receivedPath))
        detail("envelope \(envelope.count) bytes (log entry \(integer(r["log_index"]))); health verified the broker's signature \(summary.manifest.issuer) and decrypted it")
        let evidence = try await healthClient.send("GET", "/log/entries/\(integer(r["log_index"]))/proof")
        try Data(try CanonicalJSON.encode(evidence.json) + [0x0A]).write(to: URL(fileURLWithPath: "\(directory)/\(releaseID).evidence.json"))
        let inclusion = try DeliveryText.checkLogged(evidence.json, delivery: releaseID, summary: summary, broker: brokerKeys.publicKeys)
        detail("GET /log/entries/\(integer(r["log_index"]))/proof  the broker's log records this very envelope: inclusion proof to its signed checkpoint of \(inclusion.size) entries verified")
        detail("received columns: \(received.columns.joined(separator: ","))  (no desc, no addr: the agreement does not allow them)")
        if let firstRow = received.rows.first {
            detail("first record: \(firstRow.joined(separator: ","))")
        }
        let receivedCallers = Set(received.rows.map { $0[(try? received.index(of: "caller")) ?? 0] })
        guard receivedCallers.isDisjoint(with: Set(callers)) else { throw CLIError("a caller number left the broker in clear") }
        detail("no caller number appears in clear: callers are 128-bit pseudonyms in the agreement's own domain")
        return (envelope, envelopePath)
    }

    func aggregates(_ session: DemoSession) async throws {
        let brokerKeys = session.keys.broker
        let health = session.keys.health
        let healthClient = session.healthClient
        step(7, "Health asks for differentially private traffic figures, each charged to the agreement's ε budget of 1, and for synthetic 911 calls.")
        let count = try await healthClient.send("POST", "/agreements/ag-traffic-health/aggregates", body: try CanonicalJSON.encode(
            ["purpose": .string(Self.healthPurpose), "statistic": "count", "group_by": ["laneId", "laneDirection"], "epsilon": 0.5]))
        let mean = try await healthClient.send("POST", "/agreements/ag-traffic-health/aggregates", body: try CanonicalJSON.encode(
            ["purpose": .string(Self.healthPurpose), "statistic": "mean", "measure": "intensity", "group_by": ["laneId"], "epsilon": 0.5]))
        for (label, answer) in [("count by lane and direction", count.json), ("mean intensity by lane", mean.json)] {
            let id = answer["id"]?.stringValue ?? ""
            let (bytes, _) = try await healthClient.fetch("/deliveries/\(id)")
            let (table, _) = try DeliveryText.open(bytes, keys: health, broker: brokerKeys.publicKeys)
            detail("\(label) (ε \(answer["epsilon_charged"]?.stringValue ?? "?")): \(table.rows.prefix(3).map { $0.joined(separator: " ") }.joined(separator: " | ")) …")
        }
        try await expectRefusal(409, "a third aggregate") {
            _ = try await healthClient.send("POST", "/agreements/ag-traffic-health/aggregates", body: try CanonicalJSON.encode(
                ["purpose": .string(Self.healthPurpose), "statistic": "count", "epsilon": 0.1]))
        }
        // Synthetic rows: drawn from noisy marginals of the consented calls, as many as the noisy total.
        let synthetic = try await healthClient.send("POST", "/agreements/ag-911-health/synthetic", body: try CanonicalJSON.encode(
            ["purpose": .string(Self.healthPurpose), "rho": 0.5]))
        let id = synthetic.json["id"]?.stringValue ?? ""
        let (bytes, _) = try await healthClient.fetch("/deliveries/\(id)")
        let (rows, _) = try DeliveryText.open(bytes, keys: health, broker: brokerKeys.publicKeys)
        try Data(rows.csv()).write(to: URL(fileURLWithPath: "\(session.directory)/\(id).synthetic.csv"))
        detail("synthetic 911 calls under ag-911-health (ρ \(synthetic.json["rho_charged"]?.stringValue ?? "?") of its zCDP budget 1): \(rows.rows.count) rows of \(rows.columns.joined(separator: ",")), e.g. \(rows.rows.first?.joined(separator: " ") ?? "none")")
    }

    func feed(_ session: DemoSession, later laterCalls: CSVTable) async throws -> (window: JSONValue, withoutConsent: Int) {
        let brokerKeys = session.keys.broker
        let health = session.keys.health
        let emergencyClient = session.emergencyClient
        let healthClient = session.healthClient
        let directory = session.directory
        let callerColumn = try laterCalls.index(of: "caller")
        step(8, "Health subscribes to new calls; \(Self.withdrawing) callers withdraw consent; the next calls arrive and a window is released.")
        let subscribed = try await healthClient.send("POST", "/agreements/ag-911-health/feeds", body: try CanonicalJSON.encode(["purpose": .string(Self.healthPurpose)]))
        let feedID = subscribed.json["id"]?.stringValue ?? ""
        let laterCallers = Set(laterCalls.rows.map { $0[callerColumn] })
        let withdrawn = Array(laterCallers.filter { !DemoCallers.neverConsents($0) }.sorted().prefix(Self.withdrawing))
        _ = try await recordConsent(emergencyClient, callers: withdrawn, granted: false)
        detail("POST /agreements/ag-911-health/feeds  feed \(feedID) (windows of 500 calls or 1 hour); POST /consent  \(withdrawn.count) withdrawals")
        let later = try await emergencyClient.send("POST", "/datasets/montgomery-911/batches", body: laterCalls.csv(), contentType: "text/csv")
        detail("POST /datasets/montgomery-911/batches  \(integer(later.json["records"])) later calls: \(later.status); the window is full and closes")
        let pulled = try await healthClient.send("GET", "/feeds/\(feedID)/deliveries?wait=10")
        guard case .array(let windows)? = pulled.json["deliveries"], let window = windows.first, let windowID = window["id"]?.stringValue else {
            throw CLIError("no feed window was delivered")
        }
        let (windowEnvelope, _) = try await healthClient.fetch("/deliveries/\(windowID)")
        let (windowTable, _) = try DeliveryText.open(windowEnvelope, keys: health, broker: brokerKeys.publicKeys)
        try Data(windowEnvelope).write(to: URL(fileURLWithPath: "\(directory)/\(windowID).envelope"))
        try Data(windowTable.csv()).write(to: URL(fileURLWithPath: "\(directory)/\(windowID).received.csv"))
        _ = try await healthClient.send("POST", "/feeds/\(feedID)/ack", body: try CanonicalJSON.encode(["through": window["sequence"] ?? 0]))
        let withdrawnSet = Set(withdrawn)
        let withoutConsent = laterCalls.rows.filter { DemoCallers.neverConsents($0[callerColumn]) || withdrawnSet.contains($0[callerColumn]) }.count
        detail("GET /feeds/\(feedID)/deliveries  window \(integer(window["sequence"])): \(windowTable.rows.count) calls, \(windowEnvelope.count) bytes; acknowledged")
        detail("\(withoutConsent) of the \(laterCalls.rows.count) later calls belong to callers without an active consent (\(withdrawn.count) just withdrew)")
        return (window, withoutConsent)
    }

    func revoke(_ session: DemoSession) async throws {
        let transportClient = session.transportClient
        let healthClient = session.healthClient
        step(9, "Transport revokes its agreement; the broker refuses anything more under it.")
        _ = try await transportClient.send("POST", "/agreements/ag-traffic-health/revoke", body: Array("{}".utf8))
        detail("POST /agreements/ag-traffic-health/revoke: 200")
        try await expectRefusal(409, "health's next aggregate") {
            _ = try await healthClient.send("POST", "/agreements/ag-traffic-health/aggregates", body: try CanonicalJSON.encode(
                ["purpose": .string(Self.healthPurpose), "statistic": "count", "epsilon": 0.1]))
        }
    }

    func audit(_ session: DemoSession, window: JSONValue, withoutConsent: Int) async throws -> (export: [UInt8], path: String) {
        let auditorClient = session.auditorClient
        let directory = session.directory
        let keyDirectory = session.keys.directory
        step(10, "The auditor fetches the broker's log and runs `civitas audit` on it, offline, with public keys only.")
        let (export, _) = try await auditorClient.fetch("/log/export")
        let exportPath = "\(directory)/log-export.jsonl"
        try Data(export).write(to: URL(fileURLWithPath: exportPath))
        detail("GET /log/export  \(exportPath): \(export.count) bytes")
        detail("$ civitas audit --broker \(keyDirectory)/broker.pub --checkpoint \(directory)/auditor.checkpoint \(exportPath)")
        let auditCommand = try AuditCommand.parse(["--broker", "\(keyDirectory)/broker.pub", "--checkpoint", "\(directory)/auditor.checkpoint", exportPath])
        try auditCommand.run()
        let windowEntry = try logEntry(export, index: UInt64(integer(window["log_index"])))
        let logged = windowEntry?.members["transforms"]?["records_without_consent"]?.exactUnsignedInteger ?? UInt64.max
        let windowSuppressed = windowEntry?.count("records_suppressed") ?? 0, windowK = windowEntry?.count("k_achieved") ?? 0
        detail("the window's log entry: \(logged) calls left out for consent (expected \(withoutConsent)), \(windowSuppressed) suppressed, k achieved \(windowK) distinct callers")
        guard logged == UInt64(withoutConsent) else { throw CLIError("the feed window did not leave out exactly the calls without consent") }
        return (export, exportPath)
    }

    func tamper(_ session: DemoSession, envelope: [UInt8], export: [UInt8]) throws {
        let brokerKeys = session.keys.broker
        let health = session.keys.health
        step(11, "Tampering: one flipped byte in the envelope, then in the log. Each is refused and named.")
        var tampered = envelope
        tampered[tampered.count / 2] ^= 0x01
        do {
            _ = try EnvelopeVerifier.verify(MemorySource(tampered), issuer: brokerKeys.publicKeys)
            throw CLIError("the tampered envelope passed verification")
        } catch let error as CryptoError {
            detail("envelope, auditor: refused — \(error.message)")
        }
        do {
            _ = try DeliveryText.open(tampered, keys: health, broker: brokerKeys.publicKeys)
            throw CLIError("health opened a tampered envelope")
        } catch let error as CryptoError {
            detail("envelope, health: refused — \(error.message)")
        }
        var exportText = String(decoding: export, as: UTF8.self)
        if let range = exportText.range(of: #""role":"partner""#) { exportText.replaceSubrange(range, with: #""role":"auditor""#) }
        let tamperedReport = Auditor(broker: brokerKeys.publicKeys).audit(MemorySource(Array(exportText.utf8)))
        guard let finding = tamperedReport.findings.first else { throw CLIError("the tampered log passed the audit") }
        detail("log, auditor: refused — \(finding)")
    }

    // MARK: Shared by the steps

    private func register(_ client: BrokerClient, id: String, schema: String, purposes: [String]) async throws {
        let schemaValue = try JSONParser.parse(try Files.read(schema, limit: 4 << 20, what: "schema"))
        let registered = try await client.send("POST", "/datasets", body: try CanonicalJSON.encode(
            ["id": .string(id), "schema": schemaValue, "purposes": .array(purposes.map(JSONValue.string))]))
        detail("POST /datasets  \(id) by \(client.keys.publicKeys.name) (\(schema)): \(registered.status), offered for \(purposes.joined(separator: ", "))")
    }

    private func recordConsent(_ client: BrokerClient, callers: [String], granted: Bool) async throws -> (batch: JSONValue, receipts: [JSONValue]) {
        let events: [JSONValue] = callers.map {
            ["dataset": "montgomery-911", "subject": .string($0), "purpose": .string(Self.healthPurpose), "action": .string(granted ? "grant" : "withdraw"),
             "notice": "https://civitas.example/notices/911-health-research/v1", "collection_method": "web-form", "jurisdiction": "US-PA"]
        }
        let answer = try await client.send("POST", "/consent", body: try CanonicalJSON.encode(["events": .array(events)]))
        guard let batch = answer.json["batch"], case .array(let receipts)? = answer.json["receipts"], receipts.count == callers.count else {
            throw CLIError("the broker did not return one receipt per consent event")
        }
        return (batch, receipts)
    }

    private func expectRefusal(_ status: Int, _ what: String, _ attempt: () async throws -> Void) async throws {
        do {
            try await attempt()
        } catch let refusal as CLIError where refusal.description.contains("(\(status))") {
            detail("\(what): \(refusal.description.prefix(170))")
            return
        }
        throw CLIError("the broker accepted \(what); it should have refused with \(status)")
    }

    private func logEntry(_ export: [UInt8], index: UInt64) throws -> LogEntry? {
        for line in export.split(separator: 0x0A).dropFirst() {
            guard let value = try? JSONParser.parse(Array(line)), value["index"]?.exactUnsignedInteger == index else { continue }
            return try LogEntry.parse(Array(line), position: index)
        }
        return nil
    }

    /// The 911 calls with a caller column: the sample (or generated rows) plus generated caller numbers.
    private func prepareCalls(in directory: String) throws -> CSVTable {
        var table: CSVTable
        if let path = [data, "../shared/data/montgomery-911/911_sample.csv"].compactMap({ $0 }).first(where: { FileManager.default.fileExists(atPath: $0) }) {
            table = try CSVTable.parse(try Files.read(path, limit: BrokerAPI.maximumBodySize, what: "911 calls"))
            detail("911 calls: \(path) (\(table.rows.count) records); caller numbers are generated, the public sample has none")
        } else {
            if let data { throw CLIError("data file \(data) does not exist") }
            table = try CSVTable.parse(Array(SampleCalls.csv(rows: 10_000).utf8))
            detail("(../shared is absent: using 10,000 generated 911-shaped calls)")
        }
        if !table.columns.contains("caller") {
            table.columns.append("caller")
            for index in table.rows.indices { table.rows[index].append(DemoCallers.caller(forCall: index)) }
        }
        return table
    }

    private func integer(_ value: JSONValue?) -> Int {
        value?.numberValue.map { Int($0) } ?? 0
    }

    private func step(_ number: Int, _ text: String) {
        print("")
        print("\(number). \(text)")
    }

    private func detail(_ text: String) {
        print("   \(text)")
    }
}
