import Foundation
import Testing
@testable import CivitasCrypto

/// The worked example of docs/envelope-format.md, built by the independent
/// PyNaCl implementation in Tests/Oracles and recorded in Tests/Vectors.
@Suite("Envelope format worked example")
struct EnvelopeVectorTests {
    struct Vector: Decodable {
        struct Party: Decodable {
            let name: String
            let key_id: String
            let ed25519_public_hex: String
            let x25519_public_hex: String
        }
        let issuer: Party
        let recipient: Party
        let payload_utf8: String
        let envelope_hex: String
    }

    static func load() throws -> Vector {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Vectors/envelope-v1-example.json")
        return try JSONDecoder().decode(Vector.self, from: Data(contentsOf: url))
    }

    /// Example keys: Ed25519 seed and X25519 secret are SHA-256 of public strings.
    static func exampleKeys(_ name: String) throws -> SecretKeys {
        var material = SHA256Hasher.hash(Array("civitas example \(name) ed25519".utf8))
            + SHA256Hasher.hash(Array("civitas example \(name) x25519".utf8))
        return try SecretKeys(name: name, material: ProtectedBytes.taking(&material))
    }

    @Test("Derived example keys match the recorded public keys and key ids")
    func keys() throws {
        let vector = try Self.load()
        for party in [vector.issuer, vector.recipient] {
            let keys = try Self.exampleKeys(party.name)
            #expect(keys.keyID.hex == party.key_id)
            #expect(Hex.encode(keys.publicKeys.signingKey) == party.ed25519_public_hex)
            #expect(Hex.encode(keys.publicKeys.encryptionKey) == party.x25519_public_hex)
        }
    }

    @Test("Civitas verifies and opens the envelope PyNaCl built")
    func openExample() throws {
        let vector = try Self.load()
        let issuer = try Self.exampleKeys("issuer")
        let recipient = try Self.exampleKeys("recipient")
        let envelope = try #require(Hex.decode(vector.envelope_hex))
        let verified = try EnvelopeVerifier.verify(MemorySource(envelope), issuer: issuer.publicKeys)
        #expect(verified.manifest.created == "2026-11-26T12:00:00Z")
        #expect(verified.manifest.metadata["agreement"] == "example-agreement")
        let (payload, _) = try EnvelopeOpener(recipient: recipient, issuer: issuer.publicKeys).open(envelope)
        #expect(payload == Array(vector.payload_utf8.utf8))
    }
}
