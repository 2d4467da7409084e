import ArgumentParser
import CivitasCrypto
import CivitasLog
import Foundation

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Verify a log export offline: entries, tree, checkpoints, envelopes and compliance.",
        discussion: """
            Recomputes the Merkle tree from the entries, verifies every checkpoint's signature and root,
            checks the history against your last saved checkpoint (a rollback or fork is refused with
            both checkpoints and the proof as evidence), verifies each release's envelope signature,
            and replays compliance: every release under an agreement that was active at that moment,
            and no agreement's privacy budget exceeded. Exits non-zero naming the first bad entry.
            """
    )

    @Option(help: ArgumentHelp("The broker's public key file (it signs checkpoints and envelopes).", valueName: "BROKER.pub"))
    var broker: String

    @Option(help: ArgumentHelp("Your last verified checkpoint: compared with this export, then replaced by its latest checkpoint if the audit passes.", valueName: "FILE"))
    var checkpoint: String?

    @Option(help: ArgumentHelp("Write the full report as JSON to this file ('-' for standard output).", valueName: "FILE"))
    var json: String?

    @OptionGroup var witnesses: WitnessQuorum

    @Argument(help: "The log export ('civitas log export'), or '-' for standard input.")
    var export: String

    func run() throws {
        let brokerKeys = try Files.publicKeys(broker)
        var saved: String?
        if let checkpoint, Files.exists(checkpoint) {
            saved = String(decoding: try Files.read(checkpoint, limit: 16 * 1024, what: "checkpoint file"), as: UTF8.self)
        }
        let descriptor = try EnvelopeFiles.openInput(export)
        defer { if descriptor > 2 { close(descriptor) } }
        let report = Auditor(broker: brokerKeys).audit(
            FileDescriptorSource(descriptor: descriptor, name: export == "-" ? "standard input" : export), savedCheckpoint: saved)

        if let json {
            let text = String(decoding: try CanonicalJSON.encode(AuditReportJSON.value(of: report)), as: UTF8.self) + "\n"
            if json == "-" { print(text, terminator: "") } else { try Data(text.utf8).write(to: URL(fileURLWithPath: json)) }
        }
        if json != "-" { printSummary(report, brokerKeys: brokerKeys) }
        guard report.passed else {
            let first = report.findings[0]
            throw CLIError("audit failed: \(first)" + (report.findings.count > 1 ? " (and \(report.findings.count - 1) more finding(s))" : ""))
        }
        if !witnesses.keys.isEmpty {
            guard let note = report.latestCheckpointNote else { throw CLIError("audit failed: the export has no checkpoint for the witnesses to have cosigned") }
            let names = try witnesses.require(on: note)
            if json != "-" { print("  witnessed by         \(names.joined(separator: ", "))") }
        }
        if let checkpoint, let note = report.latestCheckpointNote {
            try Data(note.utf8).write(to: URL(fileURLWithPath: checkpoint))
        }
    }

    private func printSummary(_ report: AuditReport, brokerKeys: PublicKeys) {
        print("broker \(brokerKeys.name) (\(brokerKeys.keyID))" + (report.latestCheckpoint.map { ", log \($0.origin)" } ?? ""))
        if report.brokerKeys.count > 1 {
            print("  broker keys          \(report.brokerKeys.map(\.hex).joined(separator: " -> ")) (each introduced in the log by the one before)")
        }
        print("  entries              \(report.entries)")
        print("  checkpoints verified \(report.checkpointsVerified)" + (report.latestCheckpoint.map { " (latest: size \($0.size), root \(Hex.encode($0.rootHash)))" } ?? ""))
        print("  envelopes verified   \(report.releasesVerified)")
        for agreement in report.agreements.values.sorted(by: { $0.agreement < $1.agreement }) {
            print("  agreement \(agreement.agreement): \(agreement.releases) release(s), \(agreement.countsRho ? "ρ" : "ε") spent \(MicroUnits.decimal(agreement.spentMicro)) of \(MicroUnits.decimal(agreement.budgetMicro))")
        }
        if report.passed {
            print("audit OK")
            return
        }
        print("audit FAILED: \(report.findings.count) finding(s)")
        for finding in report.findings {
            print("  \(finding.code.rawValue): \(finding)")
            for (name, value) in finding.evidence.sorted(by: { $0.key < $1.key }) {
                print("    \(name): \(value.replacingOccurrences(of: "\n", with: "\n      "))")
            }
        }
    }
}

