internal import COpenSSL

/// AES (FIPS 197) applied to single 16-byte blocks, through libcrypto's EVP
/// interface with AES-NI where present. Used by FF1; not an encryption mode.
final class AESBlockCipher: @unchecked Sendable {
    private let context: OpaquePointer

    /// A cipher for a 16-, 24- or 32-byte key.
    init(key: [UInt8]) throws {
        let cipher: OpaquePointer?
        switch key.count {
        case 16: cipher = EVP_aes_128_ecb()
        case 24: cipher = EVP_aes_192_ecb()
        case 32: cipher = EVP_aes_256_ecb()
        default: throw CryptoError(.invalidArgument, "an AES key is 16, 24 or 32 bytes, not \(key.count)")
        }
        guard let context = EVP_CIPHER_CTX_new() else {
            throw CryptoError(.libraryUnavailable, "libcrypto could not allocate an AES context")
        }
        guard EVP_EncryptInit_ex(context, cipher, nil, key, nil) == 1, EVP_CIPHER_CTX_set_padding(context, 0) == 1 else {
            EVP_CIPHER_CTX_free(context)
            throw CryptoError(.libraryUnavailable, "libcrypto could not set up AES")
        }
        self.context = context
    }

    deinit { EVP_CIPHER_CTX_free(context) }

    /// Encrypts one 16-byte block in place.
    func encrypt(_ block: inout [UInt8]) {
        precondition(block.count == 16, "AES works on 16-byte blocks")
        var length: Int32 = 0
        let input = block
        _ = EVP_EncryptUpdate(context, &block, &length, input, 16)
    }
}
