internal import CSodium
import Foundation

/// Seals a payload for one recipient: encrypts it in secretstream chunks
/// under a fresh key sealed to the recipient's X25519 key, hashes the
/// ciphertext, and signs the manifest with the issuer's Ed25519 key.
/// Memory stays flat for any payload size.
public struct EnvelopeSealer: Sendable {
    /// The issuer's secret keys (signs the manifest).
    public let issuer: SecretKeys
    /// The recipient's public keys (the stream key is sealed to its X25519 key).
    public let recipient: PublicKeys
    /// Media type recorded in the manifest.
    public var contentType: String
    /// Open metadata recorded in the manifest.
    public var metadata: [String: JSONValue]
    /// Plaintext bytes per chunk; nil chooses ``EnvelopeFormat/automaticChunkSize(payloadLength:)``.
    public var chunkSize: Int?

    public init(issuer: SecretKeys, recipient: PublicKeys, contentType: String = "application/octet-stream",
                metadata: [String: JSONValue] = [:], chunkSize: Int? = nil) {
        self.issuer = issuer
        self.recipient = recipient
        self.contentType = contentType
        self.metadata = metadata
        self.chunkSize = chunkSize
    }

    /// Formats a time as the manifest's `created` form (RFC 3339, UTC, whole seconds).
    public static func timestamp(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    /// Reads exactly `payloadLength` bytes from `source` and writes the envelope to `sink`.
    /// Throws ``CryptoError`` if the source holds fewer or more bytes, or on any I/O failure.
    /// Returns the signed manifest and its signature.
    @discardableResult
    public func seal(from source: ByteSource, payloadLength: UInt64, to sink: EnvelopeSink,
                     created: Date = Date()) throws -> EnvelopeSummary {
        try Sodium.ensureInitialised()
        let chunkSize = self.chunkSize ?? EnvelopeFormat.automaticChunkSize(payloadLength: payloadLength)
        var manifest = EnvelopeManifest(
            issuer: issuer.keyID, recipient: recipient.keyID, contentType: contentType,
            payloadLength: payloadLength, chunkSize: chunkSize, created: Self.timestamp(created),
            keyCommitment: [UInt8](repeating: 0, count: 32), ciphertextSHA256: [UInt8](repeating: 0, count: 32),
            metadata: metadata)
        try manifest.validate()
        // The manifest's length does not depend on the digests, so its space is reserved now
        // and filled in once the ciphertext hash is known.
        let placeholder = try manifest.canonicalBytes()
        guard placeholder.count <= EnvelopeFormat.maximumManifestLength else {
            throw CryptoError(.invalidManifest, "manifest would be \(placeholder.count) bytes, above the limit of \(EnvelopeFormat.maximumManifestLength); reduce the metadata")
        }
        var prefix = EnvelopeFormat.magic
        prefix += withUnsafeBytes(of: UInt32(placeholder.count).bigEndian, Array.init)
        prefix += [UInt8](repeating: 0, count: placeholder.count + Ed25519.signatureLength)
        try prefix.withUnsafeBytes { try sink.write($0) }

        // Fresh stream key, sealed to the recipient.
        let (stream, header) = try StreamCipher.push()
        var sealedKey = [UInt8](repeating: 0, count: EnvelopeFormat.sealedKeyLength)
        let sealStatus = stream.withKey { key, length in
            crypto_box_seal(&sealedKey, key, UInt64(length), recipient.encryptionKey)
        }
        guard sealStatus == 0 else {
            throw CryptoError(.invalidArgument, "the recipient's X25519 key \(recipient.keyID) cannot be sealed to")
        }
        let keyAndHeader = sealedKey + header
        manifest.keyCommitment = SHA256Hasher.hash(keyAndHeader)
        let hasher = try SHA256Hasher()
        hasher.update(keyAndHeader)
        try keyAndHeader.withUnsafeBytes { try sink.write($0) }

        // Pipeline: this thread reads and encrypts batch after batch; the worker
        // hashes and writes each one behind it.
        let associated = EnvelopeFormat.chunkAssociatedData(
            issuer: issuer.keyID, recipient: recipient.keyID, payloadLength: payloadLength, chunkSize: chunkSize)
        let plan = BatchPlan(payloadLength: payloadLength, chunkSize: chunkSize)
        let ring = PipelineRing(plan: plan)
        defer { ring.close() }
        var chunkIndex: UInt64 = 0
        for batch in 0..<plan.batchCount {
            let slot = try ring.slot(forBatch: batch)
            let range = plan.plainRange(ofBatch: batch)
            let want = Int(range.upperBound - range.lowerBound)
            let got = try source.read(into: UnsafeMutableRawBufferPointer(start: slot.plain.pointer, count: want))
            guard got == want else {
                throw CryptoError(.io, "the input ended after \(range.lowerBound + UInt64(got)) of \(payloadLength) bytes")
            }
            slot.plain.count = got
            let plainBase = slot.plain.pointer.assumingMemoryBound(to: UInt8.self)
            let cipherBase = slot.cipher.pointer.assumingMemoryBound(to: UInt8.self)
            var consumed = 0
            slot.cipher.count = 0
            repeat {
                let length = min(chunkSize, slot.plain.count - consumed)
                chunkIndex += 1
                guard let written = stream.push(plainBase + consumed, length: length, into: cipherBase + slot.cipher.count,
                                                associatedData: associated, final: chunkIndex == plan.chunkCount) else {
                    throw CryptoError(.libraryUnavailable, "secretstream push failed")
                }
                consumed += length
                slot.cipher.count += written
            } while consumed < slot.plain.count
            slot.pending = ring.worker.submit {
                hasher.update(slot.cipher.filled)
                try sink.write(slot.cipher.filled)
            }
        }
        try ring.worker.finish()
        var probe: UInt8 = 0
        let extra = try withUnsafeMutableBytes(of: &probe) { try source.read(into: $0) }
        guard extra == 0 else {
            throw CryptoError(.io, "the input holds more than the \(payloadLength) bytes announced")
        }

        manifest.ciphertextSHA256 = hasher.finish()
        let manifestBytes = try manifest.canonicalBytes()
        guard manifestBytes.count == placeholder.count else {
            throw CryptoError(.invalidManifest, "manifest length changed while sealing")
        }
        let signature = issuer.sign(EnvelopeFormat.signatureContext + manifestBytes)
        try sink.overwrite(at: UInt64(EnvelopeFormat.manifestOffset), with: manifestBytes + signature)
        return EnvelopeSummary(manifest: manifest, signature: signature, ciphertextSHA256: manifest.ciphertextSHA256)
    }

    /// Seals an in-memory payload and returns the envelope bytes.
    public func seal(_ payload: [UInt8], created: Date = Date()) throws -> [UInt8] {
        let sink = MemorySink()
        try seal(from: MemorySource(payload), payloadLength: UInt64(payload.count), to: sink, created: created)
        return sink.bytes
    }
}
