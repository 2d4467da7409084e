import CivitasCrypto
import CivitasLog
import CivitasModel
import CivitasPrivacy
import CivitasStore
import Foundation

/// A DP aggregate a partner asks for under an agreement.
public struct AggregateRequest: Sendable {
    public enum Statistic: String, Sendable { case count, sum, mean }
    public var purpose: String
    public var statistic: Statistic
    /// The measure summed or averaged (not for counts).
    public var measure: String?
    public var groupBy: [String]
    public var epsilonMicro: UInt64

    public init(purpose: String, statistic: Statistic, measure: String?, groupBy: [String], epsilonMicro: UInt64) {
        self.purpose = purpose
        self.statistic = statistic
        self.measure = measure
        self.groupBy = groupBy
        self.epsilonMicro = epsilonMicro
    }
}

/// Differentially private aggregates under an agreement, over declared group keys.
extension Broker {
    /// A differentially private aggregate over the consented records, charged to the agreement's ε budget.
    /// With `requestKey`, a repeated request answers the first delivery: never a second charge.
    public func aggregate(agreement id: String, request: AggregateRequest, by partner: Participant, now: UTCTime,
                          requestKey: String? = nil) throws -> ReleaseResult {
        let keyed = try KeyedRequest(requestKey, request: [
            "aggregate": .string(id), "purpose": .string(request.purpose), "statistic": .string(request.statistic.rawValue),
            "measure": request.measure.map(JSONValue.string) ?? .null, "group_by": .array(request.groupBy.map(JSONValue.string)),
            "epsilon_micro": .number(Double(request.epsilonMicro)),
        ])
        return try countingRefusals(under: id, partner: partner, now: now) {
            try answeringOnce(keyed, partner: partner) {
                try aggregate(agreement: id, request: request, by: partner, now: now, keyed: keyed)
            }
        }
    }

    private func aggregate(agreement id: String, request: AggregateRequest, by partner: Participant, now: UTCTime, keyed: KeyedRequest?) throws -> ReleaseResult {
        let (agreement, policy, dataset) = try authorize(id, purpose: request.purpose, partner: partner, now: now)
        guard let terms = policy.aggregates else { throw BrokerError(.invalid, "agreement \(id) does not allow aggregates") }
        if let column = request.groupBy.first(where: { !terms.groupBy.contains($0) }) {
            throw BrokerError(.invalid, "agreement \(id) does not allow grouping by '\(column)' (allowed: \(terms.groupBy.joined(separator: ", ")))")
        }
        guard request.epsilonMicro > 0, request.epsilonMicro <= terms.maxEpsilonPerQueryMicro else {
            throw BrokerError(.invalid, "ε per aggregate must be above 0 and at most \(MicroUnits.decimal(terms.maxEpsilonPerQueryMicro)) under agreement \(id)")
        }
        _ = try Self.charge(policy.charge(epsilonMicro: request.epsilonMicro), to: agreement, policy: policy)  // refused before any work; charged again when delivered
        let schema = try DatasetSchema.parse(dataset.schema)
        let statistic: DPAggregate.Statistic
        if request.statistic == .count {
            statistic = .count
        } else {
            guard let measure = request.measure, policy.fields.contains(measure), let field = schema.field(measure),
                  field.privacy == .measure, let bounds = field.bounds else {
                throw BrokerError(.invalid, "a \(request.statistic.rawValue) needs a measure with bounds among the agreement's fields")
            }
            statistic = request.statistic == .sum ? .sum(column: measure, lower: bounds.lower, upper: bounds.upper)
                : .mean(column: measure, lower: bounds.lower, upper: bounds.upper)
        }
        let mayRelease = try consentRule(policy: policy, dataset: dataset.id, purpose: request.purpose)
        let (groups, keySources) = try Self.declaredGroups(request.groupBy, terms: terms, schema: schema)
        let (table, subject) = try consentedColumns(of: dataset.id, reading: request.groupBy + [request.measure].compactMap { $0 },
                                                   treatment: ReleaseTreatment(schema: schema, policy: policy), mayRelease: mayRelease)
        let result: CSVTable
        do {
            let epsilon = try Rational(UInt128(request.epsilonMicro), 1_000_000)
            let query = try DPAggregate(statistic: statistic, groupBy: request.groupBy, mechanism: .laplace(epsilon: epsilon), subject: subject,
                                        maxGroupsPerSubject: terms.maxGroupsPerSubject, maxRowsPerSubject: terms.maxRowsPerSubject)
            var sampler = ExactSampler(random: randomness())
            result = try query.run(table, groups: groups, using: &sampler)
        } catch let error as PrivacyError {
            throw BrokerError(.invalid, error.message)
        }
        let deliveryID = Self.newDeliveryID(.aggregate)
        let requestKey = try Self.requestKey(keyed, partner: partner.keys.keyID, delivery: deliveryID, outcome: nil, epsilonMicro: request.epsilonMicro,
                                             rhoMicro: policy.rhoCharge(epsilonMicro: request.epsilonMicro), now: now)
        let delivery = try deliver(payload: result.csv(), records: result.rows.count, id: deliveryID, kind: .aggregate, agreement: agreement, policy: policy, purpose: request.purpose, outcome: nil,
                                   epsilonMicro: request.epsilonMicro, feedWindow: nil, drawnBatches: [], now: now,
                                   transforms: ["statistic": .string(request.statistic.rawValue), "mechanism": "discrete-laplace",
                                                "group_by": .array(request.groupBy.map(JSONValue.string)), "group_keys": .object(keySources),
                                                "measure": .string(request.measure ?? "")],
                                   requestKey: requestKey)
        return ReleaseResult(delivery: delivery, outcome: nil, epsilonMicro: request.epsilonMicro, rhoMicro: policy.rhoCharge(epsilonMicro: request.epsilonMicro))
    }

