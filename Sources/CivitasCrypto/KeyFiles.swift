internal import CSodium

/// Cost parameters for Argon2id (RFC 9106) when protecting a secret key file.
public struct PassphraseCost: Sendable, Equatable {
    /// Argon2id passes.
    public let operations: UInt64
    /// Argon2id memory in bytes.
    public let memoryBytes: Int

    /// libsodium's "moderate" cost: 3 passes over 256 MiB (about a second here).
    public static var moderate: PassphraseCost {
        PassphraseCost(operations: UInt64(crypto_pwhash_opslimit_moderate()),
                       memoryBytes: Int(crypto_pwhash_memlimit_moderate()))
    }

    /// libsodium's "interactive" cost: 2 passes over 64 MiB.
    public static var interactive: PassphraseCost {
        PassphraseCost(operations: UInt64(crypto_pwhash_opslimit_interactive()),
                       memoryBytes: Int(crypto_pwhash_memlimit_interactive()))
    }

    public init(operations: UInt64, memoryBytes: Int) {
        self.operations = operations
        self.memoryBytes = memoryBytes
    }

    /// The largest cost a key file may ask for, so a crafted file cannot exhaust memory or time.
    static let maximumOperations: UInt64 = 10
    static let maximumMemoryBytes = 1 << 30

    func validate() throws {
        guard operations >= UInt64(crypto_pwhash_opslimit_min()), operations <= Self.maximumOperations,
              memoryBytes >= Int(crypto_pwhash_memlimit_min()), memoryBytes <= Self.maximumMemoryBytes else {
            throw CryptoError(.malformedKeyFile,
                              "Argon2id cost out of range: \(operations) passes, \(memoryBytes) bytes (allowed: up to \(Self.maximumOperations) passes and 1 GiB)")
        }
    }
}

/// The text forms of Civitas key files (documented in Keys/README.md).
///
/// Public: `civitas-public-key/1 NAME KEYID ed25519:B64 x25519:B64`
///
/// Secret, unprotected: `civitas-secret-key/1 NAME KEYID plain B64(seed || x25519-secret)`
///
/// Secret, protected: `civitas-secret-key/1 NAME KEYID argon2id OPS MEM B64(salt) B64(nonce || ciphertext)`
/// where the ciphertext is XChaCha20-Poly1305 (IETF) under the Argon2id-derived key,
/// with every preceding field of the line as associated data.
public enum KeyFile {
    /// First token of a public key file.
    public static let publicTag = "civitas-public-key/1"
    /// First token of a secret key file.
    public static let secretTag = "civitas-secret-key/1"
    /// Key files larger than this are refused before parsing.
    public static let maximumSize = 4096

    // MARK: Public key files

    /// The one-line public key file text for `keys`, ending in a newline.
    public static func publicText(_ keys: PublicKeys) -> String {
        "\(publicTag) \(keys.name) \(keys.keyID.hex) ed25519:\(Base64.encode(keys.signingKey)) x25519:\(Base64.encode(keys.encryptionKey))\n"
    }

    /// Parses a public key file; `source` names the file in errors.
    public static func parsePublic(_ bytes: [UInt8], source: String) throws -> PublicKeys {
        let fields = try fieldsOfKeyFile(bytes, expecting: .public, source: source)
        guard fields.count == 5 else {
            throw CryptoError(.malformedKeyFile, "\(source): truncated or corrupt public key file (expected 5 fields, found \(fields.count))")
        }
        let signingField = text(fields[3]), encryptionField = text(fields[4])
        guard signingField.hasPrefix("ed25519:"), encryptionField.hasPrefix("x25519:"),
              let signing = Base64.decode(String(signingField.dropFirst(8))), signing.count == 32,
              let encryption = Base64.decode(String(encryptionField.dropFirst(7))), encryption.count == 32 else {
            throw CryptoError(.malformedKeyFile, "\(source): corrupt public key file (the ed25519: or x25519: field is not a 32-byte base64 key)")
        }
        let keys = try PublicKeys(name: text(fields[1]), signingKey: signing, encryptionKey: encryption)
        guard keys.keyID.hex == text(fields[2]) else {
            throw CryptoError(.keyIDMismatch, "\(source): key id \(text(fields[2]).prefix(40)) does not match the keys in the file (they give \(keys.keyID))")
        }
        return keys
    }

    // MARK: Secret key files

