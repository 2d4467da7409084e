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
    /// Plaintext bytes per chunk.
    public var chunkSize: Int

    public init(issuer: SecretKeys, recipient: PublicKeys, contentType: String = "application/octet-stream",
                metadata: [String: JSONValue] = [:], chunkSize: Int = EnvelopeFormat.defaultChunkSize) {
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
    /// Returns the signed manifest.
    @discardableResult
    public func seal(from source: ByteSource, payloadLength: UInt64, to sink: EnvelopeSink,
                     created: Date = Date()) throws -> EnvelopeManifest {
        try Sodium.ensureInitialised()
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
        let streamKey = try SecretBytes(count: Int(crypto_secretstream_xchacha20poly1305_keybytes()))
        streamKey.withUnsafeUInt8Pointer { crypto_secretstream_xchacha20poly1305_keygen($0) }
        var sealedKey = [UInt8](repeating: 0, count: EnvelopeFormat.sealedKeyLength)
        let sealStatus = streamKey.withUnsafeUInt8Pointer { key in
            crypto_box_seal(&sealedKey, key, UInt64(streamKey.count), recipient.encryptionKey)
        }
        guard sealStatus == 0 else {
            throw CryptoError(.invalidArgument, "the recipient's X25519 key \(recipient.keyID) cannot be sealed to")
        }
        let state = try SecretBytes(count: Int(crypto_secretstream_xchacha20poly1305_statebytes()))
        var header = [UInt8](repeating: 0, count: EnvelopeFormat.streamHeaderLength)
        let initStatus = state.withPointer(to: crypto_secretstream_xchacha20poly1305_state.self) { st in
            streamKey.withUnsafeUInt8Pointer { key in
                crypto_secretstream_xchacha20poly1305_init_push(st, &header, key)
            }
        }
        guard initStatus == 0 else { throw CryptoError(.libraryUnavailable, "secretstream could not start") }

        let keyAndHeader = sealedKey + header
        manifest.keyCommitment = SHA256Hasher.hash(keyAndHeader)
        let hasher = try SHA256Hasher()
        hasher.update(keyAndHeader)
        try keyAndHeader.withUnsafeBytes { try sink.write($0) }

        // Pipeline: this thread reads and encrypts a batch of chunks; the background
        // stage hashes and writes it.
        let associated = EnvelopeFormat.chunkAssociatedData(
            issuer: issuer.keyID, recipient: recipient.keyID, payloadLength: payloadLength, chunkSize: chunkSize)
        let chunkCount = EnvelopeFormat.chunkCount(payloadLength: payloadLength, chunkSize: chunkSize)
        let chunksPerBatch = max(1, (256 * 1024) / chunkSize)
        let depth = 3
        let stage = BackgroundStage(depth: depth)
        let plain = PipelineBuffer(capacity: chunkSize)
        let batches = (0..<depth).map { _ in
            PipelineBuffer(capacity: chunksPerBatch * (chunkSize + EnvelopeFormat.chunkOverhead))
        }
        var remaining = payloadLength
        var chunkIndex: UInt64 = 0
        var batchIndex = 0
        do {
            while chunkIndex < chunkCount {
                try stage.reserveSlot()
                var submitted = false
                defer { if !submitted { stage.releaseReservation() } }
                let batch = batches[batchIndex % depth]
                batchIndex += 1
                batch.count = 0
                var inBatch = 0
                while inBatch < chunksPerBatch && chunkIndex < chunkCount {
                    let want = Int(min(UInt64(chunkSize), remaining))
                    let got = try source.read(into: UnsafeMutableRawBufferPointer(start: plain.pointer, count: want))
                    guard got == want else {
                        throw CryptoError(.io, "the input ended after \(payloadLength - remaining + UInt64(got)) of \(payloadLength) bytes")
                    }
                    remaining -= UInt64(want)
                    chunkIndex += 1
                    let tag = chunkIndex == chunkCount
                        ? UInt8(crypto_secretstream_xchacha20poly1305_tag_final())
                        : UInt8(crypto_secretstream_xchacha20poly1305_tag_message())
                    var written: UInt64 = 0
                    let status = state.withPointer(to: crypto_secretstream_xchacha20poly1305_state.self) { st in
                        crypto_secretstream_xchacha20poly1305_push(
                            st, batch.pointer.advanced(by: batch.count).assumingMemoryBound(to: UInt8.self), &written,
                            plain.pointer.assumingMemoryBound(to: UInt8.self), UInt64(want),
                            associated, UInt64(associated.count), tag)
                    }
                    guard status == 0 else { throw CryptoError(.libraryUnavailable, "secretstream push failed") }
                    batch.count += Int(written)
                    inBatch += 1
                }
                submitted = true
                stage.submit {
                    hasher.update(batch.filled)
                    try sink.write(batch.filled)
                }
            }
            try stage.drain()
        } catch {
            try? stage.drain()
            throw error
        }
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
        return manifest
    }

    /// Seals an in-memory payload and returns the envelope bytes.
    public func seal(_ payload: [UInt8], created: Date = Date()) throws -> [UInt8] {
        let sink = MemorySink()
        try seal(from: MemorySource(payload), payloadLength: UInt64(payload.count), to: sink, created: created)
        return sink.bytes
    }
}
