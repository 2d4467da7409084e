import ArgumentParser
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasServer
import CivitasStore
import Foundation
import Hummingbird
import Logging

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a complete exchange: keys, agreement, a signed and encrypted release, the log, an offline audit, and refused tampering.",
        discussion: """
            The broker starts on embedded SQLite on a loopback port; its operator registers emergency
            services and health over signed HTTP requests; emergency services registers the 911 dataset
            with its annotated schema and publishes a batch, which the broker validates and stores
            encrypted (a bad batch is refused whole). Emergency services shares the dispatches with the
            health department under an agreement; the broker seals the release from its store for health
            and records every step in its log; an auditor
            verifies the envelope and the whole log offline, without any secret; health opens the
            envelope; tampered copies of the envelope and the log are refused. Uses
            ../shared/data/montgomery-911/911_sample.csv when present, otherwise generated rows of
            the same shape.
            """
    )

    @Option(help: ArgumentHelp("Keep keys, envelopes, the log and its export in this directory.", valueName: "DIR"))
    var keep: String?

    @Option(help: ArgumentHelp("CSV file to send (default: the Montgomery County 911 sample if present).", valueName: "FILE"))
    var data: String?

    @Option(help: ArgumentHelp("The dataset's annotated schema.", valueName: "FILE"))
    var schema = "Schemas/datasets/emergency-call.schema.json"

    func run() async throws {
        let directory = try keep ?? makeTemporaryDirectory()
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: directory) } }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let keyDirectory = "\(directory)/Keys"
        let clock = ContinuousClock()
        var time = DemoClock()

        step(1, "The broker and each participant create their keys (Ed25519 to sign, X25519 to receive).")
        var keys: [String: SecretKeys] = [:]
        for name in ["broker", "emergency-services", "health"] {
            keys[name] = try KeyGeneration.generate(name: name, directory: keyDirectory, force: true,
                                                    passphrase: nil, cost: .interactive).keys
        }
        guard let broker = keys["broker"], let agency = keys["emergency-services"], let partner = keys["health"] else {
            throw CLIError("demo keys were not created")
        }
        for (name, key) in keys.sorted(by: { $0.key < $1.key }) {
            detail("\(name.padding(toLength: 19, withPad: " ", startingAt: 0)) key id \(key.keyID)  (\(keyDirectory)/\(name).secret, mode 0600)")
        }

        step(2, "The broker starts on SQLite; its operator registers the participants over signed HTTP requests.")
        guard FileManager.default.fileExists(atPath: schema) else {
            throw CLIError("dataset schema \(schema) not found: run the demo from the repository root or pass --schema")
        }
        let store = try BrokerStore(path: "\(directory)/broker.sqlite",
                                    storageKey: try StorageKeyFile.loadOrCreate("\(directory)/broker.sqlite.storage-key"))
        try store.registerParticipant(broker.publicKeys, role: .operator_, now: EnvelopeSealer.timestamp(Date()))
        let server = try await DemoServer.start(store: store)
        defer { server.stop() }
        detail("broker listening on \(server.url) (database \(directory)/broker.sqlite, records encrypted at rest)")
        let operatorClient = BrokerClient(baseURL: server.url, keys: broker)
        let agencyClient = BrokerClient(baseURL: server.url, keys: agency)
        let log = try LogDirectory(path: "\(directory)/log", origin: "civitas.example/demo-log", signer: broker)
        for (participant, role) in [(agency, "agency"), (partner, "partner")] {
            try await operatorClient.registerParticipant(participant.publicKeys, role: role)
            try log.append(time: time.next(), type: .participantRegistered,
                           members: LogEvents.participantRegistered(participant.publicKeys, role: role))
            detail("POST /admin/participants  \(participant.publicKeys.name) as \(role): 201, logged")
        }
        do {
            _ = try await BrokerClient(baseURL: server.url, keys: partner).send("POST", "/admin/participants", body: Array("{}".utf8))
            throw CLIError("the broker let a partner act as its operator")
        } catch let refusal as CLIError where refusal.description.contains("(403)") {
            detail("the same request signed by health: \(refusal.description)")
        }

        step(3, "Emergency services registers the dataset with its annotated schema and publishes a batch.")
        let payloadPath = try preparePayload(in: directory)
        let payloadBytes = try fileSize(payloadPath)
        let schemaValue = try JSONParser.parse(try Files.read(schema, limit: 4 << 20, what: "schema"))
        let registered = try await agencyClient.send("POST", "/datasets", body: try CanonicalJSON.encode(["id": "montgomery-911", "schema": schemaValue,
                                                                                                      "purposes": ["public-health-surveillance"]]))
        let schemaHash = Hex.decode(registered.json["schema_sha256"]?.stringValue ?? "") ?? []
        try log.append(time: time.next(), type: .datasetRegistered, members: LogEvents.datasetRegistered(
            dataset: "montgomery-911", publisher: agency.keyID, schemaSHA256: schemaHash))
        detail("POST /datasets  montgomery-911 with \(schema): 201, schema sha256 \(Hex.encode(schemaHash).prefix(16))…, logged")
        let badBatch = Array("lat,lng,desc,zip,title,timeStamp,twp,addr,e\n40.1,-75.3,x,19401,EMS: FALL VICTIM,2016-03-01 09:00:00,NORRISTOWN,MAIN ST,1\n140.1,-75.3,x,19401,EMS: FALL VICTIM,2016-03-01 09:00:00,NORRISTOWN,MAIN ST,1\n".utf8)
        do {
            _ = try await agencyClient.send("POST", "/datasets/montgomery-911/batches", body: badBatch, contentType: "text/csv")
            throw CLIError("the broker stored a batch with an impossible latitude")
        } catch let refusal as CLIError where refusal.description.contains("(422)") {
            detail("a batch whose second row has latitude 140: \(refusal.description.prefix(150))…")
        }
        let upload = try UploadFile(path: payloadPath, limit: BrokerAPI.maximumBodySize)
        let published = try await agencyClient.upload("/datasets/montgomery-911/batches", file: upload, contentType: "text/csv",
                                                      headers: ["Idempotency-Key": Hex.encode(upload.sha256)],
                                                      progress: UploadProgress(total: upload.size, label: "", enabled: false))
        let retried = try await agencyClient.upload("/datasets/montgomery-911/batches", file: upload, contentType: "text/csv",
                                                    headers: ["Idempotency-Key": Hex.encode(upload.sha256)],
                                                    progress: UploadProgress(total: upload.size, label: "", enabled: false))
        let recordCount = published.json["records"]?.numberValue.map { Int($0) } ?? 0
        detail("POST /datasets/montgomery-911/batches  \(payloadPath) (\(payloadBytes) bytes): \(published.status), \(recordCount) records validated and stored encrypted")
        detail("the same upload retried: \(retried.status), already stored as batch \(retried.json["sequence"]?.numberValue.map { Int($0) } ?? 0); nothing stored twice")
        var released = CSVTable(columns: [], rows: [])
        try store.records(of: "montgomery-911") { columns, rows in
            released.columns = columns
            released.rows += rows
        }
        let releasePath = "\(directory)/911-calls.release.csv"
        try Data(released.csv()).write(to: URL(fileURLWithPath: releasePath))
        let header = released.columns.joined(separator: ",")

        step(4, "Emergency services offer health an agreement; health accepts. Both steps are logged.")
        let policy: JSONValue = ["dataset": "montgomery-911", "purposes": ["public-health-surveillance"],
                                 "fields": .array(header.split(separator: ",").map { .string(String($0)) }),
                                 "legal_basis": "public-task", "epsilon_budget": 1.0]
        let policyHash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
        try log.append(time: time.next(), type: .agreementOffered, members: LogEvents.agreementOffered(
            agreement: "ag-911-health", dataset: "montgomery-911", publisher: agency.keyID, partner: partner.keyID,
            purposes: ["public-health-surveillance"], policySHA256: policyHash, legalBasis: "public-task",
            validFrom: "2026-01-01T00:00:00Z", validUntil: "2027-12-31T23:59:59Z", epsilonBudgetMicro: 1_000_000))
        try log.append(time: time.next(), type: .agreementAccepted,
                       members: LogEvents.agreementAccepted(agreement: "ag-911-health", partner: partner.keyID))
        detail("agreement ag-911-health: policy sha256 \(Hex.encode(policyHash).prefix(16))…, ε budget 1.0")
        detail("(this release carries the stored rows as published and charges no ε; the treatment an agreement")
        detail(" names is previewed with `civitas anonymize` and `civitas aggregate`)")

        step(5, "The broker seals the release for health: signed manifest, payload encrypted to health's key.")
        let envelopePath = "\(directory)/911-calls.envelope"
        let sealer = EnvelopeSealer(issuer: broker, recipient: partner.publicKeys, contentType: "text/csv",
                                    metadata: ["agreement": "ag-911-health", "dataset": "montgomery-911",
                                               "log_index": .number(Double(log.log.size))])
        var sealed: EnvelopeSummary?
        let sealTime = try clock.measure {
            sealed = try EnvelopeFiles.seal(input: releasePath, output: envelopePath, sealer: sealer)
        }
        guard let sealed else { throw CLIError("sealing produced no envelope") }
        let envelopeBytes = try fileSize(envelopePath)
        try log.append(time: time.next(), type: .releaseDelivered, members: LogEvents.releaseDelivered(
            release: "rel-1", agreement: "ag-911-health", dataset: "montgomery-911", partner: partner.keyID,
            purpose: "public-health-surveillance", policySHA256: policyHash, envelope: sealed,
            recordsReleased: UInt64(released.rows.count), recordsSuppressed: 0, kAchieved: 0,
            epsilonMicro: 0, transforms: [:]))
        let checkpoint = try log.checkpoint()
        let releaseBytes = try fileSize(releasePath)
        detail("\(envelopePath): \(envelopeBytes) bytes (\(envelopeBytes - releaseBytes) of manifest, signature, key and tags), sealed in \(milliseconds(sealTime)) ms")
        detail("log: \(log.log.size) entries; checkpoint signed by the broker:")
        for line in checkpoint.split(separator: "\n") { detail("  \(line)") }

        step(6, "The broker exports its log; an auditor checks it and the envelope with public keys only.")
        let exportPath = "\(directory)/log-export.jsonl"
        let exportFile = try Files.AtomicFile(path: exportPath, mode: 0o644)
        try log.export(to: FileDescriptorSink(descriptor: exportFile.descriptor, name: exportPath))
        try exportFile.commit(replacing: true)
        let audited = try EnvelopeFiles.verify(input: envelopePath, issuer: broker.publicKeys)
        detail("envelope: signature by the broker valid; ciphertext hash matches; addressed to \(audited.manifest.recipient)")
        let report = try audit(exportPath, broker: broker.publicKeys)
        guard report.passed else { throw CLIError("the audit of a sound log failed: \(report.findings[0])") }
        detail("log: \(report.entries) entries, \(report.checkpointsVerified) checkpoint(s) and \(report.releasesVerified) envelope signature(s) verified;")
        detail("     agreement ag-911-health active at release, ε spent \(MicroUnits.decimal(report.agreements["ag-911-health"]?.spentMicro ?? 0)) of 1")

        step(7, "Health opens the envelope: signature, recipient, every chunk and the hash are checked.")
        let openedPath = "\(directory)/911-calls.received.csv"
        let openTime = try clock.measure {
            try EnvelopeFiles.open(input: envelopePath, output: openedPath,
                                   opener: EnvelopeOpener(recipient: partner, issuer: broker.publicKeys))
        }
        let same = FileManager.default.contentsEqual(atPath: releasePath, andPath: openedPath)
        detail("\(openedPath): \(try fileSize(openedPath)) bytes in \(milliseconds(openTime)) ms; identical to what was sent: \(same ? "yes" : "NO")")
        guard same else { throw CLIError("the opened payload differs from what was sealed") }

        step(8, "Tampering: one flipped byte in the envelope, then in a log entry. Each is refused and named.")
        var tampered = try Array(Data(contentsOf: URL(fileURLWithPath: envelopePath)))
        tampered[tampered.count / 2] ^= 0x01
        let tamperedPath = "\(directory)/911-calls.tampered.envelope"
        try Data(tampered).write(to: URL(fileURLWithPath: tamperedPath))
        for (who, attempt) in [("auditor", { _ = try EnvelopeFiles.verify(input: tamperedPath, issuer: broker.publicKeys) }),
                               ("health", { try EnvelopeFiles.open(input: tamperedPath, output: "\(directory)/tampered.csv",
                                                                   opener: EnvelopeOpener(recipient: partner, issuer: broker.publicKeys)) })] {
            do {
                try attempt()
                throw CLIError("the tampered envelope was accepted by \(who)")
            } catch let error as CryptoError {
                detail("envelope, \(who): refused — \(error.message)")
            }
        }
        if FileManager.default.fileExists(atPath: "\(directory)/tampered.csv") {
            throw CLIError("a refused envelope left a payload file behind")
        }
        var exportText = try String(contentsOfFile: exportPath, encoding: .utf8)
        if let range = exportText.range(of: #""role":"partner""#) {
            exportText.replaceSubrange(range, with: #""role":"auditor""#)
        }
        let tamperedExport = "\(directory)/log-export.tampered.jsonl"
        try Data(exportText.utf8).write(to: URL(fileURLWithPath: tamperedExport))
        let tamperedReport = try audit(tamperedExport, broker: broker.publicKeys)
        guard let finding = tamperedReport.findings.first else { throw CLIError("the tampered log passed the audit") }
        detail("log, auditor: refused — \(finding)")

        print("")
        if keep != nil {
            print("Done. Keys, envelopes, the log and its export are in \(directory). Try:")
            print("  civitas audit --broker \(keyDirectory)/broker.pub \(exportPath)")
            print("  civitas open --key \(keyDirectory)/health.secret --issuer \(keyDirectory)/broker.pub \(envelopePath) -")
        } else {
            print("Done. (Run with --keep DIR to inspect the keys, envelopes and log.)")
        }
    }

    private func audit(_ path: String, broker: PublicKeys) throws -> AuditReport {
        let descriptor = try EnvelopeFiles.openInput(path)
        defer { close(descriptor) }
        return Auditor(broker: broker).audit(FileDescriptorSource(descriptor: descriptor, name: path))
    }

    private func preparePayload(in directory: String) throws -> String {
        let candidates = [data, "../shared/data/montgomery-911/911_sample.csv"].compactMap { $0 }
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate) {
            return candidate
        }
        if let data { throw CLIError("data file \(data) does not exist") }
        let path = "\(directory)/911-calls.generated.csv"
        try Data(SampleCalls.csv(rows: 10_000).utf8).write(to: URL(fileURLWithPath: path))
        detail("(../shared is absent: using 10,000 generated 911-shaped rows)")
        return path
    }

    private func makeTemporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "civitas-demo-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    private func fileSize(_ path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.size] as? NSNumber)?.intValue ?? 0
    }

    private func milliseconds(_ duration: Duration) -> String {
        let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return String(format: "%.1f", ms)
    }

    private func step(_ number: Int, _ text: String) {
        print("")
        print("\(number). \(text)")
    }

    private func detail(_ text: String) {
        print("   \(text)")
    }
}

