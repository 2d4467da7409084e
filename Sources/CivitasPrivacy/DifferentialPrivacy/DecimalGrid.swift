/// Real-valued measures on a fixed decimal grid: values are read from text as
/// exact integers in grid units (no binary floating point), clamped to declared
/// bounds, noised with an integer mechanism, and written back as decimals.
/// Because the output is always a multiple of the grid step, its low-order
/// digits cannot reveal the input (the attack on naive floating-point Laplace).
public struct DecimalGrid: Sendable, Equatable {
    /// Digits after the decimal point (0 to 9).
    public let fractionDigits: Int
    private let unit: Int64

    public init(fractionDigits: Int) throws {
        guard (0...9).contains(fractionDigits) else {
            throw PrivacyError(.invalidParameter, "a grid has 0 to 9 fraction digits, not \(fractionDigits)")
        }
        self.fractionDigits = fractionDigits
        var unit: Int64 = 1
        for _ in 0..<fractionDigits { unit *= 10 }
        self.unit = unit
    }

    /// Reads a decimal (`-12.5`, `3`, `0.125`) as grid units, rounding half to even
    /// when it has more digits than the grid. Throws for anything else (exponents, NaN, text).
    public func units(of text: String) throws -> Int64 {
        var body = Substring(text)
        let negative = body.hasPrefix("-")
        if negative || body.hasPrefix("+") { body = body.dropFirst() }
        let parts = body.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ $0.utf8.allSatisfy { (48...57).contains($0) } }),
              !(parts[0].isEmpty && (parts.count == 1 || parts[1].isEmpty)), parts[0].count <= 15 else {
            throw PrivacyError(.invalidValue, "'\(text.prefix(40))' is not a decimal number")
        }
        let whole = Int64(parts[0].isEmpty ? "0" : parts[0]) ?? 0
        var fraction = parts.count == 2 ? Array(parts[1].utf8) : []
        var kept: Int64 = 0
        for i in 0..<fractionDigits {
            kept = kept * 10 + (i < fraction.count ? Int64(fraction[i] - 48) : 0)
        }
        var value = whole * unit + kept
        if fraction.count > fractionDigits {
            let rest = fraction[fractionDigits...]
            let first = rest.first.map { $0 - 48 } ?? 0
            let beyond = rest.dropFirst().contains { $0 != 48 }
            if first > 5 || (first == 5 && (beyond || value % 2 == 1)) { value += 1 }
        }
        fraction.removeAll()
        return negative ? -value : value
    }

    /// Writes grid units as a decimal with exactly `fractionDigits` digits after the point.
    public func text(of units: Int64) -> String {
        let negative = units < 0
        let magnitude = units.magnitude
        let whole = magnitude / UInt64(unit)
        var text = String(whole)
        if fractionDigits > 0 {
            let fraction = String(magnitude % UInt64(unit))
            text += "." + String(repeating: "0", count: fractionDigits - fraction.count) + fraction
        }
        return negative ? "-" + text : text
    }
}

/// A bounded real-valued measure released with ε-DP: clamp to [lower, upper],
/// add discrete Laplace noise of scale (upper − lower)/ε in grid units.
public struct BoundedMeasureNoise: Sendable {
    public let grid: DecimalGrid
    public let lower: Int64
    public let upper: Int64
    public let mechanism: DiscreteLaplaceMechanism

    /// `lower` and `upper` are decimals on the grid; the sensitivity of one value is their distance.
    public init(lower: String, upper: String, grid: DecimalGrid, epsilon: Rational) throws {
        let low = try grid.units(of: lower), high = try grid.units(of: upper)
        guard low < high else { throw PrivacyError(.invalidParameter, "bounds \(lower):\(upper) must have lower < upper") }
        self.grid = grid
        self.lower = low
        self.upper = high
        self.mechanism = try DiscreteLaplaceMechanism(epsilon: epsilon, sensitivity: UInt64(high - low))
    }

    /// The clamped, noised value as a decimal on the grid.
    public func release<R: RandomWords>(_ text: String, using sampler: inout ExactSampler<R>) throws -> String {
        let value = min(max(try grid.units(of: text), lower), upper)
        return grid.text(of: mechanism.release(value, using: &sampler))
    }
}
