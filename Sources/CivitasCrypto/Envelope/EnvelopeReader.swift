internal import CSodium

/// The signed front of an envelope: its manifest, the exact bytes signed, and the signature.
public struct EnvelopeHeader: Sendable {
    /// The parsed manifest.
    public let manifest: EnvelopeManifest
    /// The canonical manifest bytes as they appear in the envelope.
    public let manifestBytes: [UInt8]
    /// The issuer's Ed25519 signature over the context string and the manifest bytes.
    public let signature: [UInt8]

    /// Reads magic, manifest and signature from the front of `source`.
    public static func read(from source: ByteSource) throws -> EnvelopeHeader {
        let start = try readExactly(12, from: source, what: "the envelope header", allowShort: true)
        guard start.count >= EnvelopeFormat.magic.count, start.starts(with: EnvelopeFormat.magic) else {
            if start.starts(with: Array("civitas-".utf8)) {
                throw CryptoError(.notAnEnvelope, "this is a key file, not an envelope")
            }
            throw CryptoError(.notAnEnvelope, "not a Civitas envelope (the first bytes are not the envelope magic)")
        }
        guard start.count == 12 else { throw CryptoError(.truncated, "truncated envelope: it ends inside the header") }
        let length = Int(start[8]) << 24 | Int(start[9]) << 16 | Int(start[10]) << 8 | Int(start[11])
        guard length > 0, length <= EnvelopeFormat.maximumManifestLength else {
            throw CryptoError(.invalidManifest, "manifest length \(length) is outside 1...\(EnvelopeFormat.maximumManifestLength)")
        }
        let manifestBytes = try readExactly(length, from: source, what: "the manifest")
        let signature = try readExactly(Ed25519.signatureLength, from: source, what: "the manifest signature")
        let manifest = try EnvelopeManifest.parse(manifestBytes)
        return EnvelopeHeader(manifest: manifest, manifestBytes: manifestBytes, signature: signature)
    }

    /// Checks that `issuer` is the manifest's issuer and that its signature verifies.
    public func verifySignature(issuer: PublicKeys) throws {
        guard manifest.issuer == issuer.keyID else {
            throw CryptoError(.wrongIssuer, "the envelope was issued by key \(manifest.issuer), not by \(issuer.name) (\(issuer.keyID))")
        }
        guard issuer.isValidSignature(signature, for: EnvelopeFormat.signatureContext + manifestBytes) else {
            throw CryptoError(.badSignature, "the manifest signature does not verify with \(issuer.name)'s key \(issuer.keyID)")
        }
    }

    static func readExactly(_ count: Int, from source: ByteSource, what: String, allowShort: Bool = false) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let got = try bytes.withUnsafeMutableBytes { try source.read(into: $0) }
        if got < count {
            guard allowShort else { throw CryptoError(.truncated, "truncated envelope: it ends inside \(what)") }
            bytes.removeLast(count - got)
        }
        return bytes
    }
}

/// An envelope's signed manifest, its signature and its ciphertext hash: what
/// sealing produced, or what verifying or opening established.
public struct EnvelopeSummary: Sendable {
    /// The manifest.
    public let manifest: EnvelopeManifest
    /// The manifest signature.
    public let signature: [UInt8]
    /// The SHA-256 of the ciphertext, equal to the manifest's.
    public let ciphertextSHA256: [UInt8]

    public init(manifest: EnvelopeManifest, signature: [UInt8], ciphertextSHA256: [UInt8]) {
        self.manifest = manifest
        self.signature = signature
        self.ciphertextSHA256 = ciphertextSHA256
    }
}

/// Checks an envelope without decrypting it, as an auditor does: the
/// manifest is canonical and signed by the issuer, and the ciphertext has
/// exactly the length and SHA-256 the manifest states.
public enum EnvelopeVerifier {
    /// Verifies the envelope read from `source` against the issuer's public keys.
    public static func verify(_ source: ByteSource, issuer: PublicKeys) throws -> EnvelopeSummary {
        let header = try EnvelopeHeader.read(from: source)
        try header.verifySignature(issuer: issuer)
        let manifest = header.manifest
        let expectedLength = EnvelopeFormat.bodyLength(payloadLength: manifest.payloadLength, chunkSize: manifest.chunkSize)
        let hasher = try SHA256Hasher()
        let buffer = PipelineBuffer.take(capacity: 1 << 20)
        defer { PipelineBuffer.recycle(buffer) }
        var remaining = expectedLength
        while remaining > 0 {
            let want = Int(min(UInt64(buffer.capacity), remaining))
            let got = try source.read(into: UnsafeMutableRawBufferPointer(start: buffer.pointer, count: want))
            buffer.count = got
            hasher.update(buffer.filled)
            remaining -= UInt64(got)
            guard got == want else {
                throw CryptoError(.truncated, "truncated envelope: the ciphertext is \(expectedLength - remaining) bytes, the manifest states \(expectedLength)")
            }
        }
        try expectEnd(of: source)
        let digest = hasher.finish()
        guard Sodium.constantTimeEqual(digest, manifest.ciphertextSHA256) else {
            throw CryptoError(.ciphertextHashMismatch,
                              "ciphertext SHA-256 is \(Hex.encode(digest)), the manifest states \(Hex.encode(manifest.ciphertextSHA256))")
        }
        return EnvelopeSummary(manifest: manifest, signature: header.signature, ciphertextSHA256: digest)
    }

