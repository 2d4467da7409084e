import ArgumentParser
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import Foundation

/// Reading tables and hierarchies for the privacy commands.
enum TableFiles {
    static func readTable(_ path: String, delimiter: String?) throws -> (CSVTable, UInt8) {
        let bytes = try Files.read(path, limit: 2 << 30, what: "CSV file")
        let separator = try delimiter.map(delimiterByte) ?? CSVTable.detectDelimiter(bytes)
        return (try CSVTable.parse(bytes, delimiter: separator), separator)
    }

    static func delimiterByte(_ text: String) throws -> UInt8 {
        switch text {
        case ",", "comma": return 0x2C
        case ";", "semicolon": return 0x3B
        case "\\t", "tab", "\t": return 0x09
        case "|", "pipe": return 0x7C
        default: throw CLIError("--delimiter must be one of , ; tab |")
        }
    }

    /// `COL=FILE` (an ARX hierarchy CSV) or `COL=KIND:PARAMS`: `intervals:5,10,20`, `date:hour,day,month,year`,
    /// `mask:1,1,1`, `geo:3,2,1,0`, `suppress`.
    static func hierarchy(_ spec: String) throws -> (String, Hierarchy) {
        guard let equals = spec.firstIndex(of: "=") else { throw CLIError("--hierarchy takes COL=FILE or COL=KIND:PARAMS, got '\(spec)'") }
        let column = String(spec[..<equals])
        let value = String(spec[spec.index(after: equals)...])
        let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
        func numbers() throws -> [Int] {
            guard parts.count == 2 else { throw CLIError("--hierarchy \(column): \(parts[0]) needs parameters, e.g. \(parts[0]):1,2") }
            return try parts[1].split(separator: ",").map {
                guard let n = Int($0), n >= 0 else { throw CLIError("--hierarchy \(column): '\($0)' is not a number") }
                return n
            }
        }
        switch parts[0] {
        case "intervals":
            let widths = try numbers()
            guard widths.allSatisfy({ $0 > 0 }) else { throw CLIError("--hierarchy \(column): interval widths must be positive") }
            return (column, .intervals(widths: widths))
        case "mask": return (column, .masking(steps: try numbers()))
        case "geo": return (column, .geoGrid(fractionDigits: try numbers()))
        case "suppress": return (column, .suppressionOnly)
        case "date":
            guard parts.count == 2 else { throw CLIError("--hierarchy \(column): date needs units, e.g. date:hour,day,month,year") }
            let units = try parts[1].split(separator: ",").map { name -> Hierarchy.DateUnit in
                guard let unit = Hierarchy.DateUnit(rawValue: String(name)) else {
                    throw CLIError("--hierarchy \(column): unknown date unit '\(name)' (minute, hour, day, month, year)")
                }
                return unit
            }
            return (column, .dateTruncation(units: units))
        default:
            let (table, _) = try readTable(value, delimiter: nil)
            return (column, try Hierarchy.arx([table.columns] + table.rows))
        }
    }
}

