import ArgumentParser
import CivitasCrypto
import CivitasLog
import CivitasServer
import CivitasStore
import Foundation
import Hummingbird
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `civitas witness`: a C2SP tlog-witness that cosigns the checkpoints of the broker logs it
/// follows, and the helper that prints a log's verifier key for its configuration.
struct WitnessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "witness",
        abstract: "Run a transparency-log witness (C2SP tlog-witness) that cosigns broker checkpoints.",
        subcommands: [Serve.self, LogKey.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "Cosign the checkpoints of the logs given with --log, refusing rollbacks and forks.",
            discussion: """
                POST /add-checkpoint takes the protocol's body (old size, consistency proof, checkpoint) and answers
                the witness's cosignature (C2SP tlog-cosignature, Ed25519) when the checkpoint is signed by a key
                given for its log and extends the last checkpoint cosigned for that log: 404 for a log not followed,
                403 when no trusted signature verifies, 409 (with the size last cosigned) when the old size is not
                that size or the same size shows another root, 422 when the consistency proof fails. The last
                cosigned checkpoint of each log is written to --state (0600) before a cosignature is answered; keep
                that file: a witness that loses it could be made to cosign a rollback. Give the broker
                --witness "URL VERIFIER-KEY" with the key this command prints.
                """)

        @Option(help: ArgumentHelp("The witness's name, a schema-less URL such as witness.example.org/w1.", valueName: "NAME"))
        var name: String
        @Option(help: ArgumentHelp("The witness's secret key (created with its .pub if missing).", valueName: "KEY.secret"))
        var key: String
        @OptionGroup var passphrase: PassphraseOptions
        @Option(help: ArgumentHelp("The file keeping the last checkpoint cosigned for each log.", valueName: "FILE"))
        var state: String
        @Option(help: ArgumentHelp("A log to follow, by its verifier key (`civitas witness log-key` prints it); repeatable.", valueName: "VERIFIER-KEY"))
        var log: [String]
        @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
        @Option(help: "Port (0 picks a free one and prints it).") var port: Int = 8070

        func run() async throws {
            umask(0o077)
            guard !log.isEmpty else { throw CLIError("give at least one --log VERIFIER-KEY: the witness cosigns only the logs it follows") }
            let logs = try log.map { text in
                do { return try NoteKey(verifierKey: text) } catch { throw CLIError("--log \(text.prefix(80)): \(error)") }
            }
            let keys = try ServeCommand.brokerKeys(key, passphrase: passphrase)
            let witnessState: WitnessState
            do { witnessState = try WitnessState(path: state) } catch { throw CLIError("\(error)") }
            var logger = Logger(label: "civitas-witness")
            logger.logLevel = .info
            let api: WitnessAPI
            do { api = try WitnessAPI(name: name, signer: keys, logs: logs, state: witnessState, logger: logger) } catch {
                throw CLIError("--name \(name): \(error)")
            }
            let app = Application(
                router: api.router(),
                configuration: .init(address: .hostname(host, port: port), serverName: "civitas-witness"),
                onServerRunning: { channel in
                    Output.line("civitas witness \(api.verifierKey)")
                    Output.line("civitas witness listening on http://\(channel.localAddress?.ipAddress ?? "?"):\(channel.localAddress?.port ?? 0) for \(logs.map(\.name).joined(separator: ", "))")
                },
                logger: logger)
            try await app.runService()
        }
    }

    struct LogKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "log-key",
            abstract: "Print the verifier key of a broker's log (its origin and the broker's signing key), for --log.")

        @Option(help: ArgumentHelp("The broker's public key file.", valueName: "BROKER.pub")) var broker: String
        @Option(help: "The log's origin line (the broker's --log-origin).") var origin: String = BrokerStore.defaultLogOrigin
        @OptionGroup var report: ReportFormat

        func run() throws {
            let keys = try Files.publicKeys(broker)
            let verifierKey = try NoteKey(name: origin, publicKey: keys.signingKey).verifierKey
            try report.emit(["origin": .string(origin), "verifier_key": .string(verifierKey)], text: verifierKey)
        }
    }
}
