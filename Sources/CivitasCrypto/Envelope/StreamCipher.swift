internal import CSodium

/// A crypto_secretstream_xchacha20poly1305 key and state in one protected,
/// wiped-on-free allocation.
final class StreamCipher {
    private let memory: ProtectedBytes
    private static let keyLength = Int(crypto_secretstream_xchacha20poly1305_keybytes())
    private static let memoryLength = keyLength + Int(crypto_secretstream_xchacha20poly1305_statebytes())

    // Protected allocations are reused: mapping and unmapping guarded pages on every
    // envelope costs more than sealing a small payload. Memory is wiped before reuse.
    private static let poolLock = Mutex()
    nonisolated(unsafe) private static var pool: [ProtectedBytes] = []

    static let finalTag = UInt8(crypto_secretstream_xchacha20poly1305_tag_final())
    static let messageTag = UInt8(crypto_secretstream_xchacha20poly1305_tag_message())

    private init() throws {
        memory = try Self.poolLock.withLock { Self.pool.popLast() } ?? ProtectedBytes(count: Self.memoryLength)
    }

    deinit {
        memory.withUnsafeUInt8Pointer { sodium_memzero($0, Self.memoryLength) }
        Self.poolLock.withLock { if Self.pool.count < 16 { Self.pool.append(memory) } }
    }

    /// A stream for encrypting under a fresh random key; returns the stream and its header.
    static func push() throws -> (StreamCipher, [UInt8]) {
        let stream = try StreamCipher()
        var header = [UInt8](repeating: 0, count: EnvelopeFormat.streamHeaderLength)
        let status = stream.memory.withUnsafeUInt8Pointer { base in
            crypto_secretstream_xchacha20poly1305_keygen(base)
            return base.advanced(by: keyLength).withMemoryRebound(to: crypto_secretstream_xchacha20poly1305_state.self, capacity: 1) {
                crypto_secretstream_xchacha20poly1305_init_push($0, &header, base)
            }
        }
        guard status == 0 else { throw CryptoError(.libraryUnavailable, "secretstream could not start") }
        return (stream, header)
    }

    /// A stream for decrypting: `fillKey` writes the 32-byte key straight into protected memory
    /// and returns false if it cannot. Returns nil when the key could not be filled.
    static func pull(header: [UInt8], fillKey: (UnsafeMutablePointer<UInt8>, Int) -> Bool) throws -> StreamCipher? {
        let stream = try StreamCipher()
        guard stream.memory.withUnsafeUInt8Pointer({ fillKey($0, keyLength) }) else { return nil }
        let status = stream.memory.withUnsafeUInt8Pointer { base in
            base.advanced(by: keyLength).withMemoryRebound(to: crypto_secretstream_xchacha20poly1305_state.self, capacity: 1) {
                crypto_secretstream_xchacha20poly1305_init_pull($0, header, base)
            }
        }
        guard status == 0 else { throw CryptoError(.chunkRejected, "the stream header is invalid") }
        return stream
    }

    /// The stream key (32 bytes), for sealing it to the recipient.
    func withKey<R>(_ body: (UnsafePointer<UInt8>, Int) throws -> R) rethrows -> R {
        try memory.withUnsafeUInt8Pointer { try body(UnsafePointer($0), Self.keyLength) }
    }

    /// Encrypts one chunk; `output` must have room for `length` + 17 bytes. Returns the ciphertext length.
    func push(_ input: UnsafePointer<UInt8>, length: Int, into output: UnsafeMutablePointer<UInt8>,
              associatedData: [UInt8], final: Bool) -> Int? {
        var written: UInt64 = 0
        let status = withState {
            crypto_secretstream_xchacha20poly1305_push($0, output, &written, input, UInt64(length),
                                                       associatedData, UInt64(associatedData.count),
                                                       final ? Self.finalTag : Self.messageTag)
        }
        return status == 0 ? Int(written) : nil
    }

    /// Decrypts and authenticates one chunk; returns the plaintext length and tag, or nil if it is rejected.
    func pull(_ input: UnsafePointer<UInt8>, length: Int, into output: UnsafeMutablePointer<UInt8>,
              associatedData: [UInt8]) -> (length: Int, tag: UInt8)? {
        var plainLength: UInt64 = 0
        var tag: UInt8 = 0
        let status = withState {
            crypto_secretstream_xchacha20poly1305_pull($0, output, &plainLength, &tag, input, UInt64(length),
                                                       associatedData, UInt64(associatedData.count))
        }
        return status == 0 ? (Int(plainLength), tag) : nil
    }

    private func withState<R>(_ body: (UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>) -> R) -> R {
        memory.withUnsafeUInt8Pointer { base in
            base.advanced(by: Self.keyLength).withMemoryRebound(to: crypto_secretstream_xchacha20poly1305_state.self, capacity: 1, body)
        }
    }
}
