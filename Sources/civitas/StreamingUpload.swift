import CivitasCrypto
import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// A file to be sent as a request body without holding it in memory: its size and SHA-256,
/// computed in one bounded pass so the request can be signed before the upload starts.
struct UploadFile: Sendable {
    let path: String
    /// Bytes sent before the file's own (a CSV part's header line).
    let header: [UInt8]
    /// Where the file's bytes start.
    let offset: Int
    /// The body's length: the header and the file's bytes sent after it.
    let size: Int
    let sha256: [UInt8]

    /// `header`, then `size - header.count` bytes of the file from `offset`.
    init(path: String, header: [UInt8] = [], offset: Int = 0, size: Int, sha256: [UInt8]) {
        self.path = path
        self.header = header
        self.offset = offset
        self.size = size
        self.sha256 = sha256
    }

    /// The size of the regular file at `path`.
    static func size(of path: String) throws -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { throw CLIError("cannot read batch file \(path): \(Files.errorText())") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw CLIError("batch file \(path) is not a regular file (publish needs its size up front)") }
        return Int(info.st_size)
    }

    /// Reads the file once in 1 MiB chunks; refuses anything that is not a regular file or is larger than `limit`.
    init(path: String, limit: Int) throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw CLIError("cannot read batch file \(path): \(Files.errorText())") }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw CLIError("batch file \(path) is not a regular file (publish needs its size up front)")
        }
        guard Int(info.st_size) <= limit else {
            throw CLIError("batch file \(path) is \(info.st_size) bytes; the broker accepts at most \(limit) bytes per batch: split it")
        }
        let hasher = try SHA256Hasher()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var total = 0
        while true {
            let count = try chunk.withUnsafeMutableBytes { try FileDescriptorSource(descriptor: descriptor, name: path).read(into: $0) }
            if count == 0 { break }
            total += count
            guard total <= limit else { throw CLIError("batch file \(path) grew past \(limit) bytes while it was being read") }
            chunk.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            if count < chunk.count { break }
        }
        guard total == Int(info.st_size) else { throw CLIError("batch file \(path) changed while it was being read") }
        self.path = path
        header = []
        offset = 0
        size = total
        sha256 = hasher.finish()
    }
}

/// Draws an upload's progress on standard error when it is a terminal: a bar, bytes sent and the rate.
final class UploadProgress: @unchecked Sendable {
    private let total: Int
    private let label: String
    private let started = Date()
    private let lock = NSLock()
    private var lastDrawn = Date.distantPast
    let enabled: Bool

    init(total: Int, label: String, enabled: Bool) {
        self.total = total
        self.label = label
        self.enabled = enabled && isatty(2) == 1
    }

    func update(sent: Int64) {
        guard enabled else { return }
        lock.withLock {
            let now = Date()
            guard Int(sent) >= total || now.timeIntervalSince(lastDrawn) >= 0.1 else { return }
            lastDrawn = now
            Output.progress(Self.render(label: label, sent: Int(sent), total: total, seconds: now.timeIntervalSince(started)))
        }
    }

    func finish() {
        guard enabled else { return }
        Output.progress(Self.render(label: label, sent: total, total: total, seconds: Date().timeIntervalSince(started)) + "\n")
    }

    /// One line: `label [#####.....]  42%  12.0/28.5 MiB  9.1 MiB/s`.
    static func render(label: String, sent: Int, total: Int, seconds: Double) -> String {
        let width = 30
        let fraction = total == 0 ? 1 : min(1, Double(sent) / Double(total))
        let filled = Int(fraction * Double(width))
        let mebibyte = 1_048_576.0
        let rate = seconds > 0 ? Double(sent) / mebibyte / seconds : 0
        return "\r\(label) [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
            + String(format: "%3d%%  %.1f/%.1f MiB  %.1f MiB/s", Int(fraction * 100), Double(sent) / mebibyte, Double(total) / mebibyte, rate)
    }
}

/// A file's bytes as the body of a request, 1 MiB at a time, reporting progress as they go.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let file: UploadFile
    let progress: UploadProgress
    /// Called once the last chunk has been handed to the connection.
    var handedOver: @Sendable () -> Void = {}

    func makeAsyncIterator() -> Iterator { Iterator(file: file, progress: progress, handedOver: handedOver) }

    final class Iterator: AsyncIteratorProtocol {
        private let file: UploadFile
        private let progress: UploadProgress
        private let handedOver: @Sendable () -> Void
        private var descriptor: Int32 = -1
        private var finished = false
        private var sent = 0
        private var chunk = [UInt8](repeating: 0, count: 1 << 20)

        init(file: UploadFile, progress: UploadProgress, handedOver: @escaping @Sendable () -> Void) {
            self.file = file
            self.progress = progress
            self.handedOver = handedOver
        }

        deinit { if descriptor >= 0 { close(descriptor) } }

        func next() async throws -> ByteBuffer? {
            if finished { return nil }
            if sent < file.header.count {
                sent = file.header.count
                progress.update(sent: Int64(sent))
                return ByteBuffer(bytes: file.header)
            }
            if descriptor < 0 {
                descriptor = open(file.path, O_RDONLY | O_CLOEXEC)
                guard descriptor >= 0 else { throw CLIError("cannot read batch file \(file.path): \(Files.errorText())") }
            }
            let wanted = Swift.min(chunk.count, file.size - sent)
            var count = 0
            while count < wanted {
                let position = off_t(file.offset + sent - file.header.count + count)
                let read = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress.map { $0 + count }, wanted - count, position) }
                if read < 0 && errno == EINTR { continue }
                guard read > 0 else {
                    throw CLIError(read == 0 ? "batch file \(file.path) shrank while it was being sent" : "cannot read batch file \(file.path): \(Files.errorText())")
                }
                count += read
            }
            guard count > 0 else {
                finished = true
                handedOver()
                return nil
            }
            sent += count
            progress.update(sent: Int64(sent))
            return ByteBuffer(bytes: chunk[0..<count])
        }
    }
}
