internal import CSodium

/// Process-wide libsodium initialisation and the small primitives every
/// other part of the module uses: randomness, constant-time comparison,
/// hex and base64.
public enum Sodium {
    private static let initialised: Bool = sodium_init() >= 0

    /// Makes sure libsodium is initialised; throws if it cannot be.
    public static func ensureInitialised() throws {
        guard initialised else {
            throw CryptoError(.libraryUnavailable, "libsodium could not be initialised")
        }
    }

    /// `count` bytes from the operating system's CSPRNG (libsodium `randombytes_buf`).
    public static func randomBytes(_ count: Int) -> [UInt8] {
        _ = initialised
        var bytes = [UInt8](repeating: 0, count: count)
        randombytes_buf(&bytes, count)
        return bytes
    }

    /// Fills `buffer` from the operating system's CSPRNG (libsodium `randombytes_buf`).
    public static func fillRandom(_ buffer: UnsafeMutableRawBufferPointer) {
        _ = initialised
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        randombytes_buf(base, buffer.count)
    }

    /// Compares two byte strings in time that depends only on their lengths.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                guard pa.count == pb.count else { return false }
                if pa.count == 0 { return true }
                return sodium_memcmp(pa.baseAddress, pb.baseAddress, pa.count) == 0
            }
        }
    }

    /// Overwrites the bytes with zeros in a way the compiler cannot remove.
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { sodium_memzero($0.baseAddress, $0.count) }
    }
}

/// Lower-case hexadecimal encoding and decoding.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Lower-case hex of the bytes.
    public static func encode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes(encode(raw:))
    }

    /// Lower-case hex of the bytes.
    public static func encode(_ bytes: ArraySlice<UInt8>) -> String {
        bytes.withUnsafeBytes(encode(raw:))
    }

    /// Lower-case hex of the bytes.
    public static func encode(raw bytes: UnsafeRawBufferPointer) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        append(raw: bytes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Lower-case hex of the bytes.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the lower-case hex of the bytes to `out`.
    public static func append(_ bytes: [UInt8], to out: inout [UInt8]) {
        bytes.withUnsafeBytes { append(raw: $0, to: &out) }
    }

    /// Appends the lower-case hex of the bytes to `out`.
    public static func append(raw bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: bytes.count * 2))
        out.withUnsafeMutableBufferPointer { target in
            digits.withUnsafeBufferPointer { digits in
                var position = start
                for byte in bytes {
                    target[position] = digits[Int(byte >> 4)]
                    target[position + 1] = digits[Int(byte & 0x0f)]
                    position += 2
                }
            }
        }
    }

    /// Decodes lower- or upper-case hex; nil for odd length or a non-hex character.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = value(chars[index]), let low = value(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Standard base64 with padding (RFC 4648 section 4), strict on decode.
public enum Base64 {
    /// Encodes the bytes as standard, padded base64.
    public static func encode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { encode(raw: $0) }
    }

    static func encode(raw: UnsafeRawBufferPointer) -> String {
        var out: [UInt8] = []
        append(raw: raw, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The base64 of `bytes` as UTF-8 bytes (for secrets: wipe the result, it never becomes a String).
    public static func encodedBytes(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 4 / 3 + 8)
        bytes.withUnsafeBytes { append(raw: $0, to: &out) }
        return out
    }

    /// Appends the base64 of `raw` to `bytes`, with no intermediate copy left behind.
    public static func append(raw: UnsafeRawBufferPointer, to bytes: inout [UInt8]) {
        _ = try? Sodium.ensureInitialised()
        let variant = sodium_base64_VARIANT_ORIGINAL
        let length = sodium_base64_encoded_len(raw.count, variant)  // includes the terminating NUL
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: length))
        bytes.withUnsafeMutableBufferPointer { buffer in
            (buffer.baseAddress.map { $0 + start }).map { target in
                target.withMemoryRebound(to: CChar.self, capacity: length) {
                    _ = sodium_bin2base64($0, length, raw.nonNullBytes, raw.count, variant)
                }
            }
        }
        bytes.removeLast()  // the NUL
    }

    /// Appends the base64 of public bytes (hashes, proofs) to `bytes`: the same text as
    /// ``append(raw:to:)`` by table look-ups, whose timing depends on the bytes, so never for a secret.
    public static func appendPublic(raw: UnsafeRawBufferPointer, to bytes: inout [UInt8]) {
        let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        let table = UnsafeRawBufferPointer(start: alphabet.utf8Start, count: 64)
        bytes.reserveCapacity(bytes.count + (raw.count + 2) / 3 * 4)
        var index = 0
        while index + 3 <= raw.count {
            let word = UInt32(raw[index]) << 16 | UInt32(raw[index + 1]) << 8 | UInt32(raw[index + 2])
            bytes.append(table[Int(word >> 18)])
            bytes.append(table[Int(word >> 12 & 63)])
            bytes.append(table[Int(word >> 6 & 63)])
            bytes.append(table[Int(word & 63)])
            index += 3
        }
        let rest = raw.count - index
        if rest > 0 {
            let word = UInt32(raw[index]) << 16 | (rest == 2 ? UInt32(raw[index + 1]) << 8 : 0)
            bytes.append(table[Int(word >> 18)])
            bytes.append(table[Int(word >> 12 & 63)])
            bytes.append(rest == 2 ? table[Int(word >> 6 & 63)] : UInt8(ascii: "="))
            bytes.append(UInt8(ascii: "="))
        }
    }

    /// Decodes strict standard padded base64; nil on any deviation.
    public static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: text.utf8.count / 4 * 3 + 3)
        guard let length = decode(text, into: &out) else { return nil }
        return Array(out.prefix(length))
    }

    /// Decodes strict base64 into the given buffer (used to decode secrets
    /// straight into wiped memory); returns the decoded length or nil.
    static func decode(_ text: String, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        decode(bytes: Array(text.utf8)[...], into: buffer)
    }

    /// Decodes base64 given as bytes (so secret text need not become a String).
    static func decode(bytes: ArraySlice<UInt8>, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        _ = try? Sodium.ensureInitialised()
        var decoded = 0
        let status = bytes.withUnsafeBufferPointer { input -> Int32 in
            guard let base = input.baseAddress else { return -1 }
            return base.withMemoryRebound(to: CChar.self, capacity: input.count) { chars in
                // A nil end pointer makes libsodium refuse any trailing or invalid character.
                sodium_base642bin(buffer.nonNullBytes, buffer.count, chars, input.count, nil, &decoded, nil,
                                  sodium_base64_VARIANT_ORIGINAL)
            }
        }
        guard status == 0 else { return nil }
        return decoded
    }

    static func decode(_ text: String, into bytes: inout [UInt8]) -> Int? {
        bytes.withUnsafeMutableBytes { decode(text, into: $0) }
    }
}
