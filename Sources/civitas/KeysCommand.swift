import ArgumentParser
import CivitasCrypto
#if canImport(Glibc)
import Glibc
#endif

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create and inspect participant keys.",
        subcommands: [Generate.self, Show.self, PseudonymKey.self, TLSKey.self]
    )

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "generate",
            abstract: "Create NAME.secret (mode 0600) and NAME.pub in the key directory.",
            discussion: """
                NAME.secret holds an Ed25519 signing key and an X25519 encryption key; NAME.pub
                holds both public keys and the key id. With --passphrase-env or --passphrase-file
                the secret file is protected with Argon2id and XChaCha20-Poly1305.
                See Keys/README.md for the file layout.
                """
        )

        @Option(help: "Participant name: 1-64 letters, digits, '.', '_' or '-'.")
        var name: String

        @Option(help: "Key directory.")
        var dir: String = "Keys"

        @Flag(help: "Replace existing key files of this name.")
        var force = false

        @OptionGroup var passphrase: PassphraseOptions

        @Option(help: "Argon2id cost for a protected file: moderate (256 MiB, default) or interactive (64 MiB).")
        var passphraseCost: CostLevel = .moderate

        @OptionGroup var report: ReportFormat

        enum CostLevel: String, ExpressibleByArgument {
            case moderate, interactive
            var cost: PassphraseCost { self == .moderate ? .moderate : .interactive }
        }

        func run() throws {
            let generated = try KeyGeneration.generate(name: name, directory: dir, force: force,
                                                       passphrase: passphrase.passphrase(), cost: passphraseCost.cost)
            try report.emit(["name": .string(name), "key_id": .string(generated.keys.keyID.hex), "secret": .string(generated.secretPath),
                             "public": .string(generated.publicPath), "protected": .bool(generated.isProtected)],
                            text: "created \(generated.secretPath) (secret, mode 0600\(generated.isProtected ? ", passphrase-protected" : ""))\n"
                                + "created \(generated.publicPath) (public)\nkey id \(generated.keys.keyID)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Print the name and key id of a public key file.")

        @Argument(help: "A .pub file.")
        var file: String

        @Flag(help: "Print only the key id (for scripts and policies).") var id = false
        @OptionGroup var report: ReportFormat

        func run() throws {
            let keys = try Files.publicKeys(file)
            if id && !report.json {
                print(keys.keyID.hex)
                return
            }
            try report.emit(["name": .string(keys.name), "key_id": .string(keys.keyID.hex), "ed25519": .string(Base64.encode(keys.signingKey)),
                             "x25519": .string(Base64.encode(keys.encryptionKey))],
                            text: "name    \(keys.name)\nkey id  \(keys.keyID)\ned25519 \(Base64.encode(keys.signingKey))\nx25519  \(Base64.encode(keys.encryptionKey))")
        }
    }
}

extension KeysCommand {
    struct TLSKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tls-key",
            abstract: "Write your signing key as a PEM private key (mode 0600) for a TLS client certificate.",
            discussion: """
                A broker that requires client certificates (serve --client-ca) takes a request only over a TLS connection \
                whose certificate is for the very key that signs the request. Write the key with this command, have the city's \
                authority certify it (for example: openssl req -new -key KEY.pem -subj /CN=NAME -out NAME.csr), and give the \
                certificate and this file to every command with --client-cert and --client-key.
                """)
        @Option(help: ArgumentHelp("Your secret key file.", valueName: "KEY.secret")) var key: String
        @OptionGroup var passphrase: PassphraseOptions
        @Option(help: ArgumentHelp("Where to write the PEM key (refused if it exists).", valueName: "FILE")) var out: String
        @OptionGroup var report: ReportFormat

        func run() throws {
            let keys = try Files.secretKeys(key, passphrase: passphrase)
            var pem = keys.signingKeyPEM()
            defer { Sodium.wipe(&pem) }
            let file = try Files.AtomicFile(path: out, mode: 0o600)
            try pem.withUnsafeBytes { try FileDescriptorSink(descriptor: file.descriptor, name: out).write($0) }
            try file.commit(replacing: false)
            try report.emit(["name": .string(keys.publicKeys.name), "key_id": .string(keys.keyID.hex), "out": .string(out)],
                            text: "wrote the signing key of \(keys.publicKeys.name) (\(keys.keyID)) to \(out) (0600)")
        }
    }

    struct PseudonymKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pseudonym-key",
            abstract: "Create a pseudonym master key file (mode 0600); per-domain keys are derived from it."
        )

        @Option(help: "The key file to create.") var out: String
        @Flag(help: "Replace an existing file.") var force = false
        @OptionGroup var report: ReportFormat

        func run() throws {
            if !force && Files.exists(out) { throw CLIError("\(out) already exists (use --force to replace it)") }
            var key = Sodium.randomBytes(32)
            var line = Array("\(PseudonymKeyFile.tag) ".utf8)
            line.reserveCapacity(line.count + 48)
            var encoded = Base64.encodedBytes(key)
            line += encoded
            line.append(0x0A)
            Sodium.wipe(&encoded)
            Sodium.wipe(&key)
            defer { Sodium.wipe(&line) }
            let file = try Files.AtomicFile(path: out, mode: 0o600)
            try line.withUnsafeBytes { try FileDescriptorSink(descriptor: file.descriptor, name: out).write($0) }
            try file.commit(replacing: force)
            try report.emit(["out": .string(out)], text: "created \(out) (pseudonym master key, mode 0600)")
        }
    }
}

/// Writing a new key pair to a key directory.
enum KeyGeneration {
    struct Generated {
        let keys: SecretKeys
        let secretPath: String
        let publicPath: String
        let isProtected: Bool
    }

    static func generate(name: String, directory: String, force: Bool, passphrase: [UInt8]?,
                         cost: PassphraseCost) throws -> Generated {
        try KeyName.validate(name)
        if !Files.exists(directory) {
            guard mkdir(directory, 0o755) == 0 else {
                throw CLIError("cannot create key directory \(directory): \(Files.errorText())")
            }
        }
        let secretPath = "\(directory)/\(name).secret"
        let publicPath = "\(directory)/\(name).pub"
        if !force {
            for path in [secretPath, publicPath] where Files.exists(path) {
                throw CLIError("\(path) already exists (use --force to replace it)")
            }
        }
        let keys = try SecretKeys.generate(name: name)
        var secretContents = try KeyFile.secretFileContents(keys, passphrase: passphrase, cost: cost)
        defer { Sodium.wipe(&secretContents) }
        let secretFile = try Files.AtomicFile(path: secretPath, mode: 0o600)
        try secretContents.withUnsafeBytes { try FileDescriptorSink(descriptor: secretFile.descriptor, name: secretPath).write($0) }
        let publicFile = try Files.AtomicFile(path: publicPath, mode: 0o644)
        try Array(KeyFile.publicText(keys.publicKeys).utf8).withUnsafeBytes {
            try FileDescriptorSink(descriptor: publicFile.descriptor, name: publicPath).write($0)
        }
        try secretFile.commit(replacing: force)
        try publicFile.commit(replacing: force)
        return Generated(keys: keys, secretPath: secretPath, publicPath: publicPath, isProtected: passphrase != nil)
    }
}
