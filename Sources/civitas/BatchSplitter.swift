import CivitasCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Cuts a CSV or JSON Lines file too large for one batch into consecutive parts at record
/// boundaries (a CSV line break inside quotes is not one), each at most `maximumBytes` and
/// `maximumRecords`; every CSV part starts with the file's header. A part is a range of the
/// file (lines holding only blanks between parts are left out), found and hashed on a thread of
/// its own while the parts before are sent: nothing is copied and the file is never held in
/// memory.
struct BatchSplitter: Sendable {
    let csv: Bool
    let maximumBytes: Int
    let maximumRecords: Int

    /// What a part's sender is told: when to let the next part start, and how to wait for the one before.
    struct PartTurn: Sendable {
        /// Lets the next part start sending; call it once this part's bytes are handed over.
        let sent: @Sendable () -> Void
        /// Returns once the part before has been handled, stored or not (at once for the first part).
        let previousDone: @Sendable () async -> Void
    }

    /// Calls `part` with each part (its file, records in it, number from 1 and its turn), in
    /// order: the call for a part starts once the part before has called `sent`, so one part may
    /// be uploaded while the broker stores the one before. Once a part fails no further part
    /// starts; the error thrown is that of the earliest part that failed.
    func split(_ path: String, part: @escaping @Sendable (UploadFile, _ records: Int, _ number: Int, PartTurn) async throws -> Void) async throws {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw CLIError("cannot read batch file \(path): \(Files.errorText())") }
        let parts = PartSlots()
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
        cutter.stackSize = 1 << 20
        cutter.start()
        // However this ends, the cutter stops at its next part.
        defer { parts.stop() }
        let failures = PartFailures()
        await withTaskGroup(of: Void.self) { group in
            var before: (sent: OneTimeSignal, done: OneTimeSignal)?
            do {
                for try await cut in stream {
                    if let before { await before.sent.wait() }
                    guard !failures.any else { break }
                    let sent = OneTimeSignal(), done = OneTimeSignal(), previous = before?.done
                    group.addTask {
                        defer {
                            parts.release()
                            sent.open()
                            done.open()
                        }
                        do {
                            try await part(cut.upload, cut.records, cut.number, PartTurn(sent: sent.open, previousDone: { await previous?.wait() }))
                        } catch {
                            failures.add(part: cut.number, error)
                        }
                    }
                    before = (sent, done)
                }
            } catch {
                failures.add(part: Int.max, error)  // the cutter's: no part after the last one cut can be sent
            }
        }
        if let earliest = failures.earliest { throw earliest }
    }

    /// The errors of the parts that failed, by part number.
    final class PartFailures: @unchecked Sendable {
        private let lock = NSLock()
        private var errors: [(part: Int, error: any Error)] = []

        func add(part: Int, _ error: any Error) { lock.withLock { errors.append((part, error)) } }
        var any: Bool { lock.withLock { !errors.isEmpty } }
        /// The earliest part's error, which explains the others (a part cannot follow a failed one).
        var earliest: (any Error)? { lock.withLock { errors.min { $0.part < $1.part }?.error } }
    }

    /// A signal opened once, which any number of tasks can wait for.
    final class OneTimeSignal: @unchecked Sendable {
        private let lock = NSLock()
        private var opened = false
        private var waiting: [CheckedContinuation<Void, Never>] = []

        @Sendable func open() {
            let woken = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
                guard !opened else { return [] }
                opened = true
                defer { waiting.removeAll() }
                return waiting
            }
            for continuation in woken { continuation.resume() }
        }

        func wait() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = lock.withLock { () -> Bool in
                    if opened { return true }
                    waiting.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        }
    }

    /// A part cut and written, ready to send.
    struct CutPart: Sendable {
        let upload: UploadFile
        let records: Int
        let number: Int
    }

    /// How far the cutter may run ahead: three parts at once (the one the broker is storing, the
    /// one being sent, the next being found).
    final class PartSlots: @unchecked Sendable {
        private let slots = DispatchSemaphore(value: 3)
        private let lock = NSLock()
        private var stopped = false

        /// Waits for room for one more part; false once the sending stopped.
        func reserve() -> Bool {
            slots.wait()
            return lock.withLock { !stopped }
        }

        func release() { slots.signal() }

        func stop() {
            lock.withLock { stopped = true }
            slots.signal()
        }
    }

    /// The cutting loop, on the cutter's thread: finds each part's range and hashes it, then hands it to `ready`.
    private func cut(_ input: Int32, path: String, parts: PartSlots, ready: (CutPart) -> Void) throws {
        var header: [UInt8] = []
        var headerSeen = !csv
        // The part being found: where it starts, where its last record ends, how many records it holds.
        var partStart = 0, lastRecordEnd = 0, records = 0, number = 0
        var reserved = false

        func finishPart() throws {
            guard records > 0 else { return }
            number += 1
            let length = lastRecordEnd - partStart
            let upload = UploadFile(path: path, header: header, offset: partStart, size: header.count + length,
                                    sha256: try Self.hash(input, path: path, header: header, offset: partStart, length: length))
            ready(CutPart(upload: upload, records: records, number: number))
            records = 0
            reserved = false
        }
        /// A record from `start` to `end` (its line break included); `blank` when it holds only blanks.
        func record(start: Int, end: Int, blank: Bool) throws {
            guard headerSeen else {
                if blank { return }
                header = try Self.read(input, path: path, offset: start, length: end - start)
                headerSeen = true
                partStart = end
                lastRecordEnd = end
                return
            }
            if blank {
                // Blank lines before a part's first record are left out of it.
                if records == 0 { partStart = end; lastRecordEnd = end }
                return
            }
            guard header.count + (end - start) <= maximumBytes else {
                throw CLIError("\(path): record \(records + 1) of part \(number + 1) is longer than a batch may be (\(maximumBytes) bytes)")
            }
            if records > 0 && (header.count + (end - partStart) > maximumBytes || records == maximumRecords) {
                try finishPart()
                partStart = start
            }
            if !reserved {
                guard parts.reserve() else { throw CancellationError() }
                reserved = true
            }
            records += 1
            lastRecordEnd = end
        }

        var block = [UInt8](repeating: 0, count: 1 << 20)
        var offset = 0, recordStart = 0, inQuotes = false, recordBlank = true
        let source = FileDescriptorSource(descriptor: input, name: path)
        while true {
            let count = try block.withUnsafeMutableBytes { try source.read(into: $0) }
            if count == 0 { break }
            try block.withUnsafeBufferPointer { bytes in
                for index in 0..<count {
                    let byte = bytes[index]
                    if byte == 0x0A {
                        if inQuotes { continue }
                        try record(start: recordStart, end: offset + index + 1, blank: recordBlank)
                        recordStart = offset + index + 1
                        recordBlank = true
                    } else if byte == 0x22 {
                        if csv { inQuotes.toggle() }
                        recordBlank = false
                    } else if recordBlank && byte != 0x0D && byte != 0x20 {
                        recordBlank = false
                    }
                }
            }
            offset += count
            guard offset - recordStart <= maximumBytes else { throw CLIError("\(path): a record is longer than a batch may be (\(maximumBytes) bytes)") }
        }
        // A last record without a line break ends the file.
        if recordStart < offset { try record(start: recordStart, end: offset, blank: recordBlank) }
        try finishPart()
    }

    /// The SHA-256 of a part: the header, then `length` bytes of the file from `offset`.
    private static func hash(_ input: Int32, path: String, header: [UInt8], offset: Int, length: Int) throws -> [UInt8] {
        let hasher = try SHA256Hasher()
        hasher.update(header)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var done = 0
        while done < length {
            let wanted = min(chunk.count, length - done)
            let count = try chunk.withUnsafeMutableBytes { buffer in
                try readFully(input, path: path, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<wanted]), at: offset + done)
            }
            chunk.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            done += count
        }
        return hasher.finish()
    }

    private static func read(_ input: Int32, path: String, offset: Int, length: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        _ = try bytes.withUnsafeMutableBytes { try readFully(input, path: path, into: $0, at: offset) }
        return bytes
    }

    /// Fills `buffer` from the file at `offset`; a file that ends first changed while it was cut.
    private static func readFully(_ input: Int32, path: String, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let count = pread(input, buffer.baseAddress.map { $0 + filled }, buffer.count - filled, off_t(offset + filled))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw CLIError(count == 0 ? "\(path) shrank while it was being cut into parts" : "cannot read batch file \(path): \(Files.errorText())")
            }
            filled += count
        }
        return filled
    }
}
