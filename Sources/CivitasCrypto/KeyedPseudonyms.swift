internal import COpenSSL
internal import CSodium

/// A master key for pseudonyms, held in protected memory. Every pseudonym
/// domain (agreement, partner, purpose, epoch) gets its own key derived from
/// it with libsodium's crypto_kdf (BLAKE2b), so pseudonyms from two domains
/// cannot be joined without the master key.
public final class PseudonymMasterKey: Sendable {
    static let length = 32
    private let key: ProtectedBytes

    /// A fresh random master key.
    public static func generate() throws -> PseudonymMasterKey {
        PseudonymMasterKey(key: try ProtectedBytes.random(count: length))
    }

    /// A master key from 32 bytes (wiped from the array).
    public init(bytes: inout [UInt8]) throws {
        guard bytes.count == Self.length else {
            throw CryptoError(.invalidArgument, "a pseudonym master key is 32 bytes, not \(bytes.count)")
        }
        key = try ProtectedBytes.taking(&bytes)
    }

    private init(key: ProtectedBytes) { self.key = key }

    /// The 32-byte key of `domain` for `purpose` (a libsodium KDF context, 8 ASCII bytes).
    func derive(domain: String, context: String) throws -> ProtectedBytes {
        precondition(context.utf8.count == 8, "a crypto_kdf context is 8 bytes")
        // The subkey id is the first 8 bytes of SHA-256(domain): domains are text, ids are 64-bit.
        let id = SHA256Hasher.hash(Array(domain.utf8)).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let subkey = try ProtectedBytes(count: 32)
        let contextBytes = context.utf8.map { CChar(bitPattern: $0) }
        let status = subkey.withUnsafeUInt8Pointer { out in
            key.withUnsafeUInt8Pointer { master in
                crypto_kdf_derive_from_key(out, 32, id, contextBytes, master)
            }
        }
        guard status == 0 else { throw CryptoError(.libraryUnavailable, "crypto_kdf could not derive a domain key") }
        return subkey
    }

    /// The keyed PRF of one pseudonym domain.
    public func prf(domain: String) throws -> DomainPRF {
        try DomainPRF(key: try derive(domain: domain, context: "civpseu1"))
    }

    /// The FF1 cipher of one pseudonym domain (AES-256 key derived for it).
    public func ff1(domain: String, radix: Int) throws -> FF1 {
        let key = try derive(domain: domain, context: "civff1k1")
        var bytes = key.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&bytes) }
        return try FF1(key: bytes, radix: radix)
    }
}

/// HMAC-SHA-256 (RFC 2104) under one domain's key, with the keyed state
/// computed once so each pseudonym costs two SHA-256 compressions. The inner and
/// outer states are kept in locked, wiped memory; SHA-256 is OpenSSL's (the
/// CPU's SHA extensions where present), whose time does not depend on the data.
public final class DomainPRF: @unchecked Sendable {
    /// Two SHA-256 states: after the key XOR ipad block, and after the key XOR opad block.
    private let state: ProtectedBytes

    init(key: ProtectedBytes) throws {
        state = try ProtectedBytes(count: 2 * MemoryLayout<SHA256_CTX>.stride)
        var pads = [UInt8](repeating: 0, count: 128)
        defer { Sodium.wipe(&pads) }
        key.withUnsafeUInt8Pointer { k in
            if key.count > 64 {
                civitas_sha256(k, key.count, &pads)
            } else {
                for i in 0..<key.count { pads[i] = k[i] }
            }
        }
        for i in 0..<64 {
            pads[64 + i] = pads[i] ^ 0x5c
            pads[i] ^= 0x36
        }
        state.withPointer(to: SHA256_CTX.self) { contexts in
            pads.withUnsafeBufferPointer { pads in
                SHA256_Init(contexts)
                SHA256_Update(contexts, pads.baseAddress, 64)
                SHA256_Init(contexts + 1)
                SHA256_Update(contexts + 1, pads.baseAddress.map { $0 + 64 }, 64)
            }
        }
    }

    /// HMAC-SHA-256 of `input` (32 bytes).
    public func mac(_ input: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var inner = [UInt8](repeating: 0, count: 32)
        state.withPointer(to: SHA256_CTX.self) { contexts in
            var local = contexts.pointee
            input.withUnsafeBytes { _ = SHA256_Update(&local, $0.baseAddress, $0.count) }
            SHA256_Final(&inner, &local)
            local = contexts[1]
            SHA256_Update(&local, inner, 32)
            SHA256_Final(&out, &local)
            withUnsafeMutableBytes(of: &local) { sodium_memzero($0.baseAddress, $0.count) }
        }
        Sodium.wipe(&inner)
        return out
    }

    /// HMAC-SHA-256 of a string's UTF-8 bytes.
    public func mac(_ text: String) -> [UInt8] {
        mac(Array(text.utf8))
    }
}
