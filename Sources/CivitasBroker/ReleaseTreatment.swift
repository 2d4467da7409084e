import CivitasCrypto
import CivitasPrivacy

/// What the treatment did to one release, for the partner, the publisher and the log.
public struct TreatmentOutcome: Sendable {
    /// The table as it leaves: allowed fields only, pseudonymized, generalized.
    public internal(set) var table: CSVTable
    public let recordsSelected: Int
    /// Records left out because their subject had no active consent (basis consent) or objected.
    public let recordsWithoutConsent: Int
    /// Records suppressed to reach k (and l).
    public let recordsSuppressed: Int
    /// Records left out because their subject already had the policy's most records per subject.
    public var recordsOverCap = 0
    /// Fewest distinct subjects in a released equivalence class (0 when no k-anonymity step ran).
    public let kAchieved: Int
    /// ε charged for noise on bounded measures (× 10^6): the per-value ε × noised fields × the most
    /// records one subject has in the release (sequential composition); 0 without measure noise.
    public var epsilonMicro: UInt64 = 0
    /// The measure fields that were noised.
    public var noisedMeasures: [String] = []
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

/// Steps 3 to 6 of the release pipeline, without I/O: consent, projection to the allowed
/// fields, pseudonyms in the agreement's domain, and k-anonymity (with l-diversity) within the
/// agreed suppression limit.
public struct ReleaseTreatment {
    public let schema: DatasetSchema
    public let policy: AgreementPolicy

    public init(schema: DatasetSchema, policy: AgreementPolicy) {
        self.schema = schema
        self.policy = policy
    }

    /// Step 3: the records whose subject may be released, and how many were left out. Refuses
    /// when nothing remains, or when basis consent meets records without the subject field.
    public func consented(_ table: CSVTable, mayRelease: (String) -> Bool) throws -> (CSVTable, withoutConsent: Int) {
        var selected = table
        if let subject = AgreementPolicy.subjectField(of: schema), let column = table.columns.firstIndex(of: subject) {
            selected.rows = table.rows.filter { mayRelease($0[column]) }
        } else if policy.legalBasis == .consent {
            throw BrokerError(.invalid, "legal basis consent needs the subject field, which these records lack")
        }
        guard !selected.rows.isEmpty else {
            throw BrokerError(.nothingToRelease, table.rows.isEmpty ? "there are no records to release"
                              : "none of the \(table.rows.count) records may be released: no subject has an active consent for this purpose")
        }
        return (selected, table.rows.count - selected.rows.count)
    }

    /// Treats `table`. `mayRelease` answers for a subject value whether its records may leave;
    /// `suppressionLimit` overrides the policy's (feeds that suppress what cannot reach k).
    public func apply(_ table: CSVTable, mayRelease: (String) -> Bool, pseudonymizer: Pseudonymizer,
                      suppressionLimit: Double? = nil, randomness: AnyRandomWords = AnyRandomWords(SystemRandomness())) throws -> TreatmentOutcome {
        var (selected, withoutConsent) = try consented(table, mayRelease: mayRelease)
        let overCap = capRecordsPerSubject(&selected)
        var outcome = try anonymize(selected, recordsSelected: table.rows.count, withoutConsent: withoutConsent,
                                    pseudonymizer: pseudonymizer, suppressionLimit: suppressionLimit)
        outcome.recordsOverCap = overCap
        // 7. Noise on bounded measures.
        if let epsilonMicro = policy.treatment.measureNoiseEpsilonMicro {
            outcome = try noiseMeasures(outcome, subjectsOf: selected, epsilonMicro: epsilonMicro, randomness: randomness)
        }
        return outcome
    }

    /// The policy's cap on records per subject: each subject's first records in dataset order
    /// are kept, the rest left out. Returns how many were left out.
    func capRecordsPerSubject(_ table: inout CSVTable) -> Int {
        guard let cap = policy.treatment.maxRecordsPerSubject, let subject = AgreementPolicy.subjectField(of: schema),
              let column = table.columns.firstIndex(of: subject) else { return 0 }
        var seen: [String: Int] = [:]
        let before = table.rows.count
        table.rows = table.rows.filter { row in
            seen[row[column], default: 0] += 1
            return (seen[row[column]] ?? 0) <= cap
        }
        return before - table.rows.count
    }

