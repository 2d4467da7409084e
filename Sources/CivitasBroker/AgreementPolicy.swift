import CivitasCrypto
import CivitasLog
import CivitasModel
import CivitasPrivacy

/// The terms of a sharing agreement (docs/exchanges.md): who shares which dataset with whom,
/// for which purposes, under which legal basis, which fields, the privacy treatment, the ε
/// budget, the validity window and, for feeds, how windows close. Hashed over its canonical
/// JSON (RFC 8785), so equal policies hash equal however they were written.
public struct AgreementPolicy: Sendable, Equatable {
    /// GDPR Art. 6(1) legal bases, as codes.
    public enum LegalBasis: String, Sendable, CaseIterable {
        case consent, contract, legalObligation = "legal-obligation", vitalInterests = "vital-interests"
        case publicTask = "public-task", legitimateInterests = "legitimate-interests"
    }

    /// How records are protected before they leave.
    public struct Treatment: Sendable, Equatable {
        /// Minimum equivalence-class size over the released quasi-identifiers (1: no k-anonymity step).
        public var k: Int
        /// Minimum distinct sensitive values per class, if any.
        public var l: Int?
        /// Largest fraction of records that may be suppressed to reach k.
        public var suppressionLimit: Double
        /// `optimal` (full-domain search) or `mondrian`.
        public var algorithm: String
        /// Part of the pseudonym domain: changing it gives the partner unlinkable pseudonyms.
        public var pseudonymEpoch: String
        /// Noise on bounded measures in released records: each value clamped to its schema bounds and
        /// given discrete Laplace noise with this ε, on a grid of `measureNoiseDigits` decimals.
        public var measureNoiseEpsilonMicro: UInt64?
        public var measureNoiseDigits: Int
        /// Whether a subject's pseudonym stays the same from one delivery to the next.
        public var linkage: Linkage
        /// Most records of one subject in a delivery (their first, in dataset order); nil: no cap.
        public var maxRecordsPerSubject: Int?
    }

    /// How far a pseudonym links a subject's records.
    public enum Linkage: String, Sendable, CaseIterable {
        /// Within one delivery only (the default): deliveries cannot be joined on pseudonyms.
        case delivery
        /// Across every delivery under the agreement; offered only without quasi-identifiers.
        case longitudinal
    }

    /// DP aggregates the partner may request, each charged to the budget.
    public struct AggregateTerms: Sendable, Equatable {
        /// Columns the partner may group by.
        public var groupBy: [String]
        /// Declared group keys per column (for columns whose schema does not list its values):
        /// every aggregate outputs each declared key, present in the data or not.
        public var groupKeys: [String: [String]]
        public var maxEpsilonPerQueryMicro: UInt64
        public var maxRowsPerSubject: Int
        public var maxGroupsPerSubject: Int
    }

    /// Differentially private synthetic releases the partner may request, each charged ρ.
    public struct SyntheticTerms: Sendable, Equatable {
        /// The fields, their declared domains and the tree of pairs measured.
        public var spec: SyntheticSpec
        public var maxRhoPerReleaseMicro: UInt64
        public var maxRecordsPerSubject: Int
    }

    /// How the agreement's privacy loss is counted: pure ε (basic composition), or ρ under
    /// zero-concentrated DP, where a pure ε-DP step is charged ρ = ε²/2.
    public enum Accounting: String, Sendable {
        case epsilon, rho
    }

    /// How feed windows close, and what happens to records of a window that cannot reach k.
    public struct FeedTerms: Sendable, Equatable {
        public enum BelowK: String, Sendable { case wait, suppress }
        public var windowRecords: Int
        public var windowSeconds: Int
        public var belowK: BelowK
    }

    public let id: String
    public let dataset: String
    public let publisher: KeyID
    public let partner: KeyID
    public let purposes: [String]
    public let legalBasis: LegalBasis
    public let fields: [String]
    public let treatment: Treatment
    public let aggregates: AggregateTerms?
    public let synthetic: SyntheticTerms?
    public let epsilonBudgetMicro: UInt64
    /// The zCDP budget, when the agreement counts its privacy loss in ρ.
    public let rhoBudgetMicro: UInt64?
    public let validFrom: UTCTime
    public let validUntil: UTCTime
    public let feed: FeedTerms?
    /// Whether the city's public register of agreements shows the agreement's terms (`public`,
    /// the default) or only that it exists, with its purposes and legal basis (`confidential`).
    public let register: Register

