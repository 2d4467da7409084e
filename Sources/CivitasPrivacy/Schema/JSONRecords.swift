import CivitasCrypto

/// Records that arrive as JSON (JSON Lines, or NGSI-LD entities in normalized or key-values form)
/// turned into the flat table the rest of the broker works on.
public enum JSONRecords {
    /// Parses JSON Lines held in memory (see ``JSONRecordReader/readJSONLines(from:maximumRecords:blockSize:_:)``).
    public static func parseJSONLines(_ bytes: [UInt8], maximumRecords: Int) throws -> [[String: JSONValue]] {
        var records: [[String: JSONValue]] = []
        try JSONRecordReader.readJSONLines(from: MemorySource(bytes), maximumRecords: maximumRecords) { record, _ in records.append(record) }
        return records
    }

    /// Parses NGSI-LD held in memory (see ``JSONRecordReader/readNGSI(from:maximumRecords:blockSize:_:)``).
    public static func parseNGSILD(_ bytes: [UInt8], maximumRecords: Int) throws -> [[String: JSONValue]] {
        var records: [[String: JSONValue]] = []
        try JSONRecordReader.readNGSI(from: MemorySource(bytes), maximumRecords: maximumRecords) { record, _ in records.append(record) }
        return records
    }

    /// An NGSI-LD entity (normalized, concise or key-values) or an NGSI v2 entity as a flat
    /// record: each attribute's value under its name, and what the attribute says about it — its
    /// `observedAt`, `unitCode`, sub-properties and sub-relationships (NGSI-LD), its metadata
    /// (NGSI v2) — as columns `attribute.member` the schema classifies like any other (a schema
    /// that does not list them refuses them, naming them, rather than lose them). `@context`
    /// and what a context broker adds about storage (`createdAt`, `modifiedAt`) are dropped.
    /// An attribute with several instances (`datasetId`) is refused: one record holds one value
    /// per column.
    static func keyValues(_ entity: [String: JSONValue], entityNumber: Int = 1) throws -> [String: JSONValue] {
        var record: [String: JSONValue] = [:]
        let names = NGSINames(context: entity["@context"])
        /// An attribute object with its member names and kind as short terms.
        func termed(_ value: JSONValue) -> JSONValue {
            guard case .object(let members) = value else { return value }
            var out: [String: JSONValue] = [:]
            for (key, item) in members {
                let key = key.hasPrefix("@") ? key : names.term(key)
                out[key] = key == "type" ? item.stringValue.map { .string(names.term($0)) } ?? item : item
            }
            return .object(out)
        }
        for (written, given) in entity {
            let name = written.hasPrefix("@") ? written : names.term(written)
            var attribute = given
            if case .array(let items) = given { attribute = .array(items.map(termed)) } else if given.objectValue != nil { attribute = termed(given) }
            switch name {
            case "@context", "createdAt", "modifiedAt": continue
            case "id":
                record[name] = given
                continue
            case "type":
                if case .array(let types) = given {
                    record[name] = .array(types.map { $0.stringValue.map { .string(names.term($0)) } ?? $0 })
                } else {
                    record[name] = given.stringValue.map { .string(names.term($0)) } ?? given
                }
                continue
            default: break
            }
            if case .array(let instances) = attribute, instances.contains(where: { $0.objectValue?["datasetId"] != nil || isAttribute($0.objectValue) }) {
                throw PrivacyError(.invalidValue, "entity \(entityNumber): attribute \(name.prefix(80)) has \(instances.count) instances (datasetId); a record holds one value per column: send each instance in an entity of its own, or only the default instance")
            }
            guard let members = attribute.objectValue, isAttribute(members), let value = attributeValue(members) else {
                record[name] = attribute
                continue
            }
            record[name] = value
            if let metadata = members["metadata"]?.objectValue {
                // NGSI v2: {"unitCode": {"type": "Text", "value": "KMH"}, …}.
                for (key, item) in metadata { record["\(name).\(key)"] = item.objectValue.flatMap { attributeValue($0) } ?? item }
            }
            for (member, detail) in members where !attributeMembers.contains(member) {
                record["\(name).\(member)"] = detail.objectValue.flatMap { isAttribute($0) ? attributeValue($0) : nil } ?? typedLiteral(detail)
            }
        }
        return record
    }

