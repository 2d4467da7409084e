internal import CSodium

/// A participant's identifier: the first 16 bytes of
/// SHA-256("civitas-key-id/1" || 0x00 || Ed25519 public key || X25519 public key),
/// written as 32 lower-case hex characters.
public struct KeyID: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The 32-character lower-case hex form.
    public let hex: String

    /// Derives the key id of a pair of public keys.
    public init(signingKey: [UInt8], encryptionKey: [UInt8]) {
        let prefix = Array("civitas-key-id/1".utf8) + [0]
        let digest = SHA256Hasher.hash(prefix + signingKey + encryptionKey)
        hex = Hex.encode(digest.prefix(16))
    }

    /// Parses the hex form; nil unless it is 32 lower-case hex characters.
    public init?(hex: String) {
        guard hex.utf8.count == 32, hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
            return nil
        }
        self.hex = hex
    }

    public var description: String { hex }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = KeyID(hex: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "not a key id: expected 32 lower-case hex characters"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}

/// A participant's public keys: Ed25519 for signatures, X25519 for sealed
/// encryption, and the name and key id they are known by.
public struct PublicKeys: Hashable, Sendable {
    /// Length of an Ed25519 public key (RFC 8032).
    public static let signingKeyLength = 32
    /// Length of an X25519 public key (RFC 7748).
    public static let encryptionKeyLength = 32

    /// The participant's name as written in its key files.
    public let name: String
    /// Ed25519 public key, 32 bytes.
    public let signingKey: [UInt8]
    /// X25519 public key, 32 bytes.
    public let encryptionKey: [UInt8]
    /// The key id derived from both public keys.
    public let keyID: KeyID

    /// Builds public keys, checking the name and key lengths.
    public init(name: String, signingKey: [UInt8], encryptionKey: [UInt8]) throws {
        try KeyName.validate(name)
        guard signingKey.count == Self.signingKeyLength else {
            throw CryptoError(.malformedKeyFile, "Ed25519 public key must be 32 bytes, got \(signingKey.count)")
        }
        guard encryptionKey.count == Self.encryptionKeyLength else {
            throw CryptoError(.malformedKeyFile, "X25519 public key must be 32 bytes, got \(encryptionKey.count)")
        }
        self.name = name
        self.signingKey = signingKey
        self.encryptionKey = encryptionKey
        self.keyID = KeyID(signingKey: signingKey, encryptionKey: encryptionKey)
    }

    /// Verifies an Ed25519 signature (RFC 8032) over `message`.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        Ed25519.isValidSignature(signature, for: message, publicKey: signingKey)
    }
}

/// Sizes of the Ed25519 primitives.
public enum Ed25519 {
    /// Length of an Ed25519 signature.
    public static let signatureLength = 64
    /// Length of an Ed25519 seed (the secret from which the key pair is derived).
    public static let seedLength = 32

    /// Verifies an Ed25519 signature (RFC 8032) over `message` with a 32-byte public key.
    public static func isValidSignature(_ signature: [UInt8], for message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard signature.count == signatureLength, publicKey.count == 32 else { return false }
        _ = try? Sodium.ensureInitialised()
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }
}

