import CivitasModel
import Testing
@testable import CivitasPrivacy

@Suite("Columnar tables")
struct ColumnarTableTests {
    @Test("Values are kept once with a code per record, in order of first appearance; rows come back as they went in")
    func codesAndRows() throws {
        let table = CSVTable(columns: ["zip", "age"], rows: [["19104", "30"], ["19103", "30"], ["19104", "41"], ["", "30"]])
        let columns = try ColumnarTable(table)
        #expect(columns.rowCount == 4)
        #expect(columns.values == [["19104", "19103", ""], ["30", "41"]])
        #expect(columns.codes == [[0, 1, 0, 2], [0, 0, 1, 0]])
        #expect(columns.table == table)
        #expect(try ColumnarTable(table, columns: ["age"]).table == CSVTable(columns: ["age"], rows: [["30"], ["30"], ["41"], ["30"]]))
        #expect(throws: PrivacyError.self) { try ColumnarTable(table, columns: ["name"]) }
    }

    @Test("Records appended from chunks, column by column on both cores and admitted by subject, are the admitted records appended one by one",
          arguments: [false, true])
    func appendedInBulk(bySubject: Bool) throws {
        var numbers = SeededNumbers(seed: 9)
        // Rows in the source's own order, some short; the table reads five columns, one of them
        // absent, the last the subject (a long value, or a short row's empty one).
        let rows = (0..<2_000).map { _ in
            (0..<(4 + numbers.next(2))).map { column in column == 4 ? "subject number \(numbers.next(300)) of the city" : String(numbers.next(50)) }
        }
        let positions: [Int?] = [2, 0, nil, 3, 4]
        func admitted(_ subject: String) -> Bool { subject.utf8.reduce(0) { $0 &+ Int($1) } % 3 != 1 }
        var bulk = ColumnarTable(columns: ["a", "b", "c", "d", "subject"]), single = bulk
        var asked: [String] = [], answers: [Bool] = [], announced: [String] = [], unannounced = 0
        for part in [rows[..<700], rows[700...]] {
            bulk.append(RecordChunk(columns: ["x0", "x1", "x2", "x3", "x4"], rows: Array(part)), positions: positions,
                        subject: bySubject ? 4 : nil, announce: { announced += $0 }) { code, newSubject in
                if let newSubject {
                    asked.append(newSubject)
                    answers.append(admitted(newSubject))
                    // Every new subject was announced before it is asked about.
                    if announced.count < asked.count || announced[asked.count - 1] != newSubject { unannounced += 1 }
                }
                return answers[code]
            }
        }
        #expect(announced == asked)
        #expect(unannounced == 0)
        var kept = 0
        for row in rows {
            let record = positions.map { position in position.map { $0 < row.count ? row[$0] : "" } ?? "" }
            guard !bySubject || admitted(record[4]) else { continue }
            single.append(record)
            kept += 1
        }
        bulk.finishAppending()
        single.finishAppending()
        #expect(bulk.rowCount == kept)
        #expect(bulk.codes == single.codes)
        #expect(bulk.values == single.values)
        #expect(bulk.values[4].contains(""), "short rows must give empty values, or the test shows nothing")
        if bySubject {
            // Each subject asked once, in order of first appearance; some left out, whose values leave the table.
            var firstSeen: [String] = []
            for row in rows { let subject = row.count > 4 ? row[4] : ""; if !firstSeen.contains(subject) { firstSeen.append(subject) } }
            #expect(asked == firstSeen)
            #expect(kept < rows.count && bulk.values[4].count < firstSeen.count, "some subjects must be left out, or the test shows nothing")
        } else {
            #expect(asked.isEmpty && kept == rows.count)
        }
    }

