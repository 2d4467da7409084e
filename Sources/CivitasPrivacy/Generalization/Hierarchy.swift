import Foundation

/// How one quasi-identifier is generalized, level by level. Level 0 is the
/// value itself; the top level is `*` (suppressed). Each level's label is
/// a function of the value, so equal labels mean equal released values.
public enum Hierarchy: Sendable, Equatable {
    /// An explicit tree, as in ARX's hierarchy CSV: per value, its labels at levels 1…
    case explicit(levels: [String: [String]], height: Int)
    /// Numeric intervals: per level, the interval width (e.g. 5, 10, 20), then `*`.
    case intervals(widths: [Int])
    /// Timestamps `YYYY-MM-DD HH:MM:SS` (or with `T`) truncated per level to these units, then `*`.
    case dateTruncation(units: [DateUnit])
    /// Strings masked from the right with `*`, this many characters per level, then `*`.
    case masking(steps: [Int])
    /// Decimal coordinates rounded down per level to these numbers of fraction digits, then `*`.
    case geoGrid(fractionDigits: [Int])
    /// Only the value itself, or `*`.
    case suppressionOnly

    /// Units of date truncation.
    public enum DateUnit: String, Sendable, CaseIterable {
        case minute, hour, day, month, year

        /// Characters of `YYYY-MM-DD HH:MM:SS` kept at this unit.
        var prefixLength: Int {
            switch self {
            case .minute: 16
            case .hour: 13
            case .day: 10
            case .month: 7
            case .year: 4
            }
        }
    }

    /// Number of levels, including level 0 and the `*` level.
    public var height: Int {
        switch self {
        case .explicit(_, let height): height
        case .intervals(let widths): widths.count + 2
        case .dateTruncation(let units): units.count + 2
        case .masking(let steps): steps.count + 2
        case .geoGrid(let digits): digits.count + 2
        case .suppressionOnly: 2
        }
    }

    /// The value's label at every level (index 0 is the value itself).
    /// Throws for a value this hierarchy cannot generalize, naming the value.
    public func labels(for value: String) throws -> [String] {
        var labels = [value]
        switch self {
        case .explicit(let levels, let height):
            guard let upper = levels[value] else {
                throw PrivacyError(.invalidValue, "value '\(value.prefix(60))' is not in the hierarchy")
            }
            labels += upper
            guard labels.count == height else {
                throw PrivacyError(.invalidValue, "value '\(value.prefix(60))' has \(labels.count) levels in the hierarchy, expected \(height)")
            }
            return labels
        case .intervals(let widths):
            guard let (floor, whole) = Self.floorOfDecimal(value) else {
                if value.isEmpty { return labels + Array(repeating: "", count: widths.count) + ["*"] }
                throw PrivacyError(.invalidValue, "value '\(value.prefix(60))' is not a decimal number for an interval hierarchy")
            }
            for width in widths {
                let w = Int64(width)
                let low = floor >= 0 ? floor / w * w : -((-floor + w - 1) / w) * w
                // Whole numbers: the inclusive range `10-19`; others the half-open `[10,20)`, which says exactly what it covers.
                labels.append(whole ? "\(low)-\(low + w - 1)" : "[\(low),\(low + w))")
            }
        case .dateTruncation(let units):
            // Plain ASCII without a `T` or CR (every valid timestamp): prefixes are taken on the bytes.
            let plain = value.utf8.allSatisfy { $0 < 0x80 && $0 != 0x54 && $0 != 0x0D }
            let text = plain ? value : value.replacingOccurrences(of: "T", with: " ")
            for unit in units {
                labels.append(plain ? Self.truncateASCII(text, to: unit) : Self.truncate(text, to: unit))
            }
        case .masking(let steps):
            let characters = Array(Self.maskable(value))
            var masked = 0
            for step in steps {
                masked = min(characters.count, masked + step)
                labels.append(String(characters.prefix(characters.count - masked)) + String(repeating: "*", count: masked))
            }
        case .geoGrid(let digits):
            let bytes = Array(value.utf8)
            var scratch: [UInt8] = []
            for fraction in digits {
                labels.append(Self.truncatePlainDecimal(bytes, fractionDigits: fraction, scratch: &scratch)
                              ?? Self.truncateDecimalText(value, fractionDigits: fraction))
            }
        case .suppressionOnly:
            break
        }
        labels.append("*")
        return labels
    }

