import Foundation
import Testing
@testable import CivitasPrivacy

@Suite("Simple schema patterns")
struct SimplePatternTests {
    /// Patterns of the shipped schemas, and others of the same grammar.
    static let patterns = [
        #"^([0-9]{5}(\.0)?)?$"#, #"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"#, #"^[0-9]{5}$"#,
        #"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}"#, #"^\+?[0-9 ()-]{4,31}$"#,
        #"^(ab|a)(c|bcd)?$"#, #"^a*b+$"#, #"^[a-c]{2,}$"#, #"^\d{1,3}(\.\d{1,3}){3}$"#, #"^(a|)b?$"#, #"^$"#, #"^x"#,
        #"^[-a]{0,2}$"#, #"^((a|b)c)*$"#, #"^a{0}b$"#, #"^[a\-z]$"#,
    ]
    /// Characters the inputs are made of: the patterns' own, others, line terminators and non-ASCII.
    static let alphabet: [String] = ["0", "1", "9", "a", "b", "c", "d", "x", "z", "-", ".", " ", ":", "(", ")", "+", "T",
                                     "\n", "\r", "\r\n", "é", "\u{2028}", "\u{85}", "e\u{301}"]

    func engine(_ pattern: String) throws -> NSRegularExpression { try NSRegularExpression(pattern: pattern) }

    func agree(_ pattern: SimplePattern, _ regex: NSRegularExpression, _ value: String) -> Bool {
        pattern.matches(value) == (regex.firstMatch(in: value, range: NSRange(value.startIndex..., in: value)) != nil)
    }

    @Test("Every string of up to three of the alphabet's characters, and a thousand longer ones, match as NSRegularExpression (ICU) says")
    func sameAnswersAsTheEngine() throws {
        var numbers = SeededNumbers(seed: 7)
        for text in Self.patterns {
            let pattern = try #require(SimplePattern(text), "\(text) should be simple")
            let regex = try engine(text)
            var disagreements: [String] = []
            var values = [""]
            var level = [""]
            for _ in 0..<3 {
                level = level.flatMap { prefix in Self.alphabet.map { prefix + $0 } }
                values += level
            }
            for _ in 0..<1000 {
                let length = 4 + numbers.next(30)
                values.append((0..<length).map { _ in Self.alphabet[numbers.next(Self.alphabet.count)] }.joined())
            }
            // Strings built to match, then spoiled at the end (where $ and terminators matter).
            for base in ["12345", "12345.0", "2016-03-01 09:00:00", "2016-03-01T09:00", "+1 (555) 010-0000", "abc", "192.168.0.1", "acac", "aab"] {
                values += [base, base + "\n", base + "\r\n", base + "\r", base + "\u{85}", base + "\u{2028}", base + "\n\n", base + "x", base + "é"]
            }
            for value in values where !agree(pattern, regex, value) { disagreements.append(value) }
            #expect(disagreements.isEmpty, "\(text): \(disagreements.prefix(5).map { $0.debugDescription })")
        }
    }

    @Test("Patterns outside the grammar are left to the engine", arguments: [
        #"^.*$"#, #"^[^0-9]$"#, #"^a|b$"#, #"(?i)^abc$"#, #"^a+?$"#, #"abc$"#, #"^[[:digit:]]$"#, #"^é$"#, #"^\w+$"#, #"^a{2}{3}$"#,
        #"^[a&&b]$"#, #"^(?:a)$"#,
    ])
    func othersAreNotSimple(pattern: String) {
        #expect(SimplePattern(pattern) == nil)
    }

    @Test("A positive control: a machine that ignored ICU's final line terminator would be caught")
    func theComparisonCanFail() throws {
        let regex = try engine(#"^[0-9]{5}$"#)
        // ICU's $ matches before one final newline: a byte-exact end check would disagree here.
        #expect(regex.firstMatch(in: "12345\n", range: NSRange(location: 0, length: 6)) != nil)
        #expect(try #require(SimplePattern(#"^[0-9]{5}$"#)).matches("12345\n"))
        #expect(try #require(SimplePattern(#"^[0-9]{5}$"#)).matches("12345\n\n") == false)
        // And the comparison itself tells patterns apart: four digits against the engine's five disagree.
        let four = try #require(SimplePattern(#"^[0-9]{4}$"#))
        #expect(!agree(four, regex, "12345") && !agree(four, regex, "1234"))
    }
}
