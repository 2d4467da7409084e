internal import COpenSSL

/// Incremental SHA-256 (FIPS 180-4) over OpenSSL's libcrypto, which uses the
/// CPU's SHA extensions where present.
public final class SHA256Hasher: @unchecked Sendable {
    /// Length of a SHA-256 digest in bytes.
    public static let digestLength = 32

    private let context: OpaquePointer

    /// Starts a new hash.
    public init() throws {
        guard let context = EVP_MD_CTX_new() else {
            throw CryptoError(.libraryUnavailable, "libcrypto could not allocate a SHA-256 context")
        }
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            EVP_MD_CTX_free(context)
            throw CryptoError(.libraryUnavailable, "libcrypto could not start SHA-256")
        }
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Adds bytes to the hash.
    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        EVP_DigestUpdate(context, bytes.baseAddress, bytes.count)
    }

    /// Adds bytes to the hash.
    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Finishes the hash and returns the 32-byte digest. The hasher cannot be used afterwards.
    public func finish() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Self.digestLength)
        var length: UInt32 = 0
        _ = EVP_DigestFinal_ex(context, &digest, &length)
        return digest
    }

    /// SHA-256 of a byte string in one call.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { hash(raw: $0) }
    }

    /// SHA-256 of a byte string in one call.
    public static func hash(raw bytes: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: digestLength) { digest, count in
            civitas_sha256(bytes.baseAddress, bytes.count, digest.baseAddress)
            count = digestLength
        }
    }
}
