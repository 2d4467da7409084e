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
