import Foundation
import Testing
@testable import CivitasCrypto

@Suite("File sink")
struct FileSinkTests {
    /// A file created and unlinked in the temporary directory, open for reading and writing.
    private func scratchFile() throws -> Int32 {
        var template = Array("\(NSTemporaryDirectory())/civitas-sink-XXXXXX".utf8CString)
        let descriptor = mkstemp(&template)
        try #require(descriptor >= 0)
        unlink(template)
        return descriptor
    }

    private func contents(of descriptor: Int32) throws -> [UInt8] {
        lseek(descriptor, 0, SEEK_SET)
        var bytes: [UInt8] = []
        let source = FileDescriptorSource(descriptor: descriptor, name: "scratch")
        var block = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = try block.withUnsafeMutableBytes { try source.read(into: $0) }
            if count == 0 { break }
            bytes += block[0..<count]
        }
        return bytes
    }

    @Test("Flushing behind the writes leaves the same bytes as writing alone, over many flush steps")
    func flushingBehindKeepsTheBytes() throws {
        let step = 4096
        let pieces = (0..<60).map { index in [UInt8](repeating: UInt8(index), count: (index % 7 + 1) * 1_001) }
        let total = pieces.reduce(0) { $0 + $1.count }
        #expect(total > 40 * step)
        var results: [[UInt8]] = []
        for behind in [false, true] {
            let descriptor = try scratchFile()
            defer { close(descriptor) }
            let sink = FileDescriptorSink(descriptor: descriptor, name: "scratch", flushingBehind: behind, flushStep: step)
            for piece in pieces { try piece.withUnsafeBytes { try sink.write($0) } }
            try sink.finishFlushing()
            // Flushes run one at a time, so some steps are left to the next one, but never all.
            #expect(behind ? sink.backgroundFlushes > 0 : sink.backgroundFlushes == 0)
            results.append(try contents(of: descriptor))
        }
        #expect(results[0].count == total)
        #expect(results[0] == results[1])
        #expect(results[1] == Array(pieces.joined()))
    }

    @Test("A background flush that fails is reported by the next request and by the finish")
    func failedFlushIsReported() throws {
        // Positive control: a flush of an open file succeeds.
        let descriptor = try scratchFile()
        defer { close(descriptor) }
        let working = BackgroundFlusher(descriptor: descriptor, name: "scratch")
        try working.request()
        try working.finish()
        // No descriptor at all: fdatasync fails, and the failure must not be lost.
        let failing = BackgroundFlusher(descriptor: -1, name: "scratch")
        try failing.request()
        #expect(throws: CryptoError.self) { try failing.finish() }
        #expect(throws: CryptoError.self) { try failing.request() }
    }
}
