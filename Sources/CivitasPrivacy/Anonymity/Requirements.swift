/// A quasi-identifying column and how it may be generalized.
public struct QuasiIdentifier: Sendable, Equatable {
    public let column: String
    public let hierarchy: Hierarchy

    public init(column: String, hierarchy: Hierarchy) {
        self.column = column
        self.hierarchy = hierarchy
    }
}

/// l-diversity of the sensitive column within every released class.
public enum DiversityRequirement: Sendable, Equatable {
    /// At least l distinct sensitive values per class.
    case distinct(Int)
    /// Entropy of the sensitive values per class at least log(l).
    case entropy(Int)

    /// Entropy must exceed log(l) by this many nats: a class exactly at the boundary
    /// (l equally frequent values) is judged either way by floating-point checkers, so it is not released.
    static let entropyMargin = 1e-9

    public var l: Int {
        switch self {
        case .distinct(let l), .entropy(let l): l
        }
    }
}

/// What a released table must satisfy. Checked when built.
///
/// k and l count people: with a `subject` column, a class meets k when it holds records of at
/// least k distinct subjects, and l-diversity weighs each sensitive value by the distinct subjects
/// holding it. Without one, each record is its own subject.
public struct AnonymityRequirements: Sendable, Equatable {
    /// Every released class holds records of at least k distinct subjects.
    public let k: Int
    /// The sensitive column, required when `diversity` is set.
    public let sensitive: String?
    public let diversity: DiversityRequirement?
    /// The largest fraction of subjects whose records may be suppressed (removed entirely), 0 to 1.
    public let maxSuppression: Double
    /// The column naming the person a record is about; nil: each record is its own subject.
    public let subject: String?
    /// Released columns whose equal values link records of one person (pseudonyms, identifiers):
    /// records linked this way must not narrow a person to fewer than k subjects across classes.
    public let linking: [String]

    public init(k: Int, sensitive: String? = nil, diversity: DiversityRequirement? = nil, maxSuppression: Double = 0,
                subject: String? = nil, linking: [String] = []) throws {
        guard k >= 1, k <= 1_000_000 else { throw PrivacyError(.invalidParameter, "k must be between 1 and 1,000,000, not \(k)") }
        guard (0...1).contains(maxSuppression) else {
            throw PrivacyError(.invalidParameter, "the suppression limit is a fraction from 0 to 1, not \(maxSuppression)")
        }
        if let diversity {
            guard sensitive != nil else { throw PrivacyError(.invalidParameter, "l-diversity needs a sensitive column") }
            guard diversity.l >= 1, diversity.l <= 1000 else { throw PrivacyError(.invalidParameter, "l must be between 1 and 1000, not \(diversity.l)") }
        }
        self.k = k
        self.sensitive = sensitive
        self.diversity = diversity
        self.maxSuppression = maxSuppression
        self.subject = subject
        self.linking = linking
    }
}

extension AnonymityRequirements {
    /// The columns an anonymization reads: the quasi-identifiers, the sensitive, subject and
    /// linking columns, and the kept ones, each once (a table's other columns are never encoded).
    func columnsRead(quasiIdentifiers: [QuasiIdentifier], keepColumns: [String]) -> [String] {
        var names: [String] = []
        for name in quasiIdentifiers.map(\.column) + [sensitive, subject].compactMap({ $0 }) + linking + keepColumns where !names.contains(name) {
            names.append(name)
        }
        return names
    }
}