    /// The bytes of a one-line secret key file, protected with Argon2id when a passphrase is given.
    /// The result holds the secret (encoded or encrypted): wipe it with ``Sodium/wipe(_:)`` after writing.
    public static func secretFileContents(_ keys: SecretKeys, passphrase: [UInt8]?,
                                          cost: PassphraseCost = .moderate) throws -> [UInt8] {
        let head = "\(secretTag) \(keys.publicKeys.name) \(keys.keyID.hex)"
        guard let passphrase else {
            // Encoded straight into a byte array the caller wipes, never into a String.
            var contents = Array("\(head) plain ".utf8)
            contents.reserveCapacity(contents.count + 128)  // no reallocation may leave a copy behind
            try keys.withStoredMaterial { Base64.append(raw: $0, to: &contents) }
            contents.append(0x0A)
            return contents
        }
        try validatePassphrase(passphrase)
        try cost.validate()
        let salt = Sodium.randomBytes(Int(crypto_pwhash_saltbytes()))
        let header = "\(head) argon2id \(cost.operations) \(cost.memoryBytes) \(Base64.encode(salt))"
        let key = try deriveKey(passphrase: passphrase, salt: salt, cost: cost)
        let nonce = Sodium.randomBytes(Int(crypto_aead_xchacha20poly1305_ietf_npubbytes()))
        let associated = Array(header.utf8)
        let tagLength = Int(crypto_aead_xchacha20poly1305_ietf_abytes())
        var sealed = [UInt8](repeating: 0, count: SecretKeys.storedLength + tagLength)
        try keys.withStoredMaterial { material in
            _ = key.withUnsafeUInt8Pointer { k in
                crypto_aead_xchacha20poly1305_ietf_encrypt(
                    &sealed, nil, material.nonNullBytes, UInt64(material.count),
                    associated, UInt64(associated.count), nil, nonce, k)
            }
        }
        return Array("\(header) \(Base64.encode(nonce + sealed))\n".utf8)
    }

    /// Whether a secret key file is passphrase-protected (without opening it).
    public static func isProtected(_ bytes: [UInt8], source: String) throws -> Bool {
        let fields = try fieldsOfKeyFile(bytes, expecting: .secret, source: source)
        return fields.count > 3 && text(fields[3]) == "argon2id"
    }

    /// Parses and, if protected, decrypts a secret key file; `source` names the file in errors.
    public static func parseSecret(_ bytes: [UInt8], source: String, passphrase: [UInt8]?) throws -> SecretKeys {
        let fields = try fieldsOfKeyFile(bytes, expecting: .secret, source: source)
        guard fields.count >= 4 else {
            throw CryptoError(.malformedKeyFile, "\(source): truncated or corrupt secret key file (expected at least 4 fields, found \(fields.count))")
        }
        let name = text(fields[1])
        let material: ProtectedBytes
        switch text(fields[3]) {
        case "plain":
            guard fields.count == 5 else {
                throw CryptoError(.malformedKeyFile, "\(source): truncated or corrupt secret key file (expected 5 fields, found \(fields.count))")
            }
            material = try ProtectedBytes(count: SecretKeys.storedLength)
            let decoded = material.withUnsafeMutableBytes { Base64.decode(bytes: fields[4], into: $0) }
            guard decoded == SecretKeys.storedLength else {
                throw CryptoError(.malformedKeyFile, "\(source): truncated or corrupt secret key file (the key field is not 64 bytes of base64)")
            }
        case "argon2id":
            guard fields.count == 8 else {
                throw CryptoError(.malformedKeyFile, "\(source): truncated or corrupt protected secret key file (expected 8 fields, found \(fields.count))")
            }
            guard let passphrase else {
                throw CryptoError(.passphraseRequired, "\(source) is passphrase-protected: pass --passphrase-env VAR or --passphrase-file FILE")
            }
            guard let operations = UInt64(text(fields[4])), let memory = Int(text(fields[5])),
                  let salt = Base64.decode(text(fields[6])), salt.count == Int(crypto_pwhash_saltbytes()),
                  let sealed = Base64.decode(text(fields[7])) else {
                throw CryptoError(.malformedKeyFile, "\(source): corrupt protected secret key file (cost, salt or ciphertext field unreadable)")
            }
            let cost = PassphraseCost(operations: operations, memoryBytes: memory)
            try cost.validate()
            let nonceLength = Int(crypto_aead_xchacha20poly1305_ietf_npubbytes())
            let tagLength = Int(crypto_aead_xchacha20poly1305_ietf_abytes())
            guard sealed.count == nonceLength + SecretKeys.storedLength + tagLength else {
                throw CryptoError(.malformedKeyFile, "\(source): truncated or corrupt protected secret key file (ciphertext is \(sealed.count) bytes)")
            }
            try validatePassphrase(passphrase)
            let key = try deriveKey(passphrase: passphrase, salt: salt, cost: cost)
            let associated = Array(fields[0..<7].joined(separator: [0x20]))
            material = try ProtectedBytes(count: SecretKeys.storedLength)
            let nonce = Array(sealed.prefix(nonceLength))
            let ciphertext = Array(sealed.dropFirst(nonceLength))
            let opened = material.withUnsafeUInt8Pointer { out in
                key.withUnsafeUInt8Pointer { k in
                    crypto_aead_xchacha20poly1305_ietf_decrypt(
                        out, nil, nil, ciphertext, UInt64(ciphertext.count),
                        associated, UInt64(associated.count), nonce, k) == 0
                }
            }
            guard opened else {
                throw CryptoError(.wrongPassphrase, "\(source): wrong passphrase (or the protected file was altered)")
            }
        default:
            throw CryptoError(.malformedKeyFile, "\(source): unknown secret key protection '\(text(fields[3]).prefix(20))' (expected plain or argon2id)")
        }
        let keys = try SecretKeys(name: name, material: material)
        guard keys.keyID.hex == text(fields[2]) else {
            throw CryptoError(.keyIDMismatch, "\(source): key id \(text(fields[2]).prefix(40)) does not match the secret keys in the file")
        }
        return keys
    }

