import CivitasCrypto
import Testing
@testable import CivitasPrivacy

/// Uploads are read a block at a time; a block may end anywhere, even between the two quotes of
/// a doubled quote or between CR and LF.
@Suite("CSV read block by block")
struct CSVBlockReadingTests {
    static let samples: [String] = [
        "\u{FEFF}name;note\r\n\"A \"\"quoted\"\" word\";\"x;y\"\r\nB;\"line\nbreak\"\r\n",
        "a,b\n\"\",\"\"\"\"\n1,2\n\n3,\"4\"",
        "a\tb\n1\t2\n",
        "only,header\n",
    ]

    func read(_ text: String, blockSize: Int) throws -> CSVTable {
        var table = CSVTable(columns: [], rows: [])
        try CSVTable.read(from: MemorySource(Array(text.utf8)), chunkRows: 2, blockSize: blockSize, header: { table.columns = $0 }) { rows, first in
            #expect(first == table.rows.count + 1)
            table.rows += rows
        }
        return table
    }

    @Test("Every block size gives the table read whole", arguments: samples)
    func blockSizes(_ text: String) throws {
        let whole = try CSVTable.parse(Array(text.utf8))
        #expect(!whole.columns.isEmpty)
        for size in 1...text.utf8.count + 1 {
            #expect(try read(text, blockSize: size) == whole, "block size \(size)")
        }
    }

    @Test("A quote left open or a ragged row is refused whatever the block size, naming the line or row")
    func refusals() throws {
        for size in [1, 2, 3, 5, 64] {
            #expect { try read("a,b\n\"open,1\n", blockSize: size) } throws: { ($0 as? PrivacyError)?.message.contains("line 3") == true }
            #expect { try read("a,b\n1,2\n3\n", blockSize: size) } throws: { ($0 as? PrivacyError)?.message.contains("row 2") == true }
        }
    }

    @Test("Values are as written: the reader is compared with the rows that made the text")
    func knownRows() throws {
        let table = try read(Self.samples[0], blockSize: 3)
        #expect(table.columns == ["name", "note"])
        #expect(table.rows == [["A \"quoted\" word", "x;y"], ["B", "line\nbreak"]])
    }
}
