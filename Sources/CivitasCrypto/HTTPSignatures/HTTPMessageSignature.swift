/// An HTTP request as the signature covers it.
public struct SignedRequest: Sendable {
    public var method: String
    /// The target URI, e.g. `https://broker.example:8443/datasets?x=1`.
    public var targetURI: String
    /// Header fields in order; names compare case-insensitively.
    public var headers: [(name: String, value: String)]

    public init(method: String, targetURI: String, headers: [(name: String, value: String)]) {
        self.method = method
        self.targetURI = targetURI
        self.headers = headers
    }

    /// All values of a header field, combined as RFC 9421 §2.1 says (trimmed, joined by ", ").
    public func field(_ name: String) -> String? {
        let values = headers.filter { Self.sameName($0.name, name) }.map { $0.value.trimmingWhitespace() }
        return values.isEmpty ? nil : values.joined(separator: ", ")
    }

    /// Whether two field names are the same, ignoring ASCII case (names are ASCII tokens), without
    /// making lower-case copies (every signed request looks several fields up).
    static func sameName(_ a: String, _ b: String) -> Bool {
        var left = a.utf8.makeIterator(), right = b.utf8.makeIterator()
        while true {
            switch (left.next(), right.next()) {
            case (nil, nil): return true
            case (let x?, let y?):
                let lowerX = x >= 0x41 && x <= 0x5A ? x | 0x20 : x, lowerY = y >= 0x41 && y <= 0x5A ? y | 0x20 : y
                if lowerX != lowerY { return false }
            default: return false
            }
        }
    }

    var uriParts: (scheme: String, authority: String, path: String, query: String?)? {
        guard let schemeEnd = targetURI.range(of: "://") else { return nil }
        let scheme = String(targetURI[..<schemeEnd.lowerBound]).lowercased()
        let rest = targetURI[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        var authority = String(rest[..<authorityEnd]).lowercased()
        if (scheme == "https" && authority.hasSuffix(":443")) || (scheme == "http" && authority.hasSuffix(":80")) {
            authority = String(authority[..<(authority.lastIndex(of: ":") ?? authority.endIndex)])
        }
        let pathAndQuery = rest[authorityEnd...]
        let queryStart = pathAndQuery.firstIndex(of: "?")
        var path = String(pathAndQuery[..<(queryStart ?? pathAndQuery.endIndex)])
        if path.isEmpty { path = "/" }
        let query = queryStart.map { String(pathAndQuery[$0...]) }
        return (scheme, authority, path, query)
    }
}

/// The parameters of one signature: which components it covers and its metadata.
public struct SignatureParameters: Sendable, Equatable {
    public var components: [String]
    public var created: Int64?
    public var expires: Int64?
    public var nonce: String?
    public var keyID: String?
    public var algorithm: String?
    public var tag: String?
    /// The order the parameters are serialized in. The signature base must repeat the order the
    /// signer used (RFC 9421 §2.3), so a parsed Signature-Input keeps its own order.
    public var order: [String] = ["created", "expires", "nonce", "keyid", "alg", "tag"]

    public init(components: [String], created: Int64? = nil, expires: Int64? = nil, nonce: String? = nil,
                keyID: String? = nil, algorithm: String? = nil, tag: String? = nil) {
        self.components = components
        self.created = created
        self.expires = expires
        self.nonce = nonce
        self.keyID = keyID
        self.algorithm = algorithm
        self.tag = tag
    }

    /// The structured-field serialization used in Signature-Input and in the signature base.
    public var serialized: String {
        var text = "(" + components.map { "\"\($0)\"" }.joined(separator: " ") + ")"
        for name in order {
            switch name {
            case "created": if let created { text += ";created=\(created)" }
            case "expires": if let expires { text += ";expires=\(expires)" }
            case "nonce": if let nonce { text += ";nonce=\"\(nonce)\"" }
            case "keyid": if let keyID { text += ";keyid=\"\(keyID)\"" }
            case "alg": if let algorithm { text += ";alg=\"\(algorithm)\"" }
            case "tag": if let tag { text += ";tag=\"\(tag)\"" }
            default: break
            }
        }
        return text
    }
}

/// HTTP Message Signatures (RFC 9421) for requests, with Ed25519.
public enum HTTPMessageSignature {
    /// Why a signature was refused.
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public enum Code: String, Sendable {
            case missing, malformed, unknownKey, badSignature, stale, replayed, notCovered, digestMismatch
        }
        public let code: Code
        public let message: String
        public init(_ code: Code, _ message: String) {
            self.code = code
            self.message = message
        }
        public var description: String { message }
        public static func == (lhs: Failure, rhs: Failure) -> Bool { lhs.code == rhs.code }
    }

