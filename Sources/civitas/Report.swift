import ArgumentParser
import CivitasCrypto

/// How a command reports what it did: sentences and headed tables for people, or, with
/// `--json`, one JSON object on one line of standard output for scripts (the shapes are in
/// docs/cli.md and stay stable: members may be added, none renamed or removed).
struct ReportFormat: ParsableArguments {
    @Flag(help: "Print the result as one JSON object on one line (shapes in docs/cli.md) instead of text.") var json = false

    /// Prints `value` as JSON, or `text` for people.
    func emit(_ value: JSONValue, text: @autoclosure () -> String) throws {
        if json {
            print(String(decoding: try CanonicalJSON.encode(value), as: UTF8.self))
        } else {
            print(text())
        }
    }
}

/// A table with a header row, its columns aligned, for people reading a terminal.
enum Table {
    static func text(headers: [String], rows: [[String]]) -> String {
        let widths = headers.indices.map { column in
            ([headers[column]] + rows.map { column < $0.count ? $0[column] : "" }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                column == cells.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        return ([line(headers)] + rows.map(line)).joined(separator: "\n")
    }
}