    @Test("The value index gives the codes of a dictionary of UTF-8 bytes, in order of first appearance, as it grows, for short, long and non-ASCII values")
    func valueIndexMatchesDictionary() {
        var index = ValueIndex()
        var values: [String] = []
        var oracle: [[UInt8]: UInt32] = [:]
        var mismatches = 0
        for i in 0..<60_000 {
            // Repeats, values past the inline length, and two spellings of é (equal as Swift strings, not as bytes).
            let n = (i &* 7_919) % 20_000
            let value: String
            switch i % 4 {
            case 0: value = String(n)
            case 1: value = "a longer value that is not stored inline \(n)"
            case 2: value = "Montgomery caf\u{E9} \(n % 50)"
            default: value = "Montgomery cafe\u{301} \(n % 50)"
            }
            let expected = oracle[Array(value.utf8)] ?? UInt32(oracle.count)
            oracle[Array(value.utf8)] = expected
            if index.code(of: value, in: &values) != expected { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(values.count == oracle.count && values.count > 8_000, "the index must grow past many values, or the test shows nothing")
        #expect(index.code(of: "caf\u{E9}", in: &values) != index.code(of: "cafe\u{301}", in: &values))
    }

    @Test("Values coded in batches get the codes a dictionary of UTF-8 bytes gives one by one, repeats and new values mixed within a batch")
    func batchedCodesMatchDictionary() {
        var index = ValueIndex()
        var values: [String] = []
        var codes: [UInt32] = []
        var oracle: [[UInt8]: UInt32] = [:]
        var expected: [UInt32] = []
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        var newAfterRepeatInABatch = 0
        // Batches of every awkward length: shorter than, equal to and longer than the look-up's own batch.
        for count in [0, 1, 15, 16, 17, 31, 1_000, 5_000, 20_000] {
            var batch: [[UInt8]] = []
            var seenInBatch = false
            for _ in 0..<count {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let n = Int(state >> 40) % 9_000
                // Empty values, short and long values, and a value repeated right after it first appears.
                let value: [UInt8] = n % 97 == 0 ? [] : Array((n % 3 == 0 ? "a value longer than fifteen bytes \(n)" : "v\(n)").utf8)
                batch.append(value)
                if n % 5 == 0 { batch.append(value) }
            }
            for value in batch {
                if let code = oracle[value] {
                    expected.append(code)
                    seenInBatch = true
                } else {
                    if seenInBatch { newAfterRepeatInABatch += 1 }
                    oracle[value] = UInt32(oracle.count)
                    expected.append(oracle[value] ?? 0)
                }
            }
            // The values one after another in one buffer, as a chunk of records holds them.
            let joined = batch.flatMap { $0 }
            var ends: [Int] = [0]
            for value in batch { ends.append((ends.last ?? 0) + value.count) }
            joined.withUnsafeBytes { joined in
                index.appendCodes(count: batch.count, of: { i in UnsafeRawBufferPointer(rebasing: joined[ends[i]..<ends[i + 1]]) },
                                  in: &values, to: &codes)
            }
        }
        #expect(codes.count == expected.count && zip(codes, expected).filter { $0 != $1 }.count == 0)
        #expect(values.map { Array($0.utf8) } == oracle.sorted { $0.value < $1.value }.map(\.key))
        #expect(values.count > 4_000 && newAfterRepeatInABatch > 100, "the index must grow and meet new values among known ones, or the test shows nothing")
    }

    @Test("A transform of the values keeps records apart that it maps to the same text")
    func transformKeepsCodes() throws {
        var columns = try ColumnarTable(CSVTable(columns: ["id"], rows: [["a1"], ["b1"], ["a1"]]))
        var calls = 0
        columns.transformValues(ofColumn: 0) { _ in
            calls += 1
            return "same"
        }
        #expect(calls == 2)
        #expect(columns.codes[0] == [0, 1, 0])
        #expect(columns.table.rows == [["same"], ["same"], ["same"]])
    }

    @Test("Values transformed on both cores are the values transformed one by one, and the first refusal in code order is thrown")
    func valuesTransformedConcurrently() throws {
        let rows = (0..<(ColumnarTable.concurrentTransformFrom * 3)).map { ["v\($0 % 10_000)"] }
        var one = ColumnarTable(columns: ["id"]), two = one
        for row in rows { one.append(row); two.append(row) }
        one.transformValues(ofColumn: 0) { $0 + "!" }
        try two.transformValuesConcurrently(ofColumn: 0) { $0 + "!" }
        #expect(one.values == two.values && one.codes == two.codes)
        #expect(two.values[0].count > ColumnarTable.concurrentTransformFrom, "the values must be split, or the test shows nothing")
        struct Refused: Error, Equatable { let value: String }
        var three = ColumnarTable(columns: ["id"])
        for row in rows { three.append(row) }
        #expect(throws: Refused(value: "v7")) {
            try three.transformValuesConcurrently(ofColumn: 0) { value in
                if value == "v7" || value == "v9000" { throw Refused(value: value) }
                return value
            }
        }
    }

    @Test("The release kept as codes and the release as rows agree, for both algorithms")
    func codesAndTableAgree() throws {
        var rows: [[String]] = []
        for i in 0..<200 { rows.append(["\(20 + i % 50)", "1910\(i % 7)", ["flu", "covid", "asthma"][i % 3], "r\(i)"]) }
        let table = CSVTable(columns: ["age", "zip", "diagnosis", "ref"], rows: rows)
        let qis = [QuasiIdentifier(column: "age", hierarchy: .intervals(widths: [10, 20])), QuasiIdentifier(column: "zip", hierarchy: .masking(steps: [1, 1, 1]))]
        let requirements = try AnonymityRequirements(k: 4, sensitive: "diagnosis", maxSuppression: 0.1)
        let optimal = try OptimalSearch().anonymize(try ColumnarTable(table), quasiIdentifiers: qis, requirements: requirements, keepColumns: ["ref"])
        #expect(optimal.table == (try OptimalSearch().anonymize(table, quasiIdentifiers: qis, requirements: requirements, keepColumns: ["ref"])).table)
        #expect(optimal.table.rows.count == optimal.count)
        let mondrian = try Mondrian().anonymize(try ColumnarTable(table), quasiIdentifiers: qis, requirements: requirements, keepColumns: ["ref"])
        #expect(mondrian.table == (try Mondrian().anonymize(table, quasiIdentifiers: qis, requirements: requirements, keepColumns: ["ref"])).table)
        var seen: [Int] = []
        mondrian.forEachRow { source, values in
            seen.append(source)
            #expect(values[3] == table.rows[source][3])
        }
        #expect(seen == seen.sorted() && seen.count == mondrian.count)
    }
}
