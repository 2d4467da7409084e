import CivitasCrypto
import CivitasPrivacy
import Foundation
import Testing

/// Bytes no schema field can mean are refused with their row and field; what spreadsheet tools
/// write (a byte-order mark) is read as meant; JSON Lines errors say where and why.
@Suite("Bytes the schema cannot mean")
struct BytesTheSchemaCannotMeanTests {
    static let schema = try! DatasetSchema.parse(Array("""
        {"title": "Visits", "type": "object", "required": ["person"],
         "properties": {"person": {"type": "string", "x-privacy": {"class": "subject"}},
                        "note": {"type": "string", "x-privacy": {"class": "public"}},
                        "location": {"type": "object", "x-privacy": {"class": "public"}}}}
        """.utf8))

    @Test("NUL and other control characters are refused, in the subject field even tab and newline")
    func controlCharacters() throws {
        let table = CSVTable(columns: ["person", "note"], rows: [["P1", "fine\twith a tab"], ["P\u{0}2", "ok"], ["P3", "bell\u{7}"], ["P4\t", "ok"]])
        let issues = Self.schema.validate(table)
        #expect(issues.map(\.description) == [
            "row 2, field 'person': holds the control character U+0000",
            "row 3, field 'note': holds the control character U+0007",
            "row 4, field 'person': holds the control character U+0009",
        ])
        let (_, jsonIssues) = JSONRecords.validate([["person": "P\u{1B}9"]], schema: Self.schema, limit: 10)
        #expect(jsonIssues.map(\.description) == ["row 1, field 'person': holds the control character U+001B"])
    }

    @Test("A UTF-8 byte-order mark does not become part of the first column's name")
    func byteOrderMark() throws {
        let table = try CSVTable.parse(CSVTable.byteOrderMark + Array("person,note\nP1,x\n".utf8))
        #expect(table.columns == ["person", "note"])
        #expect(Self.schema.validate(table).isEmpty)
        let records = try JSONRecords.parseJSONLines(CSVTable.byteOrderMark + Array(#"{"person":"P1"}"#.utf8), maximumRecords: 10)
        #expect(records.first?["person"] == "P1")
    }

    @Test("JSON Lines errors name the line, the byte and the reason")
    func jsonLinesErrors() throws {
        for (text, reason) in [(#"{"person":"P1","person":"P2"}"#, "duplicate"), ("{\"person\": NaN}", "byte"),
                               (#"{"a":1e400}"#, "byte"), ("[1]", "not an object"), (String(repeating: "[", count: 200), "byte")] {
            let error = try #require(throws: PrivacyError.self) {
                try JSONRecords.parseJSONLines(Array("{\"person\":\"P0\"}\n\(text)\n".utf8), maximumRecords: 10)
            }
            #expect(error.message.hasPrefix("line 2"), "\(error.message)")
            #expect(error.message.contains(reason), "\(text): \(error.message)")
        }
    }

    @Test("A pattern that does not compile is refused at registration, naming the field")
    func invalidPattern() throws {
        let error = try #require(throws: PrivacyError.self) {
            try DatasetSchema.parse(Array(#"{"properties": {"zip": {"type": "string", "pattern": "^[0-9", "x-privacy": {"class": "public"}}}}"#.utf8))
        }
        #expect(error.message.contains("'zip'") && error.message.contains("pattern"))
    }

    @Test("A schema for personal data refuses fields it does not name, whatever additionalProperties says")
    func unknownFieldsOfPersonalData() throws {
        let callUser = try DatasetSchema.parse(Array(try Data(contentsOf: URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Schemas/datasets/call-user.schema.json"))))
        let (_, issues) = JSONRecords.validate([["id": "urn:ngsi-ld:CallUser:1", "type": "CallUser", "telephone": "+34 600 000 000",
                                                 "fullName": "A Person"]], schema: callUser, limit: 10)
        #expect(Set(issues.map(\.field)) == ["telephone", "fullName"])
        let open = try DatasetSchema.parse(Array(#"{"properties": {"count": {"type": "integer", "x-privacy": {"class": "public"}}}}"#.utf8))
        #expect(open.allowsOtherColumns, "a schema without personal data may stay open")
    }

    @Test("GeoJSON positions off the globe are refused")
    func geoJSONRanges() throws {
        let off: JSONValue = ["type": "Point", "coordinates": [200, 95]]
        let (_, issues) = JSONRecords.validate([["person": "P1", "location": off]], schema: Self.schema, limit: 10)
        #expect(issues.map(\.field) == ["location"])
        let polygon: JSONValue = ["type": "Polygon", "coordinates": [[[-3.8, 43.4], [-3.7, 43.4], [-3.7, 91], [-3.8, 43.4]]]]
        #expect(JSONRecords.validate([["person": "P1", "location": polygon]], schema: Self.schema, limit: 10).1.count == 1)
        let fine: JSONValue = ["type": "Point", "coordinates": [-3.80, 43.46]]
        #expect(JSONRecords.validate([["person": "P1", "location": fine]], schema: Self.schema, limit: 10).1.isEmpty)
    }
}
