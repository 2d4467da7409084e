internal import CSodium

/// Fixed-size secret bytes in memory that libsodium allocates with guard
/// pages, keeps out of swap where it can, and wipes when the value is freed.
/// Copies are never made implicitly: the class is shared by reference.
final class ProtectedBytes: @unchecked Sendable {
    private let pointer: UnsafeMutableRawPointer
    /// Number of secret bytes held.
    let count: Int

    /// Allocates `count` zeroed secret bytes.
    init(count: Int) throws {
        try Sodium.ensureInitialised()
        guard count > 0, let memory = sodium_malloc(count) else {
            throw CryptoError(.libraryUnavailable, "could not allocate protected memory for a secret")
        }
        sodium_memzero(memory, count)
        self.pointer = memory
        self.count = count
    }

    /// Allocates secret bytes and fills them with CSPRNG output.
    static func random(count: Int) throws -> ProtectedBytes {
        let secret = try ProtectedBytes(count: count)
        randombytes_buf(secret.pointer, count)
        return secret
    }

    /// Copies `bytes` into new secret memory and wipes the source array.
    static func taking(_ bytes: inout [UInt8]) throws -> ProtectedBytes {
        let secret = try ProtectedBytes(count: bytes.count)
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress {
                secret.pointer.copyMemory(from: base, byteCount: source.count)
            }
        }
        Sodium.wipe(&bytes)
        return secret
    }

    deinit {
        sodium_free(pointer)
    }

    /// Runs `body` with read access to the secret bytes. Do not let the pointer escape.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Runs `body` with write access to the secret bytes. Do not let the pointer escape.
    func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(start: pointer, count: count))
    }

    /// The bytes viewed as one C value of type `T` (e.g. a stream state). Do not let the pointer escape.
    func withPointer<T, R>(to type: T.Type, _ body: (UnsafeMutablePointer<T>) throws -> R) rethrows -> R {
        try body(pointer.assumingMemoryBound(to: T.self))
    }

    /// Typed pointer to the first byte, for C calls. Do not let it escape.
    func withUnsafeUInt8Pointer<R>(_ body: (UnsafeMutablePointer<UInt8>) throws -> R) rethrows -> R {
        try body(pointer.assumingMemoryBound(to: UInt8.self))
    }
}
