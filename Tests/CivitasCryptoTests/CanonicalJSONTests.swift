import Testing
@testable import CivitasCrypto

/// RFC 8785 Appendix B: IEEE 754 bit patterns and the text JCS requires.
private let appendixBNumbers: [(UInt64, String)] = [
    (0x0000000000000000, "0"),
    (0x8000000000000000, "0"),
    (0x0000000000000001, "5e-324"),
    (0x8000000000000001, "-5e-324"),
    (0x7fefffffffffffff, "1.7976931348623157e+308"),
    (0xffefffffffffffff, "-1.7976931348623157e+308"),
    (0x4340000000000000, "9007199254740992"),
    (0xc340000000000000, "-9007199254740992"),
    (0x4430000000000000, "295147905179352830000"),
    (0x44b52d02c7e14af5, "9.999999999999997e+22"),
    (0x44b52d02c7e14af6, "1e+23"),
    (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
    (0x444b1ae4d6e2ef4e, "999999999999999700000"),
    (0x444b1ae4d6e2ef4f, "999999999999999900000"),
    (0x444b1ae4d6e2ef50, "1e+21"),
    (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
    (0x3eb0c6f7a0b5ed8d, "0.000001"),
    (0x41b3de4355555553, "333333333.3333332"),
    (0x41b3de4355555554, "333333333.33333325"),
    (0x41b3de4355555555, "333333333.3333333"),
    (0x41b3de4355555556, "333333333.3333334"),
    (0x41b3de4355555557, "333333333.33333343"),
    (0xbecbf647612f3696, "-0.0000033333333333333333"),
    (0x43143ff3c1cb0959, "1424953923781206.2"),
]

@Suite("RFC 8785 canonical JSON")
struct CanonicalJSONTests {
    @Test("Appendix B number serialization", arguments: appendixBNumbers)
    func appendixBNumber(bits: UInt64, expected: String) throws {
        #expect(try ECMAScriptNumber.format(Double(bitPattern: bits)) == expected)
    }

    @Test("Appendix B: NaN and infinities are refused")
    func nonFiniteRefused() {
        for bits: UInt64 in [0x7fffffffffffffff, 0x7ff0000000000000, 0xfff0000000000000] {
            #expect(throws: CryptoError(.notCanonicalizable, "")) {
                try CanonicalJSON.encode(.number(Double(bitPattern: bits)))
            }
        }
    }

    @Test("Section 3.2.2 example: literals, numbers and string escapes")
    func valuesExample() throws {
        let input = #"""
        {
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }
        """#
        let expected = #"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        #expect(try CanonicalJSON.canonicalize(Array(input.utf8)) == Array(expected.utf8))
    }

    @Test("Section 3.2.3 example: member names sorted by UTF-16 code units")
    func sortingExample() throws {
        let input = #"""
        {
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }
        """#
        let canonical = try CanonicalJSON.canonicalize(Array(input.utf8))
        let values = try #require(JSONParser.parse(canonical).objectValue)
        #expect(values.count == 7)
        // The order the RFC lists: CR, "1", U+0080, U+00F6, U+20AC, U+1F600 (as D83D DE00), U+FB33.
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{FB33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        #expect(canonical == Array(expected.utf8))
    }

    @Test("Nested structures and whole-number floats")
    func structures() throws {
        let input = #"{"1": {"f": {"f": "hi","F": 5} ,"\n": 56.0}, "10": { }, "": "empty", "a": { }, "111": [ { } ], "A": { }}"#
        let expected = #"{"":"empty","1":{"\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}"#
        #expect(try CanonicalJSON.canonicalize(Array(input.utf8)) == Array(expected.utf8))
    }

    @Test("Control characters keep their short escapes; U+007F stays literal")
    func controls() throws {
        let input = #"{"\u0080":"Control\u007f","t":"\b\t\n\f\r\u0001\u001f"}"#
        let expected = "{\"t\":\"\\b\\t\\n\\f\\r\\u0001\\u001f\",\"\u{80}\":\"Control\u{7f}\"}"
        #expect(try CanonicalJSON.canonicalize(Array(input.utf8)) == Array(expected.utf8))
    }

    @Test("I-JSON violations are refused", arguments: [
        #"{"a":1,"a":2}"#,            // duplicate member
        #"["\ud800"]"#,                // lone high surrogate
        #"["\udc00"]"#,                // lone low surrogate
        #"[1e400]"#,                   // beyond a double
        #"[01]"#,                      // leading zero
        #"[1.]"#,                      // empty fraction
        #"{"a":1,}"#,                  // trailing comma
        #"[1] x"#,                     // trailing data
        "[\"\u{01}\"]",                // raw control character
        #"[tru]"#,
        "{\"\u{FB33}\":1,\"\u{05D3}\u{05BC}\":2}", // canonically equivalent names
    ])
    func refused(text: String) {
        #expect(throws: CryptoError(.invalidJSON, "")) { try JSONParser.parse(text) }
    }

    @Test("Depth is bounded")
    func depthBound() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: CryptoError(.invalidJSON, "")) { try JSONParser.parse(deep) }
    }

    @Test("Arrays of strings written directly are the bytes the value encoder gives, escapes and all")
    func stringArraysDirectly() throws {
        let samples: [[String]] = [[], [""], ["a", "b"], ["quote \" back \\ slash", "tab\tnew\nline\u{1}", "ñ 日本 😀", "\u{7f}\u{2028}"]]
        for strings in samples {
            var direct: [UInt8] = []
            CanonicalJSON.appendStringArray(strings, to: &direct)
            #expect(direct == (try CanonicalJSON.encode(.array(strings.map(JSONValue.string)))))
        }
    }
}