    static func expectEnd(of source: ByteSource) throws {
        var probe: UInt8 = 0
        let extra = try withUnsafeMutableBytes(of: &probe) { try source.read(into: $0) }
        guard extra == 0 else {
            throw CryptoError(.trailingData, "the envelope has bytes after its final chunk")
        }
    }
}

/// Opens an envelope as its recipient: verifies the issuer's signature and
/// key commitment first, then decrypts chunk by chunk, so each chunk written
/// out is authentic; the ciphertext hash is checked at the end.
public struct EnvelopeOpener: Sendable {
    /// The recipient's secret keys.
    public let recipient: SecretKeys
    /// The issuer's public keys.
    public let issuer: PublicKeys

    public init(recipient: SecretKeys, issuer: PublicKeys) {
        self.recipient = recipient
        self.issuer = issuer
    }

    /// Opens the envelope read from `source`, writing the payload to `sink`.
    /// On any failure the sink may hold a partial payload: callers writing to
    /// files write to a temporary file and keep it only on success.
    @discardableResult
    public func open(_ source: ByteSource, to sink: ByteSink) throws -> EnvelopeSummary {
        let header = try EnvelopeHeader.read(from: source)
        try header.verifySignature(issuer: issuer)
        let manifest = header.manifest
        guard manifest.recipient == recipient.keyID else {
            throw CryptoError(.wrongRecipient, "the envelope is addressed to key \(manifest.recipient), not to \(recipient.publicKeys.name) (\(recipient.keyID))")
        }
        let sealedKey = try EnvelopeHeader.readExactly(EnvelopeFormat.sealedKeyLength, from: source, what: "the sealed key")
        let streamHeader = try EnvelopeHeader.readExactly(EnvelopeFormat.streamHeaderLength, from: source, what: "the stream header")
        let keyAndHeader = sealedKey + streamHeader
        guard Sodium.constantTimeEqual(SHA256Hasher.hash(keyAndHeader), manifest.keyCommitment) else {
            throw CryptoError(.keyCommitmentMismatch, "the sealed key or stream header does not match the manifest's key_commitment")
        }
        let opened = try StreamCipher.pull(header: streamHeader) { key, length in
            recipient.openSealed(sealedKey, into: key, capacity: length)
        }
        guard let stream = opened else {
            throw CryptoError(.sealedKeyRejected, "the sealed stream key does not open with \(recipient.publicKeys.name)'s key")
        }

        let hasher = try SHA256Hasher()
        hasher.update(keyAndHeader)
        let associated = EnvelopeFormat.chunkAssociatedData(
            issuer: manifest.issuer, recipient: manifest.recipient,
            payloadLength: manifest.payloadLength, chunkSize: manifest.chunkSize)
        // Pipeline: this thread reads, decrypts and writes batch after batch; the
        // worker hashes each batch's ciphertext beside it.
        let plan = BatchPlan(payloadLength: manifest.payloadLength, chunkSize: manifest.chunkSize)
        let ring = PipelineRing(plan: plan)
        defer { ring.close() }
        for batch in 0..<plan.batchCount {
            let slot = try ring.slot(forBatch: batch)
            let (firstChunk, lengths) = plan.cipherChunkLengths(ofBatch: batch)
            let want = lengths.reduce(0, +)
            slot.cipher.count = try source.read(into: UnsafeMutableRawBufferPointer(start: slot.cipher.pointer, count: want))
            slot.pending = ring.worker.submit { hasher.update(slot.cipher.filled) }
            let cipherBase = slot.cipher.pointer.assumingMemoryBound(to: UInt8.self)
            let plainBase = slot.plain.pointer.assumingMemoryBound(to: UInt8.self)
            var offset = 0
            slot.plain.count = 0
            for (index, length) in lengths.enumerated() {
                let number = firstChunk + UInt64(index)
                guard offset + length <= slot.cipher.count else {
                    throw CryptoError(.truncated, "truncated envelope: it ends inside chunk \(number) of \(plan.chunkCount)")
                }
                guard let (plainLength, tag) = stream.pull(cipherBase + offset, length: length,
                                                           into: plainBase + slot.plain.count, associatedData: associated) else {
                    throw CryptoError(.chunkRejected, "chunk \(number) of \(plan.chunkCount) failed authentication (tampered, reordered, dropped, or moved from another envelope)")
                }
                let isLast = number == plan.chunkCount
                guard (tag == StreamCipher.finalTag) == isLast else {
                    throw CryptoError(.chunkRejected, isLast
                        ? "chunk \(number) of \(plan.chunkCount) should end the stream but is not marked final"
                        : "chunk \(number) of \(plan.chunkCount) is marked final: the stream was cut short")
                }
                offset += length
                slot.plain.count += plainLength
            }
            try sink.write(slot.plain.filled)
        }
        try ring.worker.finish()
        try EnvelopeVerifier.expectEnd(of: source)
        let digest = hasher.finish()
        guard Sodium.constantTimeEqual(digest, manifest.ciphertextSHA256) else {
            throw CryptoError(.ciphertextHashMismatch,
                              "ciphertext SHA-256 is \(Hex.encode(digest)), the manifest states \(Hex.encode(manifest.ciphertextSHA256))")
        }
        return EnvelopeSummary(manifest: manifest, signature: header.signature, ciphertextSHA256: digest)
    }

    /// Opens an in-memory envelope and returns the payload.
    public func open(_ envelope: [UInt8]) throws -> (payload: [UInt8], envelope: EnvelopeSummary) {
        let sink = MemorySink()
        let verified = try open(MemorySource(envelope), to: sink)
        return (sink.bytes, verified)
    }
}
