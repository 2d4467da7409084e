import CivitasCrypto
import CivitasModel
import CivitasPrivacy
import Dispatch

/// What the treatment did to one release, for the partner, the publisher and the log.
public struct TreatmentOutcome: Sendable {
    /// The released columns, in the payload's order.
    public let columns: [String]
    /// Records released.
    public let recordsReleased: Int
    /// Records read for this delivery (before consent).
    public let recordsSelected: Int
    /// Records left out because their subject had no active consent (basis consent) or objected.
    public let recordsWithoutConsent: Int
    /// Records suppressed to reach k (and l).
    public let recordsSuppressed: Int
    /// Records left out because their subject already had the policy's most records per subject.
    public let recordsOverCap: Int
    /// Fewest distinct subjects in a released equivalence class (0 when no k-anonymity step ran).
    public let kAchieved: Int
    /// ε charged for noise on bounded measures (× 10^6): the per-value ε × noised fields × the most
    /// records one subject has in the release (sequential composition); 0 without measure noise.
    public let epsilonMicro: UInt64
    /// The measure fields that were noised.
    public let noisedMeasures: [String]
    /// The anonymization report, when a k-anonymity step ran.
    public let report: AnonymizationReport?

    /// Members describing the transforms, for the log entry (names and figures only).
    public var logTransforms: [String: JSONValue] {
        var transforms: [String: JSONValue] = ["records_selected": .number(Double(recordsSelected)),
                                               "records_without_consent": .number(Double(recordsWithoutConsent))]
        if !noisedMeasures.isEmpty { transforms["measure_noise"] = .array(noisedMeasures.map(JSONValue.string)) }
        if recordsOverCap > 0 { transforms["records_over_cap"] = .number(Double(recordsOverCap)) }
        if let report {
            transforms["algorithm"] = .string(report.algorithm)
            if !report.levels.isEmpty { transforms["levels"] = .object(report.levels.mapValues { .number(Double($0)) }) }
            if let diversity = report.diversity { transforms["l_diversity"] = .string(diversity) }
            transforms["k_counts"] = .string(report.subjectColumn == nil ? "records" : "subjects")
            transforms["subjects_released"] = .number(Double(report.subjectsReleased))
            transforms["subjects_suppressed"] = .number(Double(report.subjectsSuppressed))
        }
        return transforms
    }
}

/// One half of a chunk's consent decisions, handed back by the core that made them.
private final class DecidedHalf: @unchecked Sendable {
    var answers: [Bool] = []
}

/// The records as they leave, as CSV with a header (allowed fields only, pseudonymized,
/// generalized), and what the treatment did.
public struct TreatedRecords: Sendable {
    public private(set) var payload: [UInt8]
    public let outcome: TreatmentOutcome

    /// The payload, handed over: this value no longer holds it (a large release is held once).
    public mutating func takePayload() -> [UInt8] {
        defer { payload = [] }
        return payload
    }
}

/// Steps 3 to 7 of the release pipeline, without I/O: consent, the cap on records per subject,
/// projection to the allowed fields, pseudonyms in the agreement's domain, k-anonymity (with
/// l-diversity) within the agreed suppression limit, and noise on bounded measures. Records are
/// taken a batch at a time and kept as codes, so the memory a release needs grows with the
/// distinct values of the released fields, not with rows of strings.
public struct ReleaseTreatment: Sendable {
    public let schema: DatasetSchema
    public let policy: AgreementPolicy

    public init(schema: DatasetSchema, policy: AgreementPolicy) {
        self.schema = schema
        self.policy = policy
    }

    /// Steps 3 and 4 as records arrive: those whose subject may be released (`mayRelease` answers
    /// for a subject value), at most the policy's records per subject, projected to the allowed
    /// fields (and the subject, counted whether or not it is released).
    public struct Input {
        let treatment: ReleaseTreatment
        /// Whether a subject's records may be released; asked from several threads at once.
        var mayRelease: @Sendable (String) -> Bool
        /// The allowed fields present in the records, in the policy's order.
        private(set) var released: [String] = []
        private(set) var table: ColumnarTable?
        /// Position of the subject in `table`, when the records carry it.
        private(set) var subject: Int?
        private(set) var recordsRead = 0
        private(set) var withoutConsent = 0
        private(set) var overCap = 0
        /// Per subject code of the table being built: whether the subject may be released, and its records taken so far.
        private var answers: [Bool] = []
        private var recordsOfSubject: [Int] = []

