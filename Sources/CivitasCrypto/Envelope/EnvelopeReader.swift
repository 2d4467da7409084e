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

/// What a successful verification or opening established.
public struct VerifiedEnvelope: Sendable {
    /// The manifest, whose signature verified.
    public let manifest: EnvelopeManifest
    /// The manifest signature.
    public let signature: [UInt8]
    /// The SHA-256 computed over the ciphertext, equal to the manifest's.
    public let ciphertextSHA256: [UInt8]
}

/// Checks an envelope without decrypting it, as an auditor does: the
/// manifest is canonical and signed by the issuer, and the ciphertext has
/// exactly the length and SHA-256 the manifest states.
public enum EnvelopeVerifier {
    /// Verifies the envelope read from `source` against the issuer's public keys.
    public static func verify(_ source: ByteSource, issuer: PublicKeys) throws -> VerifiedEnvelope {
        let header = try EnvelopeHeader.read(from: source)
        try header.verifySignature(issuer: issuer)
        let manifest = header.manifest
        let expectedLength = EnvelopeFormat.bodyLength(payloadLength: manifest.payloadLength, chunkSize: manifest.chunkSize)
        let hasher = try SHA256Hasher()
        let buffer = PipelineBuffer(capacity: 1 << 20)
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
        return VerifiedEnvelope(manifest: manifest, signature: header.signature, ciphertextSHA256: digest)
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
    public func open(_ source: ByteSource, to sink: ByteSink) throws -> VerifiedEnvelope {
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
        let streamKey = try SecretBytes(count: Int(crypto_secretstream_xchacha20poly1305_keybytes()))
        guard recipient.openSealed(sealedKey, into: streamKey) else {
            throw CryptoError(.sealedKeyRejected, "the sealed stream key does not open with \(recipient.publicKeys.name)'s key")
        }
        let state = try SecretBytes(count: Int(crypto_secretstream_xchacha20poly1305_statebytes()))
        let initStatus = state.withPointer(to: crypto_secretstream_xchacha20poly1305_state.self) { st in
            streamKey.withUnsafeUInt8Pointer { key in
                crypto_secretstream_xchacha20poly1305_init_pull(st, streamHeader, key)
            }
        }
        guard initStatus == 0 else { throw CryptoError(.chunkRejected, "the stream header is invalid") }

        let hasher = try SHA256Hasher()
        hasher.update(keyAndHeader)
        let associated = EnvelopeFormat.chunkAssociatedData(
            issuer: manifest.issuer, recipient: manifest.recipient,
            payloadLength: manifest.payloadLength, chunkSize: manifest.chunkSize)
        let chunkSize = manifest.chunkSize
        let chunkCount = EnvelopeFormat.chunkCount(payloadLength: manifest.payloadLength, chunkSize: chunkSize)
        let overhead = EnvelopeFormat.chunkOverhead
        let chunksPerBatch = max(1, (256 * 1024) / chunkSize)
        let depth = 3
        let stage = BackgroundStage(depth: depth)
        let batches = (0..<depth).map { _ in PipelineBuffer(capacity: chunksPerBatch * (chunkSize + overhead)) }
        let plain = PipelineBuffer(capacity: chunkSize)
        let finalTag = UInt8(crypto_secretstream_xchacha20poly1305_tag_final())
        var remaining = manifest.payloadLength
        var chunkIndex: UInt64 = 0
        var batchIndex = 0
        do {
            while chunkIndex < chunkCount {
                try stage.reserveSlot()
                var submitted = false
                defer { if !submitted { stage.releaseReservation() } }
                let batch = batches[batchIndex % depth]
                batchIndex += 1
                // Sizes of this batch's chunks follow from the manifest.
                var sizes: [Int] = []
                var plannedRemaining = remaining
                while sizes.count < chunksPerBatch && chunkIndex + UInt64(sizes.count) < chunkCount {
                    let size = Int(min(UInt64(chunkSize), plannedRemaining))
                    sizes.append(size + overhead)
                    plannedRemaining -= UInt64(size)
                }
                let want = sizes.reduce(0, +)
                let got = try source.read(into: UnsafeMutableRawBufferPointer(start: batch.pointer, count: want))
                batch.count = got
                submitted = true
                stage.submit { hasher.update(batch.filled) }
                var offset = 0
                for size in sizes {
                    let number = chunkIndex + 1
                    guard offset + size <= got else {
                        throw CryptoError(.truncated, "truncated envelope: it ends inside chunk \(number) of \(chunkCount)")
                    }
                    var plainLength: UInt64 = 0
                    var tag: UInt8 = 0
                    let status = state.withPointer(to: crypto_secretstream_xchacha20poly1305_state.self) { st in
                        crypto_secretstream_xchacha20poly1305_pull(
                            st, plain.pointer.assumingMemoryBound(to: UInt8.self), &plainLength, &tag,
                            batch.pointer.advanced(by: offset).assumingMemoryBound(to: UInt8.self), UInt64(size),
                            associated, UInt64(associated.count))
                    }
                    guard status == 0 else {
                        throw CryptoError(.chunkRejected, "chunk \(number) of \(chunkCount) failed authentication (tampered, reordered, dropped, or moved from another envelope)")
                    }
                    let isLast = number == chunkCount
                    guard (tag == finalTag) == isLast else {
                        throw CryptoError(.chunkRejected, isLast
                            ? "chunk \(number) of \(chunkCount) should end the stream but is not marked final"
                            : "chunk \(number) of \(chunkCount) is marked final: the stream was cut short")
                    }
                    plain.count = Int(plainLength)
                    try sink.write(plain.filled)
                    offset += size
                    remaining -= plainLength
                    chunkIndex += 1
                }
            }
            try stage.drain()
        } catch {
            try? stage.drain()
            throw error
        }
        try EnvelopeVerifier.expectEnd(of: source)
        let digest = hasher.finish()
        guard Sodium.constantTimeEqual(digest, manifest.ciphertextSHA256) else {
            throw CryptoError(.ciphertextHashMismatch,
                              "ciphertext SHA-256 is \(Hex.encode(digest)), the manifest states \(Hex.encode(manifest.ciphertextSHA256))")
        }
        return VerifiedEnvelope(manifest: manifest, signature: header.signature, ciphertextSHA256: digest)
    }

    /// Opens an in-memory envelope and returns the payload.
    public func open(_ envelope: [UInt8]) throws -> (payload: [UInt8], envelope: VerifiedEnvelope) {
        let sink = MemorySink()
        let verified = try open(MemorySource(envelope), to: sink)
        return (sink.bytes, verified)
    }
}