/// The broker's HTTP API on a free loopback port for the length of the demo.
struct DemoServer {
    let url: String
    private let task: Task<Void, Error>

    static func start(store: BrokerStore) async throws -> DemoServer {
        let (ports, announce) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "civitas-demo")
        logger.logLevel = .critical  // stopping the demo's server cancels its connections; that is not an error
        let application = Application(
            router: BrokerAPI(store: store).router(),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "civitas"),
            onServerRunning: { channel in
                announce.yield(channel.localAddress?.port ?? 0)
                announce.finish()
            },
            logger: logger)
        let task = Task { try await application.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            task.cancel()
            throw CLIError("the demo broker did not start")
        }
        return DemoServer(url: "http://127.0.0.1:\(port)", task: task)
    }

    func stop() { task.cancel() }
}

/// Log times for the demo: the current time, then one second later per entry,
/// so entries are ordered even when they happen within the same second.
struct DemoClock {
    private var upcoming = Date()
    mutating func next() -> String {
        defer { upcoming = upcoming.addingTimeInterval(1) }
        return EnvelopeSealer.timestamp(upcoming)
    }
}

/// Generated 911-shaped rows (same columns as the Montgomery County sample) for
/// machines without the shared reference data. Deterministic, not real people.
enum SampleCalls {
    static func csv(rows: Int) -> String {
        let types = ["EMS: FALL VICTIM", "EMS: RESPIRATORY EMERGENCY", "Fire: VEHICLE ACCIDENT", "Traffic: DISABLED VEHICLE -",
                     "EMS: CARDIAC EMERGENCY", "EMS: OVERDOSE", "Fire: FIRE ALARM"]
        let townships = ["NORRISTOWN", "LOWER MERION", "ABINGTON", "CHELTENHAM", "POTTSTOWN", "UPPER MERION"]
        let streets = ["MAIN ST", "HIGH ST", "DEKALB PIKE", "RIDGE PIKE", "BUTLER PIKE", "EGYPT RD"]
        var state: UInt64 = 0x9E3779B97F4A7C15
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        var lines = ["lat,lng,desc,zip,title,timeStamp,twp,addr,e"]
        for _ in 0..<rows {
            let lat = 40.0 + Double(next(400_000)) / 1_000_000
            let lng = -75.5 + Double(next(400_000)) / 1_000_000
            let township = townships[next(townships.count)]
            let street = "\(next(9000) + 1) \(streets[next(streets.count)])"
            let zip = 19000 + next(600)
            let stamp = String(format: "2016-%02d-%02d %02d:%02d:%02d", next(12) + 1, next(28) + 1, next(24), next(60), next(60))
            let title = types[next(types.count)]
            lines.append(String(format: "%.7f,%.7f,%@;  %@; Station %d;,%d,%@,%@,%@,%@,1",
                                lat, lng, street, township, next(400), zip, title, stamp, township, street))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
