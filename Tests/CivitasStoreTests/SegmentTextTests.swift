import CivitasCrypto
import Testing
@testable import CivitasStore

@Suite("Segment text")
struct SegmentTextTests {
    /// A segment's plaintext as the sealing writes it.
    private func segment(columns: [String], rows: [[String]]) -> [UInt8] {
        var text = Array(#"{"columns":"#.utf8)
        CanonicalJSON.appendStringArray(columns, to: &text)
        text += #","rows":["#.utf8
        for (index, row) in rows.enumerated() {
            if index > 0 { text.append(UInt8(ascii: ",")) }
            CanonicalJSON.appendStringArray(row, to: &text)
        }
        text += "]}".utf8
        return text
    }

    /// The rows as any JSON parser reads them.
    private func parsed(_ text: [UInt8]) throws -> (columns: [String], rows: [[String]]) {
        let object = try #require(try JSONParser.parse(text).objectValue)
        guard case .array(let columns)? = object["columns"], case .array(let rows)? = object["rows"] else {
            Issue.record("not a segment")
            return ([], [])
        }
        return (columns.compactMap(\.stringValue), rows.map { row in
            if case .array(let cells) = row { return cells.compactMap(\.stringValue) }
            return []
        })
    }

    @Test("Reads what the sealing writes as a JSON parser reads it: escapes, accents, empty values and rows")
    func readsLikeAJSONParser() throws {
        let alphabet: [String] = ["a", "Z", "0", " ", ",", "\"", "\\", "/", "\n", "\t", "\r", "\u{8}", "\u{C}", "é", "e\u{301}", "東", "🚑", "\u{2028}", "\u{7F}"]
        // A failing trial prints the segment it read, so it can be replayed by hand.
        var generator = SystemRandomNumberGenerator()
        for trial in 0..<300 {
            let width = Int(generator.next() % 5)
            let columns = (0..<width).map { "c\($0)" + (trial % 7 == 0 ? "\"" : "") }
            let rows = (0..<Int(generator.next() % 12)).map { _ in
                (0..<width).map { _ in
                    String((0..<Int(generator.next() % 6)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }.joined())
                }
            }
            let text = segment(columns: columns, rows: rows)
            let shown = "trial \(trial): \(String(decoding: text, as: UTF8.self))"
            let read = try #require(SegmentText.chunk(text).map { (columns: $0.columns, rows: $0.rows) }, "\(shown)")
            let expected = try parsed(text)
            #expect(read.columns == expected.columns && read.rows == expected.rows, "\(shown)")
            #expect(read.columns == columns && read.rows == rows, "\(shown)")
        }
    }

    @Test("Leaves to the JSON parser what the sealing does not write: \\u escapes, spaces, other values")
    func declinesOtherForms() throws {
        // Positive control: the plain form is read.
        #expect(SegmentText.chunk(Array(#"{"columns":["a"],"rows":[["x"]]}"#.utf8)) != nil)
        let others = [
            #"{"columns":["a"],"rows":[["\u0001"]]}"#,  // a control character, as canonical JSON escapes it
            #"{"columns": ["a"], "rows": [["x"]]}"#,
            #"{"columns":["a"],"rows":[[1]]}"#,
            #"{"columns":["a"],"rows":[["x"]]} "#,
            #"{"columns":["a"],"rows":[["x"]],"more":1}"#,
            #"{"columns":["a"],"rows":[["x"]"#,
        ]
        for other in others {
            #expect(SegmentText.chunk(Array(other.utf8)) == nil, "\(other)")
        }
        // Bytes that are not UTF-8.
        #expect(SegmentText.chunk(Array(#"{"columns":["a"],"rows":[[""#.utf8) + [0xFF] + Array(#""]]}"#.utf8)) == nil)
    }
}
