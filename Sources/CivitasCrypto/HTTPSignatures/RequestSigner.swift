/// Signs outgoing requests the way the broker requires: Content-Digest (RFC 9530) of the body,
/// and an RFC 9421 signature covering @method, @target-uri and content-digest with created,
/// a fresh nonce, the participant's key id and alg="ed25519".
public enum RequestSigner {
    /// Header fields to add to a request (Content-Digest, Signature-Input, Signature).
    public static func headers(method: String, targetURI: String, body: [UInt8], key: SecretKeys,
                               created: Int64, nonce: String? = nil,
                               extraHeaders: [(name: String, value: String)] = []) throws -> [(name: String, value: String)] {
        try headers(method: method, targetURI: targetURI, bodySHA256: SHA256Hasher.hash(body), key: key, created: created,
                    nonce: nonce, extraHeaders: extraHeaders)
    }

    /// The same header fields for a body known by its SHA-256 (a file streamed to the broker).
    public static func headers(method: String, targetURI: String, bodySHA256: [UInt8], key: SecretKeys,
                               created: Int64, nonce: String? = nil,
                               extraHeaders: [(name: String, value: String)] = []) throws -> [(name: String, value: String)] {
        let digest = ContentDigest.header(sha256: bodySHA256)
        let parameters = SignatureParameters(components: ["@method", "@target-uri", "content-digest"], created: created,
                                             nonce: nonce ?? Hex.encode(Sodium.randomBytes(16)),
                                             keyID: key.keyID.hex, algorithm: "ed25519")
        let request = SignedRequest(method: method, targetURI: targetURI, headers: extraHeaders + [("Content-Digest", digest)])
        let (input, signature) = try HTTPMessageSignature.sign(request, parameters: parameters, label: "sig1", key: key)
        return [("Content-Digest", digest), ("Signature-Input", input), ("Signature", signature)]
    }
}
