import CivitasBroker
import CivitasCrypto
import CivitasModel
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOSSL

/// Authenticates every request with an HTTP Message Signature (RFC 9421, Ed25519) by a
/// registered participant. The signature must cover `@method`, `@target-uri` and
/// `content-digest` (RFC 9530, checked against the body), carry `created` within the
/// allowed skew, a nonce of 1 to 256 bytes not seen before from that key, `keyid` = the
/// participant's key id, and `alg="ed25519"`. Everything that needs no body is checked before a
/// byte of the body is read, so an unauthenticated request costs no memory; the body is then
/// read within the shared ``SharedAllowance``, or, for the requests `spools` names (CSV batch
/// uploads, read a block at a time), streamed to a temporary file and hashed on the way, so that
/// memory does not grow with the body. Missing or bad signatures get 401.
struct SignatureAuthenticator: RouterMiddleware {
    typealias Context = CivitasRequestContext
    let broker: Broker
    let clock: @Sendable () -> Int64
    /// What the signed `@target-uri` starts with (the public URL, no trailing slash); nil: `scheme`
    /// and the request's Host.
    let origin: String?
    /// The scheme the broker listens with.
    let scheme: String
    let bodies: SharedAllowance
    /// The disk all spooled bodies may take together.
    let spooledBytes: SharedAllowance
    /// Whether a request's body goes to a temporary file rather than memory.
    let spools: @Sendable (Request) -> Bool
    /// Whether every request must come over TLS with a client certificate for the key that signs it.
    let clientCertificates: Bool
    static let allowedSkew: Int64 = 300
    static let requiredComponents: Set<String> = ["@method", "@target-uri", "content-digest"]
    /// Bytes a spooled body counts against the shared budget: the network buffer in hand.
    static let spoolBufferShare = 1 << 20
    /// Longest nonce accepted, in bytes.
    static let maximumNonceLength = 256

    /// The Ed25519 public key of the TLS client certificate the connection presented (already
    /// verified against the client CA by the TLS handshake), if any.
    static func clientCertificateKey(_ channel: any Channel) async throws -> [UInt8]? {
        let spki: [UInt8]? = try await channel.eventLoop.submit {
            guard let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
                  let certificate = handler.peerCertificate else { return nil }
            return try certificate.extractPublicKey().toSPKIBytes()
        }.get()
        // RFC 8410: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (the 32-byte key) }.
        let prefix: [UInt8] = [0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00]
        guard let spki, spki.count == prefix.count + 32, Array(spki.prefix(prefix.count)) == prefix else { return nil }
        return Array(spki.suffix(32))
    }

    /// The key id a request's signature names, read without verifying it.
    static func keyID(of signed: SignedRequest) -> String? {
        guard let input = signed.field("signature-input"), let range = input.range(of: "keyid=\"") else { return nil }
        let rest = input[range.upperBound...]
        return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
    }

