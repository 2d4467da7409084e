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
        let expected = try entities.compactMap(\.objectValue).map { try JSONRecords.keyValues($0) }
        #expect(expected.count == 3 && expected[0]["note"] == .string(#"a ] in "quotes", a } and a \"#) && expected[2]["count"] == .number(3))
        for size in 1...Self.ngsi.utf8.count + 1 {
            #expect(try read(Self.ngsi, ngsi: true, blockSize: size) == expected, "block size \(size)")
        }
    }

    @Test("An attribute's observation time, unit, sub-properties and v2 metadata become columns; concise form reads as normalized; storage times are dropped")
    func attributeFacts() throws {
        let normalized = #"""
            {"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved", "createdAt": "2026-01-01T00:00:00Z",
            "intensity": {"type": "Property", "value": 197, "observedAt": "2016-12-07T11:10:00Z", "unitCode": "E50",
                          "measuredBy": {"type": "Relationship", "object": "urn:ngsi-ld:Device:7"}},
            "refRoad": {"type": "Relationship", "object": "urn:ngsi-ld:Road:1"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}}}
            """#
        let concise = #"""
            {"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
            "intensity": {"value": 197, "observedAt": "2016-12-07T11:10:00Z", "unitCode": "E50", "measuredBy": {"object": "urn:ngsi-ld:Device:7"}},
            "refRoad": {"object": "urn:ngsi-ld:Road:1"}, "location": {"type": "Point", "coordinates": [-3.7, 40.4]}}
            """#
        let expected: [String: JSONValue] = ["id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved", "intensity": 197,
                                             "intensity.observedAt": "2016-12-07T11:10:00Z", "intensity.unitCode": "E50",
                                             "intensity.measuredBy": "urn:ngsi-ld:Device:7", "refRoad": "urn:ngsi-ld:Road:1",
                                             "location": ["type": "Point", "coordinates": [-3.7, 40.4]]]
        for text in [normalized, concise] {
            #expect(try read(text, ngsi: true, blockSize: 7) == [expected])
        }
        let v2 = #"{"id": "TFO-1", "type": "TrafficFlowObserved", "intensity": {"type": "Number", "value": 197, "metadata": {"unitCode": {"type": "Text", "value": "E50"}}}}"#
        #expect(try read(v2, ngsi: true, blockSize: 64) == [["id": "TFO-1", "type": "TrafficFlowObserved", "intensity": 197, "intensity.unitCode": "E50"]])
        // A structured value that merely has a "value" member among others stays as it is.
        let structured = #"{"id": "x", "type": "T", "size": {"value": 3, "unit": "m"}}"#
        #expect(try read(structured, ngsi: true, blockSize: 64) == [["id": "x", "type": "T", "size": ["value": 3, "unit": "m"]]])
    }

    @Test("Types, attribute names and kinds written as IRIs read as the terms a schema uses: the entity's own context, the NGSI-LD core and Smart Data Models namespaces")
    func namesAsIRIs() throws {
        let short = #"{"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved", "intensity": {"type": "Property", "value": 197, "observedAt": "2016-12-07T11:10:00Z"}, "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}}, "laneId": 2}"#
        let iris = #"""
            {"@context": ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld", {"tfo": "https://smartdatamodels.org/dataModel.Transportation/", "lane": "https://smartdatamodels.org/dataModel.Transportation/laneId"}],
             "id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "https://smartdatamodels.org/dataModel.Transportation/TrafficFlowObserved",
             "tfo:intensity": {"type": "https://uri.etsi.org/ngsi-ld/Property", "value": 197, "https://uri.etsi.org/ngsi-ld/observedAt": "2016-12-07T11:10:00Z"},
             "https://uri.etsi.org/ngsi-ld/location": {"type": "https://uri.etsi.org/ngsi-ld/GeoProperty", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}},
             "lane": 2}
            """#
        let expected = try read(short, ngsi: true, blockSize: 4096)
        #expect(expected.first?["intensity.observedAt"] == "2016-12-07T11:10:00Z")
        #expect(try read(iris, ngsi: true, blockSize: 13) == expected)
        // An IRI in no namespace the broker knows, and not named by the entity's context, is kept as written.
        let unknown = #"{"id": "x", "type": "T", "https://example.org/vocab/speed": 3}"#
        #expect(try read(unknown, ngsi: true, blockSize: 64) == [["id": "x", "type": "T", "https://example.org/vocab/speed": 3]])
    }

    @Test("A notification's entities are read as a batch; an attribute with several instances is refused with what to do")
    func notificationsAndInstances() throws {
        let ld = #"""
            {"id": "urn:ngsi-ld:Notification:1", "type": "Notification", "subscriptionId": "urn:ngsi-ld:Subscription:1",
            "notifiedAt": "2026-12-05T10:00:00Z", "data": [{"id": "a", "type": "T", "n": {"type": "Property", "value": 1}}, {"id": "b", "type": "T", "n": 2}]}
            """#
        #expect(try read(ld, ngsi: true, blockSize: 5) == [["id": "a", "type": "T", "n": 1], ["id": "b", "type": "T", "n": 2]])
        let v2 = #"{"subscriptionId": "5a1f", "data": [{"id": "c", "type": "T", "n": {"type": "Number", "value": 3, "metadata": {}}}]}"#
        #expect(try read(v2, ngsi: true, blockSize: 5) == [["id": "c", "type": "T", "n": 3]])
        let instances = #"[{"id": "a", "type": "T", "n": [{"type": "Property", "value": 1, "datasetId": "urn:ngsi-ld:Dataset:x"}, {"type": "Property", "value": 2}]}]"#
        #expect(performing: { try read(instances, ngsi: true, blockSize: 9) }, throws: {
            ($0 as? PrivacyError)?.message.contains("attribute n has 2 instances (datasetId)") == true
        })
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
