import Foundation
import Testing
@testable import CivitasCrypto

/// Keys shared by the envelope tests (generation is cheap, but one set keeps failures readable).
private struct Parties {
    let issuer: SecretKeys
    let recipient: SecretKeys
    let stranger: SecretKeys

    init() throws {
        issuer = try SecretKeys.generate(name: "emergency-services")
        recipient = try SecretKeys.generate(name: "health")
        stranger = try SecretKeys.generate(name: "stranger")
    }

    func seal(_ payload: [UInt8], chunkSize: Int = 1024, metadata: [String: JSONValue] = [:]) throws -> [UInt8] {
        try EnvelopeSealer(issuer: issuer, recipient: recipient.publicKeys, contentType: "text/csv",
                           metadata: metadata, chunkSize: chunkSize).seal(payload)
    }

    func open(_ envelope: [UInt8]) throws -> [UInt8] {
        try EnvelopeOpener(recipient: recipient, issuer: issuer.publicKeys).open(envelope).payload
    }

    func verify(_ envelope: [UInt8]) throws -> EnvelopeSummary {
        try EnvelopeVerifier.verify(MemorySource(envelope), issuer: issuer.publicKeys)
    }
}

/// Where each part of an envelope lies.
private struct Layout {
    let manifestLength: Int
    let signatureStart: Int
    let sealedKeyStart: Int
    let streamHeaderStart: Int
    let chunkStarts: [Int]
    let end: Int

    init(_ envelope: [UInt8], payloadLength: Int, chunkSize: Int) {
        manifestLength = Int(envelope[8]) << 24 | Int(envelope[9]) << 16 | Int(envelope[10]) << 8 | Int(envelope[11])
        signatureStart = 12 + manifestLength
        sealedKeyStart = signatureStart + 64
        streamHeaderStart = sealedKeyStart + 80
        var starts: [Int] = []
        var offset = streamHeaderStart + 24
        var remaining = payloadLength
        repeat {
            starts.append(offset)
            let size = min(chunkSize, remaining)
            offset += size + 17
            remaining -= size
        } while remaining > 0
        chunkStarts = starts
        end = offset
    }
}

private func payload(_ count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
}

@Suite("Envelope")
struct EnvelopeTests {
    @Test("Round trip at chunk boundaries", arguments: [0, 1, 1023, 1024, 1025, 4096, 10_000, 300_000])
    func roundTrip(size: Int) throws {
        let parties = try Parties()
        let data = payload(size)
        let envelope = try parties.seal(data, metadata: ["agreement": "a-1", "epsilon": 0.5])
        let layout = Layout(envelope, payloadLength: size, chunkSize: 1024)
        #expect(layout.end == envelope.count)
        #expect(try parties.open(envelope) == data)
        let verified = try parties.verify(envelope)
        #expect(verified.manifest.payloadLength == UInt64(size))
        #expect(verified.manifest.metadata["agreement"] == "a-1")
        #expect(verified.manifest.issuer == parties.issuer.keyID)
        #expect(verified.manifest.recipient == parties.recipient.keyID)
    }

    @Test("Manifest is canonical JSON with every documented member")
    func manifestShape() throws {
        let parties = try Parties()
        let envelope = try parties.seal(payload(10))
        let layout = Layout(envelope, payloadLength: 10, chunkSize: 1024)
        let manifestBytes = Array(envelope[12..<layout.signatureStart])
        #expect(try CanonicalJSON.canonicalize(manifestBytes) == manifestBytes)
        let value = try JSONParser.parse(manifestBytes)
        for member in ["format", "issuer", "recipient", "content_type", "payload_length", "chunk_size",
                       "created", "key_commitment", "ciphertext_sha256", "metadata"] {
            #expect(value[member] != nil, "missing \(member)")
        }
        let body = Array(envelope[layout.sealedKeyStart...])
        #expect(value["ciphertext_sha256"]?.stringValue == Hex.encode(SHA256Hasher.hash(body)))
    }

