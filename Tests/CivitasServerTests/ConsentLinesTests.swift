import CivitasBroker
import CivitasCrypto
import Testing
@testable import CivitasServer

@Suite("Consent lines")
struct ConsentLinesTests {
    /// The fields of a request, for comparing two readings.
    private func fields(_ request: ConsentRequest) -> [String] {
        [request.dataset, request.subject, request.purpose, request.granted ? "grant" : "withdraw", request.notice,
         request.collectionMethod, request.jurisdiction]
    }

    /// The event the general JSON parser reads from a line, or nil where it refuses the line.
    private func parsed(_ line: [UInt8]) -> [String]? {
        guard let item = try? JSONParser.parse(line), item.objectValue != nil,
              let request = try? ConsentLines.request(item, label: "") else { return nil }
        return fields(request)
    }

    private func plain(_ line: [UInt8]) -> [String]? {
        line.withUnsafeBufferPointer { ConsentLines.plainEvent($0) }.map(fields)
    }

    @Test("A line read without a JSON value gives the parser's event; any other line is left to the parser")
    func plainLinesAgreeWithTheParser() throws {
        let plainLines = [
            #"{"action":"grant","collection_method":"web-form","dataset":"calls","jurisdiction":"US-PA","notice":"n-1","purpose":"research","subject":"215-0000000001"}"#,
            #"{"subject":"s","purpose":"p","dataset":"d","action":"withdraw"}"#,
            #" { "dataset" : "d" ,"# + "\t" + #""subject":"Zurich-8001", "purpose":"p", "action":"grant" } "# + "\r",
            #"{"dataset":"d","subject":"a'b/c<d>","purpose":"p","action":"grant","notice":"","jurisdiction":"EU"}"#,
        ]
        for line in plainLines {
            let bytes = Array(line.utf8)
            let fast = try #require(plain(bytes), "\(line)")
            #expect(fast == parsed(bytes), "\(line)")
        }
        // Lines the plain reading leaves to the parser: escapes, other members, values that are
        // not strings, a member named twice, nesting, a missing field, text beyond ASCII (valid or
        // not), trailing text.
        let otherLines: [[UInt8]] = [
            #"{"dataset":"d","subject":"A\u0042","purpose":"p","action":"grant"}"#,
            #"{"dataset":"d","subject":"a\"b","purpose":"p","action":"grant"}"#,
            #"{"dataset":"d","subject":"s","purpose":"p","action":"grant","extra":"x"}"#,
            #"{"dataset":"d","subject":1,"purpose":"p","action":"grant"}"#,
            #"{"dataset":"d","subject":"s","subject":"t","purpose":"p","action":"grant"}"#,
            #"{"dataset":"d","subject":"s","purpose":"p","action":"grant","notice":{"id":"n"}}"#,
            #"{"dataset":"d","subject":"s","purpose":"p"}"#,
            #"{"dataset":"d","subject":"s","purpose":"p","action":"allow"}"#,
            #"{"dataset":"d","subject":"s","purpose":"p","action":"grant"} x"#,
            #"{"dataset":"d","subject":"s","purpose":"p","action":"grant",}"#,
            #"["dataset","d"]"#,
            #"{"dataset":"d","subject":"Zürich 東京 🙂","purpose":"p","action":"grant"}"#,
        ].map { Array($0.utf8) } + [
            Array(#"{"dataset":"d","subject":""#.utf8) + [0xC3, 0x28] + Array(#"","purpose":"p","action":"grant"}"#.utf8),
            Array(#"{"dataset":"d","subject":"a"#.utf8) + [0x09] + Array(#"b","purpose":"p","action":"grant"}"#.utf8),
        ]
        for line in otherLines {
            #expect(plain(line) == nil, "\(String(decoding: line, as: UTF8.self))")
        }
        // Control: reading the escaped line's raw bytes would differ from the parser.
        let escaped = otherLines[0]
        let raw = ["d", #"A\u0042"#, "p", "grant", "", "", ""]
        #expect(parsed(escaped) == ["d", "AB", "p", "grant", "", "", ""])
        #expect(parsed(escaped) != raw)
    }

    /// The message of the refusal of `body`, or nil when it is read.
    private func refusal(_ body: [UInt8]) -> String? {
        do {
            _ = try ConsentLines.requests(jsonLines: body)
            return nil
        } catch let error as APIError {
            return error.code == "bad_request" ? error.message : "\(error.code): \(error.message)"
        } catch {
            return "\(error)"
        }
    }

    @Test("A JSON Lines body: blank lines skipped, every line read in order, the wrong line named")
    func bodies() throws {
        let lines: [String] = [
            #"{"dataset":"d","subject":"one","purpose":"p","action":"grant"}"#, "", "  ",
            #"{"dataset":"d","subject":"tw\u006F","purpose":"p","action":"withdraw"}"#,
            #"{"dataset":"d","subject":"three","purpose":"p","action":"grant"}"#,
            #"{"dataset":"d","subject":"Zürich","purpose":"p","action":"grant"}"#,
        ]
        let body = Array(lines.joined(separator: "\n").utf8)
        let requests = try ConsentLines.requests(jsonLines: body)
        #expect(requests.map(\.subject) == ["one", "two", "three", "Zürich"])
        #expect(requests.map(\.granted) == [true, false, true, true])

        let wrong = Array((#"{"dataset":"d","subject":"one","purpose":"p","action":"grant"}"# + "\n\n" + #"{"dataset":"d","#).utf8)
        #expect(refusal(wrong) == "line 3 is not a JSON object of at most 8 KiB")
        let missing = Array((#"{"dataset":"d","subject":"one","purpose":"p","action":"grant"}"# + "\n" + #"{"dataset":"d"}"#).utf8)
        #expect(refusal(missing) == "event 2: a consent event needs dataset, subject, purpose and action (grant or withdraw)")
        let tooMany = Array(String(repeating: #"{"dataset":"d","subject":"s","purpose":"p","action":"grant"}"# + "\n",
                                   count: Broker.maximumConsentEvents + 1).utf8)
        #expect(refusal(tooMany) == "send 1 to \(Broker.maximumConsentEvents) consent events at a time")
    }
}
