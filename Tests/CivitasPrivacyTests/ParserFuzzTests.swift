import CivitasCrypto
import CivitasPrivacy
import Foundation
import Testing

/// Bounded mutation fuzzing of the upload parsers: every mutated input is either parsed or
/// refused with a typed error; a crash stops the test run. Seeded, so a failure reproduces.
@Suite("Upload parsers under mutation")
struct ParserFuzzTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus")
    static let schema = """
        {"title": "Visits", "type": "object", "additionalProperties": false, "required": ["person"],
         "properties": {"person": {"type": "string", "maxLength": 32, "pattern": "^P[0-9]+$", "x-privacy": {"class": "subject"}},
                        "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 120, "x-privacy": {"class": "quasi-identifier", "hierarchy": {"intervals": [10]}}},
                        "zip": {"type": "string", "x-privacy": {"class": "quasi-identifier", "hierarchy": {"mask": [1, 2]}}},
                        "diagnosis": {"type": "string", "enum": ["flu", "asthma", "covid"], "x-privacy": {"class": "sensitive"}}}}
        """

    /// A deterministic generator (xorshift), so every run mutates the same way.
    struct Mutator {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(state % UInt64(max(bound, 1)))
        }
        static let interesting: [[UInt8]] = ["\"", ",", "\n", "\r", "{", "}", "[", "]", "\u{0}", "\\", "\\u0000", "\\ud800", "1e999", "-0",
                                             "NaN", "9223372036854775808", "\u{FEFF}", "é", ":", "null", "[[[[[[[[", "\"\":\"\""].map { Array($0.utf8) }

        mutating func mutate(_ seed: [UInt8]) -> [UInt8] {
            var bytes = seed
            for _ in 0...next(4) {
                let at = next(bytes.count + 1)
                switch next(6) {
                case 0 where !bytes.isEmpty: bytes[min(at, bytes.count - 1)] ^= UInt8(1 << next(8))
                case 1: bytes.insert(contentsOf: Self.interesting[next(Self.interesting.count)], at: at)
                case 2 where !bytes.isEmpty: bytes.removeSubrange(at..<min(bytes.count, at + 1 + next(16)))
                case 3: bytes = Array(bytes.prefix(at))
                case 4: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + next(64))], at: next(bytes.count + 1))
                default: bytes.insert(UInt8(next(256)), at: at)
                }
            }
            return bytes
        }
    }

    @Test("CSV, JSON Lines and NGSI-LD uploads: 3,000 mutations, no crash, every refusal typed")
    func mutatedUploads() throws {
        let schema = try DatasetSchema.parse(Array(Self.schema.utf8))
        var mutator = Mutator(state: 0x2026_1202_C1F1_7A5)
        var refused = 0
        for (file, parse) in [("table.csv", { (bytes: [UInt8]) throws in
                                  let table = try CSVTable.parse(bytes)
                                  _ = schema.validate(table) }),
                              ("records.jsonl", { bytes in
                                  let records = try JSONRecords.parseJSONLines(bytes, maximumRecords: 1000)
                                  let (coerced, _) = JSONRecords.validate(records, schema: schema, limit: 10)
                                  _ = try JSONRecords.table(coerced) }),
                              ("entities.ngsild.json", { bytes in
                                  let records = try JSONRecords.parseNGSILD(bytes, maximumRecords: 1000)
                                  _ = try JSONRecords.table(records) })] as [(String, ([UInt8]) throws -> Void)] {
            let seed = Array(try Data(contentsOf: Self.corpus.appendingPathComponent(file)))
            try parse(seed)
            for _ in 0..<1_000 {
                do { try parse(mutator.mutate(seed)) } catch is PrivacyError { refused += 1 } catch is CryptoError { refused += 1 }
            }
        }
        #expect(refused > 0, "the mutations reached the refusals")
    }
}
