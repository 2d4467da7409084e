import CivitasCrypto

/// A log's signed tree head in the C2SP tlog-checkpoint form: an origin line,
/// the tree size in decimal, the base64 root hash, then (in the signed note)
/// a blank line and signature lines. Existing transparency-log tooling reads it.
public struct Checkpoint: Sendable, Equatable {
    /// The log's name, a schema-less URL such as `civitas.example/broker-log`.
    public let origin: String
    /// Number of entries in the tree.
    public let size: UInt64
    /// RFC 9162 root hash of the first `size` entries.
    public let rootHash: MerkleDigest

    public init(origin: String, size: UInt64, rootHash: MerkleDigest) throws {
        try NoteKey.validateName(origin, what: "origin")
        guard rootHash.count == MerkleHash.size else {
            throw LogError(.invalidArgument, "a checkpoint root hash is 32 bytes")
        }
        self.origin = origin
        self.size = size
        self.rootHash = rootHash
    }

    /// The note text that is signed: three lines, each ending in a newline.
    public var body: String {
        "\(origin)\n\(size)\n\(Base64.encode(rootHash))\n"
    }

    /// The signed note: body, blank line, one Ed25519 signature line by `signer` under `keyName`.
    public func signedNote(signer: SecretKeys, keyName: String) throws -> String {
        let key = try NoteKey(name: keyName, publicKey: signer.publicKeys.signingKey)
        let signature = signer.sign(Array(body.utf8))
        return body + "\n" + "\u{2014} \(keyName) \(Base64.encode(key.keyHash + signature))\n"
    }

    /// Parses a signed note and verifies it against `key`. Signatures by other keys are ignored
    /// (C2SP signed-note); a signature by `key` that fails, or none at all, is refused.
    public static func verify(note: String, key: NoteKey) throws -> Checkpoint {
        let (body, lines) = try split(note)
        let checkpoint = try parseBody(body)
        var verified = false
        for line in lines {
            guard let (name, blob) = signatureLine(line) else {
                throw LogError(.malformedCheckpoint, "malformed signature line '\(line.prefix(80))'")
            }
            guard name == key.name, Array(blob.prefix(4)) == key.keyHash else { continue }
            guard blob.count == 4 + Ed25519.signatureLength,
                  key.isValidSignature(Array(blob.dropFirst(4)), for: Array(body.utf8)) else {
                throw LogError(.badCheckpointSignature,
                               "checkpoint at size \(checkpoint.size) carries a signature by \(key.name) that does not verify")
            }
            verified = true
        }
        guard verified else {
            throw LogError(.badCheckpointSignature, "checkpoint at size \(checkpoint.size) has no signature by \(key.name) (key hash \(Hex.encode(key.keyHash)))")
        }
        return checkpoint
    }

    /// A signed note's body (through the newline before its blank line) and its signature lines,
    /// checked for size and characters.
    static func split(_ note: String) throws -> (body: String, lines: [Substring]) {
        let bytes = Array(note.utf8)
        guard bytes.count <= 16 * 1024 else {
            throw LogError(.malformedCheckpoint, "checkpoint is \(bytes.count) bytes, above the 16 KiB limit")
        }
        guard bytes.allSatisfy({ $0 >= 0x20 || $0 == 0x0A }) else {
            throw LogError(.malformedCheckpoint, "checkpoint contains control characters")
        }
        guard let separator = note.range(of: "\n\n") else {
            throw LogError(.malformedCheckpoint, "checkpoint has no blank line before its signatures")
        }
        let signatureBlock = note[separator.upperBound...]
        guard signatureBlock.hasSuffix("\n") else {
            throw LogError(.malformedCheckpoint, "checkpoint's last signature line does not end in a newline")
        }
        return (String(note[..<separator.lowerBound]) + "\n",
                signatureBlock.dropLast().split(separator: "\n", omittingEmptySubsequences: false))
    }

    /// The key name and decoded bytes of a note signature line (`— name base64`), if it is one.
    static func signatureLine(_ line: Substring) -> (name: Substring, blob: [UInt8])? {
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "\u{2014}", let blob = Base64.decode(String(parts[2])), blob.count >= 4 else { return nil }
        return (parts[1], blob)
    }

    /// The checkpoint a signed note states, read without checking its signatures (for the
    /// log's own store, which compares it with the tree it holds; verifiers use ``verify(note:key:)``).
    public static func statement(of note: String) throws -> Checkpoint {
        guard let separator = note.range(of: "\n\n") else {
            throw LogError(.malformedCheckpoint, "checkpoint has no blank line before its signatures")
        }
        return try parseBody(String(note[..<separator.lowerBound]) + "\n")
    }

