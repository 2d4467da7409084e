import CivitasCrypto
import CivitasModel
import CivitasPrivacy
import CivitasStore
import Foundation

/// A HyperLogLog sketch (2^18 one-byte registers) of keyed subject hashes: the number of distinct
/// subjects of a dataset, estimated within about 0.2% (closer still for small counts, where
/// linear counting applies), without keeping any subject.
struct SubjectSketch: Equatable {
    static let precision = 18
    private(set) var registers = [UInt8](repeating: 0, count: 1 << precision)

    init() {}

    init?(registers: [UInt8]) {
        guard registers.count == 1 << Self.precision else { return nil }
        self.registers = registers
    }

    /// Adds a subject by its keyed hash (at least 8 bytes, uniformly distributed).
    mutating func add(hash: [UInt8]) {
        add(word: hash.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// Adds a subject by its keyed 64-bit hash.
    mutating func add(word: UInt64) {
        let bucket = Int(word >> UInt64(64 - Self.precision))
        let rest = word << UInt64(Self.precision)
        let rank = UInt8(min(rest.leadingZeroBitCount, 64 - Self.precision) + 1)
        if rank > registers[bucket] { registers[bucket] = rank }
    }

    mutating func merge(_ other: SubjectSketch) {
        for i in registers.indices where other.registers[i] > registers[i] { registers[i] = other.registers[i] }
    }

    /// The estimated number of distinct subjects added (Flajolet et al. 2007, with linear
    /// counting while registers are still empty).
    var estimate: Double {
        let m = Double(registers.count)
        let alpha = 0.7213 / (1 + 1.079 / m)
        let sum = registers.reduce(0.0) { $0 + pow(2, -Double($1)) }
        let raw = alpha * m * m / sum
        let empty = registers.lazy.filter { $0 == 0 }.count
        if raw <= 2.5 * m && empty > 0 { return m * log(m / Double(empty)) }
        return raw
    }
}

/// SipHash-2-4 (Aumasson and Bernstein 2012) under a 128-bit key: the keyed 64-bit hash a
/// subject enters the sketch by, so the stored registers say nothing of a guessed subject
/// without the broker's key. A few tens of nanoseconds a subject, beside a microsecond of HMAC.
struct SketchHash {
    private let k0: UInt64, k1: UInt64

    init(key: [UInt8]) {
        precondition(key.count >= 16, "SipHash needs a 16-byte key")
        func word(_ offset: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(key[offset + $1]) << (8 * UInt64($1)) } }
        k0 = word(0)
        k1 = word(8)
    }

    func hash(_ text: String) -> UInt64 {
        var v0: UInt64 = 0x736f6d6570736575 ^ k0, v1: UInt64 = 0x646f72616e646f6d ^ k1
        var v2: UInt64 = 0x6c7967656e657261 ^ k0, v3: UInt64 = 0x7465646279746573 ^ k1
        func round() {
            v0 &+= v1; v1 = (v1 << 13 | v1 >> 51) ^ v0; v0 = v0 << 32 | v0 >> 32
            v2 &+= v3; v3 = (v3 << 16 | v3 >> 48) ^ v2
            v0 &+= v3; v3 = (v3 << 21 | v3 >> 43) ^ v0
            v2 &+= v1; v1 = (v1 << 17 | v1 >> 47) ^ v2; v2 = v2 << 32 | v2 >> 32
        }
        var length: UInt64 = 0, word: UInt64 = 0, filled: UInt64 = 0
        for byte in text.utf8 {
            word |= UInt64(byte) << (8 * filled)
            filled += 1
            length += 1
            if filled == 8 {
                v3 ^= word; round(); round(); v0 ^= word
                word = 0
                filled = 0
            }
        }
        word |= (length & 0xFF) << 56
        v3 ^= word; round(); round(); v0 ^= word
        v2 ^= 0xFF
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}

/// The counts a dataset's data-quality figures are computed from, kept as batches arrive:
/// records offered (refused batches included) and accepted, non-empty values per field, the
/// latest record time, and a sketch of the distinct subjects. Counts only; no value is kept.
struct DatasetQualityCounts: Equatable {
    var submitted = 0
    var accepted = 0
    var refusedBatches = 0
    var nonEmpty: [String: Int] = [:]
    /// `YYYY-MM-DDTHH:MM:SS`, the latest value of the dataset's record-time field.
    var latestRecord: String?
    var subjects = SubjectSketch()

    init() {}

    init(decoding bytes: [UInt8]) throws {
        let value = try JSONParser.parse(bytes)
        func count(_ key: String) throws -> Int {
            guard let number = value[key]?.exactUnsignedInteger, number <= UInt64(Int.max) else {
                throw BrokerError(.invalid, "the stored quality counts have no \(key)")
            }
            return Int(number)
        }
        submitted = try count("submitted")
        accepted = try count("accepted")
        refusedBatches = try count("refused_batches")
        for (field, number) in value["non_empty"]?.objectValue ?? [:] { nonEmpty[field] = number.exactUnsignedInteger.map { Int($0) } ?? 0 }
        latestRecord = value["latest_record"]?.stringValue
        guard let sketch = value["subjects"]?.stringValue.flatMap(Base64.decode).flatMap(SubjectSketch.init(registers:)) else {
            throw BrokerError(.invalid, "the stored quality counts have no subject sketch")
        }
        subjects = sketch
    }

    var encoded: [UInt8] {
        get throws {
            var object: [String: JSONValue] = [
                "submitted": .number(Double(submitted)), "accepted": .number(Double(accepted)), "refused_batches": .number(Double(refusedBatches)),
                "non_empty": .object(nonEmpty.mapValues { .number(Double($0)) }), "subjects": .string(Base64.encode(subjects.registers)),
            ]
            if let latestRecord { object["latest_record"] = .string(latestRecord) }
            return try CanonicalJSON.encode(.object(object))
        }
    }

    mutating func add(_ tally: BatchQualityTally) {
        submitted += tally.records
        accepted += tally.records
        for (field, count) in tally.nonEmpty { nonEmpty[field, default: 0] += count }
        if let latest = tally.latestRecord, latestRecord.map({ latest > $0 }) ?? true { latestRecord = latest }
        subjects.merge(tally.subjects)
    }
}

/// One batch's contribution to its dataset's quality counts, tallied as its records are validated.
struct BatchQualityTally {
    let subjectField: String?
    let recordTimeField: String?
    let subjectHash: SketchHash
    var records = 0
    var nonEmpty: [String: Int] = [:]
    var latestRecord: String?
    var subjects = SubjectSketch()

    /// Counts validated rows under `columns`.
    mutating func add(columns: [String], rows: [[String]]) {
        guard !rows.isEmpty else { return }
        records += rows.count
        let subject = subjectField.flatMap { columns.firstIndex(of: $0) }
        let time = recordTimeField.flatMap { columns.firstIndex(of: $0) }
        var filled = [Int](repeating: 0, count: columns.count)
        for row in rows {
            for (c, value) in row.enumerated() where c < filled.count && !value.isEmpty { filled[c] += 1 }
            if let subject, subject < row.count, !row[subject].isEmpty { subjects.add(word: subjectHash.hash(row[subject])) }
            if let time, time < row.count, let stamp = Self.recordTime(row[time]), latestRecord.map({ stamp > $0 }) ?? true { latestRecord = stamp }
        }
        for (c, column) in columns.enumerated() { nonEmpty[column, default: 0] += filled[c] }
    }

    /// A record time as `YYYY-MM-DDTHH:MM:SS` (so that times compare as text), from `YYYY-MM-DD`,
    /// `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS…`; nil for anything else.
    static func recordTime(_ text: String) -> String? {
        let bytes = Array(text.utf8.prefix(19))
        func digits(_ range: Range<Int>) -> Bool { range.allSatisfy { $0 < bytes.count && (48...57).contains(bytes[$0]) } }
        guard bytes.count >= 10, digits(0..<4), bytes[4] == 0x2D, digits(5..<7), bytes[7] == 0x2D, digits(8..<10) else { return nil }
        if bytes.count == 10 { return String(decoding: bytes, as: UTF8.self) + "T00:00:00" }
        guard bytes.count == 19, bytes[10] == 0x20 || bytes[10] == 0x54, digits(11..<13), bytes[13] == 0x3A, digits(14..<16),
              bytes[16] == 0x3A, digits(17..<19) else { return nil }
        return String(decoding: bytes[0..<10], as: UTF8.self) + "T" + String(decoding: bytes[11..<19], as: UTF8.self)
    }
}

/// A dataset's data-quality figures as the catalog publishes them (W3C DQV), computed from its
/// counts: ratios rounded to two decimals and published only for datasets of at least
/// ``minimumRecords`` accepted records, since exact ratios on small datasets reveal facts
/// (one missing value among ten).
public struct DatasetQualityFigures: Sendable, Equatable {
    /// Fewest accepted records for which ratios are published.
    public static let minimumRecords = 100

    /// Share of non-empty values per field of the schema, rounded to 0.01.
    public let completeness: [(field: String, value: Double)]
    /// Records accepted over records submitted (refused batches included), rounded to 0.01.
    public let validity: Double
    /// Distinct subjects over records (the subjects estimated by a sketch), rounded to 0.01; nil without a subject field.
    public let subjectUniqueness: Double?
    /// The latest record time, when the dataset names its record-time field.
    public let latestRecord: UTCTime?
    /// Whole hours from the latest record, and from the latest batch, to the time the figures were computed.
    public let latestRecordAgeHours: Int?
    public let latestBatchAgeHours: Int?
    /// With a declared accrual periodicity: batches received in the last period, and whether the
    /// latest batch came within one period.
    public let batchesInLastPeriod: Int?
    public let onSchedule: Bool?

    public static func == (lhs: DatasetQualityFigures, rhs: DatasetQualityFigures) -> Bool {
        lhs.completeness.map(\.field) == rhs.completeness.map(\.field) && lhs.completeness.map(\.value) == rhs.completeness.map(\.value)
            && lhs.validity == rhs.validity && lhs.subjectUniqueness == rhs.subjectUniqueness && lhs.latestRecord == rhs.latestRecord
            && lhs.latestRecordAgeHours == rhs.latestRecordAgeHours && lhs.latestBatchAgeHours == rhs.latestBatchAgeHours
            && lhs.batchesInLastPeriod == rhs.batchesInLastPeriod && lhs.onSchedule == rhs.onSchedule
    }

    /// A ratio rounded to two decimals.
    static func rounded(_ numerator: Int, _ denominator: Int) -> Double {
        guard denominator > 0 else { return 0 }
        return (Double(numerator) * 100 / Double(denominator)).rounded() / 100
    }
}

extension Broker {
    /// The dataset's stored quality counts with a validated batch added (in the batch's own transaction).
    static func qualityCounts(_ stored: [UInt8]?, adding tally: BatchQualityTally) throws -> [UInt8] {
        var counts = try stored.map(DatasetQualityCounts.init(decoding:)) ?? DatasetQualityCounts()
        counts.add(tally)
        return try counts.encoded
    }

    /// Counts a refused batch of `records` records (0 when even its header was refused).
    func recordQuality(dataset: String, refusedRecords records: Int) throws {
        try change { transaction in
            var counts = try transaction.datasetQuality(dataset).map(DatasetQualityCounts.init(decoding:)) ?? DatasetQualityCounts()
            counts.submitted += records
            counts.refusedBatches += 1
            try transaction.saveDatasetQuality(dataset, counts: try counts.encoded)
        }
    }

    /// A tally for a batch of `dataset`, counting its subjects and record times as its schema and description say.
    func qualityTally(for dataset: Dataset, schema: DatasetSchema) -> BatchQualityTally {
        let recordTime = (try? JSONParser.parse(dataset.schema)).flatMap { try? DatasetDescription.parse(schema: $0) }?.recordTime
        // A sketch key per dataset, derived from the key subjects are hashed under.
        let key = subjects.mac(Array("civitas-quality-sketch/1".utf8) + [0] + Array(dataset.id.utf8))
        return BatchQualityTally(subjectField: AgreementPolicy.subjectField(of: schema), recordTimeField: recordTime,
                                 subjectHash: SketchHash(key: key))
    }

    /// The dataset's data-quality figures at `now`, or nil while it has fewer than
    /// ``DatasetQualityFigures/minimumRecords`` accepted records.
    public func qualityFigures(of dataset: Dataset, now: UTCTime) throws -> DatasetQualityFigures? {
        guard let bytes = try mapStore({ try store.datasetQuality(dataset.id) }) else { return nil }
        let counts = try DatasetQualityCounts(decoding: bytes)
        guard counts.accepted >= DatasetQualityFigures.minimumRecords else { return nil }
        let schema = try DatasetSchema.parse(dataset.schema)
        let described = try DatasetDescription.parse(schema: try JSONParser.parse(dataset.schema))
        let completeness = schema.fields.map { field in
            (field: field.name, value: DatasetQualityFigures.rounded(counts.nonEmpty[field.name] ?? 0, counts.accepted))
        }
        let subjects = AgreementPolicy.subjectField(of: schema).map { _ in
            DatasetQualityFigures.rounded(Int(counts.subjects.estimate.rounded()), counts.accepted)
        }
        let latestRecord = counts.latestRecord.flatMap { UTCTime(rfc3339: $0 + "Z") }
        func hours(since time: UTCTime) -> Int { max(0, Int((now.secondsSince1970 - time.secondsSince1970) / 3600)) }
        let batches = try mapStore { try store.batches(of: dataset.id, from: 1) }
        let latestBatch = batches.map(\.created).max()
        var inLastPeriod: Int?, onSchedule: Bool?
        if let code = described.accrualPeriodicity, let period = DatasetDescription.frequencies[code]?.seconds {
            let start = now.adding(seconds: -Int64(period))
            inLastPeriod = batches.filter { $0.created > start }.count
            onSchedule = latestBatch.map { $0 > start } ?? false
        }
        return DatasetQualityFigures(completeness: completeness, validity: DatasetQualityFigures.rounded(counts.accepted, counts.submitted),
                                     subjectUniqueness: subjects, latestRecord: latestRecord, latestRecordAgeHours: latestRecord.map(hours(since:)),
                                     latestBatchAgeHours: latestBatch.map(hours(since:)), batchesInLastPeriod: inLastPeriod, onSchedule: onSchedule)
    }
}
