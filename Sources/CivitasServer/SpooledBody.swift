import CivitasCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A request body streamed to a temporary file as it arrives, so that a large upload is never
/// held in memory. The file is created owner-only and unlinked at once: it disappears when the
/// body is released, whatever happens to the request.
final class SpooledBody: @unchecked Sendable {
    private let descriptor: Int32
    private(set) var count = 0

    init() throws {
        // mkstemp replaces the six trailing X's with a unique name and creates the file.
        var template = Array((NSTemporaryDirectory() + "/civitas-upload-" + String(repeating: "X", count: 6)).utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.map { mkstemp($0) } ?? -1 }
        guard descriptor >= 0 else { throw APIError(.internalServerError, "spool_failed", "the broker cannot spool the upload to a temporary file") }
        _ = template.withUnsafeBufferPointer { buffer in buffer.baseAddress.map { unlink($0) } }
        _ = fchmod(descriptor, 0o600)
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var written = 0
        while written < bytes.count {
            let result = pwrite(descriptor, bytes.baseAddress.map { $0 + written }, bytes.count - written, off_t(count + written))
            guard result > 0 else { throw APIError(.internalServerError, "spool_failed", "the broker cannot spool the upload to a temporary file") }
            written += result
        }
        count += written
    }

    /// The body from its first byte.
    func source() -> ByteSource { Reader(descriptor: descriptor, count: count) }

    private final class Reader: ByteSource {
        let descriptor: Int32
        let count: Int
        var offset = 0

        init(descriptor: Int32, count: Int) {
            self.descriptor = descriptor
            self.count = count
        }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let wanted = min(buffer.count, count - offset)
            guard wanted > 0 else { return 0 }
            let result = pread(descriptor, buffer.baseAddress, wanted, off_t(offset))
            guard result > 0 else { throw CryptoError(.io, "the spooled upload cannot be read") }
            offset += result
            return result
        }
    }
}