        init(treatment: ReleaseTreatment, mayRelease: @escaping @Sendable (String) -> Bool) {
            self.treatment = treatment
            self.mayRelease = mayRelease
        }

        /// Takes a batch of records, `columns` naming their values.
        public mutating func add(columns: [String], rows: [[String]]) throws {
            try add(RecordChunk(columns: columns, rows: rows))
        }

        /// Takes a chunk of records.
        public mutating func add(_ chunk: RecordChunk) throws {
            if table == nil {
                let subjectField = try treatment.subjectField(in: chunk.columns, records: chunk.rowCount)
                released = treatment.policy.fields.filter { chunk.columns.contains($0) }
                var names = released
                if let subjectField, !names.contains(subjectField) { names.append(subjectField) }
                subject = subjectField.flatMap { names.firstIndex(of: $0) }
                table = ColumnarTable(columns: names)
            }
            guard var table else { return }
            self.table = nil  // appended in place, without a copy
            defer { self.table = table }
            let positions = table.columns.map { chunk.columns.firstIndex(of: $0) }
            let cap = treatment.policy.treatment.maxRecordsPerSubject
            recordsRead += chunk.rowCount
            // Which records may go (consent, the cap per subject), asked once per subject; a
            // batch without the subject field has no subject to release: its records are checked as "".
            try table.append(chunk, positions: positions, subject: subject, announce: { newSubjects in
                answers += decisions(newSubjects)
            }) { code, newSubject in
                if newSubject != nil { recordsOfSubject.append(0) }
                guard answers[code] else {
                    withoutConsent += 1
                    return false
                }
                if let cap {
                    recordsOfSubject[code] += 1
                    guard recordsOfSubject[code] <= cap else {
                        overCap += 1
                        return false
                    }
                }
                return true
            }
        }

        /// `mayRelease` of each subject, in order: on both cores when there are many (each
        /// answer costs a keyed hash and a look-up among every subject's consent).
        private func decisions(_ subjects: ArraySlice<String>) -> [Bool] {
            guard subjects.count >= Self.concurrentDecisionsFrom else { return subjects.map(mayRelease) }
            let halves = [DecidedHalf(), DecidedHalf()]
            let rule = mayRelease
            DispatchQueue.concurrentPerform(iterations: 2) { half in
                let first = subjects.startIndex + subjects.count * half / 2, end = subjects.startIndex + subjects.count * (half + 1) / 2
                halves[half].answers = subjects[first..<end].map(rule)
            }
            return halves[0].answers + halves[1].answers
        }

        /// New subjects in one chunk from which their decisions are split between both cores.
        static let concurrentDecisionsFrom = 256

        /// The collected records, handed over: the input no longer holds them.
        mutating func takeTable() -> ColumnarTable? {
            defer { table = nil }
            return table
        }
    }

    /// The subject field among `columns`, if they carry it; basis consent refuses records without it.
    func subjectField(in columns: [String], records: Int) throws -> String? {
        let field = AgreementPolicy.subjectField(of: schema).flatMap { columns.contains($0) ? $0 : nil }
        if field == nil && policy.legalBasis == .consent && records > 0 {
            throw BrokerError(.invalid, "legal basis consent needs the subject field, which these records lack")
        }
        return field
    }

    /// An empty input for steps 3 and 4.
    public func input(mayRelease: @escaping @Sendable (String) -> Bool) -> Input {
        Input(treatment: self, mayRelease: mayRelease)
    }

    static func requireRecords(read: Int, selected: Int) throws {
        guard selected > 0 else {
            throw BrokerError(.nothingToRelease, read == 0 ? "there are no records to release"
                              : "none of the \(read) records may be released: no subject has an active consent for this purpose")
        }
    }

