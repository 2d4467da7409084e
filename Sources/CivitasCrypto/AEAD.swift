internal import CSodium

/// XChaCha20-Poly1305 (IETF) authenticated encryption under a 32-byte key held
/// in protected memory; used for data at rest. Each message gets a random
/// 24-byte nonce, stored in front of the ciphertext.
public final class SealedStorageKey: Sendable {
    /// Bytes added to every sealed message: nonce (24) and tag (16).
    public static var overhead: Int {
        Int(crypto_aead_xchacha20poly1305_ietf_npubbytes() + crypto_aead_xchacha20poly1305_ietf_abytes())
    }

    private let key: ProtectedBytes

    /// A fresh random key.
    public static func generate() throws -> SealedStorageKey {
        SealedStorageKey(key: try ProtectedBytes.random(count: 32))
    }

    /// A key from 32 bytes (wiped from the array).
    public init(bytes: inout [UInt8]) throws {
        guard bytes.count == 32 else { throw CryptoError(.invalidArgument, "a storage key is 32 bytes, not \(bytes.count)") }
        key = try ProtectedBytes.taking(&bytes)
    }

    private init(key: ProtectedBytes) { self.key = key }

    /// nonce || ciphertext || tag of `plaintext`, bound to `associatedData`.
    public func seal(_ plaintext: [UInt8], associatedData: [UInt8]) -> [UInt8] {
        let nonce = Sodium.randomBytes(Int(crypto_aead_xchacha20poly1305_ietf_npubbytes()))
        var out = [UInt8](repeating: 0, count: plaintext.count + Int(crypto_aead_xchacha20poly1305_ietf_abytes()))
        var length: UInt64 = 0
        key.withUnsafeUInt8Pointer { k in
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt(&out, &length, plaintext, UInt64(plaintext.count),
                                                           associatedData, UInt64(associatedData.count), nil, nonce, k)
        }
        return nonce + out
    }

    /// The plaintext of `sealed`; throws if it was altered or bound to other associated data.
    public func open(_ sealed: [UInt8], associatedData: [UInt8]) throws -> [UInt8] {
        let nonceLength = Int(crypto_aead_xchacha20poly1305_ietf_npubbytes())
        guard sealed.count >= Self.overhead else { throw CryptoError(.truncated, "sealed data is shorter than its nonce and tag") }
        let nonce = Array(sealed.prefix(nonceLength))
        let ciphertext = Array(sealed.dropFirst(nonceLength))
        var out = [UInt8](repeating: 0, count: ciphertext.count - Int(crypto_aead_xchacha20poly1305_ietf_abytes()))
        var length: UInt64 = 0
        let status = key.withUnsafeUInt8Pointer { k in
            crypto_aead_xchacha20poly1305_ietf_decrypt(&out, &length, nil, ciphertext, UInt64(ciphertext.count),
                                                       associatedData, UInt64(associatedData.count), nonce, k)
        }
        guard status == 0 else { throw CryptoError(.chunkRejected, "sealed data failed authentication (altered, or moved from elsewhere)") }
        return out
    }

    /// Seals another key under this one (key wrapping for per-dataset keys).
    public func wrap(_ other: SealedStorageKey, associatedData: [UInt8]) -> [UInt8] {
        var material = other.key.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&material) }
        return seal(material, associatedData: associatedData)
    }

    /// Unwraps a key sealed with ``wrap(_:associatedData:)``.
    public func unwrap(_ wrapped: [UInt8], associatedData: [UInt8]) throws -> SealedStorageKey {
        var bytes = try open(wrapped, associatedData: associatedData)
        defer { Sodium.wipe(&bytes) }
        return try SealedStorageKey(bytes: &bytes)
    }
}
