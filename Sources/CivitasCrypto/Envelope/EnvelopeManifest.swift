/// What an envelope says about itself, signed by its issuer and readable by
/// anyone (an auditor verifies it without decrypting). Serialized as
/// canonical JSON (RFC 8785); see docs/envelope-format.md.
public struct EnvelopeManifest: Sendable, Equatable {
    /// Key id of the issuer whose Ed25519 key signs the manifest.
    public var issuer: KeyID
    /// Key id of the recipient whose X25519 key the stream key is sealed to.
    public var recipient: KeyID
    /// Media type of the payload, e.g. `text/csv`.
    public var contentType: String
    /// Length of the plaintext payload in bytes.
    public var payloadLength: UInt64
    /// Plaintext bytes per chunk (the last chunk may be shorter).
    public var chunkSize: Int
    /// Creation time, RFC 3339 in UTC with seconds: `2026-11-26T12:00:00Z`.
    public var created: String
    /// SHA-256 of the sealed stream key followed by the stream header.
    public var keyCommitment: [UInt8]
    /// SHA-256 of everything after the signature (sealed key, header, chunks).
    public var ciphertextSHA256: [UInt8]
    /// Open metadata (agreement id, log index, transforms, ε charged, ...).
    public var metadata: [String: JSONValue]

    public init(issuer: KeyID, recipient: KeyID, contentType: String, payloadLength: UInt64, chunkSize: Int,
                created: String, keyCommitment: [UInt8], ciphertextSHA256: [UInt8], metadata: [String: JSONValue]) {
        self.issuer = issuer
        self.recipient = recipient
        self.contentType = contentType
        self.payloadLength = payloadLength
        self.chunkSize = chunkSize
        self.created = created
        self.keyCommitment = keyCommitment
        self.ciphertextSHA256 = ciphertextSHA256
        self.metadata = metadata
    }

    /// The manifest as a JSON value.
    public var jsonValue: JSONValue {
        .object([
            "format": .string(EnvelopeFormat.formatName),
            "issuer": .string(issuer.hex),
            "recipient": .string(recipient.hex),
            "content_type": .string(contentType),
            "payload_length": .number(Double(payloadLength)),
            "chunk_size": .number(Double(chunkSize)),
            "created": .string(created),
            "key_commitment": .string(Hex.encode(keyCommitment)),
            "ciphertext_sha256": .string(Hex.encode(ciphertextSHA256)),
            "metadata": .object(metadata),
        ])
    }

    /// The canonical bytes that are signed.
    public func canonicalBytes() throws -> [UInt8] {
        try CanonicalJSON.encode(jsonValue)
    }

    /// Checks the fields that do not depend on any key: sizes, content type, time form.
    func validate() throws {
        guard (1...255).contains(contentType.utf8.count),
              contentType.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw CryptoError(.invalidManifest, "content_type must be 1-255 printable ASCII characters without spaces")
        }
        guard EnvelopeFormat.chunkSizeRange.contains(chunkSize) else {
            throw CryptoError(.invalidManifest, "chunk_size \(chunkSize) is outside \(EnvelopeFormat.chunkSizeRange)")
        }
        guard payloadLength <= EnvelopeFormat.maximumPayloadLength else {
            throw CryptoError(.invalidManifest, "payload_length \(payloadLength) is above the limit of 2^50 bytes")
        }
        guard Self.isUTCTimestamp(created) else {
            throw CryptoError(.invalidManifest, "created '\(created.prefix(40))' is not an RFC 3339 UTC time like 2026-11-26T12:00:00Z")
        }
        guard keyCommitment.count == 32, ciphertextSHA256.count == 32 else {
            throw CryptoError(.invalidManifest, "key_commitment and ciphertext_sha256 must be 32-byte SHA-256 digests")
        }
    }

    /// Parses a manifest, accepting only canonical JSON with exactly the version-1 members.
    public static func parse(_ bytes: [UInt8]) throws -> EnvelopeManifest {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes, limits: .init(maximumDepth: 32, maximumBytes: EnvelopeFormat.maximumManifestLength))
        } catch let error as CryptoError {
            throw CryptoError(.invalidManifest, "manifest: \(error.message)")
        }
        guard try CanonicalJSON.encode(value) == bytes else {
            throw CryptoError(.invalidManifest, "manifest is not in canonical JSON form (RFC 8785)")
        }
        guard let members = value.objectValue else {
            throw CryptoError(.invalidManifest, "manifest is not a JSON object")
        }
        let expected: Set<String> = ["format", "issuer", "recipient", "content_type", "payload_length", "chunk_size",
                                     "created", "key_commitment", "ciphertext_sha256", "metadata"]
        if let unknown = Set(members.keys).subtracting(expected).sorted().first {
            throw CryptoError(.invalidManifest, "manifest has an unknown member '\(unknown.prefix(64))'")
        }
        func string(_ name: String) throws -> String {
            guard let text = members[name]?.stringValue else {
                throw CryptoError(.invalidManifest, "manifest member '\(name)' is missing or not a string")
            }
            return text
        }
        func digest(_ name: String) throws -> [UInt8] {
            let text = try string(name)
            guard text.utf8.count == 64, text == text.lowercased(), let bytes = Hex.decode(text) else {
                throw CryptoError(.invalidManifest, "manifest member '\(name)' is not 64 lower-case hex characters")
            }
            return bytes
        }
        func keyID(_ name: String) throws -> KeyID {
            guard let id = KeyID(hex: try string(name)) else {
                throw CryptoError(.invalidManifest, "manifest member '\(name)' is not a key id (32 lower-case hex characters)")
            }
            return id
        }
        guard try string("format") == EnvelopeFormat.formatName else {
            throw CryptoError(.invalidManifest, "manifest format is not \(EnvelopeFormat.formatName)")
        }
        guard let payloadLength = members["payload_length"]?.exactUnsignedInteger else {
            throw CryptoError(.invalidManifest, "manifest member 'payload_length' is missing or not a whole number")
        }
        guard let chunkSize = members["chunk_size"]?.exactUnsignedInteger, chunkSize <= UInt64(Int.max) else {
            throw CryptoError(.invalidManifest, "manifest member 'chunk_size' is missing or not a whole number")
        }
        guard let metadata = members["metadata"]?.objectValue else {
            throw CryptoError(.invalidManifest, "manifest member 'metadata' is missing or not an object")
        }
        let manifest = EnvelopeManifest(
            issuer: try keyID("issuer"), recipient: try keyID("recipient"), contentType: try string("content_type"),
            payloadLength: payloadLength, chunkSize: Int(chunkSize), created: try string("created"),
            keyCommitment: try digest("key_commitment"), ciphertextSHA256: try digest("ciphertext_sha256"),
            metadata: metadata)
        try manifest.validate()
        return manifest
    }

    /// Whether `text` has the form YYYY-MM-DDTHH:MM:SSZ with plausible field values.
    static func isUTCTimestamp(_ text: String) -> Bool {
        let b = Array(text.utf8)
        guard b.count == 20, b[4] == 45, b[7] == 45, b[10] == 84, b[13] == 58, b[16] == 58, b[19] == 90 else { return false }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for i in range {
                guard (48...57).contains(b[i]) else { return nil }
                value = value * 10 + Int(b[i] - 48)
            }
            return value
        }
        guard number(0..<4) != nil, let month = number(5..<7), let day = number(8..<10),
              let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19) else { return false }
        return (1...12).contains(month) && (1...31).contains(day) && hour < 24 && minute < 60 && second < 61
    }
}