    /// Members that make up an attribute itself (its kind, value and instance), not facts about it.
    static let attributeMembers: Set<String> = ["type", "value", "object", "languageMap", "vocab", "valueList", "json", "objectList", "objectType",
                                                "datasetId", "instanceId", "createdAt", "modifiedAt", "deletedAt", "lang", "metadata"]
    static let ldKinds: Set<String> = ["Property", "GeoProperty", "LanguageProperty", "VocabProperty", "ListProperty", "JsonProperty",
                                       "Relationship", "ListRelationship"]

    /// Whether an object is an NGSI attribute: NGSI-LD normalized (a `type` of attribute kind),
    /// NGSI-LD concise (no `type`; a `value`, `object`, `languageMap`, `vocab`, `valueList`,
    /// `json` or `objectList`, the other members facts about it), or NGSI v2 normalized
    /// (`{type, value, metadata}`). A GeoJSON geometry or another structured value is not.
    static func isAttribute(_ members: [String: JSONValue]?) -> Bool {
        guard let members else { return false }
        if let kind = members["type"]?.stringValue {
            if ldKinds.contains(kind) { return true }
            return members["value"] != nil && Set(members.keys).isSubset(of: ["type", "value", "metadata"])
        }
        let carriers: Set<String> = ["value", "object", "languageMap", "vocab", "valueList", "json", "objectList"]
        guard members.keys.contains(where: carriers.contains) else { return false }
        // Concise: every other member is a known fact (observedAt, unitCode, …) or a sub-attribute (an object).
        return members.allSatisfy { key, item in
            attributeMembers.contains(key) || key == "observedAt" || key == "unitCode" || item.objectValue != nil
        }
    }

    /// The value an attribute carries.
    static func attributeValue(_ members: [String: JSONValue]) -> JSONValue? {
        if let inner = members["value"] ?? members["languageMap"] ?? members["vocab"] ?? members["valueList"] ?? members["json"] {
            return typedLiteral(inner)
        }
        return members["object"] ?? members["objectList"]
    }

    /// A JSON-LD typed literal `{"@type": "DateTime", "@value": "…"}` (some publishers write `value`)
    /// becomes its plain value; anything else is returned unchanged.
    static func typedLiteral(_ value: JSONValue) -> JSONValue {
        guard let members = value.objectValue, members["@type"] != nil, members.count == 2,
              let inner = members["@value"] ?? members["value"] else { return value }
        return inner
    }

    /// Longest string value accepted in a record, as for a CSV field.
    public static let maximumFieldLength = 64 * 1024

    /// Checks records against the schema (types, bounds, required and unknown fields, string
    /// length), coercing what key-values payloads are known to carry loosely (numbers written as
    /// strings where the schema declares a number). Returns the (coerced) records and at most
    /// `limit` problems naming record, field and reason.
    public static func validate(_ records: [[String: JSONValue]], schema: DatasetSchema, limit: Int) -> ([[String: JSONValue]], [DatasetSchema.Issue]) {
        var issues: [DatasetSchema.Issue] = []
        var result: [[String: JSONValue]] = []
        for (index, record) in records.enumerated() {
            let (coerced, found) = validate(record, row: index + 1, schema: schema)
            issues += found
            if issues.count >= limit { return (result, Array(issues.prefix(limit))) }
            result.append(coerced)
        }
        return (result, issues)
    }