    /// The value's label at one level: `labels(for: value)[level]`, with the same refusals, without
    /// making the other levels' labels.
    public func label(for value: String, atLevel level: Int) throws -> String {
        if case .explicit(let levels, let height) = self {
            guard let upper = levels[value] else {
                throw PrivacyError(.invalidValue, "value '\(value.prefix(60))' is not in the hierarchy")
            }
            guard upper.count + 1 == height else {
                throw PrivacyError(.invalidValue, "value '\(value.prefix(60))' has \(upper.count + 1) levels in the hierarchy, expected \(height)")
            }
            return level == 0 ? value : upper[level - 1]
        }
        if case .intervals = self, value.isEmpty == false, Self.floorOfDecimal(value) == nil {
            throw PrivacyError(.invalidValue, "value '\(value.prefix(60))' is not a decimal number for an interval hierarchy")
        }
        if level == 0 { return value }
        if level == height - 1 { return "*" }
        switch self {
        case .explicit, .suppressionOnly:
            return "*"  // not reached: both answered above
        case .intervals(let widths):
            guard let (floor, whole) = Self.floorOfDecimal(value) else { return "" }
            let w = Int64(widths[level - 1])
            let low = floor >= 0 ? floor / w * w : -((-floor + w - 1) / w) * w
            return whole ? "\(low)-\(low + w - 1)" : "[\(low),\(low + w))"
        case .dateTruncation(let units):
            var text = value
            let plain = text.withUTF8 { $0.allSatisfy { $0 < 0x80 && $0 != 0x54 && $0 != 0x0D } }
            return plain ? Self.truncateASCII(value, to: units[level - 1])
                : Self.truncate(value.replacingOccurrences(of: "T", with: " "), to: units[level - 1])
        case .masking(let steps):
            let characters = Array(Self.maskable(value))
            let masked = min(characters.count, steps[..<level].reduce(0, +))
            return String(characters.prefix(characters.count - masked)) + String(repeating: "*", count: masked)
        case .geoGrid(let digits):
            var scratch: [UInt8] = [], text = value
            return text.withUTF8 { Self.truncatePlainDecimal($0, fractionDigits: digits[level - 1], scratch: &scratch) }
                ?? Self.truncateDecimalText(value, fractionDigits: digits[level - 1])
        }
    }

    /// Whether, for these values, each level's label above the first is a function of the label
    /// one level below (values with equal labels at a level have equal labels at every coarser
    /// one), so that a coarser level can be labelled from one value per finer label. Holds by
    /// construction for truncations that only get coarser: date units whose prefixes shorten,
    /// masking by non-negative steps, interval widths that each divide the next, and grid digits
    /// that decrease on plain decimals (`-?[0-9]+(.[0-9]*)?`, where the label is the value rounded
    /// down). Explicit trees are not assumed to be trees.
    func coarserLevelsFollowFromFiner(values: [String]) -> Bool {
        switch self {
        case .explicit, .suppressionOnly:
            return false
        case .intervals(let widths):
            return widths.allSatisfy { $0 > 0 } && zip(widths, widths.dropFirst()).allSatisfy { $1 % $0 == 0 }
        case .dateTruncation(let units):
            return zip(units, units.dropFirst()).allSatisfy { $0.prefixLength >= $1.prefixLength }
        case .masking(let steps):
            return steps.allSatisfy { $0 >= 0 }
        case .geoGrid(let digits):
            return digits.allSatisfy { $0 >= 0 } && zip(digits, digits.dropFirst()).allSatisfy { $0 >= $1 }
                && values.allSatisfy(Self.isPlainDecimal)
        }
    }

    /// Whether the text is a plain decimal: `-?[0-9]+(.[0-9]*)?`.
    static func isPlainDecimal(_ value: String) -> Bool {
        var text = value
        return text.withUTF8 { bytes in
            var i = bytes.first == UInt8(ascii: "-") ? 1 : 0
            let wholeStart = i
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
            guard i > wholeStart else { return false }
            guard i < bytes.count else { return true }
            guard bytes[i] == UInt8(ascii: ".") else { return false }
            return bytes[(i + 1)...].allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        }
    }

    /// The largest integer not above a decimal written `-12.5` or `7`, and whether the decimal is
    /// that integer; nil if the text is not a decimal.
    static func floorOfDecimal(_ value: String) -> (Int64, Bool)? {
        var text = Substring(value)
        let negative = text.hasPrefix("-")
        if negative || text.hasPrefix("+") { text = text.dropFirst() }
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let digits = parts.first, !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let magnitude = Int64(digits) else { return nil }
        let fraction = parts.count > 1 ? parts[1] : ""
        guard fraction.allSatisfy({ $0.isASCII && $0.isNumber }), parts.count == 1 || !fraction.isEmpty else { return nil }
        let whole = fraction.allSatisfy { $0 == "0" }
        if !negative { return (magnitude, whole) }
        return (whole ? -magnitude : -magnitude - 1, whole)
    }

    /// Postal codes and similar: the leading digits of values written like `19422.0`.
    private static func maskable(_ value: String) -> Substring {
        if value.hasSuffix(".0"), value.dropLast(2).allSatisfy(\.isNumber) { return value.dropLast(2) }
        return Substring(value)
    }

    private static func truncate(_ text: String, to unit: DateUnit) -> String {
        String(text.prefix(unit.prefixLength))
    }

