import CivitasCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Cuts a CSV or JSON Lines file too large for one batch into consecutive parts at record
/// boundaries (a CSV line break inside quotes is not one), each at most `maximumBytes` and
/// `maximumRecords`; every CSV part starts with the file's header. Parts are written to
/// owner-only temporary files on a thread of their own, the next one while the one before is
/// sent, so the file is never held in memory and at most two parts are on disk.
struct BatchSplitter: Sendable {
    let csv: Bool
    let maximumBytes: Int
    let maximumRecords: Int

    /// Calls `part` with each part (its file, records in it, and number from 1) in order, one
    /// after another; the part's file is removed once `part` returns.
    func split(_ path: String, part: (UploadFile, _ records: Int, _ number: Int) async throws -> Void) async throws {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw CLIError("cannot read batch file \(path): \(Files.errorText())") }
        let parts = PartQueue()
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: CutPart.self)
        let cutter = Thread { [self] in
            defer { close(input) }
            do {
                try cut(input, path: path, parts: parts) { continuation.yield($0) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        cutter.start()
        // However this ends, the cutter stops at its next part and no part file is left behind.
        defer { parts.stop() }
        for try await cut in stream {
            defer { parts.sent(cut.upload.path) }
            try await part(cut.upload, cut.records, cut.number)
        }
    }

    /// A part cut and written, ready to send.
    struct CutPart: Sendable {
        let upload: UploadFile
        let records: Int
        let number: Int
    }

    /// The parts on disk: at most two at once (the one being sent, the next being cut), each
    /// removed once sent, or all of them once the sending stops.
    final class PartQueue: @unchecked Sendable {
        private let slots = DispatchSemaphore(value: 2)
        private let lock = NSLock()
        private var paths: Set<String> = []
        private var stopped = false

        /// Waits for room for one more part on disk; false once the sending stopped.
        func reserve() -> Bool {
            slots.wait()
            return lock.withLock { !stopped }
        }

        func created(_ path: String) {
            let unwanted = lock.withLock { () -> Bool in
                if stopped { return true }
                paths.insert(path)
                return false
            }
            if unwanted { unlink(path) }
        }

        func sent(_ path: String) {
            unlink(path)
            lock.withLock { _ = paths.remove(path) }
            slots.signal()
        }

        func stop() {
            let left = lock.withLock { () -> Set<String> in
                stopped = true
                defer { paths.removeAll() }
                return paths
            }
            for path in left { unlink(path) }
            slots.signal()
            slots.signal()
        }
    }

    /// The cutting loop, on the cutter's thread: hands each finished part to `ready`.
    private func cut(_ input: Int32, path: String, parts: PartQueue, ready: (CutPart) -> Void) throws {
        let source = FileDescriptorSource(descriptor: input, name: path)
        var header: [UInt8]? = csv ? nil : []
        var record: [UInt8] = [], inQuotes = false
        var current: PartFile?, number = 0

        func finishPart() throws {
            guard let open = current else { return }
            current = nil
            number += 1
            ready(CutPart(upload: try open.finish(), records: open.records, number: number))
        }
        func add(_ complete: [UInt8]) throws {
            guard let header else {
                header = complete  // the CSV header line
                return
            }
            guard header.count + complete.count <= maximumBytes else {
                throw CLIError("\(path): record \((current?.records ?? 0) + 1) of part \(number + 1) is longer than a batch may be (\(maximumBytes) bytes)")
            }
            if let open = current, open.bytes + complete.count > maximumBytes || open.records == maximumRecords { try finishPart() }
            if current == nil {
                guard parts.reserve() else { throw CancellationError() }
                let part = try PartFile(header: header)
                parts.created(part.path)
                current = part
            }
            try current?.append(record: complete)
        }

        var block = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = try block.withUnsafeMutableBytes { try source.read(into: $0) }
            if count == 0 { break }
            var start = 0
            for index in 0..<count {
                let byte = block[index]
                if csv && byte == 0x22 { inQuotes.toggle() }
                if byte == 0x0A && !inQuotes {
                    record += block[start...index]
                    start = index + 1
                    let complete = record
                    record.removeAll(keepingCapacity: true)
                    if complete.contains(where: { $0 != 0x0A && $0 != 0x0D && $0 != 0x20 }) { try add(complete) }
                }
            }
            record += block[start..<count]
            guard record.count <= maximumBytes else { throw CLIError("\(path): a record is longer than a batch may be (\(maximumBytes) bytes)") }
        }
        if record.contains(where: { $0 != 0x0A && $0 != 0x0D && $0 != 0x20 }) { try add(record + [0x0A]) }
        try finishPart()
    }

    /// One part being written: an owner-only temporary file (removed once sent), hashed as it is
    /// written, through a buffer of a megabyte (a write per record cost a system call each).
    private final class PartFile {
        let path: String
        let descriptor: Int32
        let hasher: SHA256Hasher
        private(set) var bytes = 0
        private(set) var records = 0
        private var buffer: [UInt8] = []
        private static let bufferSize = 1 << 20

        init(header: [UInt8]) throws {
            let directory = Environment.value(of: "TMPDIR") ?? "/tmp"
            var template = Array("\(directory)/civitas-part-\(Files.randomSuffixTemplate)".utf8CString)
            descriptor = mkstemp(&template)
            guard descriptor >= 0 else { throw CLIError("cannot create a temporary batch part in \(directory): \(Files.errorText())") }
            path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            _ = fchmod(descriptor, 0o600)
            hasher = try SHA256Hasher()
            try write(header)
        }

        deinit { close(descriptor) }

        func append(record: [UInt8]) throws {
            try write(record)
            records += 1
        }

        private func write(_ data: [UInt8]) throws {
            if buffer.count + data.count > Self.bufferSize { try flush() }
            buffer += data
            bytes += data.count
        }

        private func flush() throws {
            guard !buffer.isEmpty else { return }
            try buffer.withUnsafeBytes { bytes in
                try FileDescriptorSink(descriptor: descriptor, name: path).write(bytes)
                hasher.update(bytes)
            }
            buffer.removeAll(keepingCapacity: true)
        }

        func finish() throws -> UploadFile {
            try flush()
            guard fsync(descriptor) == 0 else { throw CLIError("cannot write \(path): \(Files.errorText())") }
            return UploadFile(path: path, size: bytes, sha256: hasher.finish())
        }
    }
}
