import ArgumentParser
import CivitasCrypto
import Foundation

/// `civitas config check`: the settings `civitas serve --config FILE` would run with, where each
/// comes from, and every problem found in them, before the broker is started.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check a broker config file.",
        subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Print the settings `civitas serve --config FILE` runs with (CIVITAS_* environment variables applied) and refuse them if any is wrong.",
            discussion: """
                Each setting is printed with where it comes from: the environment, the file or the default. A
                password in the PostgreSQL URL is shown as ***. Problems are listed all at once: settings out of
                range or in the wrong form, files that do not exist or do not read (TLS certificate and key, the
                operator's key, the catalog description, the broker's key and storage key when they exist).
                """)

        @Argument(help: "The JSON config file.") var file: String
        @OptionGroup var report: ReportFormat

        func run() async throws {
            let settings = try await ServeSettings.load(file: file)
            let rows = settings.effective
            if !report.json { print(Table.text(headers: ["SETTING", "FROM", "VALUE"], rows: rows.map { [$0.name, $0.source, $0.value] })) }
            var notes: [String] = []
            var problems: [String] = []
            do { try settings.check() } catch let error as CLIError { problems.append(error.description) }
            if settings.tlsCert != nil, settings.tlsKey != nil {
                do { _ = try ServeCommand.tlsCertificates(settings) } catch { problems.append("tls: \(error)") }
            }
            if let path = settings.operator, Files.exists(path) {
                do { _ = try Files.publicKeys(path) } catch { problems.append("operator: \(error)") }
            }
            if settings.catalog.map(Files.exists) == true {
                do { _ = try ServeCommand.catalogSettings(settings, url: settings.publicURL ?? "http://127.0.0.1") } catch { problems.append("catalog: \(error)") }
            }
            if Files.exists(settings.brokerKey) {
                do {
                    let text = try Files.read(settings.brokerKey, limit: 4096, what: "broker key")
                    if !String(decoding: text, as: UTF8.self).hasPrefix("civitas-secret-key/1 ") { problems.append("broker_key: \(settings.brokerKey) is not a civitas secret key file") }
                } catch { problems.append("broker_key: \(error)") }
            } else {
                notes.append("\(settings.brokerKey) does not exist; the broker creates it at first start")
            }
            guard problems.isEmpty else { throw CLIError(problems.joined(separator: "; ")) }
            try report.emit(["valid": .bool(true), "notes": .array(notes.map(JSONValue.string)),
                             "settings": .array(rows.map { ["name": .string($0.name), "source": .string($0.source), "value": .string($0.value)] })],
                            text: (notes.map { "note: \($0)\n" }.joined()) + "the settings are valid")
        }
    }
}