    /// The same prefix as ``truncate(_:to:)`` for ASCII text without CR (one character per byte).
    private static func truncateASCII(_ text: String, to unit: DateUnit) -> String {
        String(Substring(text.utf8.prefix(unit.prefixLength)))
    }

    /// ``truncateDecimalText(_:fractionDigits:)`` on the bytes of a plain decimal (`-?[0-9]+(\.[0-9]*)?`),
    /// nil for any other text.
    static func truncatePlainDecimal(_ value: String, fractionDigits: Int) -> String? {
        var scratch: [UInt8] = []
        return truncatePlainDecimal(Array(value.utf8), fractionDigits: fractionDigits, scratch: &scratch)
    }

    /// The same on a value's UTF-8 bytes, with a buffer reused between calls.
    static func truncatePlainDecimal<Bytes: RandomAccessCollection<UInt8>>(_ bytes: Bytes, fractionDigits: Int, scratch digits: inout [UInt8]) -> String?
        where Bytes.Index == Int {
        let negative = bytes.first == UInt8(ascii: "-")
        let wholeStart = negative ? 1 : 0
        var point = wholeStart
        while point < bytes.count, bytes[point] >= 0x30, bytes[point] <= 0x39 { point += 1 }
        guard point > wholeStart else { return nil }
        let fractionStart = point < bytes.count ? point + 1 : bytes.count
        if point < bytes.count {
            guard bytes[point] == UInt8(ascii: ".") else { return nil }
            for byte in bytes[fractionStart...] where byte < 0x30 || byte > 0x39 { return nil }
        }
        let fraction = bytes[fractionStart...]
        digits.removeAll(keepingCapacity: true)
        if negative { digits.append(UInt8(ascii: "-")) }
        digits += bytes[wholeStart..<point]
        digits += fraction.prefix(fractionDigits)
        digits += repeatElement(UInt8(ascii: "0"), count: max(0, fractionDigits - fraction.count))
        let exact = fraction.dropFirst(fractionDigits).allSatisfy { $0 == UInt8(ascii: "0") }
        if negative && !exact {
            // Step one unit away from zero so the cell is [v, v + unit).
            var index = digits.count - 1
            while index >= 1 {
                if digits[index] == UInt8(ascii: "9") { digits[index] = UInt8(ascii: "0"); index -= 1 } else {
                    digits[index] += 1
                    break
                }
            }
            if index < 1 { digits.insert(UInt8(ascii: "1"), at: 1) }
        }
        if fractionDigits > 0 { digits.insert(UInt8(ascii: "."), at: digits.count - fractionDigits) }
        return String(decoding: digits, as: UTF8.self)
    }

    /// Rounds a decimal toward negative infinity to `fractionDigits` digits, on the text (no
    /// floating point), character by character: for any text.
    static func truncateDecimalText(_ value: String, fractionDigits: Int) -> String {
        let parts = value.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !value.isEmpty else { return value }
        let fraction = parts.count > 1 ? String(parts[1]) : ""
        let negative = whole.hasPrefix("-")
        var kept = String(fraction.prefix(fractionDigits))
        kept += String(repeating: "0", count: max(0, fractionDigits - kept.count))
        let dropped = fraction.dropFirst(fractionDigits)
        let exact = dropped.allSatisfy { $0 == "0" }
        if !negative || exact {
            return fractionDigits == 0 ? String(whole) : "\(whole).\(kept)"
        }
        // Negative and inexact: step one unit away from zero so the cell is [v, v + unit).
        var digits = Array(String(whole.dropFirst()) + kept)
        var index = digits.count - 1
        while index >= 0 {
            if digits[index] == "9" { digits[index] = "0"; index -= 1 } else {
                digits[index] = Character(String((digits[index].wholeNumberValue ?? 0) + 1))
                break
            }
        }
        if index < 0 { digits.insert("1", at: 0) }
        let text = String(digits)
        let integerPart = String(text.dropLast(fractionDigits))
        return "-" + (fractionDigits == 0 ? integerPart : integerPart + "." + String(text.suffix(fractionDigits)))
    }

    /// Reads an ARX hierarchy CSV: one row per leaf value, then its labels up to the root.
    public static func arx(_ table: [[String]]) throws -> Hierarchy {
        guard let height = table.first?.count, height >= 2 else {
            throw PrivacyError(.invalidValue, "a hierarchy needs at least two columns (value and *)")
        }
        var levels: [String: [String]] = [:]
        for (number, row) in table.enumerated() {
            guard row.count == height else {
                throw PrivacyError(.invalidValue, "hierarchy row \(number + 1) has \(row.count) levels, the first has \(height)")
            }
            guard levels.updateValue(Array(row.dropFirst()), forKey: row[0]) == nil else {
                throw PrivacyError(.invalidValue, "hierarchy row \(number + 1) repeats the value '\(row[0].prefix(60))'")
            }
        }
        return .explicit(levels: levels, height: height)
    }
}