/// The JSON form of an audit report (`civitas audit --json`).
enum AuditReportJSON {
    static func value(of report: AuditReport) -> JSONValue {
        var object: [String: JSONValue] = [
            "passed": .bool(report.passed),
            "entries": .number(Double(report.entries)),
            "checkpoints_verified": .number(Double(report.checkpointsVerified)),
            "broker_keys": .array(report.brokerKeys.map { .string($0.hex) }),
            "envelopes_verified": .number(Double(report.releasesVerified)),
            "agreements": .array(report.agreements.values.sorted { $0.agreement < $1.agreement }.map { audit in
                // Spent and budget in the agreement's unit, also under that unit's own names.
                let unit = audit.countsRho ? "rho" : "epsilon"
                let spent = JSONValue.string(MicroUnits.decimal(audit.spentMicro)), budget = JSONValue.string(MicroUnits.decimal(audit.budgetMicro))
                return .object(["agreement": .string(audit.agreement), "partner": .string(audit.partner.hex), "releases": .number(Double(audit.releases)),
                                "budget_unit": .string(unit), "spent": spent, "budget": budget, "\(unit)_spent": spent, "\(unit)_budget": budget])
            }),
            "findings": .array(report.findings.map { finding in
                var item: [String: JSONValue] = ["code": .string(finding.code.rawValue), "message": .string(finding.message),
                                                 "evidence": .object(finding.evidence.mapValues(JSONValue.string))]
                if let entry = finding.entry { item["entry"] = .number(Double(entry)) }
                return .object(item)
            }),
        ]
        if let latest = report.latestCheckpoint {
            object["latest_checkpoint"] = .object(["origin": .string(latest.origin), "size": .number(Double(latest.size)),
                                                   "root": .string(Hex.encode(latest.rootHash))])
        }
        return .object(object)
    }
}

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Work with an exchange log.",
        subcommands: [Export.self, Fetch.self]
    )

    struct Fetch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "fetch",
            abstract: "Fetch the broker's log export (any registered participant), checkpointed to its current size, for `civitas audit`."
        )
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Argument(help: "Output file, or '-' for standard output.") var output: String

        func run() async throws {
            guard !(report.json && output == "-") else { throw CLIError("--json reports on standard output: give the export a file") }
            let client = try BrokerClient(options)
            // Streamed as it arrives: a log of any length is never held whole.
            if output == "-" {
                _ = try await client.download("/log/export", to: FileDescriptorSink(descriptor: 1, name: "standard output"))
                return
            }
            let file = try Files.AtomicFile(path: output, mode: 0o644)
            let sink = CountingSink(FileDescriptorSink(descriptor: file.descriptor, name: output))
            _ = try await client.download("/log/export", to: sink)
            try file.commit(replacing: true)
            try report.emit(["out": .string(output), "bytes": .number(Double(sink.count))],
                            text: "fetched the log export (\(sink.count) bytes) to \(output)")
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "export",
            abstract: "Write the export an auditor takes away: entries and signed checkpoints, as JSON Lines."
        )

        @Option(help: ArgumentHelp("The log directory.", valueName: "DIR"))
        var log: String

        @Option(help: ArgumentHelp("The broker's secret key file (to name the log key in the export header).", valueName: "BROKER.secret"))
        var key: String

        @OptionGroup var passphrase: PassphraseOptions
        @OptionGroup var report: ReportFormat

        @Argument(help: "Output file, or '-' for standard output.")
        var output: String

        func run() throws {
            guard !(report.json && output == "-") else { throw CLIError("--json reports on standard output: give the export a file") }
            let signer = try Files.secretKeys(key, passphrase: passphrase)
            guard let origin = try? String(contentsOfFile: log + "/origin", encoding: .utf8).trimmingCharacters(in: .newlines) else {
                throw CLIError("\(log) is not a log directory (no origin file)")
            }
            let directory = try LogDirectory(path: log, origin: origin, signer: signer)
            if output == "-" {
                try directory.export(to: FileDescriptorSink(descriptor: 1, name: "standard output"))
                return
            }
            let file = try Files.AtomicFile(path: output, mode: 0o644)
            try directory.export(to: FileDescriptorSink(descriptor: file.descriptor, name: output))
            try file.commit(replacing: true)
            try report.emit(["out": .string(output), "entries": .number(Double(directory.log.size)), "checkpoints": .number(Double(directory.checkpoints.count))],
                            text: "exported \(directory.log.size) entries and \(directory.checkpoints.count) checkpoint(s) to \(output)")
        }
    }
}