    /// Steps 4 to 6 on the consented records.
    func anonymize(_ selected: CSVTable, recordsSelected: Int, withoutConsent: Int, pseudonymizer: Pseudonymizer,
                   suppressionLimit: Double?) throws -> TreatmentOutcome {
        // 4. Projection: the allowed fields present in the records, in the policy's order.
        let kept = policy.fields.filter { selected.columns.contains($0) }
        let indexes = try kept.map { try selected.index(of: $0) }
        var projected = CSVTable(columns: kept, rows: selected.rows.map { row in indexes.map { row[$0] } })
        // 5. Pseudonyms.
        let pseudonymized = kept.compactMap { schema.field($0) }.filter { $0.privacy == .identifier || $0.privacy == .subject }
        if !pseudonymized.isEmpty { projected = try pseudonymizer.apply(to: projected, fields: pseudonymized) }
        // 6. k-anonymity and l-diversity, counted in subjects.
        let fields = kept.compactMap { schema.field($0) }
        let quasiIdentifiers = fields.filter { $0.privacy == .quasiIdentifier }
        guard policy.treatment.k >= 2, !quasiIdentifiers.isEmpty else {
            return TreatmentOutcome(table: projected, recordsSelected: recordsSelected, recordsWithoutConsent: withoutConsent,
                                    recordsSuppressed: 0, kAchieved: 0, report: nil)
        }
        // The subject is counted whether or not its (pseudonymized) column is released.
        var subjectColumn: String?
        if let subject = AgreementPolicy.subjectField(of: schema), let column = selected.columns.firstIndex(of: subject) {
            if kept.contains(subject) {
                subjectColumn = subject
            } else {
                subjectColumn = Self.hiddenSubjectColumn
                projected.columns.append(Self.hiddenSubjectColumn)
                for r in projected.rows.indices { projected.rows[r].append(selected.rows[r][column]) }
            }
        }
        let sensitive = fields.first { $0.privacy == .sensitive }?.name
        let requirements = try AnonymityRequirements(k: policy.treatment.k, sensitive: sensitive,
                                                     diversity: sensitive == nil ? nil : policy.treatment.l.map { .distinct($0) },
                                                     maxSuppression: suppressionLimit ?? policy.treatment.suppressionLimit,
                                                     subject: subjectColumn, linking: pseudonymized.map(\.name))
        let identifiers = quasiIdentifiers.map { QuasiIdentifier(column: $0.name, hierarchy: $0.hierarchy ?? .suppressionOnly) }
        let keep = kept.filter { name in !quasiIdentifiers.contains { $0.name == name } && name != sensitive }
        let result: AnonymizedTable
        do {
            result = policy.treatment.algorithm == "mondrian"
                ? try Mondrian().anonymize(projected, quasiIdentifiers: identifiers, requirements: requirements, keepColumns: keep)
                : try OptimalSearch().anonymize(projected, quasiIdentifiers: identifiers, requirements: requirements, keepColumns: keep)
        } catch let error as PrivacyError {
            throw BrokerError(.kUnreachable, error.message)
        }
        guard !result.table.rows.isEmpty else {
            throw BrokerError(.kUnreachable, "every record would be suppressed to reach k = \(policy.treatment.k)")
        }
        return TreatmentOutcome(table: result.table, recordsSelected: recordsSelected, recordsWithoutConsent: withoutConsent,
                                recordsSuppressed: result.report.suppressed, kAchieved: result.report.kAchieved, report: result.report)
    }

    /// Carries the subject through anonymization when the agreement does not release it; never released.
    static let hiddenSubjectColumn = "\u{0}subject"

    /// Clamps every released measure to its schema bounds and adds discrete Laplace noise of scale
    /// (upper − lower)/ε; charges ε for each noised field and each record of the subject with most records.
    func noiseMeasures(_ outcome: TreatmentOutcome, subjectsOf selected: CSVTable, epsilonMicro: UInt64,
                       randomness: AnyRandomWords) throws -> TreatmentOutcome {
        var outcome = outcome
        var table = outcome.table
        let epsilon = try Rational(UInt128(epsilonMicro), 1_000_000)
        let grid = try DecimalGrid(fractionDigits: policy.treatment.measureNoiseDigits)
        var sampler = ExactSampler(random: randomness)
        var noised: [String] = []
        for (column, name) in table.columns.enumerated() {
            guard let field = schema.field(name), field.privacy == .measure, let bounds = field.bounds else { continue }
            let noise: BoundedMeasureNoise
            do { noise = try BoundedMeasureNoise(lower: bounds.lower, upper: bounds.upper, grid: grid, epsilon: epsilon) } catch let error as PrivacyError {
                throw BrokerError(.invalid, "measure \(name): \(error.message)")
            }
            for row in table.rows.indices where !table.rows[row][column].isEmpty {
                do { table.rows[row][column] = try noise.release(table.rows[row][column], using: &sampler) } catch let error as PrivacyError {
                    throw BrokerError(.invalid, "measure \(name), released record \(row + 1): \(error.message)")
                }
            }
            noised.append(name)
        }
        var mostPerSubject = 1
        if let subject = AgreementPolicy.subjectField(of: schema), let column = selected.columns.firstIndex(of: subject) {
            mostPerSubject = Dictionary(selected.rows.map { ($0[column], 1) }, uniquingKeysWith: +).values.max() ?? 1
        }
        outcome.table = table
        outcome.noisedMeasures = noised
        outcome.epsilonMicro = epsilonMicro * UInt64(noised.count) * UInt64(mostPerSubject)
        return outcome
    }
}
