import ArgumentParser

@main
struct Civitas: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "civitas",
        abstract: "Civitas: a privacy-preserving data-sharing broker for cities.",
        discussion: """
            The broker (serve, its witnesses, config check), the commands its participants run against it (participants, \
            datasets, publish, consent, agreements, request, pull, log fetch, relay), and the tools that work on files \
            without a broker (keys, seal, open, verify, audit, anonymize, aggregate). `civitas demo` runs a whole \
            exchange on loopback; `civitas demo-data` writes the files the README's walkthrough starts from.

            Every command exits 0 on success and 1 with a one-line reason on standard error on failure; the commands \
            that report something take --json (docs/cli.md). '-' stands for standard input or standard output where a \
            file is expected.
            """,
        subcommands: [KeysCommand.self, SealCommand.self, OpenCommand.self, VerifyCommand.self, AuditCommand.self, LogCommand.self,
                      AnonymizeCommand.self, AggregateCommand.self, SynthesizeCommand.self, ServeCommand.self, ParticipantsCommand.self, DatasetsCommand.self,
                      PublishCommand.self, AgreementsCommand.self, ConsentCommand.self, RequestCommand.self, PullCommand.self,
                      RelayCommand.self, WitnessCommand.self, ConfigCommand.self, DemoCommand.self, DemoDataCommand.self, ProfileCommand.self, WebCommand.self]
    )
}

/// A failure reported to the user as one line on standard error, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Options that say where the passphrase of a protected secret key file comes from.
struct PassphraseOptions: ParsableArguments {
    @Option(name: .customLong("passphrase-env"), help: ArgumentHelp("Read the passphrase from this environment variable.", valueName: "VAR"))
    var environmentVariable: String?

    @Option(name: .customLong("passphrase-file"), help: ArgumentHelp("Read the passphrase from the first line of this file.", valueName: "FILE"))
    var file: String?

    func validate() throws {
        if environmentVariable != nil && file != nil {
            throw ValidationError("give either --passphrase-env or --passphrase-file, not both")
        }
    }

    /// The passphrase bytes, or nil when no source was given.
    func passphrase() throws -> [UInt8]? {
        if let name = environmentVariable {
            guard let value = Environment.value(of: name), !value.isEmpty else {
                throw CLIError("environment variable \(name) is not set or empty")
            }
            return Array(value.utf8)
        }
        if let file {
            var bytes = try Files.read(file, limit: 1026, what: "passphrase file")
            if bytes.last == 0x0A { bytes.removeLast() }
            if bytes.last == 0x0D { bytes.removeLast() }
            guard !bytes.isEmpty else { throw CLIError("passphrase file \(file) is empty") }
            return bytes
        }
        return nil
    }
}