    /// Checks one record (number `row`) against the schema; returns it coerced, and its problems.
    public static func validate(_ record: [String: JSONValue], row: Int, schema: DatasetSchema) -> ([String: JSONValue], [DatasetSchema.Issue]) {
        var issues: [DatasetSchema.Issue] = []
        var coerced = record
        for field in schema.fields where field.required && record[field.name] == nil {
            issues.append(.init(row: row, field: field.name, reason: "required field is missing"))
        }
        for (name, value) in record {
            guard let field = schema.field(name) else {
                if !schema.allowsOtherColumns { issues.append(.init(row: row, field: name, reason: "field is not in the schema")) }
                continue
            }
            if case .string(let text) = value, text.utf8.count > maximumFieldLength {
                issues.append(.init(row: row, field: name, reason: "value is longer than \(maximumFieldLength) bytes"))
                continue
            }
            var checked = value
            if case .string(let text) = value, !field.types.contains("string"),
               field.types.contains("number") || field.types.contains("integer"), let number = Double(text), number.isFinite {
                checked = .number(number)
                coerced[name] = checked
            }
            if let reason = problem(checked, field: field) { issues.append(.init(row: row, field: name, reason: reason)) }
        }
        return (coerced, issues)
    }

    private static func problem(_ value: JSONValue, field: DatasetSchema.Field) -> String? {
        let types = field.types
        guard !types.isEmpty else { return nil }
        let actual: String
        switch value {
        case .null: actual = "null"
        case .bool: actual = "boolean"
        case .number(let n): actual = n.rounded() == n && types.contains("integer") ? "integer" : "number"
        case .string: actual = "string"
        case .array: actual = "array"
        case .object: actual = "object"
        }
        let accepted = types.contains(actual) || (actual == "integer" && types.contains("number"))
        guard accepted else { return "a \(actual) where the schema expects \(types.sorted().joined(separator: " or "))" }
        if case .string(let text) = value { return DatasetSchema.cellProblem(text, field: field) }
        if let problem = geometryProblem(value) { return problem }
        if case .number(let n) = value {
            if let minimum = field.minimum, n < minimum { return "\(n) is below the minimum \(minimum)" }
            if let maximum = field.maximum, n > maximum { return "\(n) is above the maximum \(maximum)" }
        }
        return nil
    }

    /// A GeoJSON geometry (RFC 7946) whose positions lie off the globe: longitude outside
    /// [-180, 180] or latitude outside [-90, 90]. Nil for anything else.
    static func geometryProblem(_ value: JSONValue) -> String? {
        guard let object = value.objectValue, let type = object["type"]?.stringValue else { return nil }
        if type == "GeometryCollection", case .array(let geometries)? = object["geometries"] {
            return geometries.lazy.compactMap(geometryProblem).first
        }
        guard ["Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"].contains(type),
              let coordinates = object["coordinates"] else { return nil }
        func check(_ value: JSONValue) -> String? {
            guard case .array(let items) = value else { return "GeoJSON coordinates must be arrays of positions" }
            if let first = items.first, case .number = first {
                guard items.count >= 2, case .number(let longitude) = items[0], case .number(let latitude) = items[1] else {
                    return "a GeoJSON position needs a longitude and a latitude"
                }
                guard (-180...180).contains(longitude), (-90...90).contains(latitude) else {
                    return "GeoJSON position [\(longitude), \(latitude)] is off the globe (longitude -180 to 180, latitude -90 to 90)"
                }
                return nil
            }
            return items.lazy.compactMap(check).first
        }
        return check(coordinates)
    }

    /// The records as a table: columns are the union of fields (sorted); strings as they are,
    /// numbers in their canonical form, objects and arrays as canonical JSON, null as empty.
    public static func table(_ records: [[String: JSONValue]]) throws -> CSVTable {
        let columns = Set(records.flatMap(\.keys)).sorted()
        return CSVTable(columns: columns, rows: try records.map { try row($0, columns: columns) })
    }

    /// A record as a row under `columns`: strings as they are, numbers in their canonical form,
    /// objects and arrays as canonical JSON, null or absent as empty.
    public static func row(_ record: [String: JSONValue], columns: [String]) throws -> [String] {
        try columns.map { column -> String in
            switch record[column] {
            case nil, .null?: return ""
            case .string(let text)?: return text
            case let other?: return String(decoding: try CanonicalJSON.encode(other), as: UTF8.self)
            }
        }
    }
}
