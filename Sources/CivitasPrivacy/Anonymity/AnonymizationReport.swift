import CivitasCrypto

/// What an anonymization did and achieved, for the publisher and the log.
public struct AnonymizationReport: Sendable, Equatable {
    public var algorithm: String
    public var k: Int
    public var diversity: String?
    /// The column naming the subject; nil when each record is its own subject.
    public var subjectColumn: String?
    /// Records in, released and suppressed.
    public var records: Int
    public var released: Int
    public var suppressed: Int
    /// Distinct subjects in, with at least one record released, and with at least one record suppressed.
    public var subjects: Int
    public var subjectsReleased: Int
    public var subjectsSuppressed: Int
    /// Fewest distinct subjects in a released class (0 when nothing was released).
    public var kAchieved: Int
    /// Optimal search: the generalization level chosen per quasi-identifier.
    public var levels: [String: Int]
    /// Mondrian: the number of partitions.
    public var partitions: Int
    public var classes: Int
    /// Class size in distinct subjects → number of classes of that size.
    public var classSizeHistogram: [Int: Int]
    /// The loss metric (docs/privacy.md): mean normalized generalization of the released
    /// records, with each suppressed record counting as fully generalized. 0 = original, 1 = nothing left.
    public var loss: Double
    /// Optimal search: the metric that chose the generalization, and its value.
    public var metric: String = ""
    public var metricValue: Double = 0
    /// Highest re-identification risk of a released subject under the prosecutor model: 1 / smallest class.
    public var maximumProsecutorRisk: Double
    /// Average prosecutor risk: classes / the sum of their sizes in subjects.
    public var averageProsecutorRisk: Double
    /// Optimal search: lattice nodes checked against the data, and lattice size.
    public var nodesChecked: Int
    public var latticeSize: Int

    /// The report as JSON (used by `civitas anonymize --report`).
    public var jsonValue: JSONValue {
        var object: [String: JSONValue] = [
            "algorithm": .string(algorithm), "k": .number(Double(k)),
            "records": .number(Double(records)), "released": .number(Double(released)),
            "suppressed": .number(Double(suppressed)), "classes": .number(Double(classes)),
            "subject": .string(subjectColumn ?? "each record is its own subject"),
            "subjects": .number(Double(subjects)), "subjects_released": .number(Double(subjectsReleased)),
            "subjects_suppressed": .number(Double(subjectsSuppressed)), "k_achieved": .number(Double(kAchieved)),
            "class_size_histogram": .object(Dictionary(uniqueKeysWithValues: classSizeHistogram.map { (String($0.key), .number(Double($0.value))) })),
            "loss": .number((loss * 1e6).rounded() / 1e6),
            "max_prosecutor_risk": .number((maximumProsecutorRisk * 1e6).rounded() / 1e6),
            "avg_prosecutor_risk": .number((averageProsecutorRisk * 1e6).rounded() / 1e6),
        ]
        if let diversity { object["l_diversity"] = .string(diversity) }
        if algorithm == "optimal" {
            object["levels"] = .object(levels.mapValues { .number(Double($0)) })
            object["nodes_checked"] = .number(Double(nodesChecked))
            object["lattice_size"] = .number(Double(latticeSize))
            object["metric"] = .string(metric)
            object["metric_value"] = .number((metricValue * 1e6).rounded() / 1e6)
        } else {
            object["partitions"] = .number(Double(partitions))
        }
        return .object(object)
    }
}

/// A released table and how it was made.
public struct AnonymizedTable: Sendable {
    public let table: CSVTable
    public internal(set) var report: AnonymizationReport
}
