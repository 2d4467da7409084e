import CivitasCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Reading the process environment.
enum Environment {
    static func value(of name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

/// File helpers for the CLI: bounded reads, atomic writes with explicit modes.
enum Files {
    /// The six trailing characters mkstemp(3) replaces with a unique suffix.
    static let randomSuffixTemplate = String(repeating: "X", count: 6)

    static func errorText() -> String { String(cString: strerror(errno)) }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Reads a whole small file, refusing anything longer than `limit` bytes.
    static func read(_ path: String, limit: Int, what: String) throws -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw CLIError("cannot read \(what) \(path): \(errorText())") }
        defer { close(descriptor) }
        var info = stat()
        let size = fstat(descriptor, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int(info.st_size) : 64 * 1024
        guard size <= limit else { throw CLIError("\(what) \(path) is larger than \(limit) bytes") }
        var bytes = [UInt8](repeating: 0, count: min(limit, size) + 1)
        let count = try bytes.withUnsafeMutableBytes {
            try FileDescriptorSource(descriptor: descriptor, name: path).read(into: $0)
        }
        guard count <= limit else { throw CLIError("\(what) \(path) is larger than \(limit) bytes") }
        guard count < bytes.count else { throw CLIError("\(what) \(path) grew while it was being read") }
        bytes.removeLast(bytes.count - count)
        return bytes
    }

    /// Reads a public key file.
    static func publicKeys(_ path: String) throws -> PublicKeys {
        try KeyFile.parsePublic(read(path, limit: KeyFile.maximumSize + 1, what: "public key file"), source: path)
    }

    /// Reads (and if protected, decrypts) a secret key file.
    static func secretKeys(_ path: String, passphrase: PassphraseOptions) throws -> SecretKeys {
        var bytes = try read(path, limit: KeyFile.maximumSize + 1, what: "secret key file")
        defer { Sodium.wipe(&bytes) }
        let secret = try KeyFile.isProtected(bytes, source: path) ? passphrase.passphrase() : nil
        let keys = try KeyFile.parseSecret(bytes, source: path, passphrase: secret)
        warnIfExposed(path)
        return keys
    }

    /// Warns on standard error if a secret key file is readable by group or others.
    static func warnIfExposed(_ path: String) {
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o077 != 0 {
            Output.warn("warning: \(path) is readable by other users (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 600 \(path)")
        }
    }

    /// A file being written under a temporary name beside its final path and
    /// renamed into place only by ``commit()``; removed if never committed.
    final class AtomicFile {
        let path: String
        let temporaryPath: String
        let descriptor: Int32
        private var committed = false

        init(path: String, mode: mode_t) throws {
            self.path = path
            var template = Array("\(path).tmp-\(Files.randomSuffixTemplate)".utf8CString)
            let descriptor = mkstemp(&template)
            guard descriptor >= 0 else { throw CLIError("cannot create \(path): \(Files.errorText())") }
            self.descriptor = descriptor
            self.temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard fchmod(descriptor, mode) == 0 else {
                close(descriptor)
                unlink(temporaryPath)
                throw CLIError("cannot set the mode of \(path): \(Files.errorText())")
            }
        }

        /// Flushes the file to disk and renames it to its final path.
        func commit(replacing: Bool) throws {
            if replacing {
                guard fsync(descriptor) == 0 else { throw CLIError("cannot flush \(path): \(Files.errorText())") }
                guard rename(temporaryPath, path) == 0 else { throw CLIError("cannot write \(path): \(Files.errorText())") }
                committed = true
            } else if try !commitIfAbsent() {
                throw CLIError("\(path) already exists (use --force to replace it)")
            }
        }

        /// Flushes the file to disk and puts it at its final path unless a file is there already
        /// (then returns false and leaves that file alone), in one step another process cannot
        /// come between: two processes creating the same file make one, never one after the other.
        func commitIfAbsent() throws -> Bool {
            guard fsync(descriptor) == 0 else { throw CLIError("cannot flush \(path): \(Files.errorText())") }
            guard link(temporaryPath, path) == 0 else {
                if errno == EEXIST { return false }
                throw CLIError("cannot write \(path): \(Files.errorText())")
            }
            unlink(temporaryPath)
            committed = true
            return true
        }

        deinit {
            close(descriptor)
            if !committed { unlink(temporaryPath) }
        }
    }

    /// An anonymous temporary file (already unlinked) for spooling unseekable streams.
    static func anonymousTemporaryFile() throws -> Int32 {
        let directory = Environment.value(of: "TMPDIR") ?? "/tmp"
        var template = Array("\(directory)/civitas-spool-\(randomSuffixTemplate)".utf8CString)
        let descriptor = mkstemp(&template)
        guard descriptor >= 0 else { throw CLIError("cannot create a temporary file in \(directory): \(errorText())") }
        unlink(template)
        return descriptor
    }

    /// Copies everything from one descriptor to another in 1 MiB steps.
    static func copy(from source: Int32, to target: Int32, name: String) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        let reader = FileDescriptorSource(descriptor: source, name: name)
        let writer = FileDescriptorSink(descriptor: target, name: "standard output")
        while true {
            let count = try reader.read(into: buffer)
            if count == 0 { break }
            try writer.write(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            if count < buffer.count { break }
        }
    }

    /// Size of a regular file open at `descriptor`, or nil for pipes and terminals.
    static func regularFileSize(_ descriptor: Int32) -> UInt64? {
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return UInt64(info.st_size) - UInt64(max(0, lseek(descriptor, 0, SEEK_CUR)))
    }
}

/// Output helpers: results to standard output, diagnostics to standard error.
enum Output {
    /// Writes a line to standard output at once (not buffered), for lines other processes wait for.
    static func line(_ line: String) {
        var text = Array((line + "\n").utf8)
        _ = write(1, &text, text.count)
    }

    /// Writes text to standard error without a newline (a progress line being redrawn).
    static func progress(_ text: String) {
        var bytes = Array(text.utf8)
        _ = write(2, &bytes, bytes.count)
    }

    static func warn(_ line: String) {
        var text = Array((line + "\n").utf8)
        _ = write(2, &text, text.count)
    }
}
