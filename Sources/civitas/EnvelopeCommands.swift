import ArgumentParser
import CivitasCrypto
import Foundation

struct SealCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seal",
        abstract: "Sign and encrypt a file for one recipient.",
        discussion: "Writes an envelope: a signed manifest, then the payload encrypted to the recipient. See docs/envelope-format.md."
    )

    @Option(help: ArgumentHelp("The issuer's secret key file.", valueName: "ISSUER.secret"))
    var from: String

    @Option(help: ArgumentHelp("The recipient's public key file.", valueName: "RECIPIENT.pub"))
    var to: String

    @Option(help: "Media type of the payload.")
    var contentType: String = "application/octet-stream"

    @Option(help: ArgumentHelp("A JSON object recorded in the manifest's metadata.", valueName: "JSON"))
    var metadata: String?

    @Option(help: "Plaintext bytes per chunk, 1024 to 4194304 (default: 64 KiB, or 1 MiB for payloads of 16 MiB and more).")
    var chunkSize: Int?

    @OptionGroup var passphrase: PassphraseOptions
    @OptionGroup var report: ReportFormat

    @Argument(help: "Payload file, or '-' for standard input.")
    var input: String

    @Argument(help: "Envelope file, or '-' for standard output.")
    var output: String

    func run() throws {
        guard !(report.json && output == "-") else { throw CLIError("--json reports on standard output: give the envelope a file") }
        var members: [String: JSONValue] = [:]
        if let metadata {
            guard let object = try JSONParser.parse(metadata).objectValue else {
                throw CLIError("--metadata must be a JSON object")
            }
            members = object
        }
        let issuer = try Files.secretKeys(from, passphrase: passphrase)
        let recipient = try Files.publicKeys(to)
        let sealer = EnvelopeSealer(issuer: issuer, recipient: recipient,
                                    contentType: contentType, metadata: members, chunkSize: chunkSize)
        let manifest = try EnvelopeFiles.seal(input: input, output: output, sealer: sealer).manifest
        if output != "-" {
            try report.emit(["out": .string(output), "payload_bytes": .number(Double(manifest.payloadLength)), "recipient": .string(recipient.name),
                             "recipient_key_id": .string(recipient.keyID.hex), "ciphertext_sha256": .string(Hex.encode(manifest.ciphertextSHA256))],
                            text: "sealed \(manifest.payloadLength) bytes for \(recipient.name) (\(recipient.keyID)) into \(output)\nciphertext sha256 \(Hex.encode(manifest.ciphertextSHA256))")
        }
    }
}

struct OpenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "open",
        abstract: "Verify and decrypt an envelope addressed to you.",
        discussion: """
            Checks the issuer's signature, the recipient, the key commitment, every chunk and the
            ciphertext hash. A file OUT (mode 0600) is written only if everything verifies; with
            '-' verified chunks stream to standard output and a failure exits non-zero.
            """
    )

    @Option(help: ArgumentHelp("Your secret key file.", valueName: "RECIPIENT.secret"))
    var key: String

    @Option(help: ArgumentHelp("The issuer's public key file.", valueName: "ISSUER.pub"))
    var issuer: String

    @OptionGroup var passphrase: PassphraseOptions
    @OptionGroup var report: ReportFormat

    @Argument(help: "Envelope file, or '-' for standard input.")
    var input: String

    @Argument(help: "Payload file, or '-' for standard output.")
    var output: String

    func run() throws {
        guard !(report.json && output == "-") else { throw CLIError("--json reports on standard output: give the payload a file") }
        let recipient = try Files.secretKeys(key, passphrase: passphrase)
        let issuerKeys = try Files.publicKeys(issuer)
        let verified = try EnvelopeFiles.open(input: input, output: output,
                                              opener: EnvelopeOpener(recipient: recipient, issuer: issuerKeys))
        if output != "-" {
            try report.emit(["out": .string(output), "payload_bytes": .number(Double(verified.manifest.payloadLength)),
                             "content_type": .string(verified.manifest.contentType), "issuer": .string(issuerKeys.name),
                             "issuer_key_id": .string(issuerKeys.keyID.hex), "ciphertext_sha256": .string(Hex.encode(verified.manifest.ciphertextSHA256))],
                            text: "opened \(verified.manifest.payloadLength) bytes (\(verified.manifest.contentType)) from \(issuerKeys.name) into \(output)")
        }
    }
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check an envelope's signature and ciphertext hash without decrypting it.",
        discussion: "What an auditor runs: no secret key is needed."
    )

    @Option(help: ArgumentHelp("The issuer's public key file.", valueName: "ISSUER.pub"))
    var issuer: String

    @Flag(help: "Print the verified manifest as canonical JSON instead of a summary.")
    var json = false

    @Argument(help: "Envelope file, or '-' for standard input.")
    var envelope: String

    func run() throws {
        let issuerKeys = try Files.publicKeys(issuer)
        let verified = try EnvelopeFiles.verify(input: envelope, issuer: issuerKeys)
        let manifest = verified.manifest
        if json {
            print(String(decoding: try manifest.canonicalBytes(), as: UTF8.self))
            return
        }
        let chunks = EnvelopeFormat.chunkCount(payloadLength: manifest.payloadLength, chunkSize: manifest.chunkSize)
        print("envelope OK: signed by \(issuerKeys.name) (\(manifest.issuer)); ciphertext matches its SHA-256")
        print("  recipient   \(manifest.recipient)")
        print("  content     \(manifest.contentType), \(manifest.payloadLength) bytes in \(chunks) chunk(s)")
        print("  created     \(manifest.created)")
        print("  ciphertext  sha256 \(Hex.encode(manifest.ciphertextSHA256))")
        if !manifest.metadata.isEmpty {
            print("  metadata    \(String(decoding: try CanonicalJSON.encode(.object(manifest.metadata)), as: UTF8.self))")
        }
    }
}
