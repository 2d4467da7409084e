import CivitasCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Cuts a CSV or JSON Lines file too large for one batch into consecutive parts at record
/// boundaries (a CSV line break inside quotes is not one), each at most `maximumBytes` and
/// `maximumRecords`; every CSV part starts with the file's header. Parts are written one at a time
/// to an owner-only temporary file and handed over before the next is cut, so the file is never
/// held in memory and at most one part is on disk.
struct BatchSplitter {
    let csv: Bool
    let maximumBytes: Int
    let maximumRecords: Int

    /// Calls `part` with each part (its file, records in it, and number from 1) in order.
    func split(_ path: String, part: (UploadFile, _ records: Int, _ number: Int) async throws -> Void) async throws {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw CLIError("cannot read batch file \(path): \(Files.errorText())") }
        defer { close(input) }
        let source = FileDescriptorSource(descriptor: input, name: path)
        var header: [UInt8]? = csv ? nil : []
        var record: [UInt8] = [], inQuotes = false
        var current: PartFile?, number = 0

        func finishPart() async throws {
            guard let open = current else { return }
            current = nil
            number += 1
            let upload = try open.finish()
            defer { unlink(upload.path) }
            try await part(upload, open.records, number)
        }
        func add(_ complete: [UInt8]) async throws {
            guard let header else {
                header = complete  // the CSV header line
                return
            }
            guard header.count + complete.count <= maximumBytes else {
                throw CLIError("\(path): record \((current?.records ?? 0) + 1) of part \(number + 1) is longer than a batch may be (\(maximumBytes) bytes)")
            }
            if let open = current, open.bytes + complete.count > maximumBytes || open.records == maximumRecords { try await finishPart() }
            if current == nil { current = try PartFile(header: header) }
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
                    if complete.contains(where: { $0 != 0x0A && $0 != 0x0D && $0 != 0x20 }) { try await add(complete) }
                }
            }
            record += block[start..<count]
            guard record.count <= maximumBytes else { throw CLIError("\(path): a record is longer than a batch may be (\(maximumBytes) bytes)") }
        }
        if record.contains(where: { $0 != 0x0A && $0 != 0x0D && $0 != 0x20 }) { try await add(record + [0x0A]) }
        try await finishPart()
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
