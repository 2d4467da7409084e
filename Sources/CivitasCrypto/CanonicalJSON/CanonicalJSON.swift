/// The JSON Canonicalization Scheme (RFC 8785): the one byte string that
/// every signed Civitas object is hashed and signed as.
public enum CanonicalJSON {
    /// The canonical UTF-8 bytes of `value`.
    /// Throws ``CryptoError/Code/notCanonicalizable`` for NaN or infinite numbers.
    public static func encode(_ value: JSONValue) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        try write(value, to: &out)
        return out
    }

    /// Parses JSON text and returns its canonical form.
    public static func canonicalize(_ text: [UInt8]) throws -> [UInt8] {
        try encode(JSONParser.parse(text))
    }

    private static func write(_ value: JSONValue, to out: inout [UInt8]) throws {
        switch value {
        case .null: out.append(contentsOf: Array("null".utf8))
        case .bool(let b): out.append(contentsOf: Array((b ? "true" : "false").utf8))
        case .number(let n): out.append(contentsOf: Array(try ECMAScriptNumber.format(n).utf8))
        case .string(let s): writeString(s, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                try write(element, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            // RFC 8785 section 3.2.3: member names sorted by their UTF-16 code units.
            let sorted = members.sorted { $0.key.utf16.lexicographicallyPrecedes($1.key.utf16) }
            for (i, member) in sorted.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeString(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                try write(member.value, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Appends the canonical form of a string (RFC 8785 section 3.2.2.2: ECMAScript's
    /// JSON.stringify form, in quotes), for writers that lay out a fixed shape themselves.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        writeString(s, to: &out)
    }

    /// Appends the canonical form of an array of strings: the same bytes as
    /// `encode(.array(strings.map(JSONValue.string)))`, without building the values.
    public static func appendStringArray(_ strings: [String], to out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (index, string) in strings.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            writeString(string, to: &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    /// RFC 8785 section 3.2.2.2: the ECMAScript JSON.stringify string form.
    private static func writeString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Fast path: nothing to escape (scanned over the string's contiguous UTF-8).
        var text = s
        let plain = text.withUTF8 { bytes -> Bool in
            guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else { return false }
            out.append(contentsOf: bytes)
            return true
        }
        if plain {
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in s.utf8 {
            switch byte {
            case 0x22: out.append(contentsOf: [0x5C, 0x22])
            case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x00..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Number to text as ECMAScript's Number.prototype.toString does (ECMA-262
/// section 6.1.6.1.20), which RFC 8785 section 3.2.2.3 requires.
public enum ECMAScriptNumber {
    /// The ECMAScript text of a finite double; throws for NaN and infinities.
    public static func format(_ value: Double) throws -> String {
        guard value.isFinite else {
            throw CryptoError(.notCanonicalizable, "\(value) cannot be written as canonical JSON (RFC 8785 forbids NaN and infinities)")
        }
        if value == 0 { return "0" }
        // Integers below 2^53 print as themselves (the common case: sizes, counts, indexes).
        if value.magnitude < 9_007_199_254_740_992, value == value.rounded(.towardZero) {
            return String(Int64(value))
        }
        let (digits, exponent) = shortestDigits(abs(value))
        let sign = value < 0 ? "-" : ""
        // value = 0.d1d2...dk × 10^n, following ECMA-262's k and n.
        let k = digits.count
        let n = exponent
        if k <= n && n <= 21 {
            return sign + digits + String(repeating: "0", count: n - k)
        }
        if 0 < n && n <= 21 {
            return sign + digits.prefix(n) + "." + digits.dropFirst(n)
        }
        if -6 < n && n <= 0 {
            return sign + "0." + String(repeating: "0", count: -n) + digits
        }
        let e = n - 1
        let exponentText = e >= 0 ? "+\(e)" : "\(e)"
        if k == 1 { return sign + digits + "e" + exponentText }
        return sign + digits.prefix(1) + "." + digits.dropFirst(1) + "e" + exponentText
    }

    /// The shortest decimal digits that round-trip to `value` (> 0), and the
    /// exponent n with value = 0.digits × 10^n. Swift's description gives the
    /// shortest round-tripping, closest digits; this only re-reads its layout.
    static func shortestDigits(_ value: Double) -> (String, Int) {
        let text = value.description
        let parts = text.split(separator: "e", maxSplits: 1)
        let mantissa = parts[0]
        let exponent10 = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        let pieces = mantissa.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let integerPart = String(pieces[0])
        let fractionPart = pieces.count > 1 ? String(pieces[1]) : ""
        var digits = integerPart + fractionPart
        var pointPosition = integerPart.count + exponent10
        while digits.hasPrefix("0") && digits.count > 1 {
            digits.removeFirst()
            pointPosition -= 1
        }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        return (digits, pointPosition)
    }
}