    // MARK: Helpers

    private enum Kind { case `public`, secret }

    /// Splits a key file's single line into fields. Fields stay bytes so that a
    /// secret field is never copied into a String (which cannot be wiped); use
    /// ``text(_:)`` for the others.
    private static func fieldsOfKeyFile(_ bytes: [UInt8], expecting kind: Kind, source: String) throws -> [ArraySlice<UInt8>] {
        guard bytes.count <= maximumSize else {
            throw CryptoError(.wrongKeyKind, "\(source) is \(bytes.count) bytes: too large to be a Civitas key file")
        }
        if bytes.starts(with: EnvelopeFormat.magic) {
            throw CryptoError(.wrongKeyKind, "\(source) is an envelope, not a key file")
        }
        var line = bytes[...]
        if line.last == 0x0A { line = line.dropLast() }
        if line.last == 0x0D { line = line.dropLast() }
        guard line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            if line.contains(0x0A) {
                throw CryptoError(.malformedKeyFile, "\(source): a key file holds exactly one line")
            }
            throw CryptoError(.wrongKeyKind, "\(source) is not a Civitas key file (not a line of printable ASCII)")
        }
        let fields = line.split(separator: 0x20, omittingEmptySubsequences: false)
        let tag = fields.first.map(text) ?? ""
        switch (tag, kind) {
        case (publicTag, .public), (secretTag, .secret):
            return fields
        case (publicTag, .secret):
            throw CryptoError(.wrongKeyKind, "\(source) is a public key file; a secret key file (.secret) is needed here")
        case (secretTag, .public):
            throw CryptoError(.wrongKeyKind, "\(source) is a secret key file; give the public key file (.pub) instead")
        default:
            throw CryptoError(.wrongKeyKind, "\(source) is not a Civitas \(kind == .public ? "public" : "secret") key file")
        }
    }

    /// A non-secret field as text.
    private static func text(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field, as: UTF8.self)
    }

    private static func validatePassphrase(_ passphrase: [UInt8]) throws {
        guard (1...1024).contains(passphrase.count) else {
            throw CryptoError(.invalidArgument, "a passphrase must be 1 to 1024 bytes")
        }
    }

    private static func deriveKey(passphrase: [UInt8], salt: [UInt8], cost: PassphraseCost) throws -> ProtectedBytes {
        let key = try ProtectedBytes(count: Int(crypto_aead_xchacha20poly1305_ietf_keybytes()))
        let status = key.withUnsafeUInt8Pointer { k in
            passphrase.withNonNullPointer { pw, count in
                pw.withMemoryRebound(to: CChar.self, capacity: count) { pw in
                    crypto_pwhash(k, UInt64(key.count), pw, UInt64(count), salt,
                                  cost.operations, cost.memoryBytes, crypto_pwhash_alg_argon2id13())
                }
            }
        }
        guard status == 0 else {
            throw CryptoError(.libraryUnavailable, "Argon2id could not run (not enough memory for \(cost.memoryBytes) bytes?)")
        }
        return key
    }
}
