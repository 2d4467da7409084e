import CivitasCrypto

/// A witness's cosigning key (C2SP tlog-cosignature, Ed25519 `cosignature/v1`): a name, the
/// 4-byte key id SHA-256(name || 0x0A || 0x04 || public key)[:4], and the public key.
public struct CosignerKey: Sendable, Equatable, Hashable {
    /// The signature type byte of Ed25519 cosignatures in key ids and vkeys.
    static let signatureType: UInt8 = 0x04

    public let name: String
    public let keyID: [UInt8]
    public let publicKey: [UInt8]

    public init(name: String, publicKey: [UInt8]) throws {
        try NoteKey.validateName(name, what: "witness name")
        guard publicKey.count == 32 else { throw LogError(.invalidArgument, "an Ed25519 public key is 32 bytes") }
        self.name = name
        self.publicKey = publicKey
        self.keyID = Array(SHA256Hasher.hash(Array(name.utf8) + [0x0A, Self.signatureType] + publicKey).prefix(4))
    }

    /// The witness's verifier key, as operators exchange it: `name+hexid+base64(0x04||key)`.
    public var verifierKey: String {
        "\(name)+\(Hex.encode(keyID))+\(Base64.encode([Self.signatureType] + publicKey))"
    }

    /// Parses a verifier key string of an Ed25519 cosigner.
    public init(verifierKey: String) throws {
        let parts = verifierKey.split(separator: "+", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let id = Hex.decode(String(parts[1])), id.count == 4,
              let encoded = Base64.decode(String(parts[2])), encoded.count == 33, encoded[0] == Self.signatureType else {
            throw LogError(.invalidArgument, "'\(verifierKey.prefix(80))' is not an Ed25519 cosigner verifier key (name+id+base64 of 0x04 and the key)")
        }
        try self.init(name: String(parts[0]), publicKey: Array(encoded.dropFirst()))
        guard keyID == id else { throw LogError(.invalidArgument, "the key id of verifier key '\(name)' does not match its name and key") }
    }
}

/// Cosignatures on checkpoints: what a witness signs (`cosignature/v1`, a time line, the
/// checkpoint's body) and how a reader counts the ones its trusted witnesses made.
public enum Cosignature {
    /// The message a witness signs for `body` (the checkpoint text up to its blank line) at `time`.
    static func message(body: String, time: UInt64) -> [UInt8] {
        Array("cosignature/v1\ntime \(time)\n".utf8) + Array(body.utf8)
    }

    /// The note signature line by which `signer`, known as `name`, cosigns `checkpoint` at `time`
    /// (seconds since 1970).
    public static func line(for checkpoint: Checkpoint, signer: SecretKeys, name: String, time: UInt64) throws -> String {
        let key = try CosignerKey(name: name, publicKey: signer.publicKeys.signingKey)
        guard time <= UInt64(Int64.max) else { throw LogError(.invalidArgument, "a cosignature time is at most 2^63-1") }
        let signature = signer.sign(message(body: checkpoint.body, time: time))
        var stamp = [UInt8](repeating: 0, count: 8)
        for index in 0..<8 { stamp[index] = UInt8(truncatingIfNeeded: time >> (56 - 8 * UInt64(index))) }
        return "\u{2014} \(name) \(Base64.encode(key.keyID + stamp + signature))\n"
    }

    /// The witnesses among `trusted` whose cosignature on `note` verifies, with the time each
    /// signed. The note's own signatures are not checked here (see ``Checkpoint/verify(note:key:)``);
    /// lines by other keys are ignored, and a line by a trusted key that does not verify is refused.
    public static func verified(note: String, trusted: [CosignerKey]) throws -> [CosignerKey: UInt64] {
        let (body, lines) = try Checkpoint.split(note)
        var found: [CosignerKey: UInt64] = [:]
        for line in lines {
            guard let (name, blob) = Checkpoint.signatureLine(line) else {
                throw LogError(.malformedCheckpoint, "malformed signature line '\(line.prefix(80))'")
            }
            guard let key = trusted.first(where: { $0.name == name && Array(blob.prefix(4)) == $0.keyID }) else { continue }
            guard blob.count == 4 + 8 + Ed25519.signatureLength else {
                throw LogError(.badCheckpointSignature, "the cosignature by witness \(name) is \(blob.count) bytes, not 76")
            }
            let time = blob[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard Ed25519.isValidSignature(Array(blob.suffix(Ed25519.signatureLength)), for: message(body: body, time: time), publicKey: key.publicKey) else {
                throw LogError(.badCheckpointSignature, "the cosignature by witness \(name) does not verify on this checkpoint")
            }
            found[key] = time
        }
        return found
    }

    /// The note with the signature lines of `added` it does not carry yet appended.
    public static func merged(_ note: String, adding added: [String]) -> String {
        var result = note
        let present = Set(note.split(separator: "\n").map(String.init))
        for line in added where !present.contains(line) && line.hasPrefix("\u{2014} ") && !line.contains("\n") {
            result += line + "\n"
        }
        return result
    }
}
