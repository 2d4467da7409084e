/// The Content-Digest field of RFC 9530 with the `sha-256` algorithm.
public enum ContentDigest {
    /// `sha-256=:BASE64(SHA-256(body)):`
    public static func header(for body: [UInt8]) -> String {
        header(sha256: SHA256Hasher.hash(body))
    }

    /// The field for a body whose SHA-256 was computed elsewhere (a body streamed from a file).
    public static func header(sha256 digest: [UInt8]) -> String {
        "sha-256=:\(Base64.encode(digest)):"
    }

    /// Whether a Content-Digest field value carries a `sha-256` digest equal to the body's.
    /// Other algorithms in the field are ignored; a field without `sha-256` does not match.
    public static func matches(_ field: String, body: [UInt8]) -> Bool {
        matches(field, sha256: SHA256Hasher.hash(body))
    }

    /// Whether a Content-Digest field value carries this `sha-256` digest (a body hashed as it streamed in).
    public static func matches(_ field: String, sha256 expected: [UInt8]) -> Bool {
        for member in field.split(separator: ",") {
            let trimmed = member.trimmingWhitespace()
            guard trimmed.hasPrefix("sha-256=:"), trimmed.hasSuffix(":"), trimmed.count > 10 else { continue }
            let encoded = trimmed.dropFirst(9).dropLast()
            if let digest = Base64.decode(String(encoded)), Sodium.constantTimeEqual(digest, expected) { return true }
        }
        return false
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars = scalars.dropFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars = scalars.dropLast() }
        return String(scalars)
    }
}
