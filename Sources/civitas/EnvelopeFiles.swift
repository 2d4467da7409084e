import CivitasCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Sealing, opening and verifying envelopes between files and standard streams.
/// The commands and the demo share these.
enum EnvelopeFiles {
    /// Opens `path` for reading ('-' is standard input). The caller closes non-standard descriptors.
    static func openInput(_ path: String) throws -> Int32 {
        if path == "-" { return 0 }
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw CLIError("cannot read \(path): \(Files.errorText())") }
        return descriptor
    }

    /// Seals the file at `input` into an envelope at `output`.
    @discardableResult
    static func seal(input: String, output: String, sealer: EnvelopeSealer, replacing: Bool = true) throws -> EnvelopeSummary {
        var descriptor = try openInput(input)
        defer { if descriptor > 2 { close(descriptor) } }
        // The payload length goes into the manifest first, so a pipe is spooled to know it.
        let length: UInt64
        if let size = Files.regularFileSize(descriptor) {
            length = size
        } else {
            let spool = try Files.anonymousTemporaryFile()
            try Files.copy(from: descriptor, to: spool, name: input == "-" ? "standard input" : input)
            if descriptor > 2 { close(descriptor) }
            descriptor = spool
            length = UInt64(lseek(spool, 0, SEEK_END))
            lseek(spool, 0, SEEK_SET)
        }
        let source = FileDescriptorSource(descriptor: descriptor, name: input == "-" ? "standard input" : input)
        if output == "-" {
            // The header is written last, so the envelope is assembled in a temporary file first.
            let scratch = try Files.anonymousTemporaryFile()
            defer { close(scratch) }
            let summary = try sealer.seal(from: source, payloadLength: length,
                                          to: FileDescriptorSink(descriptor: scratch, name: "temporary envelope"))
            lseek(scratch, 0, SEEK_SET)
            try Files.copy(from: scratch, to: 1, name: "temporary envelope")
            return summary
        }
        let file = try Files.AtomicFile(path: output, mode: 0o644)
        let summary = try sealer.seal(from: source, payloadLength: length,
                                      to: FileDescriptorSink(descriptor: file.descriptor, name: output))
        try file.commit(replacing: replacing)
        return summary
    }

    /// Opens the envelope at `input` and writes its payload to `output` (mode 0600).
    /// A file output appears only if everything verified; standard output receives
    /// verified chunks as they are decrypted.
    @discardableResult
    static func open(input: String, output: String, opener: EnvelopeOpener) throws -> EnvelopeSummary {
        let descriptor = try openInput(input)
        defer { if descriptor > 2 { close(descriptor) } }
        let source = FileDescriptorSource(descriptor: descriptor, name: input == "-" ? "standard input" : input)
        if output == "-" {
            return try opener.open(source, to: FileDescriptorSink(descriptor: 1, name: "standard output"))
        }
        let file = try Files.AtomicFile(path: output, mode: 0o600)
        let sink = FileDescriptorSink(descriptor: file.descriptor, name: output, flushingBehind: true)
        let verified = try opener.open(source, to: sink)
        try sink.finishFlushing()
        try file.commit(replacing: true)
        return verified
    }

    /// Verifies the envelope at `input` without decrypting it.
    static func verify(input: String, issuer: PublicKeys) throws -> EnvelopeSummary {
        let descriptor = try openInput(input)
        defer { if descriptor > 2 { close(descriptor) } }
        return try EnvelopeVerifier.verify(
            FileDescriptorSource(descriptor: descriptor, name: input == "-" ? "standard input" : input), issuer: issuer)
    }
}