    public var accounting: Accounting { rhoBudgetMicro == nil ? .epsilon : .rho }
    /// The budget in the agreement's unit (ε or ρ, in millionths).
    public var budgetMicro: UInt64 { rhoBudgetMicro ?? epsilonBudgetMicro }

    /// What a step of pure ε-DP costs under the agreement's accounting: ε itself, or ρ = ε²/2
    /// (Bun and Steinke 2016, Proposition 1.4), in millionths rounded up.
    public func charge(epsilonMicro: UInt64) -> UInt64 {
        guard accounting == .rho else { return epsilonMicro }
        return MicroUnits.rhoOfPureEpsilon(epsilonMicro)
    }

    /// The ρ a pure ε-DP step is charged under ρ accounting; nil when the agreement counts ε.
    public func rhoCharge(epsilonMicro: UInt64) -> UInt64? {
        accounting == .rho ? MicroUnits.rhoOfPureEpsilon(epsilonMicro) : nil
    }

    public enum Register: String, Sendable, CaseIterable {
        case `public`, confidential
    }
    /// The policy's canonical bytes and their SHA-256.
    public let canonical: [UInt8]
    public let sha256: [UInt8]

    /// Largest policy accepted, in bytes.
    public static let maximumSize = 64 * 1024

    /// Parses and checks a policy document; every problem is reported at once (in the error's
    /// details), each naming the member.
    public static func parse(_ value: JSONValue) throws -> AgreementPolicy {
        guard let object = value.objectValue else { throw invalid("the policy must be a JSON object") }
        let canonical = try CanonicalJSON.encode(value)
        guard canonical.count <= maximumSize else { throw invalid("the policy is larger than \(maximumSize) bytes") }
        var problems = PolicyProblems()
        problems.attempt {
            try members(object, of: "the policy", allowed: ["agreement", "dataset", "publisher", "partner", "purposes", "legal_basis", "fields",
                                                             "treatment", "aggregates", "epsilon_budget", "valid_from", "valid_until", "feed",
                                                             "register", "synthetic", "rho_budget"])
        }
        let id = problems.attempt { try code(object, "agreement", maximum: 128) }
        let dataset = problems.attempt { try code(object, "dataset", maximum: 128) }
        let publisher = problems.attempt { try keyID(object, "publisher") }
        let partner = problems.attempt { try keyID(object, "partner") }
        let purposes = problems.attempt { () throws -> [String] in
            let purposes = try codes(object, "purposes", maximum: 32)
            guard !purposes.isEmpty else { throw invalid("policy member 'purposes' must name at least one purpose") }
            return purposes
        }
        let legalBasis = problems.attempt { () throws -> LegalBasis in
            guard let basisText = object["legal_basis"]?.stringValue, let legalBasis = LegalBasis(rawValue: basisText) else {
                throw invalid("policy member 'legal_basis' must be one of \(LegalBasis.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return legalBasis
        }
        let fields = problems.attempt { () throws -> [String] in
            let fields = try names(object, "fields", maximum: 256)
            guard !fields.isEmpty else { throw invalid("policy member 'fields' must allow at least one field") }
            return fields
        }
        let treatment = problems.attempt { try parseTreatment(object["treatment"]) }
        let aggregates = problems.attempt { () throws -> AggregateTerms? in
            guard let terms = object["aggregates"] else { return nil }
            guard let terms = terms.objectValue else { throw invalid("policy member 'aggregates' must be an object") }
            try members(terms, of: "aggregates", allowed: ["group_by", "group_keys", "max_epsilon_per_query", "max_rows_per_subject", "max_groups_per_subject"])
            return AggregateTerms(
                groupBy: try names(terms, "group_by", maximum: 8, optional: true),
                groupKeys: try groupKeys(terms["group_keys"]),
                maxEpsilonPerQueryMicro: try micro(terms["max_epsilon_per_query"], "aggregates.max_epsilon_per_query"),
                maxRowsPerSubject: terms["max_rows_per_subject"] == nil ? 1 : try integer(terms, "aggregates.max_rows_per_subject", key: "max_rows_per_subject", range: 1...1000),
                maxGroupsPerSubject: terms["max_groups_per_subject"] == nil ? 1 : try integer(terms, "aggregates.max_groups_per_subject", key: "max_groups_per_subject", range: 1...1000))
        }
        let feed = problems.attempt { () throws -> FeedTerms? in
            guard let terms = object["feed"] else { return nil }
            guard let terms = terms.objectValue else { throw invalid("policy member 'feed' must be an object") }
            try members(terms, of: "feed", allowed: ["window_records", "window_seconds", "below_k"])
            let belowK = terms["below_k"]?.stringValue ?? "wait"
            guard let mode = FeedTerms.BelowK(rawValue: belowK) else { throw invalid("feed.below_k must be wait or suppress") }
            return FeedTerms(windowRecords: try integer(terms, "feed.window_records", key: "window_records", range: 1...1_000_000),
                             windowSeconds: try integer(terms, "feed.window_seconds", key: "window_seconds", range: 1...31_536_000),
                             belowK: mode)
        }
        let synthetic = problems.attempt { () throws -> SyntheticTerms? in
            guard let terms = object["synthetic"] else { return nil }
            guard let terms = terms.objectValue else { throw invalid("policy member 'synthetic' must be an object") }
            try members(terms, of: "synthetic", allowed: SyntheticSpec.members.union(["max_rho_per_release", "max_records_per_subject"]))
            let spec: SyntheticSpec
            do { spec = try SyntheticSpec.parse(terms, member: "synthetic") } catch let error as PrivacyError { throw invalid(error.message) }
            let rho = try micro(terms["max_rho_per_release"], "synthetic.max_rho_per_release")
            guard rho > 0 else { throw invalid("synthetic.max_rho_per_release must be above 0") }
            return SyntheticTerms(spec: spec, maxRhoPerReleaseMicro: rho,
                                  maxRecordsPerSubject: terms["max_records_per_subject"] == nil ? 1
                                    : try integer(terms, "synthetic.max_records_per_subject", key: "max_records_per_subject", range: 1...1000))
        }
        let budget = problems.attempt { try micro(object["epsilon_budget"] ?? .number(0), "epsilon_budget") }
        let rhoBudget = problems.attempt { () throws -> UInt64? in
            guard let value = object["rho_budget"] else { return nil }
            if object["epsilon_budget"] != nil {
                throw invalid("give epsilon_budget (pure ε) or rho_budget (zCDP), not both: the agreement counts its privacy loss in one unit")
            }
            return try micro(value, "rho_budget")
        }
        let register = problems.attempt { () throws -> Register in
            guard let value = object["register"] else { return .public }
            guard let register = value.stringValue.flatMap(Register.init(rawValue:)) else {
                throw invalid("register must be \(Register.allCases.map(\.rawValue).joined(separator: " or "))")
            }
            return register
        }
        let validFrom = problems.attempt { try time(object, "valid_from") }
        let validUntil = problems.attempt { try time(object, "valid_until") }
        if let validFrom, let validUntil, validFrom >= validUntil {
            problems.add("valid_from \(validFrom) must come before valid_until \(validUntil)")
        }
        try problems.throwIfAny()
        guard let id, let dataset, let publisher, let partner, let purposes, let legalBasis, let fields, let treatment,
              let aggregates, let synthetic, let feed, let budget, let rhoBudget, let validFrom, let validUntil, let register else {
            throw invalid("the policy could not be read")
        }
        return AgreementPolicy(id: id, dataset: dataset, publisher: publisher, partner: partner, purposes: purposes, legalBasis: legalBasis,
                               fields: fields, treatment: treatment, aggregates: aggregates, synthetic: synthetic,
                               epsilonBudgetMicro: budget, rhoBudgetMicro: rhoBudget,
                               validFrom: validFrom, validUntil: validUntil, feed: feed, register: register,
                               canonical: canonical, sha256: SHA256Hasher.hash(canonical))
    }

    /// The `treatment` member.
    static func parseTreatment(_ value: JSONValue?) throws -> Treatment {
        guard let treatmentObject = value?.objectValue else { throw invalid("policy member 'treatment' must be an object") }
        try members(treatmentObject, of: "treatment", allowed: ["k", "l", "suppression_limit", "algorithm", "pseudonym_epoch", "measure_noise", "linkage",
                                                             "max_records_per_subject"])
        guard let linkage = Linkage(rawValue: treatmentObject["linkage"]?.stringValue ?? "delivery") else {
            throw invalid("treatment.linkage must be \(Linkage.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        var treatment = Treatment(
            k: try integer(treatmentObject, "treatment.k", key: "k", range: 1...10_000),
            l: treatmentObject["l"] == nil ? nil : try integer(treatmentObject, "treatment.l", key: "l", range: 2...1000),
            suppressionLimit: try fraction(treatmentObject["suppression_limit"] ?? .number(0), "treatment.suppression_limit"),
            algorithm: treatmentObject["algorithm"]?.stringValue ?? "optimal",
            pseudonymEpoch: treatmentObject["pseudonym_epoch"]?.stringValue ?? "1",
            measureNoiseEpsilonMicro: nil, measureNoiseDigits: 0, linkage: linkage,
            maxRecordsPerSubject: treatmentObject["max_records_per_subject"] == nil ? nil
                : try integer(treatmentObject, "treatment.max_records_per_subject", key: "max_records_per_subject", range: 1...10_000))
        if let noise = treatmentObject["measure_noise"] {
            guard let terms = noise.objectValue else { throw invalid("treatment.measure_noise must be {epsilon, fraction_digits}") }
            try members(terms, of: "treatment.measure_noise", allowed: ["epsilon", "fraction_digits"])
            let epsilon = try micro(terms["epsilon"], "treatment.measure_noise.epsilon")
            guard epsilon > 0 else { throw invalid("treatment.measure_noise.epsilon must be above 0") }
            treatment.measureNoiseEpsilonMicro = epsilon
            treatment.measureNoiseDigits = terms["fraction_digits"] == nil ? 0
                : try integer(terms, "treatment.measure_noise.fraction_digits", key: "fraction_digits", range: 0...6)
        }
        guard ["optimal", "mondrian"].contains(treatment.algorithm) else { throw invalid("treatment.algorithm must be optimal or mondrian") }
        guard (1...64).contains(treatment.pseudonymEpoch.utf8.count) else { throw invalid("treatment.pseudonym_epoch must be 1-64 bytes") }
        return treatment
    }

    /// Checks the policy against the dataset's schema and offered purposes: allowed fields exist
    /// and none is marked `drop`; released quasi-identifiers need k ≥ 2; legal basis `consent`
    /// needs a subject field; group-by and aggregate columns exist.
    public func check(against schema: DatasetSchema, offeredPurposes: [String]) throws {
        var problems = PolicyProblems()
        for field in fields {
            problems.attempt { try checkField(field, schema: schema) }
        }
        problems.attempt { try checkTerms(against: schema, offeredPurposes: offeredPurposes) }
        try problems.throwIfAny()
    }

    /// One allowed field exists and may leave.
    func checkField(_ field: String, schema: DatasetSchema) throws {
        guard let described = schema.field(field) else { throw Self.invalid("field '\(field)' is not in the schema of \(dataset)") }
        if described.privacy == .drop { throw Self.invalid("field '\(field)' is marked drop in the schema of \(dataset) and never leaves") }
    }

    /// The terms other than the fields, against the schema and the offered purposes.
    func checkTerms(against schema: DatasetSchema, offeredPurposes: [String]) throws {
        if let purpose = purposes.first(where: { !offeredPurposes.contains($0) }) {
            throw Self.invalid("dataset \(dataset) is not offered for purpose \(purpose) (offered: \(offeredPurposes.joined(separator: ", ")))")
        }
        let quasiIdentifiers = fields.filter { schema.field($0)?.privacy == .quasiIdentifier }
        if !quasiIdentifiers.isEmpty && treatment.k < 2 {
            throw Self.invalid("fields \(quasiIdentifiers.joined(separator: ", ")) are quasi-identifiers: treatment.k must be at least 2")
        }
        if treatment.measureNoiseEpsilonMicro != nil {
            let measures = fields.filter { schema.field($0)?.privacy == .measure }
            guard !measures.isEmpty else { throw Self.invalid("treatment.measure_noise needs a measure among the allowed fields") }
            if budgetMicro == 0 { throw Self.invalid("treatment.measure_noise charges ε: epsilon_budget (or rho_budget) must be above 0") }
        }
        if legalBasis == .consent && schema.fields.first(where: { $0.privacy == .subject }) == nil {
            throw Self.invalid("legal basis consent needs records with a subject field; the schema of \(dataset) has none")
        }
        if treatment.linkage == .longitudinal && !quasiIdentifiers.isEmpty {
            throw Self.invalid("treatment.linkage longitudinal would let the partner join a subject's records across every delivery, so k would have to hold over all of them together; it is offered only for agreements that release no quasi-identifiers (here: \(quasiIdentifiers.joined(separator: ", ")))")
        }
        if let aggregates {
            for column in aggregates.groupBy {
                guard let field = schema.field(column), field.privacy != .drop, field.privacy != .identifier, field.privacy != .subject else {
                    throw Self.invalid("aggregates.group_by '\(column)' is not a groupable field of \(dataset)")
                }
                guard aggregates.groupKeys[column] != nil || field.declaredDomain != nil else {
                    throw Self.invalid("aggregates.group_by '\(column)' has no declared keys: list them in aggregates.group_keys (or give the schema field an enum or integer bounds), so that which groups appear never depends on who is in the data")
                }
            }
            if let column = aggregates.groupKeys.keys.sorted().first(where: { !aggregates.groupBy.contains($0) }) {
                throw Self.invalid("aggregates.group_keys names '\(column)', which is not in aggregates.group_by")
            }
        }
        if let synthetic {
            guard accounting == .rho, budgetMicro > 0 else {
                throw Self.invalid("synthetic releases are charged ρ (zCDP): give the agreement a rho_budget above 0")
            }
            for name in synthetic.spec.fields {
                guard fields.contains(name) else { throw Self.invalid("synthetic.fields names '\(name)', which is not among the agreement's fields") }
                guard let field = schema.field(name), field.privacy != .identifier, field.privacy != .subject else {
                    throw Self.invalid("synthetic.fields '\(name)' is not a field a synthetic release may carry (identifiers and the subject never are)")
                }
            }
            do {
                _ = try synthetic.spec.synthesizer(rho: try Rational(UInt128(synthetic.maxRhoPerReleaseMicro), 1_000_000), subject: nil,
                                                   maxRecordsPerSubject: synthetic.maxRecordsPerSubject, schema: schema)
            } catch let error as PrivacyError {
                throw Self.invalid("synthetic: \(error.message)")
            }
        }
    }

    /// The subject field of `schema`, if it has one.
    public static func subjectField(of schema: DatasetSchema) -> String? {
        schema.fields.first { $0.privacy == .subject }?.name
    }

    // MARK: Signatures

    /// What the publisher signs to offer the policy: a context string, a zero byte, the policy hash.
    public static func offerMessage(policySHA256: [UInt8]) -> [UInt8] { Array("civitas-agreement-offer/1".utf8) + [0] + policySHA256 }
    /// What the partner signs to accept it.
    public static func acceptMessage(policySHA256: [UInt8]) -> [UInt8] { Array("civitas-agreement-accept/1".utf8) + [0] + policySHA256 }

    // MARK: Member readers

    static func invalid(_ message: String) -> BrokerError { BrokerError(.invalid, message) }

    /// Refuses members a part of the policy does not define, so a misspelt term is never silently ignored.
    static func members(_ object: [String: JSONValue], of part: String, allowed: Set<String>) throws {
        if let unknown = Set(object.keys).subtracting(allowed).sorted().first {
            throw invalid("\(part) has an unknown member '\(unknown.prefix(60))'")
        }
    }

    static func code(_ object: [String: JSONValue], _ key: String, maximum: Int) throws -> String {
        guard let text = object[key]?.stringValue, (1...maximum).contains(text.utf8.count),
              text.utf8.allSatisfy({ (48...57).contains($0) || (97...122).contains($0) || $0 == 45 || $0 == 46 || $0 == 95 }) else {
            throw invalid("policy member '\(key)' must be 1-\(maximum) of a-z 0-9 . _ -")
        }
        return text
    }

    static func codes(_ object: [String: JSONValue], _ key: String, maximum: Int) throws -> [String] {
        guard case .array(let items)? = object[key], items.count <= maximum else { throw invalid("policy member '\(key)' must be a list of at most \(maximum)") }
        let values = try items.map { item -> String in try code(["item": item], "item", maximum: 64) }
        guard Set(values).count == values.count else { throw invalid("policy member '\(key)' lists a value twice") }
        return values
    }

    static func names(_ object: [String: JSONValue], _ key: String, maximum: Int, optional: Bool = false) throws -> [String] {
        guard let value = object[key] else {
            if optional { return [] }
            throw invalid("policy member '\(key)' is missing")
        }
        guard case .array(let items) = value, items.count <= maximum,
              let names = Optional(items.compactMap(\.stringValue)), names.count == items.count,
              names.allSatisfy({ (1...128).contains($0.utf8.count) }) else {
            throw invalid("policy member '\(key)' must be a list of at most \(maximum) field names")
        }
        guard Set(names).count == names.count else { throw invalid("policy member '\(key)' lists a field twice") }
        return names
    }

    static func keyID(_ object: [String: JSONValue], _ key: String) throws -> KeyID {
        guard let id = object[key]?.stringValue.flatMap(KeyID.init(hex:)) else { throw invalid("policy member '\(key)' must be a participant key id (32 hex digits)") }
        return id
    }

    static func integer(_ object: [String: JSONValue], _ name: String, key: String, range: ClosedRange<Int>) throws -> Int {
        guard let value = object[key]?.exactUnsignedInteger, value <= UInt64(range.upperBound), range.contains(Int(value)) else {
            throw invalid("\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return Int(value)
    }

    /// Most keys declared for one group-by column.
    public static let maximumGroupKeys = 10_000

    static func groupKeys(_ value: JSONValue?) throws -> [String: [String]] {
        guard let value else { return [:] }
        guard let object = value.objectValue, object.count <= 8 else { throw invalid("aggregates.group_keys must map up to 8 columns to their key lists") }
        var result: [String: [String]] = [:]
        for (column, list) in object {
            guard case .array(let items) = list, (1...maximumGroupKeys).contains(items.count),
                  let keys = Optional(items.compactMap(\.stringValue)), keys.count == items.count,
                  keys.allSatisfy({ (0...256).contains($0.utf8.count) }) else {
                throw invalid("aggregates.group_keys.\(column.prefix(60)) must be a list of 1 to \(maximumGroupKeys) strings of at most 256 bytes")
            }
            guard Set(keys).count == keys.count else { throw invalid("aggregates.group_keys.\(column.prefix(60)) lists a key twice") }
            result[column] = keys
        }
        return result
    }

    static func fraction(_ value: JSONValue, _ name: String) throws -> Double {
        guard let number = value.numberValue, number >= 0, number <= 1 else { throw invalid("\(name) must be a number from 0 to 1") }
        return number
    }

    /// A non-negative ε with at most six decimals, in millionths.
    static func micro(_ value: JSONValue?, _ name: String) throws -> UInt64 {
        guard let number = value?.numberValue, number >= 0, number <= 1000 else { throw invalid("\(name) must be a number from 0 to 1000") }
        let scaled = (number * 1_000_000).rounded()
        guard abs(scaled - number * 1_000_000) < 1e-3 else { throw invalid("\(name) may have at most six decimals") }
        return UInt64(scaled)
    }

    static func time(_ object: [String: JSONValue], _ key: String) throws -> UTCTime {
        guard let text = object[key]?.stringValue, let time = UTCTime(rfc3339: text) else {
            throw invalid("policy member '\(key)' must be an RFC 3339 UTC time like 2026-11-26T12:00:00Z")
        }
        return time
    }
}

/// The problems found in a policy, gathered so that all are reported at once.
struct PolicyProblems {
    private(set) var messages: [String] = []

    /// Runs one check; a refusal is noted and nil returned.
    mutating func attempt<T>(_ body: () throws -> T) -> T? {
        do { return try body() } catch let error as BrokerError {
            messages.append(contentsOf: error.details.isEmpty ? [error.message] : error.details)
        } catch {
            messages.append("\(error)")
        }
        return nil
    }

    mutating func add(_ message: String) { messages.append(message) }

    /// Refuses with every problem noted: the first as the message, all in the details.
    func throwIfAny() throws {
        guard let first = messages.first else { return }
        let message = messages.count == 1 ? first : "the policy has \(messages.count) problems; the first: \(first)"
        throw BrokerError(.invalid, message, details: messages.count == 1 ? [] : messages)
    }
}
