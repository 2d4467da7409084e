/// The small part of Structured Field Values (RFC 8941) that Signature-Input and
/// Signature use: a dictionary of inner lists of strings with parameters, and of byte sequences.
enum StructuredFields {
    typealias Failure = HTTPMessageSignature.Failure

    struct Scanner {
        let chars: [Character]
        var index = 0
        init(_ text: String) { chars = Array(text) }
        var atEnd: Bool { index >= chars.count }
        var current: Character? { atEnd ? nil : chars[index] }
        mutating func skipSpaces() { while current == " " || current == "\t" { index += 1 } }
        mutating func expect(_ character: Character) throws {
            guard current == character else { throw Failure(.malformed, "expected '\(character)' in a signature field") }
            index += 1
        }
        mutating func key() throws -> String {
            var key = ""
            while let c = current, c.isLowercase || c.isNumber || c == "_" || c == "-" || c == "." || c == "*" {
                key.append(c)
                index += 1
            }
            guard !key.isEmpty, key.first?.isLowercase == true || key.first == "*" else {
                throw Failure(.malformed, "a signature label or parameter name is malformed")
            }
            return key
        }
        mutating func string() throws -> String {
            try expect("\"")
            var value = ""
            while let c = current, c != "\"" {
                if c == "\\" {
                    index += 1
                    guard let escaped = current, escaped == "\"" || escaped == "\\" else {
                        throw Failure(.malformed, "bad escape in a signature field string")
                    }
                    value.append(escaped)
                } else {
                    guard c.isASCII, let ascii = c.asciiValue, ascii >= 0x20, ascii < 0x7F else {
                        throw Failure(.malformed, "a signature field string holds a non-printable character")
                    }
                    value.append(c)
                }
                index += 1
            }
            try expect("\"")
            return value
        }
        mutating func integer() throws -> Int64 {
            var text = ""
            if current == "-" { text.append("-"); index += 1 }
            while let c = current, c.isNumber, c.isASCII { text.append(c); index += 1 }
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
                if scanner.current == ")" { scanner.index += 1; break }
                components.append(try scanner.string())
                guard components.count <= 32 else { throw Failure(.malformed, "too many covered components") }
            }
            var parameters = SignatureParameters(components: components)
            parameters.order = []
            while scanner.current == ";" {
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
            var encoded = ""
            while let c = scanner.current, c != ":" { encoded.append(c); scanner.index += 1 }
            try scanner.expect(":")
            guard let bytes = Base64.decode(encoded) else { throw Failure(.malformed, "signature \(label) is not base64") }
            result[label] = bytes
            scanner.skipSpaces()
            if scanner.atEnd { return result }
            try scanner.expect(",")
        }
    }
}