    @Test("Every single-bit flip, in every part, is rejected by open and by verify")
    func bitFlips() throws {
        let parties = try Parties()
        let size = 3000
        let envelope = try parties.seal(payload(size))
        let layout = Layout(envelope, payloadLength: size, chunkSize: 1024)
        var positions = [0, 7, 8, 11, 12, 13, layout.signatureStart - 1, layout.signatureStart, layout.sealedKeyStart - 1,
                         layout.sealedKeyStart, layout.streamHeaderStart - 1, layout.streamHeaderStart,
                         layout.chunkStarts[0] - 1, envelope.count - 1]
        for start in layout.chunkStarts { positions += [start, start + 1, start + 100] }
        // And a sweep through the manifest, one position in every 7.
        positions += Array(stride(from: 12, to: layout.signatureStart, by: 7))
        for position in Set(positions) {
            for bit in [0, 7] {
                var mutated = envelope
                mutated[position] ^= UInt8(1 << bit)
                #expect(throws: CryptoError.self, "open accepted a flip at byte \(position)") { try parties.open(mutated) }
                #expect(throws: CryptoError.self, "verify accepted a flip at byte \(position)") { try parties.verify(mutated) }
            }
        }
    }

    @Test("Truncation anywhere is rejected")
    func truncation() throws {
        let parties = try Parties()
        let envelope = try parties.seal(payload(2500))
        let layout = Layout(envelope, payloadLength: 2500, chunkSize: 1024)
        let cuts = [0, 5, 12, 40, layout.signatureStart + 10, layout.sealedKeyStart + 3, layout.streamHeaderStart + 5,
                    layout.chunkStarts[1], layout.chunkStarts[2], layout.chunkStarts[2] + 10, envelope.count - 1]
        for cut in cuts {
            let truncated = Array(envelope.prefix(cut))
            #expect(throws: CryptoError.self, "open accepted a cut at \(cut)") { try parties.open(truncated) }
            #expect(throws: CryptoError.self, "verify accepted a cut at \(cut)") { try parties.verify(truncated) }
        }
        // Cutting exactly at a chunk boundary is named as truncation.
        #expect(throws: CryptoError(.truncated, "")) { try parties.open(Array(envelope.prefix(layout.chunkStarts[2]))) }
        #expect(throws: CryptoError(.trailingData, "")) { try parties.open(envelope + [0]) }
        #expect(throws: CryptoError(.trailingData, "")) { try parties.verify(envelope + [0]) }
    }

    @Test("Dropped, reordered and duplicated chunks are rejected")
    func chunkSurgery() throws {
        let parties = try Parties()
        let size = 4096   // four full chunks of 1024
        let envelope = try parties.seal(payload(size))
        let layout = Layout(envelope, payloadLength: size, chunkSize: 1024)
        let head = Array(envelope[..<layout.chunkStarts[0]])
        let chunks = (0..<4).map { i in
            Array(envelope[layout.chunkStarts[i]..<(i + 1 < 4 ? layout.chunkStarts[i + 1] : envelope.count)])
        }
        let reordered = head + chunks[1] + chunks[0] + chunks[2] + chunks[3]
        let dropped = head + chunks[0] + chunks[2] + chunks[3]
        let duplicated = head + chunks[0] + chunks[0] + chunks[2] + chunks[3]
        let lastTwoSwapped = head + chunks[0] + chunks[1] + chunks[3] + chunks[2]
        for (name, mutated) in [("reordered", reordered), ("dropped", dropped), ("duplicated", duplicated), ("swapped last", lastTwoSwapped)] {
            #expect(throws: CryptoError.self, "open accepted \(name)") { try parties.open(mutated) }
            #expect(throws: CryptoError.self, "verify accepted \(name)") { try parties.verify(mutated) }
        }
        #expect(throws: CryptoError(.chunkRejected, "")) { try parties.open(reordered) }
        #expect(throws: CryptoError(.ciphertextHashMismatch, "")) { try parties.verify(reordered) }
    }

    @Test("A ciphertext cannot be moved under another manifest")
    func swappedManifest() throws {
        let parties = try Parties()
        let a = try parties.seal(payload(2000))
        let b = try parties.seal(payload(2000).reversed())
        let la = Layout(a, payloadLength: 2000, chunkSize: 1024)
        let lb = Layout(b, payloadLength: 2000, chunkSize: 1024)
        // B's signed manifest on A's ciphertext.
        let spliced = Array(b[..<lb.sealedKeyStart]) + Array(a[la.sealedKeyStart...])
        #expect(throws: CryptoError(.keyCommitmentMismatch, "")) { try parties.open(spliced) }
        #expect(throws: CryptoError(.ciphertextHashMismatch, "")) { try parties.verify(spliced) }
    }

