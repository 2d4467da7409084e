import Foundation
import Testing
@testable import CivitasCrypto

@Suite("Key files")
struct KeyFileTests {
    @Test("Public key file round-trips and carries the derived key id")
    func publicRoundTrip() throws {
        let keys = try SecretKeys.generate(name: "emergency-services")
        let text = KeyFile.publicText(keys.publicKeys)
        #expect(text.hasPrefix("civitas-public-key/1 emergency-services \(keys.keyID.hex) ed25519:"))
        #expect(text.hasSuffix("\n"))
        let parsed = try KeyFile.parsePublic(Array(text.utf8), source: "test.pub")
        #expect(parsed == keys.publicKeys)
    }

    @Test("Unprotected secret key file round-trips and signs the same")
    func secretRoundTrip() throws {
        let keys = try SecretKeys.generate(name: "health")
        let text = String(decoding: try KeyFile.secretFileContents(keys, passphrase: nil), as: UTF8.self)
        let parsed = try KeyFile.parseSecret(Array(text.utf8), source: "health.secret", passphrase: nil)
        #expect(parsed.publicKeys == keys.publicKeys)
        let message = Array("hello".utf8)
        #expect(keys.publicKeys.isValidSignature(parsed.sign(message), for: message))
    }

    @Test("Passphrase-protected secret key file opens only with the passphrase")
    func protectedSecret() throws {
        let keys = try SecretKeys.generate(name: "auditor")
        let passphrase = Array("correct horse battery staple".utf8)
        let text = String(decoding: try KeyFile.secretFileContents(keys, passphrase: passphrase, cost: .interactive), as: UTF8.self)
        #expect(text.contains(" argon2id "))
        #expect(try KeyFile.isProtected(Array(text.utf8), source: "a.secret"))
        let opened = try KeyFile.parseSecret(Array(text.utf8), source: "a.secret", passphrase: passphrase)
        #expect(opened.keyID == keys.keyID)
        #expect(throws: CryptoError(.wrongPassphrase, "")) {
            try KeyFile.parseSecret(Array(text.utf8), source: "a.secret", passphrase: Array("wrong".utf8))
        }
        #expect(throws: CryptoError(.passphraseRequired, "")) {
            try KeyFile.parseSecret(Array(text.utf8), source: "a.secret", passphrase: nil)
        }
        // The name and cost fields are authenticated: editing them breaks the file.
        let renamed = text.replacingOccurrences(of: "auditor", with: "auditer")
        #expect(throws: CryptoError(.wrongPassphrase, "")) {
            try KeyFile.parseSecret(Array(renamed.utf8), source: "a.secret", passphrase: passphrase)
        }
    }

    @Test("A crafted cost is refused before Argon2id runs")
    func hostileCost() throws {
        let keys = try SecretKeys.generate(name: "x")
        let text = String(decoding: try KeyFile.secretFileContents(keys, passphrase: Array("pw".utf8), cost: .interactive), as: UTF8.self)
        var fields = text.dropLast().split(separator: " ").map(String.init)
        fields[5] = String(1 << 40)
        #expect(throws: CryptoError(.malformedKeyFile, "")) {
            try KeyFile.parseSecret(Array((fields.joined(separator: " ") + "\n").utf8), source: "x.secret", passphrase: Array("pw".utf8))
        }
    }

    @Test("Truncated files are refused with a one-line reason")
    func truncated() throws {
        let keys = try SecretKeys.generate(name: "t")
        let secret = try KeyFile.secretFileContents(keys, passphrase: nil)
        let pub = Array(KeyFile.publicText(keys.publicKeys).utf8)
        for cut in [secret.count - 5, secret.count / 2, 30] {
            #expect(throws: CryptoError(.malformedKeyFile, "")) {
                try KeyFile.parseSecret(Array(secret.prefix(cut)), source: "t.secret", passphrase: nil)
            }
        }
        for cut in [pub.count - 5, pub.count / 2, 30] {
            #expect(throws: CryptoError(.malformedKeyFile, "")) {
                try KeyFile.parsePublic(Array(pub.prefix(cut)), source: "t.pub")
            }
        }
    }

    @Test("A file of the wrong kind is named as such")
    func wrongKind() throws {
        let keys = try SecretKeys.generate(name: "k")
        let secret = try KeyFile.secretFileContents(keys, passphrase: nil)
        let pub = Array(KeyFile.publicText(keys.publicKeys).utf8)
        #expect(throws: CryptoError(.wrongKeyKind, "")) { try KeyFile.parsePublic(secret, source: "k.secret") }
        #expect(throws: CryptoError(.wrongKeyKind, "")) { try KeyFile.parseSecret(pub, source: "k.pub", passphrase: nil) }
        #expect(throws: CryptoError(.wrongKeyKind, "")) { try KeyFile.parsePublic(EnvelopeFormat.magic + [1, 2], source: "e") }
        #expect(throws: CryptoError(.wrongKeyKind, "")) { try KeyFile.parsePublic([0xff, 0xfe, 0], source: "bin") }
    }

    @Test("An edited key id or key is detected")
    func keyIDMismatch() throws {
        let a = try SecretKeys.generate(name: "a")
        let b = try SecretKeys.generate(name: "b")
        let forged = KeyFile.publicText(a.publicKeys).replacingOccurrences(of: a.keyID.hex, with: b.keyID.hex)
        #expect(throws: CryptoError(.keyIDMismatch, "")) { try KeyFile.parsePublic(Array(forged.utf8), source: "a.pub") }
    }

    @Test("Names are restricted so the one-line form stays unambiguous", arguments: ["", "has space", "-lead", String(repeating: "a", count: 65), "tab\tname", "ünï"])
    func badNames(name: String) {
        #expect(throws: CryptoError(.invalidArgument, "")) { try SecretKeys.generate(name: name) }
    }

    @Test("Key id is the documented truncated SHA-256")
    func keyIDDerivation() throws {
        let signing = [UInt8](repeating: 1, count: 32)
        let encryption = [UInt8](repeating: 2, count: 32)
        let expected = Hex.encode(SHA256Hasher.hash(Array("civitas-key-id/1".utf8) + [0] + signing + encryption).prefix(16))
        #expect(KeyID(signingKey: signing, encryptionKey: encryption).hex == expected)
    }
}
