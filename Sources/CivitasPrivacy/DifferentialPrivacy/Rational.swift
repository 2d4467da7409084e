/// A non-negative rational number n/d with exact integer arithmetic, for the
/// samplers' parameters. Operations that would overflow 128 bits throw.
public struct Rational: Sendable, Equatable, CustomStringConvertible {
    public let numerator: UInt128
    public let denominator: UInt128

    public init(_ numerator: UInt128, _ denominator: UInt128 = 1) throws {
        guard denominator > 0 else { throw PrivacyError(.invalidParameter, "a rational number needs a positive denominator") }
        let g = Self.gcd(numerator, denominator)
        self.numerator = numerator / g
        self.denominator = denominator / g
    }

    /// Parses a non-negative decimal such as `0.5` or `3` exactly.
    public init(decimal text: String) throws {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !parts[0].isEmpty, parts.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              parts.count == 1 || !parts[1].isEmpty, text.utf8.count <= 30,
              let whole = UInt128(parts[0]) else {
            throw PrivacyError(.invalidParameter, "'\(text.prefix(40))' is not a non-negative decimal number")
        }
        let fraction = parts.count == 2 ? String(parts[1]) : ""
        var scale: UInt128 = 1
        for _ in fraction { scale *= 10 }
        let fractionValue = fraction.isEmpty ? 0 : (UInt128(fraction) ?? 0)
        try self.init(whole * scale + fractionValue, scale)
    }

    public var description: String { denominator == 1 ? "\(numerator)" : "\(numerator)/\(denominator)" }

    /// floor(n/d).
    var floor: UInt128 { numerator / denominator }

    /// The part after the integer: n/d − floor(n/d).
    var fractionalPart: Rational {
        // Safe: numerator % denominator < denominator.
        (try? Rational(numerator % denominator, denominator)) ?? self
    }

    var isZero: Bool { numerator == 0 }

    static func gcd(_ a: UInt128, _ b: UInt128) -> UInt128 {
        var (x, y) = (a, b)
        while y != 0 { (x, y) = (y, x % y) }
        return x == 0 ? 1 : x
    }
}

/// Multiplication that reports overflow instead of trapping.
func checkedMultiply(_ a: UInt128, _ b: UInt128) -> UInt128? {
    let (product, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? nil : product
}