    /// The one of `origins` a request's signature verifies for, when it does not verify for this broker's URL.
    static func signedAuthority(of signed: SignedRequest, among origins: [String], pathAndQuery: String,
                                key: @Sendable (String) -> [UInt8]?) -> String? {
        origins.first(where: { origin in
            let elsewhere = SignedRequest(method: signed.method, targetURI: origin + pathAndQuery, headers: signed.headers)
            return (try? HTTPMessageSignature.verify(elsewhere, publicKey: key)) != nil
        })
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let authority = request.head.authority ?? "localhost"
        let pathAndQuery = "\(request.uri.path)\(request.uri.query.map { "?\($0)" } ?? "")"
        let headers = request.headers.map { ($0.name.canonicalName, $0.value) }
        let signedOrigin = origin ?? "\(scheme)://\(authority)"
        let signed = SignedRequest(method: request.method.rawValue, targetURI: signedOrigin + pathAndQuery, headers: headers)
        guard signed.field("signature-input") != nil, signed.field("signature") != nil else {
            throw APIError.unauthorized("the request is not signed: Signature and Signature-Input headers are required (RFC 9421)")
        }
        guard let digest = signed.field("content-digest") else { throw APIError.unauthorized("Content-Digest is missing") }
        let checked = UTCTime(secondsSince1970: clock())
        let signingKey: @Sendable (String) -> [UInt8]? = { [broker] keyID in
            guard let id = KeyID(hex: keyID), let signer = try? broker.signer(id, now: checked) else { return nil }
            return signer.key.signingKey
        }
        let verified: HTTPMessageSignature.Verified
        do {
            verified = try HTTPMessageSignature.verify(signed, publicKey: signingKey)
        } catch let failure as HTTPMessageSignature.Failure {
            // A signature over another broker's URL, or over this one's address instead of its public URL, says so.
            let elsewhere = ["https://\(authority)", "http://\(authority)"].filter { $0 != signedOrigin }
            if let other = Self.signedAuthority(of: signed, among: elsewhere, pathAndQuery: pathAndQuery, key: signingKey) {
                throw APIError.unauthorized("the request was signed for \(other), not for this broker's URL \(signedOrigin)")
            }
            if failure.code == .unknownKey {
                // A retired key, or one whose rotation awaits approval, is named as such.
                if let keyID = Self.keyID(of: signed).flatMap(KeyID.init(hex:)) {
                    do { _ = try broker.signer(keyID, now: checked) } catch let error as BrokerError { throw APIError.unauthorized(error.message) }
                }
                throw APIError.unauthorized("\(failure.message) to this broker: ask its operator to register your public key (civitas participants add --role ROLE YOUR.pub)")
            }
            throw APIError.unauthorized("signature refused: \(failure.message)")
        }
        let parameters = verified.parameters
        guard Self.requiredComponents.isSubset(of: Set(parameters.components)) else {
            throw APIError.unauthorized("the signature must cover @method, @target-uri and content-digest")
        }
        guard parameters.algorithm == "ed25519" else { throw APIError.unauthorized("the signature must declare alg=\"ed25519\"") }
        let now = clock()
        guard let created = parameters.created, abs(now - created) <= Self.allowedSkew else {
            throw APIError.unauthorized("the signature's created time is missing or more than \(Self.allowedSkew) s away from the server's clock")
        }
        if let expires = parameters.expires, expires < now { throw APIError.unauthorized("the signature has expired") }
        guard let nonce = parameters.nonce, (1...Self.maximumNonceLength).contains(nonce.utf8.count) else {
            throw APIError.unauthorized("the signature must carry a nonce of 1 to \(Self.maximumNonceLength) bytes")
        }
        let signer: Signer
        do {
            guard let keyID = parameters.keyID, let id = KeyID(hex: keyID), let found = try broker.signer(id, now: checked) else {
                throw APIError.unauthorized("the signature must carry the participant's key id")
            }
            signer = found
        } catch let error as BrokerError {
            throw APIError.unauthorized(error.message)
        }
        let (participant, id) = (signer.participant, signer.key.keyID)
        if clientCertificates {
            guard let certified = try await Self.clientCertificateKey(context.channel) else {
                throw APIError.unauthorized("this broker takes requests only with a TLS client certificate for the key that signs them (civitas --client-cert/--client-key)")
            }
            guard certified == signer.key.signingKey else {
                throw APIError.unauthorized("the TLS client certificate is for another key than \(signer.key.keyID), which signed the request")
            }
        }
        do {
            try await broker.acceptNonce(nonce, keyID: id, created: created, oldestAccepted: now - Self.allowedSkew)
        } catch let error as BrokerError {
            throw APIError.unauthorized(error.message)
        }
        // Authenticated: now the body, declared size first, within the bytes all requests may hold.
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > context.maxUploadSize {
            throw APIError(.contentTooLarge, "too_large", "the body is larger than \(context.maxUploadSize) bytes")
        }
        let spooling = spools(request)
        // A spooled body holds one network buffer at a time; others are held whole. A request with
        // neither Content-Length nor Transfer-Encoding has no body (RFC 9112, section 6.3) and holds nothing.
        let framed = declared != nil || request.headers[.transferEncoding] != nil
        let share = spooling ? Self.spoolBufferShare : declared ?? (framed ? context.maxUploadSize : 0)
        guard bodies.reserve(share) else {
            throw APIError(.serviceUnavailable, "busy", "the broker is receiving as much as it holds at once; retry shortly",
                           headers: [.retryAfter: "1"])
        }
        defer { bodies.release(share) }
        // A spooled body reserves its disk until the request is answered (the file lives as long).
        let disk = spooling ? declared ?? context.maxUploadSize : 0
        guard disk == 0 || spooledBytes.reserve(disk) else {
            throw APIError(.serviceUnavailable, "busy", "the broker is spooling as many uploads as it holds on disk at once; retry shortly",
                           headers: [.retryAfter: "1"])
        }
        defer { if disk > 0 { spooledBytes.release(disk) } }
        let expected: [UInt8]
        if spooling {
            let spool = try SpooledBody()
            let hasher = try SHA256Hasher()
            for try await buffer in request.body {
                guard spool.count + buffer.readableBytes <= disk else {
                    throw APIError(.contentTooLarge, "too_large", "the body is larger than \(disk) bytes")
                }
                try buffer.withUnsafeReadableBytes { bytes in
                    hasher.update(bytes)
                    try spool.append(bytes)
                }
            }
            expected = hasher.finish()
            context.spooled = spool
        } else {
            let buffer = try await request.body.collect(upTo: min(share, context.maxUploadSize))
            context.body = Array(buffer.readableBytesView)
            expected = SHA256Hasher.hash(context.body)
        }
        guard ContentDigest.matches(digest, sha256: expected) else {
            throw APIError.unauthorized("Content-Digest does not match the body")
        }
        context.bodySHA256 = expected
        context.participant = participant
        context.signingKey = signer.key.keyID
        context.logger[metadataKey: "participant"] = .string(participant.keys.keyID.hex)
        return try await next(request, context)
    }
}
