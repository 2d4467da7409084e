import ArgumentParser
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import Foundation

struct SynthesizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synthesize",
        abstract: "Differentially private synthetic rows (ρ-zCDP) from noisy one- and two-way marginals, printed as CSV.",
        discussion: """
            --spec names the fields and their public domains, as in an agreement's `synthetic` terms:
            {"fields": [...], "domains": {FIELD: [values]}, "bins": {FIELD: [edges]}, "tree": [[A, B], ...]}.
            Every one-way marginal and the two-way marginals of the tree (default: a chain through the
            fields as listed) are counted with discrete Gaussian noise, made consistent, and rows are
            drawn from the tree; their number is the noisy total. Records with a value outside a
            declared domain count in no marginal; numbers outside the bins count in the end bins.
            """
    )

    @Argument(help: "Input CSV.") var input: String
    @Option(help: "The synthetic spec: a JSON file (fields, domains, bins, tree).") var spec: String
    @Option(help: "A dataset schema: fields with an enum, boolean or bounded integer type need no declared domain.") var schema: String?
    @Option(help: "ρ (zCDP), a decimal.") var rho: String
    @Option(help: "The column identifying the data subject.") var subject: String?
    @Option(help: "Records one subject may contribute.") var maxRecords: Int = 1
    @Option(help: "Write the noisy measurements (each marginal's counts, σ²) as JSON here.") var measurements: String?
    @Option(help: "Write the synthetic CSV here (default: standard output; needed with --json).") var out: String?
    @Option(help: "Field delimiter (default: detected).") var delimiter: String?
    @OptionGroup var report: ReportFormat

    func run() throws {
        if report.json && out == nil { throw CLIError("--json prints the report on standard output: give the rows a file with --out") }
        let (table, separator) = try TableFiles.readTable(input, delimiter: delimiter)
        guard let object = try JSONParser.parse(try Files.read(spec, limit: 4 << 20, what: "synthetic spec")).objectValue else {
            throw CLIError("\(spec) must hold a JSON object")
        }
        if let unknown = Set(object.keys).subtracting(SyntheticSpec.members).sorted().first {
            throw CLIError("\(spec) has an unknown member '\(unknown.prefix(60))'")
        }
        let parsedSchema = try schema.map { try DatasetSchema.parse(try Files.read($0, limit: 4 << 20, what: "schema")) }
        let synthesizer = try SyntheticSpec.parse(object, member: "spec")
            .synthesizer(rho: try Rational(decimal: rho), subject: subject, maxRecordsPerSubject: maxRecords, schema: parsedSchema)
        var columns = synthesizer.fields.map(\.name)
        if let subject, !columns.contains(subject) { columns.append(subject) }
        var sampler = ExactSampler(random: SystemRandomness())
        let output = try synthesizer.run(try ColumnarTable(table, columns: columns), using: &sampler)
        let charge = try synthesizer.charge()
        let sigma = try synthesizer.sigmaSquared
        if let measurements {
            let marginals: [JSONValue] = synthesizer.marginals.map { names in .array(names.map(JSONValue.string)) }
            let labels: [JSONValue] = synthesizer.fields.map { field in .array(field.labels.map(JSONValue.string)) }
            let counts: [JSONValue] = output.measurements.counts.map { marginal in .array(marginal.map { .number(Double($0)) }) }
            let value: JSONValue = ["marginals": .array(marginals), "labels": .array(labels), "counts": .array(counts),
                                    "sigma_squared": .string(sigma.description)]
            try Data(try CanonicalJSON.encode(value) + [0x0A]).write(to: URL(fileURLWithPath: measurements))
        }
        let bytes = output.csv(delimiter: separator)
        if let out {
            try Data(bytes).write(to: URL(fileURLWithPath: out))
        } else {
            try bytes.withUnsafeBytes { try FileDescriptorSink(descriptor: 1, name: "standard output").write($0) }
        }
        if report.json {
            try report.emit([
                "rows": .number(Double(output.total)), "rho_charged": .string(MicroUnits.decimal(charge.rhoMicro)),
                "sigma_squared": .string(sigma.description),
                "marginals": .array(synthesizer.marginals.map { names in JSONValue.array(names.map(JSONValue.string)) }),
            ], text: "")
        } else {
            Output.warn("\(output.total) synthetic rows; charged ρ = \(MicroUnits.decimal(charge.rhoMicro)) (zCDP), σ² = \(sigma) on each of \(synthesizer.marginals.count) marginals")
        }
    }
}