    /// Parses the note text (origin, size, root hash, optional extension lines).
    static func parseBody(_ body: String) throws -> Checkpoint {
        let lines = body.dropLast().split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 3 else {
            throw LogError(.malformedCheckpoint, "checkpoint needs origin, size and root hash lines")
        }
        let sizeText = String(lines[1])
        guard let size = UInt64(sizeText), String(size) == sizeText else {
            throw LogError(.malformedCheckpoint, "checkpoint size '\(sizeText.prefix(30))' is not a decimal number")
        }
        guard let root = Base64.decode(String(lines[2])), root.count == MerkleHash.size else {
            throw LogError(.malformedCheckpoint, "checkpoint root hash is not 32 bytes of base64")
        }
        return try Checkpoint(origin: String(lines[0]), size: size, rootHash: root)
    }
}

/// A note-verifier key (C2SP signed-note, Ed25519): a name, the 4-byte key hash
/// SHA-256(name || 0x0A || 0x01 || public key)[:4], and the public key.
public struct NoteKey: Sendable, Equatable {
    public let name: String
    public let keyHash: [UInt8]
    public let publicKey: [UInt8]

    public init(name: String, publicKey: [UInt8]) throws {
        try Self.validateName(name, what: "key name")
        self.name = name
        self.publicKey = publicKey
        self.keyHash = try Self.keyID(name: name, type: Self.signatureType, publicKey: publicKey)
    }

    /// The signature type byte of Ed25519 note signatures in key hashes and verifier keys.
    static let signatureType: UInt8 = 0x01

    /// The verifier key string Go's note package and tlog tools accept: `name+hexhash+base64(0x01||key)`.
    public var verifierKey: String { Self.verifierKey(name: name, keyID: keyHash, type: Self.signatureType, publicKey: publicKey) }

    /// Parses a verifier key string.
    public init(verifierKey: String) throws {
        let (name, publicKey) = try Self.parseVerifierKey(verifierKey, type: Self.signatureType, what: "an Ed25519 note verifier key")
        try self.init(name: name, publicKey: publicKey)
    }

    /// A signed-note key id: SHA-256(name || 0x0A || type || key)[:4] (C2SP signed-note, tlog-cosignature).
    static func keyID(name: String, type: UInt8, publicKey: [UInt8]) throws -> [UInt8] {
        guard publicKey.count == 32 else { throw LogError(.invalidArgument, "an Ed25519 public key is 32 bytes") }
        return Array(SHA256Hasher.hash(Array(name.utf8) + [0x0A, type] + publicKey).prefix(4))
    }

    /// `name+hexid+base64(type||key)`.
    static func verifierKey(name: String, keyID: [UInt8], type: UInt8, publicKey: [UInt8]) -> String {
        "\(name)+\(Hex.encode(keyID))+\(Base64.encode([type] + publicKey))"
    }

    /// The name and key of a verifier key string of signature type `type`, its key id checked.
    static func parseVerifierKey(_ text: String, type: UInt8, what: String) throws -> (name: String, publicKey: [UInt8]) {
        let parts = text.split(separator: "+", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let id = Hex.decode(String(parts[1])), id.count == 4,
              let encoded = Base64.decode(String(parts[2])), encoded.count == 33, encoded[0] == type else {
            throw LogError(.invalidArgument, "'\(text.prefix(80))' is not \(what) (name+id+base64 of the type byte and the key)")
        }
        let name = String(parts[0]), publicKey = Array(encoded.dropFirst())
        try validateName(name, what: "key name")
        guard try keyID(name: name, type: type, publicKey: publicKey) == id else {
            throw LogError(.invalidArgument, "the key id of verifier key '\(name)' does not match its name and key")
        }
        return (name, publicKey)
    }

    func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        Ed25519.isValidSignature(signature, for: message, publicKey: publicKey)
    }

    static func validateName(_ name: String, what: String) throws {
        guard !name.isEmpty, name.utf8.count <= 255,
              name.unicodeScalars.allSatisfy({ !$0.properties.isWhitespace && $0 != "+" && $0.value >= 0x21 }) else {
            throw LogError(.invalidArgument, "\(what) '\(name.prefix(60))' must be non-empty, without spaces or '+'")
        }
    }
}