    /// Steps 2 and 3 for an aggregate: the dataset read a segment at a time into columns of codes
    /// holding only `columns` and the subject, keeping the records whose subject may be released.
    /// Returns them with the subject column's name (nil when the records have none).
    func consentedColumns(of dataset: String, reading columns: [String], treatment: ReleaseTreatment,
                          mayRelease: (String) -> Bool) throws -> (ColumnarTable, subject: String?) {
        var table: ColumnarTable?
        var subject: String?, read = 0
        // Each subject is asked once, by its code in the table being built.
        var answers: [Bool] = []
        try forEachSegment(of: dataset, sequences: nil) { chunk in
            if table == nil {
                subject = try treatment.subjectField(in: chunk.columns, records: chunk.rowCount)
                var names: [String] = []
                for name in columns + [subject].compactMap({ $0 }) where !names.contains(name) { names.append(name) }
                table = ColumnarTable(columns: names)
            }
            guard var selected = table else { return }
            table = nil  // appended in place, without a copy
            defer { table = selected }
            let positions = try selected.columns.map { name in
                guard let position = chunk.columns.firstIndex(of: name) else {
                    throw BrokerError(.invalid, "the records have no column '\(name)'")
                }
                return position
            }
            read += chunk.rowCount
            selected.append(chunk, positions: positions, subject: subject.flatMap { selected.columns.firstIndex(of: $0) }) { code, newSubject in
                if let newSubject { answers.append(mayRelease(newSubject)) }
                return answers[code]
            }
        }
        var consented = table ?? ColumnarTable(columns: columns)
        consented.finishAppending()
        try ReleaseTreatment.requireRecords(read: read, selected: consented.rowCount)
        return (consented, subject)
    }

    /// Most groups one aggregate may output.
    public static let maximumAggregateGroups = 100_000

    /// Every combination of the group-by columns' declared keys (the policy's list, else the
    /// schema's), and where each column's keys came from. The data never decides which keys appear.
    static func declaredGroups(_ columns: [String], terms: AgreementPolicy.AggregateTerms, schema: DatasetSchema,
                               sourcesOnly: Bool = false) throws -> ([[String]], [String: JSONValue]) {
        var groups: [[String]] = [[]]
        var sources: [String: JSONValue] = [:]
        for column in columns {
            let keys: [String]
            if let declared = terms.groupKeys[column] {
                keys = declared
                sources[column] = "policy"
            } else if let declared = schema.field(column)?.declaredDomain {
                keys = declared
                sources[column] = "schema"
            } else {
                throw BrokerError(.invalid, "group-by column '\(column)' has no declared keys in the agreement or the schema")
            }
            if sourcesOnly { continue }
            guard groups.count * keys.count <= maximumAggregateGroups else {
                throw BrokerError(.invalid, "grouping by \(columns.joined(separator: ", ")) gives more than \(maximumAggregateGroups) declared groups")
            }
            groups = groups.flatMap { prefix in keys.map { prefix + [$0] } }
        }
        return (groups, sources)
    }
}
