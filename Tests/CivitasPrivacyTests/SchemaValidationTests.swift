import CivitasCrypto
import Foundation
import Testing
@testable import CivitasPrivacy

@Suite("Dataset schema validation")
struct SchemaValidationTests {
    static let schema = #"""
    {"type":"object","properties":{
      "when":{"type":"string","pattern":"^[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?$",
              "x-privacy":{"class":"quasi-identifier","hierarchy":{"date":["hour","day","month","year"]}}},
      "note":{"type":"string","pattern":"^[0-9]{4}-[0-9]{2}-[0-9]{2}$","x-privacy":{"class":"public"}}}}
    """#

    @Test("A date-generalized field holds real calendar dates: the pattern alone is not enough",
          arguments: [
            ("2016-03-01 09:00:00", nil),
            ("2016-02-29", nil),
            ("2000-02-29 23:59:59", nil),
            ("2016-13-01", "no month 13"),
            ("2016-02-30", "no day 30 in month 2 of 2016"),
            ("2015-02-29", "no day 29 in month 2 of 2015"),
            ("1900-02-29", "no day 29 in month 2 of 1900"),
            ("2016-04-31 10:00:00", "no day 31 in month 4"),
            ("2016-03-01 24:00:00", "no time 24:0"),
            ("2016-03-01 23:60:00", "no time 23:60"),
            ("2016-03-01 23:59:61", "impossible second"),
          ] as [(String, String?)])
    func calendarDates(value: String, expected: String?) throws {
        let schema = try DatasetSchema.parse(Array(Self.schema.utf8))
        let issues = schema.validate(CSVTable(columns: ["when"], rows: [[value]]))
        if let expected {
            #expect(issues.count == 1)
            #expect(issues.first?.description.contains("row 1, field 'when'") == true)
            #expect(issues.first?.reason.contains(expected) == true, "\(issues)")
        } else {
            #expect(issues.isEmpty, "\(issues)")
        }
        let (_, jsonIssues) = JSONRecords.validate([["when": .string(value)]], schema: schema, limit: 5)
        #expect(jsonIssues.map(\.reason) == issues.map(\.reason))
    }

    @Test("Fields without a date hierarchy are checked by their pattern only")
    func otherFields() throws {
        let schema = try DatasetSchema.parse(Array(Self.schema.utf8))
        #expect(schema.validate(CSVTable(columns: ["note"], rows: [["2016-13-45"]])).isEmpty)
    }
}

@Suite("NGSI entity forms")
struct NGSIFormsTests {
    @Test("NGSI-LD normalized, NGSI v2 normalized and key-values give the same record, the normalized forms with the unit they state")
    func sameRecord() throws {
        let keyValues = #"{"id":"urn:x:1","type":"AirQualityObserved","temperature":12.2,"dateObserved":"2016-03-15T11:00:00Z","location":{"type":"Point","coordinates":[-3.7,40.4]},"refDevice":"urn:d:1"}"#
        let linkedData = #"""
            {"id":"urn:x:1","type":"AirQualityObserved","@context":["https://example.org/ctx.jsonld"],
             "temperature":{"type":"Property","value":12.2,"unitCode":"CEL"},
             "dateObserved":{"type":"Property","value":{"@type":"DateTime","@value":"2016-03-15T11:00:00Z"}},
             "location":{"type":"GeoProperty","value":{"type":"Point","coordinates":[-3.7,40.4]}},
             "refDevice":{"type":"Relationship","object":"urn:d:1"}}
            """#
        let version2 = #"""
            {"id":"urn:x:1","type":"AirQualityObserved",
             "temperature":{"type":"Number","value":12.2,"metadata":{"unitCode":{"value":"CEL"}}},
             "dateObserved":{"type":"DateTime","value":"2016-03-15T11:00:00Z"},
             "location":{"type":"geo:json","value":{"type":"Point","coordinates":[-3.7,40.4]}},
             "refDevice":{"type":"Relationship","value":"urn:d:1"}}
            """#
        // The normalized forms also say the temperature's unit, which key-values cannot: it is kept as a column.
        let expected = try JSONRecords.parseNGSILD(Array(keyValues.utf8), maximumRecords: 1).map { $0.merging(["temperature.unitCode": "CEL"]) { a, _ in a } }
        #expect(try JSONRecords.parseNGSILD(Array(linkedData.utf8), maximumRecords: 1) == expected)
        #expect(try JSONRecords.parseNGSILD(Array(version2.utf8), maximumRecords: 1) == expected)
    }

    @Test("Key-values objects that merely have a type member are left alone")
    func keyValuesObjects() throws {
        let record = #"{"id":"a","type":"T","address":{"type":"PostalAddress","streetAddress":"25 Walbrook"},"shape":{"type":"Point","coordinates":[1,2]}}"#
        let parsed = try JSONRecords.parseNGSILD(Array(record.utf8), maximumRecords: 1)
        #expect(parsed.first?["address"]?["streetAddress"]?.stringValue == "25 Walbrook")
        #expect(parsed.first?["shape"]?["type"]?.stringValue == "Point")
    }

    @Test("A number cell is read by the grammar the regular expression states, for every short string of its characters")
    func decimalNumbers() throws {
        // Anchored at the very end (`\z`): ICU's `$` also matches before a final line break, which
        // cells never hold (control characters are refused before this check).
        let regex = try NSRegularExpression(pattern: #"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\z"#)
        func byRegex(_ text: String) -> Bool {
            regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
        }
        let alphabet = ["0", "7", "-", "+", ".", "e", "E", " ", "x"]
        var strings = [""]
        var frontier = [""]
        for _ in 0..<5 {
            frontier = frontier.flatMap { prefix in alphabet.map { prefix + $0 } }
            strings += frontier
        }
        strings += ["-0.5e+10", "12.", ".5", "1e", "1e+", "--1", "1.2.3", "٣", "1\n", "00012.500"]
        var disagreements: [String] = []
        for text in strings where DatasetSchema.isDecimalNumber(text) != byRegex(text) { disagreements.append(text) }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(10))")
        #expect(strings.filter(byRegex).count > 100, "the strings must include many numbers, or the test shows little")
    }

    @Test("String lengths count Unicode code points, as JSON Schema does (RFC 8259 characters), in CSV and JSON records alike",
          arguments: [("ab", true), ("e\u{301}", true), ("🇪🇺", true), ("日本", true), ("e\u{301}b", false), ("日本語", false), ("a", false)]
          as [(String, Bool)])
    func lengthsInCodePoints(value: String, fits: Bool) throws {
        // Exactly 2 characters: an accented e written with a combining accent, or a flag, is one
        // grapheme but two code points, so it fits; counted in graphemes it would not.
        let schema = try DatasetSchema.parse(Array(#"{"type":"object","properties":{"name":{"type":"string","maxLength":2,"minLength":2,"x-privacy":{"class":"public"}}}}"#.utf8))
        let issues = schema.validate(CSVTable(columns: ["name"], rows: [[value]]))
        #expect(issues.isEmpty == fits, "\(value): \(issues)")
        let (_, jsonIssues) = JSONRecords.validate([["name": .string(value)]], schema: schema, limit: 5)
        #expect(jsonIssues.map(\.reason) == issues.map(\.reason))
    }
}