struct AnonymizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "anonymize",
        abstract: "Generalize and suppress a CSV table until it is k-anonymous (and l-diverse); preview what a partner would receive.",
        discussion: """
            Quasi-identifiers are generalized along their hierarchies (ARX hierarchy files, or generated:
            intervals:W1,W2,…  date:hour,day,month,year  mask:N1,N2,…  geo:D1,D2,…  suppress); records
            in classes that still fail k or l are removed entirely, within --max-suppression. The output
            holds the quasi-identifiers, the sensitive column and any --keep columns; every other column
            is dropped. The optimal algorithm searches all full-domain generalizations for the least loss;
            Mondrian partitions the records instead and scales to any number of distinct values.
            k and l count people: with a subject column (--subject, or the schema's subject field) every
            class holds records of at least k distinct subjects, and a released subject or identifier
            column may not link a person's records into a set of classes shared by fewer than k people.
            Without one, each record is its own subject.
            """
    )

    @Argument(help: "Input CSV.") var input: String
    @Argument(help: "Output CSV.") var output: String

    @Option(help: "Quasi-identifying columns, comma-separated (default: from --schema).") var qi: String?
    @Option(help: "A dataset schema (JSON Schema with x-privacy): records are validated, identifiers pseudonymized, drop fields removed, quasi-identifiers and hierarchies taken from it.")
    var schema: String?
    @Option(help: "Pseudonym master key file (civitas keys pseudonym-key), needed for identifier fields.") var pseudonymKey: String?
    @Option(help: ArgumentHelp("The pseudonym domain.", valueName: "agreement=A,partner=P,purpose=U,epoch=E"))
    var domain: String = "agreement=preview,partner=preview,purpose=preview,epoch=preview"
    @Option(help: "The sensitive column (passed through; used for l-diversity).") var sensitive: String?
    @Option(help: "The column naming the person each record is about (default: the schema's subject field).") var subject: String?
    @Option(help: "Columns passed through unchanged, comma-separated.") var keep: String?
    @Option(help: "Minimum class size.") var k: Int
    @Option(help: "Minimum number of distinct (or entropy-equivalent) sensitive values per class.") var l: Int?
    @Option(help: "l-diversity: distinct or entropy.") var lKind: String = "distinct"
    @Option(help: "Largest fraction of subjects whose records may be suppressed (0 to 1).") var maxSuppression: Double = 0
    @Option(help: ArgumentHelp("A column's hierarchy: COL=FILE or COL=KIND:PARAMS (repeatable).", valueName: "COL=SPEC"))
    var hierarchy: [String] = []
    @Option(help: "optimal or mondrian.") var algorithm: String = "optimal"
    @Option(help: "How the optimal search compares generalizations: discernibility (default), average-class-size or loss.")
    var metric: String = OptimalSearch.defaultMetric.rawValue
    @Option(help: "Write the report as JSON here.") var report: String?
    @Option(help: "Field delimiter (default: detected from the header).") var delimiter: String?
    @OptionGroup var format: ReportFormat

    func run() throws {
        var (table, separator) = try TableFiles.readTable(input, delimiter: delimiter)
        var hierarchies: [String: Hierarchy] = [:]
        var sensitiveColumn = sensitive
        var keepColumns = keep.map { $0.split(separator: ",").map(String.init) } ?? []
        var columns = qi.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? []
        var subjectColumn = subject
        var linking: [String] = subject.map { [$0] } ?? []
        if let schema {
            let parsed = try DatasetSchema.parse(try Files.read(schema, limit: 4 << 20, what: "schema"))
            let issues = parsed.validate(table)
            if let first = issues.first {
                throw CLIError("\(input) does not match \(schema): \(first)" + (issues.count > 1 ? " (and \(issues.count - 1) more)" : ""))
            }
            let present = table.columns.compactMap { parsed.field($0) }
            if qi == nil { columns = present.filter { $0.privacy == .quasiIdentifier }.map(\.name) }
            for field in present where field.privacy == .quasiIdentifier {
                if let hierarchy = field.hierarchy { hierarchies[field.name] = hierarchy }
            }
            if sensitiveColumn == nil { sensitiveColumn = present.first { $0.privacy == .sensitive }?.name }
            keepColumns += present.filter { [.public, .measure, .identifier, .subject].contains($0.privacy) }.map(\.name)
            let pseudonymized = present.filter { $0.privacy == .identifier || $0.privacy == .subject }
            if subjectColumn == nil { subjectColumn = present.first { $0.privacy == .subject }?.name }
            linking += pseudonymized.map(\.name)
            if !pseudonymized.isEmpty {
                guard let pseudonymKey else {
                    throw CLIError("\(pseudonymized.map(\.name).joined(separator: ", ")) must be pseudonymized: give --pseudonym-key FILE")
                }
                let pseudonymizer = try Pseudonymizer(master: try PseudonymKeyFile.read(pseudonymKey), domain: try PseudonymKeyFile.domain(domain))
                table = try pseudonymizer.apply(to: table, fields: pseudonymized)
            }
        }
        for spec in hierarchy {
            let (column, value) = try TableFiles.hierarchy(spec)
            hierarchies[column] = value
        }
        guard !columns.isEmpty else { throw CLIError("name the quasi-identifiers with --qi or give a --schema that has some") }
        for column in columns + hierarchies.keys { _ = try table.index(of: column) }
        if let unknown = hierarchies.keys.first(where: { !columns.contains($0) }), schema == nil {
            throw CLIError("--hierarchy names '\(unknown)', which is not in --qi")
        }
        let quasiIdentifiers = columns.map { QuasiIdentifier(column: $0, hierarchy: hierarchies[$0] ?? .suppressionOnly) }
        let diversity: DiversityRequirement? = try l.map {
            switch lKind {
            case "distinct": return .distinct($0)
            case "entropy": return .entropy($0)
            default: throw CLIError("--l-kind must be distinct or entropy")
            }
        }
        var seen = Set(columns + [sensitiveColumn].compactMap { $0 })
        keepColumns = keepColumns.filter { seen.insert($0).inserted }
        if let subjectColumn { _ = try table.index(of: subjectColumn) }
        let requirements = try AnonymityRequirements(k: k, sensitive: sensitiveColumn, diversity: diversity, maxSuppression: maxSuppression,
                                                     subject: subjectColumn, linking: Array(Set(linking).intersection(keepColumns)).sorted())
        let result: AnonymizedTable
        switch algorithm {
        case "optimal":
            guard let chosen = OptimalSearch.Metric(rawValue: metric) else {
                throw CLIError("--metric must be \(OptimalSearch.Metric.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            result = try OptimalSearch(metric: chosen).anonymize(table, quasiIdentifiers: quasiIdentifiers, requirements: requirements, keepColumns: keepColumns)
        case "mondrian":
            result = try Mondrian().anonymize(table, quasiIdentifiers: quasiIdentifiers, requirements: requirements, keepColumns: keepColumns)
        default:
            throw CLIError("--algorithm must be optimal or mondrian")
        }
        let file = try Files.AtomicFile(path: output, mode: 0o600)
        try result.table.csv(delimiter: separator).withUnsafeBytes {
            try FileDescriptorSink(descriptor: file.descriptor, name: output).write($0)
        }
        try file.commit(replacing: true)
        if let report {
            try Data(try CanonicalJSON.encode(result.report.jsonValue) + [0x0A]).write(to: URL(fileURLWithPath: report))
        }
        let r = result.report
        guard !format.json else { return try format.emit(r.jsonValue, text: "") }
        print("\(r.algorithm): k=\(r.k)\(r.diversity.map { ", \($0)" } ?? "") counted in \(r.subjectColumn.map { "distinct '\($0)' values" } ?? "records (each record is its own subject)"); \(r.released) of \(r.records) records released, \(r.suppressed) suppressed; \(r.subjectsReleased) of \(r.subjects) subjects released, \(r.subjectsSuppressed) with records suppressed; \(r.classes) classes, the smallest of \(r.kAchieved); loss \(String(format: "%.4f", r.loss)); max prosecutor risk \(String(format: "%.4f", r.maximumProsecutorRisk))")
        if r.algorithm == "optimal" {
            print("levels: " + columns.map { "\($0)=\(r.levels[$0] ?? 0)" }.joined(separator: " ") + " (\(r.nodesChecked) of \(r.latticeSize) lattice nodes checked; \(r.metric) \(String(format: "%.6g", r.metricValue)))")
        }
    }
}

struct AggregateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aggregate",
        abstract: "Differentially private counts, sums or means per group, printed as CSV.",
        discussion: """
            Noise is exact discrete Laplace (ε-DP) or discrete Gaussian (ρ-zCDP, --mechanism gaussian
            with --rho). Values are clamped to --bounds; each subject (--subject COL) contributes at most
            --max-groups groups and --max-rows rows per group. Group keys are not noised: declare them
            with --groups FILE (a CSV with the group-by columns), or pass --public-groups to assert that
            the values present in the data are public (for example, a county's townships).
            """
    )

    @Argument(help: "Input CSV.") var input: String
    @Option(help: "ε for the Laplace mechanism (a decimal).") var epsilon: String?
    @Option(help: "ρ for the Gaussian mechanism (a decimal); or give --epsilon and --delta instead.") var rho: String?
    @Option(help: "δ when the Gaussian mechanism is given --epsilon (ρ is then the largest that implies (ε, δ)-DP).") var delta: Double = 1e-6
    @Flag(help: "Count rows.") var count = false
    @Option(help: "Sum this column (needs --bounds).") var sum: String?
    @Option(help: "Average this column (needs --bounds).") var mean: String?
    @Option(help: ArgumentHelp("Clamp values to LO:HI.", valueName: "LO:HI")) var bounds: String?
    @Option(help: "Group by these columns, comma-separated.") var groupBy: String?
    @Option(help: "CSV of the public group keys (columns named like --group-by).") var groups: String?
    @Flag(help: "Treat the group keys found in the data as public.") var publicGroups = false
    @Option(help: "laplace or gaussian.") var mechanism: String = "laplace"
    @Option(help: "The column identifying the data subject.") var subject: String?
    @Option(help: "Groups one subject may contribute to.") var maxGroups: Int = 1
    @Option(help: "Rows one subject may contribute per group.") var maxRows: Int = 1
    @Option(help: "Field delimiter (default: detected).") var delimiter: String?
    @OptionGroup var report: ReportFormat

    func run() throws {
        let (table, separator) = try TableFiles.readTable(input, delimiter: delimiter)
        let statistics = [count ? "count" : nil, sum.map { _ in "sum" }, mean.map { _ in "mean" }].compactMap { $0 }
        guard statistics.count == 1 else { throw CLIError("give exactly one of --count, --sum COL, --mean COL") }
        func parsedBounds() throws -> (String, String) {
            guard let bounds, let colon = bounds.lastIndex(of: ":"), colon != bounds.startIndex else {
                throw CLIError("--sum and --mean need --bounds LO:HI")
            }
            return (String(bounds[..<colon]), String(bounds[bounds.index(after: colon)...]))
        }
        let statistic: DPAggregate.Statistic
        if let sum {
            let (low, high) = try parsedBounds()
            statistic = .sum(column: sum, lower: low, upper: high)
        } else if let mean {
            let (low, high) = try parsedBounds()
            statistic = .mean(column: mean, lower: low, upper: high)
        } else {
            statistic = .count
        }
        let noise: DPAggregate.NoiseMechanism
        switch mechanism {
        case "laplace":
            guard let epsilon else { throw CLIError("the Laplace mechanism needs --epsilon") }
            noise = .laplace(epsilon: try Rational(decimal: epsilon))
        case "gaussian":
            if let rho {
                noise = .gaussian(rho: try Rational(decimal: rho))
            } else if let epsilon {
                guard delta > 0, delta < 1 else { throw CLIError("--delta must be between 0 and 1") }
                noise = .gaussian(rho: try Self.rho(epsilon: try Rational(decimal: epsilon), delta: delta))
            } else {
                throw CLIError("the Gaussian mechanism needs --rho, or --epsilon (with --delta)")
            }
        default:
            throw CLIError("--mechanism must be laplace or gaussian")
        }
        let groupColumns = groupBy.map { $0.split(separator: ",").map(String.init) } ?? []
        var keys: [[String]]
        if groupColumns.isEmpty {
            keys = [[]]
        } else if let groups {
            let (declared, _) = try TableFiles.readTable(groups, delimiter: nil)
            let indexes = try groupColumns.map { try declared.index(of: $0) }
            keys = declared.rows.map { row in indexes.map { row[$0] } }
        } else if publicGroups {
            let indexes = try groupColumns.map { try table.index(of: $0) }
            keys = Array(Set(table.rows.map { row in indexes.map { row[$0] } })).sorted { $0.lexicographicallyPrecedes($1) }
        } else {
            throw CLIError("group keys are not noised: declare them with --groups FILE, or pass --public-groups if the values in the data are public")
        }
        let aggregate = try DPAggregate(statistic: statistic, groupBy: groupColumns, mechanism: noise, subject: subject,
                                        maxGroupsPerSubject: maxGroups, maxRowsPerSubject: maxRows)
        var sampler = ExactSampler(random: SystemRandomness())
        let result = try aggregate.run(table, groups: keys, using: &sampler)
        let bytes = result.csv(delimiter: separator)
        let charge = try aggregate.charge()
        if report.json {
            let rows = try CSVTable.parse(result.csv(delimiter: 0x2C), delimiter: 0x2C)
            let objects: [JSONValue] = rows.rows.map { row in .object(Dictionary(uniqueKeysWithValues: zip(rows.columns, row.map(JSONValue.string)))) }
            try report.emit(["statistic": .string(statistics[0]), "group_by": .array(groupColumns.map(JSONValue.string)), "rows": .array(objects),
                             "epsilon_charged": charge.rhoMicro > 0 ? .null : .string(MicroUnits.decimal(charge.epsilonMicro)),
                             "rho_charged": charge.rhoMicro > 0 ? .string(MicroUnits.decimal(charge.rhoMicro)) : .null], text: "")
            return
        }
        try bytes.withUnsafeBytes { try FileDescriptorSink(descriptor: 1, name: "standard output").write($0) }
        if charge.rhoMicro > 0 {
            let implied = PrivacyBudget(epsilonBudgetMicro: 0, rhoBudgetMicro: charge.rhoMicro)
                .approximateEpsilon(rhoMicro: charge.rhoMicro, delta: delta)
            Output.warn("charged ρ = \(MicroUnits.decimal(charge.rhoMicro)) (zCDP; implies (ε = \(String(format: "%.4f", implied)), δ = \(delta))-DP)")
        } else {
            Output.warn("charged ε = \(MicroUnits.decimal(charge.epsilonMicro))")
        }
    }

    /// The largest ρ (in millionths, rounded down) whose (ε, δ) conversion ε' = ρ + 2√(ρ ln(1/δ)) stays within ε.
    static func rho(epsilon: Rational, delta: Double) throws -> Rational {
        let e = Double(epsilon.numerator) / Double(epsilon.denominator)
        let l = log(1 / delta)
        let root = (l + e).squareRoot() - l.squareRoot()
        var micro = UInt128((root * root * 1_000_000).rounded(.down))
        // Step down until the conversion, computed the way it is reported, is within ε.
        while micro > 0 {
            let r = Double(micro) / 1_000_000
            if r + 2 * (r * l).squareRoot() <= e { break }
            micro -= 1
        }
        guard micro > 0 else { throw CLIError("ε = \(epsilon) with δ = \(delta) leaves no ρ for the Gaussian mechanism") }
        return try Rational(micro, 1_000_000)
    }
}

