import CivitasTime
import CivitasCrypto
import Foundation

/// A dataset schema: JSON Schema 2020-12 whose properties carry an `x-privacy`
/// annotation saying how each field is treated (docs/privacy.md#schemas).
public struct DatasetSchema: Sendable {
    /// How a field is treated when records are released.
    public enum PrivacyClass: String, Sendable, CaseIterable {
        /// Directly identifies someone: replaced by a pseudonym (or dropped).
        case identifier
        /// Identifies in combination: generalized along its hierarchy.
        case quasiIdentifier = "quasi-identifier"
        /// What must not be linked to a person: passed through, protected by k and l.
        case sensitive
        /// A bounded number: passed through in tables, noised in aggregates.
        case measure
        /// The data subject's id: pseudonymized; used for consent and contribution bounds.
        case subject
        /// Not about a person: passed through.
        case `public`
        /// Never released.
        case drop
    }

    /// How an identifier becomes a pseudonym.
    public enum PseudonymKind: String, Sendable {
        /// One-way keyed hash (HMAC-SHA-256 under the domain key).
        case hmac
        /// Reversible for the publisher (FF1 on the digits).
        case ff1
    }

    /// One property of the schema.
    public struct Field: Sendable {
        public let name: String
        public let types: Set<String>
        public let required: Bool
        public let privacy: PrivacyClass
        public let hierarchy: Hierarchy?
        public let pseudonym: PseudonymKind?
        public let bounds: (lower: String, upper: String)?
        let allowed: [String]?
        let minimum: Double?
        let maximum: Double?
        let minLength: Int?
        let maxLength: Int?
        let pattern: String?
        /// The pattern compiled once: a ``SimplePattern`` when it is one, else the regular-expression engine.
        let matcher: PatternMatcher?

        /// Most values a field's declared domain may have.
        public static let maximumDomain = 10_000

        /// The values the schema alone allows, when it names them: an enum or const, a boolean, or
        /// an integer between a minimum and a maximum at most `maximumDomain` apart. These are
        /// public by declaration, so DP aggregates may use them as group keys.
        public var declaredDomain: [String]? {
            if let allowed { return allowed }
            if types == ["boolean"] { return ["false", "true"] }
            if types == ["integer"], let minimum, let maximum, minimum.rounded(.up) <= maximum.rounded(.down),
               maximum.rounded(.down) - minimum.rounded(.up) < Double(Self.maximumDomain),
               let low = Int(exactly: minimum.rounded(.up)), let high = Int(exactly: maximum.rounded(.down)) {
                return (low...high).map(String.init)
            }
            return nil
        }
    }

    public let title: String
    public let fields: [Field]
    /// Whether records may carry columns the schema does not name. Never, whatever
    /// `additionalProperties` says, when the schema describes personal data (a subject,
    /// identifier, quasi-identifier or sensitive field): an unnamed column has no privacy class.
    public let allowsOtherColumns: Bool

    /// The field named `name`.
    public func field(_ name: String) -> Field? { fields.first { $0.name == name } }

    /// Parses a schema; errors name the property and what is wrong with its annotation.
    public static func parse(_ bytes: [UInt8]) throws -> DatasetSchema {
        let root: JSONValue
        do { root = try JSONParser.parse(bytes) } catch let error as CryptoError {
            throw PrivacyError(.invalidParameter, "schema: \(error.message)")
        }
        guard let properties = root["properties"]?.objectValue else {
            throw PrivacyError(.invalidParameter, "schema has no properties")
        }
        var required: Set<String> = []
        if case .array(let names)? = root["required"] { required = Set(names.compactMap(\.stringValue)) }
        var fields: [Field] = []
        for (name, property) in properties.sorted(by: { $0.key < $1.key }) {
            fields.append(try field(name: name, property: property, required: required.contains(name)))
        }
        var additional: Bool
        if case .bool(let value)? = root["additionalProperties"] { additional = value } else { additional = true }
        if fields.contains(where: { [.subject, .identifier, .quasiIdentifier, .sensitive].contains($0.privacy) }) { additional = false }
        return DatasetSchema(title: root["title"]?.stringValue ?? "", fields: fields, allowsOtherColumns: additional)
    }

