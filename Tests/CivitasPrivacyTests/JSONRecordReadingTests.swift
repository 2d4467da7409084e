import CivitasCrypto
import Testing
@testable import CivitasPrivacy

/// JSON Lines and NGSI batches are read a record at a time from blocks that may end anywhere:
/// inside a string, an escape, a nested array, a line ending.
@Suite("JSON records read block by block")
struct JSONRecordReadingTests {
    static let ngsi = #"""
         [ {"id": "urn:ngsi-ld:Call:1", "type": "Call", "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
            "note": {"type": "Property", "value": "a ] in \"quotes\", a } and a \\"},
            "where": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-75.2, 40.1]}}},
           {"id": "urn:ngsi-ld:Call:2", "type": "Call", "note": "[{,}]", "tags": [[1, 2], [3]]} ,
           {"id": "urn:ngsi-ld:Call:3", "type": "Call", "count": {"type": "Number", "value": 3, "metadata": {}}}
         ]
        """#
    static let jsonLines = "\u{FEFF}{\"a\": \"x\\ny\", \"b\": [1, {\"c\": \"}\"}]}\r\n\n  \n{\"a\": \"second\"}\n{\"a\": \"last, no newline\"}"

    /// The records read from `text` a `blockSize` at a time.
    func read(_ text: String, ngsi: Bool, blockSize: Int) throws -> [[String: JSONValue]] {
        var records: [[String: JSONValue]] = []
        var positions: [Int] = []
        let source = MemorySource(Array(text.utf8))
        if ngsi {
            try JSONRecordReader.readNGSI(from: source, maximumRecords: 10, blockSize: blockSize) { records.append($0); positions.append($1) }
        } else {
            try JSONRecordReader.readJSONLines(from: source, maximumRecords: 10, blockSize: blockSize) { records.append($0); positions.append($1) }
        }
        #expect(positions == (ngsi ? Array(1...records.count) : [1, 4, 5]))
        return records
    }

    @Test("Every block size gives the entities of the array parsed whole")
    func ngsiBlocks() throws {
        // The oracle: the whole text parsed as one JSON value, each element made key-values.
        guard case .array(let entities) = try JSONParser.parse(Array(Self.ngsi.utf8)) else { Issue.record("not an array"); return }
        let expected = entities.compactMap(\.objectValue).map(JSONRecords.keyValues)
        #expect(expected.count == 3 && expected[0]["note"] == .string(#"a ] in "quotes", a } and a \"#) && expected[2]["count"] == .number(3))
        for size in 1...Self.ngsi.utf8.count + 1 {
            #expect(try read(Self.ngsi, ngsi: true, blockSize: size) == expected, "block size \(size)")
        }
    }

    @Test("Every block size gives the lines parsed one by one")
    func jsonLinesBlocks() throws {
        let expected: [[String: JSONValue]] = [["a": "x\ny", "b": [1, ["c": "}"]]], ["a": "second"], ["a": "last, no newline"]]
        for size in 1...Self.jsonLines.utf8.count + 1 {
            #expect(try read(Self.jsonLines, ngsi: false, blockSize: size) == expected, "block size \(size)")
        }
    }

    @Test("Malformed arrays, elements and lines are refused whatever the block size, naming the entity or line")
    func refusals() throws {
        let cases: [(String, Bool, String)] = [
            (#"[{"id": "a"},]"#, true, "empty element"),
            (#"[{"id": "a"} {"id": "b"}]"#, true, "entity 1 is not JSON"),
            (#"[{"id": "a"}"#, true, "not closed"),
            (#"[{"id": "a"}] x"#, true, "after the array"),
            (#"[{"id": "a"}, 5]"#, true, "entity 2 is not a JSON object"),
            ("", true, "empty"),
            ("5", true, "an entity or an array of entities"),
            ("{\"a\": 1}\n{\"a\": }\n", false, "line 2"),
            ("{\"a\": 1}\n[1]\n", false, "line 2 holds a JSON value that is not an object"),
        ]
        for (text, ngsi, reason) in cases {
            for size in [1, 2, 3, 7, 4096] {
                #expect("\(text) in blocks of \(size)", performing: { try read(text, ngsi: ngsi, blockSize: size) }, throws: {
                    ($0 as? PrivacyError)?.message.contains(reason) == true
                })
            }
        }
    }

    @Test("A record longer than the limit is refused before it is held")
    func longRecord() throws {
        let long = "{\"a\": \"" + String(repeating: "x", count: JSONRecordReader.maximumRecordBytes) + "\"}\n"
        #expect(performing: { try read(long, ngsi: false, blockSize: 1 << 16) }, throws: {
            ($0 as? PrivacyError)?.message.contains("longer than") == true
        })
        #expect(performing: { try read("[" + long + "]", ngsi: true, blockSize: 1 << 16) }, throws: {
            ($0 as? PrivacyError)?.message.contains("longer than") == true
        })
    }
}