    @Test("A thief who re-signs a stolen ciphertext under its own key cannot pass it off")
    func resignedByStranger() throws {
        let parties = try Parties()
        let original = try parties.seal(payload(1500))
        let header = try EnvelopeHeader.read(from: MemorySource(original))
        var forged = header.manifest
        forged.issuer = parties.stranger.keyID
        let forgedBytes = try forged.canonicalBytes()
        let signature = parties.stranger.sign(EnvelopeFormat.signatureContext + forgedBytes)
        let layout = Layout(original, payloadLength: 1500, chunkSize: 1024)
        let lengthBytes = withUnsafeBytes(of: UInt32(forgedBytes.count).bigEndian, Array.init)
        let envelope = EnvelopeFormat.magic + lengthBytes + forgedBytes + signature + Array(original[layout.sealedKeyStart...])
        // The stranger's signature and the ciphertext hash are fine, but the chunks are bound to the real issuer.
        _ = try EnvelopeVerifier.verify(MemorySource(envelope), issuer: parties.stranger.publicKeys)
        #expect(throws: CryptoError(.chunkRejected, "")) {
            try EnvelopeOpener(recipient: parties.recipient, issuer: parties.stranger.publicKeys).open(envelope)
        }
    }

    @Test("Wrong recipient, wrong issuer, bad signature and wrong kind are named")
    func namedFailures() throws {
        let parties = try Parties()
        let envelope = try parties.seal(payload(100))
        #expect(throws: CryptoError(.wrongRecipient, "")) {
            try EnvelopeOpener(recipient: parties.stranger, issuer: parties.issuer.publicKeys).open(envelope)
        }
        #expect(throws: CryptoError(.wrongIssuer, "")) {
            try EnvelopeOpener(recipient: parties.recipient, issuer: parties.stranger.publicKeys).open(envelope)
        }
        #expect(throws: CryptoError(.wrongIssuer, "")) {
            try EnvelopeVerifier.verify(MemorySource(envelope), issuer: parties.stranger.publicKeys)
        }
        var badSignature = envelope
        let layout = Layout(envelope, payloadLength: 100, chunkSize: 1024)
        badSignature[layout.signatureStart + 5] ^= 1
        #expect(throws: CryptoError(.badSignature, "")) { try parties.verify(badSignature) }
        #expect(throws: CryptoError(.notAnEnvelope, "")) {
            try parties.open(Array(KeyFile.publicText(parties.issuer.publicKeys).utf8))
        }
        #expect(throws: CryptoError(.notAnEnvelope, "")) { try parties.open(Array("hello world, not an envelope".utf8)) }
    }

    @Test("The sealer refuses input shorter or longer than announced")
    func lengthMismatch() throws {
        let parties = try Parties()
        let sealer = EnvelopeSealer(issuer: parties.issuer, recipient: parties.recipient.publicKeys, chunkSize: 1024)
        #expect(throws: CryptoError(.io, "")) {
            try sealer.seal(from: MemorySource(payload(100)), payloadLength: 200, to: MemorySink())
        }
        #expect(throws: CryptoError(.io, "")) {
            try sealer.seal(from: MemorySource(payload(300)), payloadLength: 200, to: MemorySink())
        }
    }

    @Test("Parameters are checked before sealing")
    func parameters() throws {
        let parties = try Parties()
        #expect(throws: CryptoError(.invalidManifest, "")) {
            try EnvelopeSealer(issuer: parties.issuer, recipient: parties.recipient.publicKeys, chunkSize: 10).seal([1])
        }
        #expect(throws: CryptoError(.invalidManifest, "")) {
            try EnvelopeSealer(issuer: parties.issuer, recipient: parties.recipient.publicKeys, contentType: "text/csv; x").seal([1])
        }
        #expect(throws: CryptoError(.notCanonicalizable, "")) {
            try EnvelopeSealer(issuer: parties.issuer, recipient: parties.recipient.publicKeys, metadata: ["x": .number(.nan)]).seal([1])
        }
    }

    @Test("A manifest that is valid JSON but not canonical is refused")
    func nonCanonicalManifest() throws {
        let parties = try Parties()
        let envelope = try parties.seal(payload(10))
        let header = try EnvelopeHeader.read(from: MemorySource(envelope))
        let spaced = Array(String(decoding: header.manifestBytes, as: UTF8.self).replacingOccurrences(of: ",", with: ", ").utf8)
        #expect(throws: CryptoError(.invalidManifest, "")) { try EnvelopeManifest.parse(spaced) }
    }
}
