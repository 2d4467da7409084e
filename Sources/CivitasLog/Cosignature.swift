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
        self.name = name
        self.publicKey = publicKey
        self.keyID = try NoteKey.keyID(name: name, type: Self.signatureType, publicKey: publicKey)
    }

    /// The witness's verifier key, as operators exchange it: `name+hexid+base64(0x04||key)`.
    public var verifierKey: String { NoteKey.verifierKey(name: name, keyID: keyID, type: Self.signatureType, publicKey: publicKey) }

    /// Parses a verifier key string of an Ed25519 cosigner.
    public init(verifierKey: String) throws {
        let (name, publicKey) = try NoteKey.parseVerifierKey(verifierKey, type: Self.signatureType, what: "an Ed25519 cosigner verifier key")
        try self.init(name: name, publicKey: publicKey)
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
