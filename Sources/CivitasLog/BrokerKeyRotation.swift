import CivitasCrypto

/// The replacement of the broker's signing key, as a `broker.key_rotated` log entry records it:
/// both keys, and the retiring key's signature introducing the new one for this log. The
/// checkpoint that first covers the entry carries both keys' signatures; checkpoints before it
/// are the retiring key's, checkpoints after it the new key's.
public struct BrokerKeyRotation: Sendable, Equatable {
    public let previous: PublicKeys
    public let replacement: PublicKeys
    /// The retiring key's Ed25519 signature over the origin and both keys (canonical JSON).
    public let introduction: [UInt8]

    /// Domain separation for the introduction signature.
    static let context = Array("civitas-broker-key-rotation/1".utf8) + [0]

    /// The retiring key `previous` introduces `replacement` as the signer of log `origin`.
    public init(origin: String, previous: SecretKeys, replacement: PublicKeys) throws {
        let signed = previous.sign(try Self.message(origin: origin, previous: previous.publicKeys, replacement: replacement))
        self.init(previous: previous.publicKeys, replacement: replacement, introduction: signed)
    }

    private init(previous: PublicKeys, replacement: PublicKeys, introduction: [UInt8]) {
        self.previous = previous
        self.replacement = replacement
        self.introduction = introduction
    }

    /// Reads the rotation an entry records; nil when the entry is of another type or its keys do
    /// not form key pairs with the ids it names.
    public init?(entry: LogEntry) {
        guard entry.type == .brokerKeyRotated,
              let previousSigning = entry.string("previous_ed25519").flatMap(Base64.decode),
              let previousEncryption = entry.string("previous_x25519").flatMap(Base64.decode),
              let signing = entry.string("ed25519").flatMap(Base64.decode),
              let encryption = entry.string("x25519").flatMap(Base64.decode),
              let name = entry.string("name"),
              let introduction = entry.string("introduction").flatMap(Base64.decode),
              let previous = try? PublicKeys(name: "previous", signingKey: previousSigning, encryptionKey: previousEncryption),
              let replacement = try? PublicKeys(name: name, signingKey: signing, encryptionKey: encryption),
              previous.keyID == entry.keyID("previous"), replacement.keyID == entry.keyID("replacement") else { return nil }
        self.init(previous: previous, replacement: replacement, introduction: introduction)
    }

    /// What the retiring key signs: the log's origin and both keys, as canonical JSON.
    static func message(origin: String, previous: PublicKeys, replacement: PublicKeys) throws -> [UInt8] {
        context + (try CanonicalJSON.encode(.object([
            "origin": .string(origin), "previous": .string(previous.keyID.hex),
            "replacement": .string(replacement.keyID.hex), "ed25519": .string(Base64.encode(replacement.signingKey)),
            "x25519": .string(Base64.encode(replacement.encryptionKey)),
        ])))
    }

    /// Whether the retiring key really introduced the new one for log `origin`.
    public func isIntroduced(origin: String) -> Bool {
        guard let message = try? Self.message(origin: origin, previous: previous, replacement: replacement) else { return false }
        return previous.isValidSignature(introduction, for: message)
    }

    /// The members of the log entry.
    public var members: [String: JSONValue] {
        ["previous": .string(previous.keyID.hex), "previous_ed25519": .string(Base64.encode(previous.signingKey)),
         "previous_x25519": .string(Base64.encode(previous.encryptionKey)),
         "replacement": .string(replacement.keyID.hex), "name": .string(replacement.name),
         "ed25519": .string(Base64.encode(replacement.signingKey)), "x25519": .string(Base64.encode(replacement.encryptionKey)),
         "introduction": .string(Base64.encode(introduction))]
    }
}

extension Checkpoint {
    /// The signature line `signer` adds to this checkpoint's note under `keyName` (without its newline).
    public func signatureLine(signer: SecretKeys, keyName: String) throws -> String {
        let note = try signedNote(signer: signer, keyName: keyName)
        return String(note.dropLast().split(separator: "\n").last ?? "")
    }
}