/// Pseudonym master key files: one line `civitas-pseudonym-key/1 BASE64(32 bytes)`, mode 0600.
enum PseudonymKeyFile {
    static let tag = "civitas-pseudonym-key/1"

    static func read(_ path: String) throws -> PseudonymMasterKey {
        var bytes = try Files.read(path, limit: 256, what: "pseudonym key file")
        defer { Sodium.wipe(&bytes) }
        let fields = bytes.split(separator: 0x20)
        guard fields.count == 2, Array(fields[0]) == Array(tag.utf8) else {
            throw CLIError("\(path) is not a pseudonym key file")
        }
        var encoded = Array(fields[1])
        if encoded.last == 0x0A { encoded.removeLast() }
        guard var key = Base64.decode(String(decoding: encoded, as: UTF8.self)), key.count == 32 else {
            Sodium.wipe(&encoded)
            throw CLIError("\(path): the key is not 32 bytes of base64")
        }
        Sodium.wipe(&encoded)
        Files.warnIfExposed(path)
        return try PseudonymMasterKey(bytes: &key)
    }

    static func domain(_ text: String) throws -> PseudonymDomain {
        var parts: [String: String] = [:]
        for item in text.split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { throw CLIError("--domain takes agreement=…,partner=…,purpose=…,epoch=…") }
            parts[pair[0]] = pair[1]
        }
        guard let agreement = parts["agreement"], let partner = parts["partner"], let purpose = parts["purpose"], let epoch = parts["epoch"] else {
            throw CLIError("--domain needs agreement, partner, purpose and epoch")
        }
        return PseudonymDomain(agreement: agreement, partner: partner, purpose: purpose, epoch: epoch)
    }
}
