/// The small part of Structured Field Values (RFC 8941) that Signature-Input and
/// Signature use: a dictionary of inner lists of strings with parameters, and of byte sequences.
enum StructuredFields {
    typealias Failure = HTTPMessageSignature.Failure

    /// Reads a field's bytes front to back. Structured fields are ASCII (RFC 8941): any other
    /// byte is refused where it matters.
    struct Scanner {
        let bytes: [UInt8]
        var index = 0
        init(_ text: String) { bytes = Array(text.utf8) }
        var atEnd: Bool { index >= bytes.count }
        var current: UInt8? { atEnd ? nil : bytes[index] }
        static func isLower(_ byte: UInt8) -> Bool { byte >= 0x61 && byte <= 0x7A }
        static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
        mutating func skipSpaces() { while current == 0x20 || current == 0x09 { index += 1 } }
        mutating func expect(_ character: Unicode.Scalar) throws {
            guard current == UInt8(ascii: character) else { throw Failure(.malformed, "expected '\(character)' in a signature field") }
            index += 1
        }
        /// A key: lcalpha or `*`, then lcalpha, digits, `_ - . *`.
        mutating func key() throws -> String {
            let start = index
            while let c = current, Self.isLower(c) || Self.isDigit(c) || c == 0x5F || c == 0x2D || c == 0x2E || c == 0x2A { index += 1 }
            guard index > start, Self.isLower(bytes[start]) || bytes[start] == 0x2A else {
                throw Failure(.malformed, "a signature label or parameter name is malformed")
            }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }
        /// A quoted string of printable ASCII, `\"` and `\\` escaped.
        mutating func string() throws -> String {
            try expect("\"")
            var value: [UInt8] = []
            while let c = current, c != 0x22 {
                if c == 0x5C {
                    index += 1
                    guard let escaped = current, escaped == 0x22 || escaped == 0x5C else {
                        throw Failure(.malformed, "bad escape in a signature field string")
                    }
                    value.append(escaped)
                } else {
                    guard c >= 0x20, c < 0x7F else { throw Failure(.malformed, "a signature field string holds a non-printable character") }
                    value.append(c)
                }
                index += 1
            }
            try expect("\"")
            return String(decoding: value, as: UTF8.self)
        }
        mutating func integer() throws -> Int64 {
            let start = index
            if current == 0x2D { index += 1 }
            while let c = current, Self.isDigit(c) { index += 1 }
            let text = String(decoding: bytes[start..<index], as: UTF8.self)
            guard let value = Int64(text), text.count <= 16 else { throw Failure(.malformed, "a signature parameter is not an integer") }
            return value
        }
    }

    /// `label=("c1" "c2");created=…;keyid="…", …`
    static func signatureInputs(_ field: String) throws -> [(label: String, parameters: SignatureParameters)] {
        var scanner = Scanner(field)
        var result: [(String, SignatureParameters)] = []
        while true {
            scanner.skipSpaces()
            let label = try scanner.key()
            try scanner.expect("=")
            try scanner.expect("(")
            var components: [String] = []
            while true {
                scanner.skipSpaces()
                if scanner.current == 0x29 { scanner.index += 1; break }
                components.append(try scanner.string())
                guard components.count <= 32 else { throw Failure(.malformed, "too many covered components") }
            }
            var parameters = SignatureParameters(components: components)
            parameters.order = []
            while scanner.current == 0x3B {
                scanner.index += 1
                let name = try scanner.key()
                try scanner.expect("=")
                guard !parameters.order.contains(name) else { throw Failure(.malformed, "signature parameter '\(name)' appears twice") }
                parameters.order.append(name)
                switch name {
                case "created": parameters.created = try scanner.integer()
                case "expires": parameters.expires = try scanner.integer()
                case "nonce": parameters.nonce = try scanner.string()
                case "keyid": parameters.keyID = try scanner.string()
                case "alg": parameters.algorithm = try scanner.string()
                case "tag": parameters.tag = try scanner.string()
                default: throw Failure(.malformed, "unknown signature parameter '\(name)'")
                }
            }
            result.append((label, parameters))
            scanner.skipSpaces()
            if scanner.atEnd { return result }
            try scanner.expect(",")
        }
    }

    /// `label=:BASE64:, …`
    static func signatures(_ field: String) throws -> [String: [UInt8]] {
        var scanner = Scanner(field)
        var result: [String: [UInt8]] = [:]
        while true {
            scanner.skipSpaces()
            let label = try scanner.key()
            try scanner.expect("=")
            try scanner.expect(":")
            let start = scanner.index
            while let c = scanner.current, c != 0x3A { scanner.index += 1 }
            let encoded = String(decoding: scanner.bytes[start..<scanner.index], as: UTF8.self)
            try scanner.expect(":")
            guard let bytes = Base64.decode(encoded) else { throw Failure(.malformed, "signature \(label) is not base64") }
            result[label] = bytes
            scanner.skipSpaces()
            if scanner.atEnd { return result }
            try scanner.expect(",")
        }
    }
}