    private static func field(name: String, property: JSONValue, required: Bool) throws -> Field {
        guard let privacy = property["x-privacy"] else {
            throw PrivacyError(.invalidParameter, "property '\(name)' has no x-privacy annotation")
        }
        guard let className = privacy["class"]?.stringValue, let privacyClass = PrivacyClass(rawValue: className) else {
            throw PrivacyError(.invalidParameter, "property '\(name)': x-privacy class must be one of \(PrivacyClass.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var types: Set<String> = []
        switch property["type"] {
        case .string(let type)?: types = [type]
        case .array(let list)?: types = Set(list.compactMap(\.stringValue))
        default: types = []
        }
        var hierarchy: Hierarchy?
        if privacyClass == .quasiIdentifier {
            guard let spec = privacy["hierarchy"]?.objectValue, spec.count == 1, let (kind, value) = spec.first else {
                throw PrivacyError(.invalidParameter, "property '\(name)': a quasi-identifier needs x-privacy.hierarchy with one of intervals, date, mask, geo, suppress, tree")
            }
            hierarchy = try Self.hierarchy(kind: kind, value: value, property: name)
        }
        var pseudonym: PseudonymKind?
        if privacyClass == .identifier || privacyClass == .subject {
            let kind = privacy["pseudonym"]?.stringValue ?? "hmac"
            guard let parsed = PseudonymKind(rawValue: kind) else {
                throw PrivacyError(.invalidParameter, "property '\(name)': pseudonym must be hmac or ff1")
            }
            pseudonym = parsed
        }
        var bounds: (String, String)?
        if privacyClass == .measure {
            guard case .array(let pair)? = privacy["bounds"], pair.count == 2, let low = pair[0].stringValue, let high = pair[1].stringValue else {
                throw PrivacyError(.invalidParameter, "property '\(name)': a measure needs x-privacy.bounds as two decimal strings")
            }
            bounds = (low, high)
        }
        var matcher: PatternMatcher?
        if let pattern = property["pattern"]?.stringValue {
            do { matcher = try PatternMatcher(pattern) } catch {
                throw PrivacyError(.invalidParameter, "property '\(name)': pattern '\(pattern.prefix(60))' is not a valid regular expression")
            }
        }
        var allowed: [String]?
        if case .array(let values)? = property["enum"] { allowed = values.compactMap(Self.text) }
        if let constant = property["const"] { allowed = Self.text(constant).map { [$0] } }
        return Field(name: name, types: types, required: required, privacy: privacyClass, hierarchy: hierarchy,
                     pseudonym: pseudonym, bounds: bounds, allowed: allowed,
                     minimum: property["minimum"]?.numberValue, maximum: property["maximum"]?.numberValue,
                     minLength: property["minLength"]?.exactUnsignedInteger.map(Int.init),
                     maxLength: property["maxLength"]?.exactUnsignedInteger.map(Int.init),
                     pattern: property["pattern"]?.stringValue, matcher: matcher)
    }

    private static func text(_ value: JSONValue) -> String? {
        switch value {
        case .string(let s): return s
        case .number(let n): return try? ECMAScriptNumber.format(n)
        case .bool(let b): return b ? "true" : "false"
        default: return nil
        }
    }

    private static func numbers(_ value: JSONValue, property: String) throws -> [Int] {
        guard case .array(let items) = value, !items.isEmpty, items.count <= 16 else {
            throw PrivacyError(.invalidParameter, "property '\(property)': hierarchy parameters must be a list of 1 to 16 numbers")
        }
        return try items.map {
            guard let n = $0.exactUnsignedInteger, n <= 1_000_000 else {
                throw PrivacyError(.invalidParameter, "property '\(property)': hierarchy parameter is not a whole number")
            }
            return Int(n)
        }
    }

    private static func hierarchy(kind: String, value: JSONValue, property: String) throws -> Hierarchy {
        switch kind {
        case "intervals":
            let widths = try numbers(value, property: property)
            guard widths.allSatisfy({ $0 > 0 }) else { throw PrivacyError(.invalidParameter, "property '\(property)': interval widths must be positive") }
            return .intervals(widths: widths)
        case "mask": return .masking(steps: try numbers(value, property: property))
        case "geo": return .geoGrid(fractionDigits: try numbers(value, property: property))
        case "suppress": return .suppressionOnly
        case "date":
            guard case .array(let items) = value else { throw PrivacyError(.invalidParameter, "property '\(property)': date levels must be a list") }
            return .dateTruncation(units: try items.map {
                guard let unit = $0.stringValue.flatMap(Hierarchy.DateUnit.init(rawValue:)) else {
                    throw PrivacyError(.invalidParameter, "property '\(property)': date levels are minute, hour, day, month, year")
                }
                return unit
            })
        case "tree":
            guard let leaves = value.objectValue, !leaves.isEmpty else {
                throw PrivacyError(.invalidParameter, "property '\(property)': a tree maps each value to its labels up to *")
            }
            let rows = try leaves.sorted { $0.key < $1.key }.map { leaf, labels -> [String] in
                guard case .array(let chain) = labels, let texts = Optional(chain.compactMap(\.stringValue)), texts.count == chain.count, texts.last == "*" else {
                    throw PrivacyError(.invalidParameter, "property '\(property)': tree value '\(leaf.prefix(40))' needs a list of labels ending in *")
                }
                return [leaf] + texts
            }
            return try Hierarchy.arx(rows)
        default:
            throw PrivacyError(.invalidParameter, "property '\(property)': unknown hierarchy '\(kind.prefix(20))'")
        }
    }

    // MARK: - Validation

    /// A record that does not fit the schema.
    public struct Issue: Sendable, Equatable, CustomStringConvertible {
        /// 1-based data row (0 for the header).
        public let row: Int
        public let field: String
        public let reason: String
        public var description: String { row == 0 ? "header, column '\(field)': \(reason)" : "row \(row), field '\(field)': \(reason)" }
    }

    /// Checks a table's header and every cell against the schema; returns at most `limit` issues.
    /// `firstRow` numbers the table's first row (for a chunk of a larger batch).
    public func validate(_ table: CSVTable, limit: Int = 20, firstRow: Int = 1) -> [Issue] {
        var issues: [Issue] = []
        for field in fields where field.required && !table.columns.contains(field.name) {
            issues.append(Issue(row: 0, field: field.name, reason: "required column is missing"))
        }
        if !allowsOtherColumns {
            for column in table.columns where field(column) == nil {
                issues.append(Issue(row: 0, field: column, reason: "column is not in the schema"))
            }
        }
        guard issues.isEmpty else { return Array(issues.prefix(limit)) }
        // One check per column, held by reference: a cell's check is not copied field by field.
        let checks: [ColumnCheck] = table.columns.enumerated().compactMap { index, column in
            guard let field = field(column) else { return nil }
            return ColumnCheck(index: index, field: field, types: CellTypes(field.types))
        }
        for (r, row) in table.rows.enumerated() {
            for check in checks {
                if let reason = Self.problem(row[check.index], check: check) {
                    issues.append(Issue(row: firstRow + r, field: check.name, reason: reason))
                    if issues.count >= limit { return issues }
                }
            }
        }
        return issues
    }

    /// How one column of a table is checked: what of its field the checks read, held by
    /// reference (a cell's check copies nothing).
    private final class ColumnCheck {
        let index: Int
        let name: String
        let types: CellTypes
        let typeNames: String
        let subject: Bool
        let dates: Bool
        let allowed: Set<String>?
        let minimum: Double?
        let maximum: Double?
        let minLength: Int?
        let maxLength: Int?
        let pattern: String?
        let matcher: PatternMatcher?

        init(index: Int, field: Field, types: CellTypes) {
            self.index = index
            self.types = types
            name = field.name
            typeNames = field.types.sorted().joined(separator: "/")
            subject = field.privacy == .subject
            if case .dateTruncation? = field.hierarchy { dates = true } else { dates = false }
            allowed = field.allowed.map(Set.init)
            minimum = field.minimum
            maximum = field.maximum
            minLength = field.minLength
            maxLength = field.maxLength
            pattern = field.pattern
            matcher = field.matcher
        }
    }

    /// The length JSON Schema gives a string: its Unicode code points (RFC 8259 characters), not
    /// its grapheme clusters; read from the UTF-8 length when that alone decides.
    static func characterCount(_ value: String) -> Int {
        var value = value
        return value.withUTF8 { bytes in
            // Every byte that does not start a code point is a continuation byte (10xxxxxx).
            var count = 0
            for byte in bytes where byte & 0xC0 != 0x80 { count += 1 }
            return count
        }
    }

    /// Control characters no schema field can mean (NUL, escape, …); a subject id may hold no
    /// control character at all, or it could never match the consent its person gave.
    static func controlCharacterProblem(_ value: String, field: Field) -> String? {
        controlCharacterProblem(value, subject: field.privacy == .subject)
    }

    private static func controlCharacterProblem(_ value: String, subject: Bool) -> String? {
        // Control characters are single UTF-8 bytes below 0x20 or 0x7F; most cells hold none.
        var value = value
        let clean = value.withUTF8 { bytes in !bytes.contains { $0 < 0x20 || $0 == 0x7F } }
        if clean { return nil }
        let forbidden = value.unicodeScalars.first { scalar in
            scalar.value == 0x7F || (scalar.value < 0x20 && (subject || ![0x09, 0x0A, 0x0D].contains(scalar.value)))
        }
        return forbidden.map { String(format: "holds the control character U+%04X", $0.value) }
    }

    /// Checks a JSON string value's enum, length and pattern constraints.
    static func cellProblem(_ value: String, field: Field) -> String? {
        if let problem = controlCharacterProblem(value, field: field) { return problem }
        if let problem = dateProblem(value, field: field) { return problem }
        if let allowed = field.allowed, !allowed.contains(value) { return "'\(value.prefix(40))' is not one of the allowed values" }
        if field.minLength != nil || field.maxLength != nil {
            let length = characterCount(value)
            if let minLength = field.minLength, length < minLength { return "shorter than \(minLength) characters" }
            if let maxLength = field.maxLength, length > maxLength { return "longer than \(maxLength) characters" }
        }
        if let pattern = field.pattern, let matcher = field.matcher, !matcher.matches(value) {
            return "'\(value.prefix(40))' does not match the pattern \(pattern)"
        }
        return nil
    }

    /// A quasi-identifier generalized by date truncation must hold a real calendar date (a pattern
    /// alone lets 2016-13-45 through, and truncating it would release a date that never was).
    private static func dateProblem(_ value: String, field: Field) -> String? {
        guard case .dateTruncation? = field.hierarchy, !value.isEmpty else { return nil }
        return CivilDate.problem(value)
    }

    /// Whether `text` is a decimal number as JSON writes one, with leading zeros allowed:
    /// `-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?`, whole.
    static func isDecimalNumber(_ text: String) -> Bool {
        var bytes = text.utf8.makeIterator()
        var next = bytes.next()
        func digits() -> Bool {
            var any = false
            while let byte = next, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                any = true
                next = bytes.next()
            }
            return any
        }
        if next == UInt8(ascii: "-") { next = bytes.next() }
        guard digits() else { return false }
        if next == UInt8(ascii: ".") {
            next = bytes.next()
            guard digits() else { return false }
        }
        if next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
            next = bytes.next()
            if next == UInt8(ascii: "+") || next == UInt8(ascii: "-") { next = bytes.next() }
            guard digits() else { return false }
        }
        return next == nil
    }

