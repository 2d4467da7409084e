import ArgumentParser
import CivitasCrypto
import Foundation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a complete exchange: keys, seal, audit without decrypting, open, and a refused tamper.",
        discussion: """
            Emergency services seal a file of 911 dispatches for the health department; an auditor
            verifies the envelope without any secret; the health department opens it; a tampered
            copy is refused. Uses ../shared/data/montgomery-911/911_sample.csv when present,
            otherwise a generated file of the same shape.
            """
    )

    @Option(help: ArgumentHelp("Keep keys, envelopes and outputs in this directory.", valueName: "DIR"))
    var keep: String?

    @Option(help: ArgumentHelp("CSV file to send (default: the Montgomery County 911 sample if present).", valueName: "FILE"))
    var data: String?

    func run() throws {
        let directory = try keep ?? makeTemporaryDirectory()
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: directory) } }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let keyDirectory = "\(directory)/Keys"
        let clock = ContinuousClock()

        step(1, "Each participant creates its keys (Ed25519 to sign, X25519 to receive).")
        let agency = try KeyGeneration.generate(name: "emergency-services", directory: keyDirectory, force: true,
                                                passphrase: nil, cost: .interactive)
        let partner = try KeyGeneration.generate(name: "health", directory: keyDirectory, force: true,
                                                 passphrase: nil, cost: .interactive)
        detail("emergency-services  key id \(agency.keys.keyID)  secret file mode 0600")
        detail("health              key id \(partner.keys.keyID)  secret file mode 0600")

        step(2, "Emergency services prepare the data to share.")
        let payloadPath = try preparePayload(in: directory)
        let payloadBytes = try fileSize(payloadPath)
        detail("\(payloadPath): \(payloadBytes) bytes")

        step(3, "Emergency services seal it for health: signed manifest, payload encrypted to health's key.")
        let envelopePath = "\(directory)/911-calls.envelope"
        let sealer = EnvelopeSealer(issuer: agency.keys, recipient: partner.keys.publicKeys, contentType: "text/csv",
                                    metadata: ["dataset": "montgomery-911", "purpose": "public-health-surveillance"])
        var manifest: EnvelopeManifest?
        let sealTime = try clock.measure {
            manifest = try EnvelopeFiles.seal(input: payloadPath, output: envelopePath, sealer: sealer).manifest
        }
        let envelopeBytes = try fileSize(envelopePath)
        detail("\(envelopePath): \(envelopeBytes) bytes (\(envelopeBytes - payloadBytes) bytes of manifest, signature, key and tags) in \(milliseconds(sealTime)) ms")
        if let manifest {
            detail("ciphertext sha256 \(Hex.encode(manifest.ciphertextSHA256))")
        }

        step(4, "An auditor verifies the envelope with public keys only, without decrypting.")
        let audited = try EnvelopeFiles.verify(input: envelopePath, issuer: agency.keys.publicKeys)
        detail("signature by \(audited.manifest.issuer) valid; ciphertext hash matches; addressed to \(audited.manifest.recipient)")

        step(5, "Health opens the envelope: signature, recipient, every chunk and the hash are checked.")
        let openedPath = "\(directory)/911-calls.received.csv"
        let openTime = try clock.measure {
            try EnvelopeFiles.open(input: envelopePath, output: openedPath,
                                   opener: EnvelopeOpener(recipient: partner.keys, issuer: agency.keys.publicKeys))
        }
        let same = FileManager.default.contentsEqual(atPath: payloadPath, andPath: openedPath)
        detail("\(openedPath): \(try fileSize(openedPath)) bytes in \(milliseconds(openTime)) ms; identical to what was sent: \(same ? "yes" : "NO")")
        guard same else { throw CLIError("the opened payload differs from what was sealed") }

        step(6, "Someone flips one byte of the ciphertext in transit: both checks refuse it.")
        var tampered = try Array(Data(contentsOf: URL(fileURLWithPath: envelopePath)))
        tampered[tampered.count / 2] ^= 0x01
        let tamperedPath = "\(directory)/911-calls.tampered.envelope"
        try Data(tampered).write(to: URL(fileURLWithPath: tamperedPath))
        for (who, attempt) in [("auditor", { _ = try EnvelopeFiles.verify(input: tamperedPath, issuer: agency.keys.publicKeys) }),
                               ("health", { try EnvelopeFiles.open(input: tamperedPath, output: "\(directory)/tampered.csv",
                                                                   opener: EnvelopeOpener(recipient: partner.keys, issuer: agency.keys.publicKeys)) })] {
            do {
                try attempt()
                throw CLIError("the tampered envelope was accepted by the \(who)")
            } catch let error as CryptoError {
                detail("\(who): refused — \(error.message)")
            }
        }
        if FileManager.default.fileExists(atPath: "\(directory)/tampered.csv") {
            throw CLIError("a refused envelope left a payload file behind")
        }

        print("")
        if keep != nil {
            print("Done. Keys, envelopes and outputs are in \(directory).")
        } else {
            print("Done. (Run with --keep DIR to inspect the keys and envelopes.)")
        }
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
