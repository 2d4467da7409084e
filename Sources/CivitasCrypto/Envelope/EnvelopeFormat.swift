internal import CSodium

/// Fixed values of the envelope byte format, version 1 (docs/envelope-format.md).
///
///     magic "civenv1\n" (8) | manifest length, u32 big-endian (4) | manifest (canonical JSON)
///     | Ed25519 signature (64) | sealed stream key (80) | secretstream header (24) | chunks
public enum EnvelopeFormat {
    /// The first eight bytes of every envelope.
    public static let magic: [UInt8] = Array("civenv1\n".utf8)
    /// The `format` member of every version-1 manifest.
    public static let formatName = "civitas-envelope/1"
    /// Bytes signed before the manifest, so a manifest signature means nothing in another protocol.
    public static let signatureContext: [UInt8] = Array("civitas-envelope/1 manifest\n".utf8)
    /// Allowed plaintext bytes per chunk. The upper bound caps what a reader allocates.
    public static let chunkSizeRange = 1024...(4 * 1024 * 1024)

    /// The chunk size a sealer uses unless told otherwise: 64 KiB below 16 MiB of
    /// payload (so small payloads still spread over both cores), 1 MiB above
    /// (fewer per-chunk costs; secretstream runs about 10% faster).
    public static func automaticChunkSize(payloadLength: UInt64) -> Int {
        payloadLength < 16 << 20 ? 64 * 1024 : 1024 * 1024
    }
    /// The largest manifest accepted.
    public static let maximumManifestLength = 64 * 1024
    /// The largest payload accepted (2^50 bytes, far below secretstream's limits).
    public static let maximumPayloadLength: UInt64 = 1 << 50
    /// Offset of the manifest in the envelope.
    static let manifestOffset = 12

    /// Length of an X25519 sealed stream key: 32-byte key plus crypto_box_seal overhead (48).
    public static var sealedKeyLength: Int { Int(crypto_secretstream_xchacha20poly1305_keybytes() + crypto_box_sealbytes()) }
    /// Length of the secretstream header.
    public static var streamHeaderLength: Int { Int(crypto_secretstream_xchacha20poly1305_headerbytes()) }
    /// Bytes each chunk's ciphertext adds to its plaintext (tag byte and Poly1305 MAC).
    public static var chunkOverhead: Int { Int(crypto_secretstream_xchacha20poly1305_abytes()) }

    /// Number of chunks for a payload: at least one (an empty payload is one empty final chunk).
    public static func chunkCount(payloadLength: UInt64, chunkSize: Int) -> UInt64 {
        payloadLength == 0 ? 1 : (payloadLength + UInt64(chunkSize) - 1) / UInt64(chunkSize)
    }

    /// Length of everything after the signature: sealed key, stream header and all chunks.
    public static func bodyLength(payloadLength: UInt64, chunkSize: Int) -> UInt64 {
        UInt64(sealedKeyLength + streamHeaderLength) + payloadLength
            + chunkCount(payloadLength: payloadLength, chunkSize: chunkSize) * UInt64(chunkOverhead)
    }

    /// The associated data authenticated with every chunk, binding the ciphertext to its issuer,
    /// recipient and shape: ASCII `civitas-envelope/1 issuer=HEX recipient=HEX payload_length=N chunk_size=N`.
    public static func chunkAssociatedData(issuer: KeyID, recipient: KeyID, payloadLength: UInt64, chunkSize: Int) -> [UInt8] {
        Array("\(formatName) issuer=\(issuer.hex) recipient=\(recipient.hex) payload_length=\(payloadLength) chunk_size=\(chunkSize)".utf8)
    }
}
