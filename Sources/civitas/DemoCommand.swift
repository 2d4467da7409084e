import ArgumentParser
import CivitasCrypto
import CivitasLog
import Foundation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a complete exchange: keys, agreement, a signed and encrypted release, the log, an offline audit, and refused tampering.",
        discussion: """
            Emergency services share 911 dispatches with the health department under an agreement;
            the broker seals the release for health and records every step in its log; an auditor
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

    func run() throws {
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

        step(2, "The broker registers them in its tamper-evident log (ids and public keys only).")
        let log = try LogDirectory(path: "\(directory)/log", origin: "civitas.example/demo-log", signer: broker)
        try log.append(time: time.next(), type: .participantRegistered, members: LogEvents.participantRegistered(agency.publicKeys, role: "agency"))
        try log.append(time: time.next(), type: .participantRegistered, members: LogEvents.participantRegistered(partner.publicKeys, role: "partner"))
        let payloadPath = try preparePayload(in: directory)
        let payloadBytes = try fileSize(payloadPath)
        let header = try firstLine(of: payloadPath)
        try log.append(time: time.next(), type: .datasetRegistered, members: LogEvents.datasetRegistered(
            dataset: "montgomery-911", publisher: agency.keyID, schemaSHA256: SHA256Hasher.hash(Array(header.utf8))))
        detail("dataset montgomery-911: \(payloadPath), \(payloadBytes) bytes, columns \(header)")

        step(3, "Emergency services offer health an agreement; health accepts. Both steps are logged.")
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
        detail("(the privacy treatment itself — pseudonyms, k-anonymity, noise — comes with the privacy engine;")
        detail(" this release carries the rows as published and charges no ε)")

        step(4, "The broker seals the release for health: signed manifest, payload encrypted to health's key.")
        let envelopePath = "\(directory)/911-calls.envelope"
        let sealer = EnvelopeSealer(issuer: broker, recipient: partner.publicKeys, contentType: "text/csv",
                                    metadata: ["agreement": "ag-911-health", "dataset": "montgomery-911",
                                               "log_index": .number(Double(log.log.size))])
        var sealed: EnvelopeSummary?
        let sealTime = try clock.measure {
            sealed = try EnvelopeFiles.seal(input: payloadPath, output: envelopePath, sealer: sealer)
        }
        guard let sealed else { throw CLIError("sealing produced no envelope") }
        let envelopeBytes = try fileSize(envelopePath)
        try log.append(time: time.next(), type: .releaseDelivered, members: LogEvents.releaseDelivered(
            release: "rel-1", agreement: "ag-911-health", dataset: "montgomery-911", partner: partner.keyID,
            purpose: "public-health-surveillance", policySHA256: policyHash, envelope: sealed,
            recordsReleased: UInt64(try lineCount(of: payloadPath) - 1), recordsSuppressed: 0, kAchieved: 0,
            epsilonMicro: 0, transforms: [:]))
        let checkpoint = try log.checkpoint()
        detail("\(envelopePath): \(envelopeBytes) bytes (\(envelopeBytes - payloadBytes) of manifest, signature, key and tags), sealed in \(milliseconds(sealTime)) ms")
        detail("log: \(log.log.size) entries; checkpoint signed by the broker:")
        for line in checkpoint.split(separator: "\n") { detail("  \(line)") }

        step(5, "The broker exports its log; an auditor checks it and the envelope with public keys only.")
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

        step(6, "Health opens the envelope: signature, recipient, every chunk and the hash are checked.")
        let openedPath = "\(directory)/911-calls.received.csv"
        let openTime = try clock.measure {
            try EnvelopeFiles.open(input: envelopePath, output: openedPath,
                                   opener: EnvelopeOpener(recipient: partner, issuer: broker.publicKeys))
        }
        let same = FileManager.default.contentsEqual(atPath: payloadPath, andPath: openedPath)
        detail("\(openedPath): \(try fileSize(openedPath)) bytes in \(milliseconds(openTime)) ms; identical to what was sent: \(same ? "yes" : "NO")")
        guard same else { throw CLIError("the opened payload differs from what was sealed") }

        step(7, "Tampering: one flipped byte in the envelope, then in a log entry. Each is refused and named.")
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

    private func firstLine(of path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CLIError("cannot read \(path)") }
        defer { try? handle.close() }
        let start = try handle.read(upToCount: 64 * 1024) ?? Data()
        return String(decoding: start.prefix { $0 != 0x0A && $0 != 0x0D }, as: UTF8.self)
    }

    private func lineCount(of path: String) throws -> Int {
        try Data(contentsOf: URL(fileURLWithPath: path)).reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
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