    /// Treats a whole table at once (the same steps as `input` and `finish`).
    public func apply(_ table: CSVTable, mayRelease: @escaping @Sendable (String) -> Bool, pseudonymizer: Pseudonymizer,
                      suppressionLimit: Double? = nil, randomness: AnyRandomWords = AnyRandomWords(SystemRandomness())) throws -> TreatedRecords {
        var records = input(mayRelease: mayRelease)
        try records.add(columns: table.columns, rows: table.rows)
        return try finish(records, pseudonymizer: pseudonymizer, suppressionLimit: suppressionLimit, randomness: randomness)
    }

    /// Steps 5 to 7 on the collected records, written out as CSV. `suppressionLimit` overrides
    /// the policy's (feeds that suppress what cannot reach k).
    public func finish(_ input: consuming Input, pseudonymizer: Pseudonymizer, suppressionLimit: Double? = nil,
                       randomness: AnyRandomWords = AnyRandomWords(SystemRandomness())) throws -> TreatedRecords {
        let selected = input.table?.rowCount ?? 0
        try Self.requireRecords(read: input.recordsRead, selected: selected + input.overCap)
        // Taken out of the input, so that dropping the look-up for appending frees it.
        guard var table = input.takeTable() else { throw BrokerError(.nothingToRelease, "there are no records to release") }
        table.finishAppending()
        // 5. Pseudonyms, one per distinct value.
        let fields = input.released.compactMap { schema.field($0) }
        let pseudonymized = fields.filter { $0.privacy == .identifier || $0.privacy == .subject }
        for field in pseudonymized {
            try table.transformValuesConcurrently(ofColumn: try table.index(of: field.name)) { try pseudonymizer.pseudonymize($0, as: field) }
        }
        // 6. k-anonymity and l-diversity, counted in subjects (whether or not the subject is released).
        let quasiIdentifiers = fields.filter { $0.privacy == .quasiIdentifier }
        var report: AnonymizationReport?
        let release: Released
        if policy.treatment.k >= 2, !quasiIdentifiers.isEmpty {
            let sensitive = fields.first { $0.privacy == .sensitive }?.name
            let requirements = try AnonymityRequirements(k: policy.treatment.k, sensitive: sensitive,
                                                         diversity: sensitive == nil ? nil : policy.treatment.l.map { .distinct($0) },
                                                         maxSuppression: suppressionLimit ?? policy.treatment.suppressionLimit,
                                                         subject: input.subject.map { table.columns[$0] }, linking: pseudonymized.map(\.name))
            let identifiers = quasiIdentifiers.map { QuasiIdentifier(column: $0.name, hierarchy: $0.hierarchy ?? .suppressionOnly) }
            let keep = input.released.filter { name in !quasiIdentifiers.contains { $0.name == name } && name != sensitive }
            let result: AnonymizedColumns
            do {
                result = policy.treatment.algorithm == "mondrian"
                    ? try Mondrian().anonymize(table, quasiIdentifiers: identifiers, requirements: requirements, keepColumns: keep)
                    : try OptimalSearch().anonymize(table, quasiIdentifiers: identifiers, requirements: requirements, keepColumns: keep)
            } catch let error as PrivacyError {
                throw BrokerError(.kUnreachable, error.message)
            }
            guard result.count > 0 else {
                throw BrokerError(.kUnreachable, "every record would be suppressed to reach k = \(policy.treatment.k)")
            }
            report = result.report
            release = .anonymized(result)
        } else {
            release = .projected(table, columns: input.released)
        }
        // 7. Noise on bounded measures, then the CSV.
        var noise = try MeasureNoise(schema: schema, policy: policy, columns: release.columns, randomness: randomness)
        var writer = CSVWriter(columns: release.columns, expectedRows: release.count)
        if noise.noised.isEmpty {
            try release.write(to: &writer)
        } else {
            var row = 0
            try release.forEachRow { values in
                row += 1
                writer.append(try noise.apply(to: values, record: row))
            }
        }
        var mostPerSubject = 1
        if let subject = input.subject {
            var counts = [Int](repeating: 0, count: table.values[subject].count)
            for code in table.codes[subject] { counts[Int(code)] += 1 }
            mostPerSubject = counts.max() ?? 1
        }
        let epsilonMicro = noise.noised.isEmpty ? 0 : (policy.treatment.measureNoiseEpsilonMicro ?? 0) * UInt64(noise.noised.count) * UInt64(mostPerSubject)
        return TreatedRecords(payload: writer.bytes, outcome: TreatmentOutcome(columns: release.columns, recordsReleased: writer.records, recordsSelected: input.recordsRead,
                                recordsWithoutConsent: input.withoutConsent, recordsSuppressed: report?.suppressed ?? 0,
                                recordsOverCap: input.overCap, kAchieved: report?.kAchieved ?? 0, epsilonMicro: epsilonMicro,
                                noisedMeasures: noise.noised, report: report))
    }