    /// What a field's declared JSON types mean for a CSV cell, worked out once per field.
    struct CellTypes {
        let nullable, onlyString, integer, number, boolean, noCellForm, string, textual: Bool

        init(_ types: Set<String>) {
            nullable = types.contains("null") || types.isEmpty
            onlyString = types == ["string"]
            string = types.contains("string")
            integer = types.contains("integer") && !string && !types.contains("number")
            number = types.contains("number") && !string
            boolean = types == ["boolean"]
            noCellForm = !types.isEmpty && types.isDisjoint(with: ["string", "number", "integer", "boolean", "null"])
            textual = string || types.isEmpty
        }
    }

    private static func problem(_ value: String, check: ColumnCheck) -> String? {
        let types = check.types
        if let problem = controlCharacterProblem(value, subject: check.subject) { return problem }
        if value.isEmpty {
            if types.nullable { return nil }
            if types.onlyString && (check.minLength ?? 0) == 0 && check.pattern == nil && check.allowed == nil { return nil }
            return "missing value"
        }
        if let allowed = check.allowed, !allowed.contains(value) {
            return "'\(value.prefix(40))' is not one of the allowed values"
        }
        // A number is read only for a field that may hold one (most cells are text).
        let numeric = types.number || !types.string ? Double(value) : nil
        if types.integer {
            guard Int64(value) != nil else { return "'\(value.prefix(40))' is not an integer" }
        } else if types.number {
            guard numeric != nil, Self.isDecimalNumber(value) else {
                return "'\(value.prefix(40))' is not a number"
            }
        } else if types.boolean {
            guard value == "true" || value == "false" else { return "'\(value.prefix(40))' is not true or false" }
        } else if types.noCellForm {
            return "an \(check.typeNames) cannot come from a CSV cell"
        }
        if let numeric, !types.string {
            if let minimum = check.minimum, numeric < minimum { return "\(value) is below the minimum \(minimum)" }
            if let maximum = check.maximum, numeric > maximum { return "\(value) is above the maximum \(maximum)" }
        }
        if check.dates, let problem = CivilDate.problem(value) { return problem }
        if types.textual {
            let length = check.minLength == nil && check.maxLength == nil ? 0 : Self.characterCount(value)
            if let minLength = check.minLength, length < minLength { return "shorter than \(minLength) characters" }
            if let maxLength = check.maxLength, length > maxLength { return "longer than \(maxLength) characters" }
            if let matcher = check.matcher, !matcher.matches(value) {
                return "'\(value.prefix(40))' does not match the pattern \(check.pattern ?? "")"
            }
        }
        return nil
    }
}

/// A schema pattern, compiled once: answered by a ``SimplePattern`` when the pattern is one (no
/// regular-expression engine per cell), else by `NSRegularExpression`.
final class PatternMatcher: @unchecked Sendable {
    private let simple: SimplePattern?
    private let regex: NSRegularExpression

    init(_ pattern: String) throws {
        regex = try NSRegularExpression(pattern: pattern)
        simple = SimplePattern(pattern)
    }

    /// Whether the pattern matches somewhere in `value` (anchors as the pattern says).
    func matches(_ value: String) -> Bool {
        if let simple { return simple.matches(value) }
        return regex.firstMatch(in: value, range: NSRange(value.startIndex..., in: value)) != nil
    }
}
