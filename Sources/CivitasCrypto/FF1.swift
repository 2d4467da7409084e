/// FF1 format-preserving encryption (NIST SP 800-38G, Algorithms 7 and 8)
/// with AES: encrypts a string of numerals in a radix to another string of the
/// same length and radix, reversibly under the key and tweak.
///
/// This implementation supports radixes 2 to 36 and strings whose halves each
/// have fewer than 2^64 values; it refuses domains with fewer than 10^6 values
/// (radix^length < 1,000,000), as SP 800-38G Rev. 1 requires.
public final class FF1: @unchecked Sendable {
    public let radix: Int
    private let aes: AESBlockCipher

    public init(key: [UInt8], radix: Int) throws {
        guard (2...36).contains(radix) else { throw CryptoError(.invalidArgument, "FF1 radix must be 2 to 36, not \(radix)") }
        self.radix = radix
        self.aes = try AESBlockCipher(key: key)
    }

    /// Encrypts numerals (each 0..<radix).
    public func encrypt(_ numerals: [Int], tweak: [UInt8]) throws -> [Int] {
        try run(numerals, tweak: tweak, decrypting: false)
    }

    /// Decrypts numerals (each 0..<radix).
    public func decrypt(_ numerals: [Int], tweak: [UInt8]) throws -> [Int] {
        try run(numerals, tweak: tweak, decrypting: true)
    }

    /// The alphabet used by the string forms: `0-9a-z`, truncated to the radix.
    public static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")

    /// Encrypts a string over the first `radix` characters of `0-9a-z`.
    public func encrypt(_ text: String, tweak: [UInt8]) throws -> String {
        Self.text(try encrypt(try numerals(text), tweak: tweak))
    }

    /// Decrypts a string over the first `radix` characters of `0-9a-z`.
    public func decrypt(_ text: String, tweak: [UInt8]) throws -> String {
        Self.text(try decrypt(try numerals(text), tweak: tweak))
    }

    private func numerals(_ text: String) throws -> [Int] {
        try text.lowercased().map { character in
            guard let index = Self.alphabet.firstIndex(of: character), index < radix else {
                throw CryptoError(.invalidArgument, "'\(character)' is not a numeral in radix \(radix)")
            }
            return index
        }
    }

    private static func text(_ numerals: [Int]) -> String {
        String(numerals.map { alphabet[$0] })
    }

    // MARK: - Algorithm

    private func run(_ x: [Int], tweak: [UInt8], decrypting: Bool) throws -> [Int] {
        let n = x.count
        guard x.allSatisfy({ (0..<radix).contains($0) }) else {
            throw CryptoError(.invalidArgument, "FF1 input has a numeral outside radix \(radix)")
        }
        if n < 2 || (Self.power(UInt128(radix), n).map { $0 < 1_000_000 } ?? false) {
            throw CryptoError(.invalidArgument, "FF1 domain \(radix)^\(n) is smaller than 1,000,000 (SP 800-38G Rev. 1)")
        }
        let u = n / 2, v = n - u
        guard let modulusU = Self.power(UInt128(radix), u), let modulusV = Self.power(UInt128(radix), v),
              modulusV <= UInt128(UInt64.max) else {
            throw CryptoError(.invalidArgument, "FF1 input of \(n) numerals in radix \(radix) is longer than this implementation supports")
        }
        guard tweak.count <= 256 else { throw CryptoError(.invalidArgument, "FF1 tweak is longer than 256 bytes") }
        // b = ceil(ceil(v · log2(radix)) / 8): bytes to hold any value below radix^v (≤ 8 here),
        // d = 4 · ceil(b / 4) + 4 (≤ 12, so one AES block gives all of S).
        let bits = 128 - (modulusV - 1).leadingZeroBitCount
        let b = (bits + 7) / 8
        let d = 4 * ((b + 3) / 4) + 4
        let t = tweak.count
        var p: [UInt8] = [1, 2, 1]
        p += [UInt8(radix >> 16 & 0xff), UInt8(radix >> 8 & 0xff), UInt8(radix & 0xff)]
        p += [10, UInt8(u % 256)]
        p += Self.bigEndian(UInt128(n), bytes: 4) + Self.bigEndian(UInt128(t), bytes: 4)

        var a = Self.number(Array(x[..<u]), radix: radix)
        var bValue = Self.number(Array(x[u...]), radix: radix)
        let padding = ((-t - b - 1) % 16 + 16) % 16
        let rounds = decrypting ? Array((0..<10).reversed()) : Array(0..<10)
        for i in rounds {
            let source = decrypting ? a : bValue
            var q = tweak + [UInt8](repeating: 0, count: padding) + [UInt8(i)]
            q += Self.bigEndian(source, bytes: b)
            let y = feistelValue(p + q, d: d)
            let m = i % 2 == 0 ? modulusU : modulusV
            if decrypting {
                // c = (NUM(B) − y) mod radix^m
                let c = (bValue % m + m - y % m) % m
                bValue = a
                a = c
            } else {
                let c = (a % m + y % m) % m
                a = bValue
                bValue = c
            }
        }
        return Self.numerals(a, count: u, radix: radix) + Self.numerals(bValue, count: v, radix: radix)
    }

    /// Steps 6.ii–iv: R = PRF(P || Q) (CBC-MAC under AES), S = the first d bytes of R
    /// (d ≤ 12 here, so no further blocks are needed), y = NUM(S).
    private func feistelValue(_ input: [UInt8], d: Int) -> UInt128 {
        var r = [UInt8](repeating: 0, count: 16)
        var offset = 0
        while offset < input.count {
            for j in 0..<16 { r[j] ^= input[offset + j] }
            aes.encrypt(&r)
            offset += 16
        }
        return r.prefix(d).reduce(UInt128(0)) { $0 << 8 | UInt128($1) }
    }

    static func power(_ base: UInt128, _ exponent: Int) -> UInt128? {
        var result: UInt128 = 1
        for _ in 0..<exponent {
            let (product, overflow) = result.multipliedReportingOverflow(by: base)
            if overflow { return nil }
            result = product
        }
        return result
    }

    static func number(_ numerals: [Int], radix: Int) -> UInt128 {
        numerals.reduce(0) { $0 * UInt128(radix) + UInt128($1) }
    }

    static func numerals(_ value: UInt128, count: Int, radix: Int) -> [Int] {
        var digits = [Int](repeating: 0, count: count)
        var rest = value
        for i in stride(from: count - 1, through: 0, by: -1) {
            digits[i] = Int(rest % UInt128(radix))
            rest /= UInt128(radix)
        }
        return digits
    }

    static func bigEndian(_ value: UInt128, bytes: Int) -> [UInt8] {
        (0..<bytes).map { i in
            let shift = 8 * (bytes - 1 - i)
            return shift >= 128 ? 0 : UInt8(truncatingIfNeeded: value >> UInt128(shift))
        }
    }
}