    /// The records that leave: every collected record projected, or the anonymized release.
    enum Released {
        case projected(ColumnarTable, columns: [String])
        case anonymized(AnonymizedColumns)

        var columns: [String] {
            switch self {
            case .projected(_, let columns): columns
            case .anonymized(let result): result.columns
            }
        }

        var count: Int {
            switch self {
            case .projected(let table, _): table.rowCount
            case .anonymized(let result): result.count
            }
        }

        /// Appends every record to `writer`, each distinct value written once.
        func write(to writer: inout CSVWriter) throws {
            switch self {
            case .projected(let table, let columns):
                let positions = try columns.map { try table.index(of: $0) }
                let fields = positions.map { writer.fields(table.values[$0]) }
                var codes = [Int](repeating: 0, count: positions.count)
                for r in 0..<table.rowCount {
                    for (c, position) in positions.enumerated() { codes[c] = Int(table.codes[position][r]) }
                    writer.append(codes: codes, of: fields)
                }
            case .anonymized(let result):
                result.write(to: &writer)
            }
        }

        func forEachRow(_ body: ([String]) throws -> Void) throws {
            switch self {
            case .projected(let table, let columns):
                let positions = try columns.map { try table.index(of: $0) }
                var values = [String](repeating: "", count: positions.count)
                for r in 0..<table.rowCount {
                    for (c, position) in positions.enumerated() { values[c] = table.value(row: r, column: position) }
                    try body(values)
                }
            case .anonymized(let result):
                try result.forEachRow { _, values in try body(values) }
            }
        }
    }

    /// Step 7: every released measure with schema bounds is clamped to them and gets discrete
    /// Laplace noise of scale (upper − lower)/ε.
    struct MeasureNoise {
        /// Per released column: its noise, when it is a noised measure.
        let noises: [BoundedMeasureNoise?]
        let names: [String]
        let noised: [String]
        var sampler: ExactSampler<AnyRandomWords>

        init(schema: DatasetSchema, policy: AgreementPolicy, columns: [String], randomness: AnyRandomWords) throws {
            names = columns
            guard let epsilonMicro = policy.treatment.measureNoiseEpsilonMicro else {
                noises = columns.map { _ in nil }
                noised = []
                sampler = ExactSampler(random: randomness)
                return
            }
            let epsilon = try Rational(UInt128(epsilonMicro), 1_000_000)
            let grid = try DecimalGrid(fractionDigits: policy.treatment.measureNoiseDigits)
            noises = try columns.map { name in
                guard let field = schema.field(name), field.privacy == .measure, let bounds = field.bounds else { return nil }
                do { return try BoundedMeasureNoise(lower: bounds.lower, upper: bounds.upper, grid: grid, epsilon: epsilon) } catch let error as PrivacyError {
                    throw BrokerError(.invalid, "measure \(name): \(error.message)")
                }
            }
            noised = zip(columns, noises).compactMap { $1 == nil ? nil : $0 }
            sampler = ExactSampler(random: randomness)
        }

        /// `values` with each noised measure released; `record` counts released records from 1.
        mutating func apply(to values: [String], record: Int) throws -> [String] {
            guard !noised.isEmpty else { return values }
            var values = values
            for (column, noise) in noises.enumerated() {
                guard let noise, !values[column].isEmpty else { continue }
                do { values[column] = try noise.release(values[column], using: &sampler) } catch let error as PrivacyError {
                    throw BrokerError(.invalid, "measure \(names[column]), released record \(record): \(error.message)")
                }
            }
            return values
        }
    }
}
