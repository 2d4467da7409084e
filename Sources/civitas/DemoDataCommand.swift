import ArgumentParser
import CivitasCrypto
import CivitasPrivacy
import Foundation

/// `civitas demo-data`: the files the README's walkthrough starts from.
struct DemoDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-data",
        abstract: "Write the walkthrough's files: 911 calls with caller numbers, the callers who consented, and the 911 schema.",
        discussion: """
            Writes calls.csv (911-shaped calls: generated ones, or the rows of --from such as the Montgomery County sample, \
            with a generated caller number added to each), later-calls.csv (--later calls of the same callers that come in \
            after them, for a feed), consenting.txt (one caller per line: every caller but the one in ten who never \
            consents) and emergency-call.schema.json (the annotated schema the calls follow) into --dir. The same options \
            write the same files. Existing files are kept unless --force.
            """)

    @Option(help: "How many calls to generate (ignored with --from).") var calls = 10_000
    @Option(help: "How many of the calls are held back as later-calls.csv.") var later = 1_000
    @Option(help: ArgumentHelp("Take the calls from this 911 CSV (the Montgomery County sample's columns) instead of generating them.", valueName: "FILE"))
    var from: String?
    @Option(help: ArgumentHelp("Write the files into this folder.", valueName: "DIR")) var dir = "."
    @Option(help: ArgumentHelp("The folder of dataset schemas (default: $CIVITAS_SCHEMAS, else the one installed or built with civitas).", valueName: "DIR"))
    var schemas: String?
    @Flag(help: "Replace files that exist.") var force = false
    @OptionGroup var report: ReportFormat

    /// Largest --from file read.
    static let maximumInput = 1 << 30

    func validate() throws {
        guard (1...1_000_000).contains(calls) else { throw ValidationError("--calls is 1 to 1,000,000") }
        guard later >= 0 else { throw ValidationError("--later is 0 or more") }
    }

    func run() throws {
        let schemaFolder = try schemas ?? SchemaFolder.locate()
        let schemaPath = "\(schemaFolder)/emergency-call.schema.json"
        let schema = try Files.read(schemaPath, limit: 4 << 20, what: "schema")
        var table = try CSVTable.parse(try from.map { try Files.read($0, limit: Self.maximumInput, what: "911 calls") } ?? Array(SampleCalls.csv(rows: calls).utf8))
        if !table.columns.contains("caller") {
            table.columns.append("caller")
            for index in table.rows.indices { table.rows[index].append(DemoCallers.caller(forCall: index)) }
        }
        let callerColumn = try table.index(of: "caller")
        let callers = Set(table.rows.map { $0[callerColumn] })
        let consenting = callers.filter { !DemoCallers.neverConsents($0) }.sorted()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        guard later < table.rows.count else { throw CLIError("--later \(later) leaves no calls for calls.csv (there are \(table.rows.count))") }
        let first = CSVTable(columns: table.columns, rows: Array(table.rows.dropLast(later)))
        let held = CSVTable(columns: table.columns, rows: Array(table.rows.suffix(later)))
        let files: [(name: String, bytes: [UInt8])] = [
            ("calls.csv", first.csv()),
            ("later-calls.csv", held.csv()),
            ("consenting.txt", Array((consenting.joined(separator: "\n") + "\n").utf8)),
            ("emergency-call.schema.json", schema),
        ]
        for (name, bytes) in files {
            let file = try Files.AtomicFile(path: "\(dir)/\(name)", mode: 0o644)
            try bytes.withUnsafeBytes { try FileDescriptorSink(descriptor: file.descriptor, name: name).write($0) }
            try file.commit(replacing: force)
        }
        try report.emit(["dir": .string(dir), "calls": .number(Double(first.rows.count)), "later_calls": .number(Double(held.rows.count)),
                         "callers": .number(Double(callers.count)),
                         "consenting": .number(Double(consenting.count)), "files": .array(files.map { .string($0.name) })],
                        text: "wrote \(dir)/calls.csv (\(first.rows.count) calls), \(dir)/later-calls.csv (\(held.rows.count) calls that come in after them), \(dir)/consenting.txt (\(consenting.count) of their \(callers.count) callers, who consented) and \(dir)/emergency-call.schema.json")
    }
}

/// Where the dataset schemas that come with civitas are.
enum SchemaFolder {
    /// `$CIVITAS_SCHEMAS`, else the `Schemas/datasets` folder of the installed package
    /// (PREFIX/share/civitas/Schemas) or of the source tree the binary was built in, else
    /// `Schemas/datasets` under the current folder.
    static func locate() throws -> String {
        if let set = Environment.value(of: "CIVITAS_SCHEMAS"), !set.isEmpty { return set }
        var candidates: [String] = []
        if let executable = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            var folder = executable.deletingLastPathComponent()
            for _ in 0..<5 {
                candidates.append(folder.appendingPathComponent("share/civitas/Schemas/datasets").path)
                candidates.append(folder.appendingPathComponent("Schemas/datasets").path)
                folder = folder.deletingLastPathComponent()
            }
        }
        candidates.append("Schemas/datasets")
        guard let found = candidates.first(where: { Files.exists("\($0)/emergency-call.schema.json") }) else {
            throw CLIError("cannot find the dataset schemas that come with civitas: give their folder with --schemas DIR (or set CIVITAS_SCHEMAS)")
        }
        return found
    }
}