/// Rules for participant names used in key files.
public enum KeyName {
    /// Checks that a name is 1–64 characters of letters, digits, `.`, `_` or `-`, starting with a letter or digit.
    public static func validate(_ name: String) throws {
        let bytes = Array(name.utf8)
        func allowed(_ c: UInt8) -> Bool {
            (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) || c == 46 || c == 95 || c == 45
        }
        guard (1...64).contains(bytes.count), bytes.allSatisfy(allowed),
              let first = bytes.first, first != 46, first != 95, first != 45 else {
            throw CryptoError(.invalidArgument,
                              "invalid key name '\(name.prefix(80))': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        }
    }
}

/// A participant's secret keys: an Ed25519 signing key and an X25519
/// decryption key, held in protected memory, with their public halves.
public final class SecretKeys: Sendable {
    /// Length of the stored secret material: Ed25519 seed (32) then X25519 secret key (32).
    static let storedLength = 64

    /// The matching public keys.
    public let publicKeys: PublicKeys
    /// Ed25519 secret key in libsodium's 64-byte form (seed || public key).
    private let signingSecret: ProtectedBytes
    /// X25519 secret scalar, 32 bytes.
    private let encryptionSecret: ProtectedBytes

    /// Generates a fresh key pair for `name` from the operating system's CSPRNG.
    public static func generate(name: String) throws -> SecretKeys {
        let material = try ProtectedBytes.random(count: storedLength)
        return try SecretKeys(name: name, material: material)
    }

    /// Rebuilds keys from stored material (32-byte Ed25519 seed then 32-byte X25519 secret key).
    init(name: String, material: ProtectedBytes) throws {
        guard material.count == Self.storedLength else {
            throw CryptoError(.malformedKeyFile, "secret key material must be 64 bytes, got \(material.count)")
        }
        let signingSecret = try ProtectedBytes(count: 64)
        let encryptionSecret = try ProtectedBytes(count: 32)
        var signingPublic = [UInt8](repeating: 0, count: 32)
        var encryptionPublic = [UInt8](repeating: 0, count: 32)
        let ok: Bool = material.withUnsafeUInt8Pointer { stored in
            signingSecret.withUnsafeUInt8Pointer { sk in
                encryptionSecret.withUnsafeUInt8Pointer { xsk in
                    xsk.update(from: stored + 32, count: 32)
                    let signOK = crypto_sign_seed_keypair(&signingPublic, sk, stored) == 0
                    let boxOK = crypto_scalarmult_base(&encryptionPublic, xsk) == 0
                    return signOK && boxOK
                }
            }
        }
        guard ok else { throw CryptoError(.malformedKeyFile, "secret key material does not form valid keys") }
        self.signingSecret = signingSecret
        self.encryptionSecret = encryptionSecret
        self.publicKeys = try PublicKeys(name: name, signingKey: signingPublic, encryptionKey: encryptionPublic)
    }

    /// The key id of these keys.
    public var keyID: KeyID { publicKeys.keyID }

    /// The Ed25519 signing key as a PKCS #8 PEM file (RFC 8410), for TLS libraries: a client
    /// certificate for this key proves the TLS connection is the participant's. The caller
    /// writes it owner-only and wipes the bytes.
    public func signingKeyPEM() -> [UInt8] {
        var der: [UInt8] = [0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]
        signingSecret.withUnsafeUInt8Pointer { secret in der.append(contentsOf: UnsafeBufferPointer(start: secret, count: 32)) }
        var encoded = Base64.encodedBytes(der)
        Sodium.wipe(&der)
        var pem = Array("-----BEGIN PRIVATE KEY-----\n".utf8)
        pem += encoded
        pem += Array("\n-----END PRIVATE KEY-----\n".utf8)
        Sodium.wipe(&encoded)
        return pem
    }

    /// Signs `message` with Ed25519 (RFC 8032), returning the 64-byte signature.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { sign(raw: $0) }
    }

    func sign(raw message: UnsafeRawBufferPointer) -> [UInt8] {
        var signature = [UInt8](repeating: 0, count: Ed25519.signatureLength)
        signingSecret.withUnsafeUInt8Pointer { sk in
            _ = crypto_sign_detached(&signature, nil, message.nonNullBytes, UInt64(message.count), sk)
        }
        return signature
    }

    /// Runs `body` with the stored secret material (Ed25519 seed || X25519 secret key) in protected memory.
    func withStoredMaterial<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let material = try ProtectedBytes(count: Self.storedLength)
        material.withUnsafeUInt8Pointer { out in
            signingSecret.withUnsafeUInt8Pointer { sk in
                // libsodium's Ed25519 secret key starts with the 32-byte seed.
                out.update(from: sk, count: 32)
            }
            encryptionSecret.withUnsafeUInt8Pointer { xsk in
                (out + 32).update(from: xsk, count: 32)
            }
        }
        return try material.withUnsafeBytes(body)
    }

    /// Opens a `crypto_box_seal` ciphertext addressed to this key's X25519 public key into `plaintext`,
    /// which must have room for the ciphertext length minus the 48-byte seal overhead.
    func openSealed(_ ciphertext: [UInt8], into plaintext: UnsafeMutablePointer<UInt8>, capacity: Int) -> Bool {
        guard ciphertext.count == capacity + Int(crypto_box_sealbytes()) else { return false }
        return encryptionSecret.withUnsafeUInt8Pointer { sk in
            crypto_box_seal_open(plaintext, ciphertext, UInt64(ciphertext.count), publicKeys.encryptionKey, sk) == 0
        }
    }
}
