import CivitasCrypto
import CivitasModel

/// How every store keeps a batch's records: segments of at most ``rows`` rows, each the
/// canonical JSON `{"columns":[…],"rows":[[…],…]}` sealed (XChaCha20-Poly1305) under the
/// dataset's key and bound to its dataset, batch and position, so a segment moved elsewhere
/// does not open.
enum Segments {
    /// Records per segment.
    static let rows = 1000

    /// What a dataset's wrapped records key is bound to.
    static func datasetKeyBinding(_ id: String) -> [UInt8] { Array("dataset-key:\(id)".utf8) }

    /// Associated data binding a segment to its place.
    static func binding(_ dataset: String, _ sequence: Int64, _ position: Int) -> [UInt8] {
        Array("segment:\(dataset):\(sequence):\(position)".utf8)
    }

    /// A dataset's records key, unwrapped with the storage key.
    static func datasetKey(_ wrapped: [UInt8], dataset id: String, storageKey: SealedStorageKey) throws -> SealedStorageKey {
        do {
            return try storageKey.unwrap(wrapped, associatedData: datasetKeyBinding(id))
        } catch {
            throw StoreError(.corrupt, "the key of dataset \(id) does not open with this store key")
        }
    }

    /// A fresh records key for a new dataset, wrapped with the storage key.
    static func newDatasetKey(dataset id: String, storageKey: SealedStorageKey) throws -> [UInt8] {
        storageKey.wrap(try SealedStorageKey.generate(), associatedData: datasetKeyBinding(id))
    }

    /// Opens and parses one stored segment; refuses one that fails authentication or does not parse.
    static func open(_ sealed: [UInt8], key: SealedStorageKey, dataset id: String, sequence: Int64, position: Int) throws -> RecordChunk {
        let plaintext: [UInt8]
        do {
            plaintext = try key.open(sealed, associatedData: binding(id, sequence, position))
        } catch {
            throw StoreError(.corrupt, "segment \(position) of batch \(sequence) of \(id) failed authentication")
        }
        if let segment = SegmentText.chunk(plaintext) { return segment }
        guard let object = (try? JSONParser.parse(plaintext))?.objectValue,
              case .array(let columnValues)? = object["columns"], case .array(let rowValues)? = object["rows"] else {
            throw StoreError(.corrupt, "segment \(position) of batch \(sequence) of \(id) does not parse")
        }
        let rows: [[String]] = rowValues.map { value in
            if case .array(let cells) = value { return cells.compactMap(\.stringValue) }
            return []
        }
        return RecordChunk(columns: columnValues.compactMap(\.stringValue), rows: rows)
    }

    /// Checks an idempotency key's form.
    static func checkIdempotencyKey(_ key: String?) throws {
        if let key, !(1...200).contains(key.utf8.count) {
            throw StoreError(.invalidArgument, "an idempotency key must be 1 to 200 bytes")
        }
    }

    /// The content hash of a batch handed over chunk by chunk, without keeping it.
    static func contentHash(produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void) throws -> [UInt8] {
        let hash = try BatchContentHash()
        try produce { columns, rows in try hash.add(columns: columns, rows: rows) }
        return hash.finish()
    }

    /// Seals a batch handed over chunk by chunk (the next chunk read on another thread while this
    /// one is sealed) into segments, handing each to `store` with its position as it fills.
    /// Returns how many records the batch holds and its content hash. Each row is encoded once:
    /// its canonical bytes go into the segment and into the content hash.
    static func seal(dataset id: String, sequence: Int64, key: SealedStorageKey,
                     produce: (_ emit: (_ columns: [String], _ rows: [[String]]) throws -> Void) throws -> Void,
                     store: (_ position: Int, _ sealed: [UInt8]) throws -> Void) throws -> (records: Int, contentSHA256: [UInt8]) {
        let contentHash = try BatchContentHash()
        var position = 0, records = 0, rowsInSegment = 0
        // Canonical JSON of {"columns": [...], "rows": [[...], ...]}, written as rows arrive.
        var plaintext: [UInt8] = []
        func startSegment() {
            plaintext.removeAll(keepingCapacity: true)
            plaintext += #"{"columns":"#.utf8
            CanonicalJSON.appendStringArray(contentHash.columns ?? [], to: &plaintext)
            plaintext += #","rows":["#.utf8
            rowsInSegment = 0
        }
        func sealSegment() throws {
            plaintext += "]}".utf8
            try store(position, key.seal(plaintext, associatedData: binding(id, sequence, position)))
            position += 1
            startSegment()
        }
        try ChunkHandoff.overlap(produce: produce) { columns, chunk in
            let first = contentHash.columns == nil
            try contentHash.add(columns: columns, rows: [])
            if first { startSegment() }
            for row in chunk {
                if rowsInSegment > 0 { plaintext.append(UInt8(ascii: ",")) }
                let start = plaintext.count
                CanonicalJSON.appendStringArray(row, to: &plaintext)
                plaintext.withUnsafeBytes { contentHash.add(encodedRow: UnsafeRawBufferPointer(rebasing: $0[start...])) }
                rowsInSegment += 1
                if rowsInSegment == Self.rows { try sealSegment() }
            }
            records += chunk.count
        }
        guard contentHash.columns != nil else { throw StoreError(.invalidArgument, "a batch needs its columns") }
        if rowsInSegment > 0 || position == 0 { try sealSegment() }
        return (records, contentHash.finish())
    }
}

/// The content hash of a batch: SHA-256 over the canonical columns, then each row's canonical
/// array, each line-terminated. Every chunk must name the same columns.
final class BatchContentHash {
    private let hasher: SHA256Hasher
    private(set) var columns: [String]?
    private var line: [UInt8] = []

    init() throws { hasher = try SHA256Hasher() }

    func add(columns given: [String], rows: [[String]]) throws {
        if let columns {
            guard columns == given else { throw StoreError(.invalidArgument, "every chunk of a batch must name the same columns") }
        } else {
            columns = given
            hash(given)
        }
        for row in rows { hash(row) }
    }

    /// Adds one row already encoded as its canonical JSON array (after the columns were given).
    func add(encodedRow: UnsafeRawBufferPointer) {
        hasher.update(encodedRow)
        hasher.update(Self.lineFeed)
    }

    private static let lineFeed: [UInt8] = [0x0A]

    func finish() -> [UInt8] { hasher.finish() }

    /// Hashes one row as its canonical JSON array and a line feed.
    private func hash(_ row: [String]) {
        line.removeAll(keepingCapacity: true)
        CanonicalJSON.appendStringArray(row, to: &line)
        line.append(0x0A)
        hasher.update(line)
    }
}