    /// The signature base (RFC 9421 §2.5) of `request` for these parameters.
    public static func signatureBase(_ request: SignedRequest, parameters: SignatureParameters) throws -> String {
        var lines: [String] = []
        var seen = Set<String>()
        for component in parameters.components {
            guard seen.insert(component).inserted else {
                throw Failure(.malformed, "component \(component) is listed twice")
            }
            lines.append("\"\(component)\": \(try value(of: component, in: request))")
        }
        lines.append("\"@signature-params\": \(parameters.serialized)")
        return lines.joined(separator: "\n")
    }

    private static func value(of component: String, in request: SignedRequest) throws -> String {
        guard component.hasPrefix("@") else {
            guard let value = request.field(component) else {
                throw Failure(.notCovered, "the signature covers header '\(component)', which the request does not have")
            }
            return value
        }
        guard let parts = request.uriParts else { throw Failure(.malformed, "the target URI is not absolute") }
        switch component {
        case "@method": return request.method
        case "@target-uri": return request.targetURI
        case "@authority": return parts.authority
        case "@scheme": return parts.scheme
        case "@path": return parts.path
        case "@query": return parts.query ?? "?"
        case "@request-target": return parts.path + (parts.query ?? "")
        default: throw Failure(.malformed, "unsupported derived component \(component)")
        }
    }

    /// Signs the request; returns the Signature-Input and Signature field values for `label`.
    public static func sign(_ request: SignedRequest, parameters: SignatureParameters, label: String = "sig1",
                            key: SecretKeys) throws -> (signatureInput: String, signature: String) {
        let base = try signatureBase(request, parameters: parameters)
        let signature = key.sign(Array(base.utf8))
        return ("\(label)=\(parameters.serialized)", "\(label)=:\(Base64.encode(signature)):")
    }

    /// A verified signature.
    public struct Verified: Sendable {
        public let label: String
        public let parameters: SignatureParameters
    }

    /// Parses Signature-Input and Signature, and verifies the signature under `label` (or the only one)
    /// with the Ed25519 public key `publicKey(keyid)` returns. Throws ``Failure`` for anything wrong.
    public static func verify(_ request: SignedRequest, label wanted: String? = nil,
                              publicKey: (String) -> [UInt8]?) throws -> Verified {
        guard let inputField = request.field("signature-input"), let signatureField = request.field("signature") else {
            throw Failure(.missing, "the request carries no Signature-Input and Signature")
        }
        let inputs = try StructuredFields.signatureInputs(inputField)
        let signatures = try StructuredFields.signatures(signatureField)
        let label: String
        if let wanted { label = wanted } else {
            guard inputs.count == 1, let only = inputs.first?.label else {
                throw Failure(.malformed, "expected exactly one signature, found \(inputs.count)")
            }
            label = only
        }
        guard let parameters = inputs.first(where: { $0.label == label })?.parameters,
              let signature = signatures[label] else {
            throw Failure(.missing, "no signature labelled \(label)")
        }
        guard let keyID = parameters.keyID, let key = publicKey(keyID) else {
            throw Failure(.unknownKey, "the signing key \(parameters.keyID ?? "(none)") is not known")
        }
        if let algorithm = parameters.algorithm, algorithm != "ed25519" {
            throw Failure(.malformed, "algorithm \(algorithm) is not ed25519")
        }
        let base = try signatureBase(request, parameters: parameters)
        guard Ed25519.isValidSignature(signature, for: Array(base.utf8), publicKey: key) else {
            throw Failure(.badSignature, "the signature does not verify with key \(keyID)")
        }
        return Verified(label: label, parameters: parameters)
    }
}
