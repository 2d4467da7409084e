import CivitasCrypto

/// Reads JSON records from a byte source one record at a time, so a batch is never held whole:
/// JSON Lines line by line, NGSI-LD (or NGSI v2) entities element by element of the top-level
/// array. Each record is parsed on its own and handed over with its position (1-based).
public enum JSONRecordReader {
    /// Largest single record (one line, or one entity) accepted.
    public static let maximumRecordBytes = 8 << 20

    /// JSON Lines: one JSON object per non-empty line (a leading UTF-8 byte-order mark is
    /// skipped). Errors name the line, the byte within it and the reason.
    public static func readJSONLines(from source: ByteSource, maximumRecords: Int, blockSize: Int = 1 << 16,
                                     _ handle: (_ record: [String: JSONValue], _ line: Int) throws -> Void) throws {
        var line: [UInt8] = [], number = 0, records = 0
        func finish() throws {
            number += 1
            defer { line.removeAll(keepingCapacity: true) }
            if number == 1 && line.starts(with: CSVTable.byteOrderMark) { line.removeFirst(CSVTable.byteOrderMark.count) }
            guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { return }
            let value: JSONValue
            do { value = try JSONParser.parse(line, limits: .init(maximumDepth: 64, maximumBytes: max(line.count, 1))) } catch let error as CryptoError {
                throw PrivacyError(.invalidValue, "line \(number): \(error.message)")
            }
            guard let object = value.objectValue else { throw PrivacyError(.invalidValue, "line \(number) holds a JSON value that is not an object") }
            records += 1
            guard records <= maximumRecords else { throw PrivacyError(.invalidValue, "more than \(maximumRecords) records") }
            try handle(object, number)
        }
        try forEachBlock(of: source, blockSize: blockSize) { block in
            var rest = block[...]
            while let newline = rest.firstIndex(of: 0x0A) {
                line += rest[rest.startIndex..<newline]
                try checkLength(line.count, "line \(number + 1)")
                try finish()
                rest = rest[(newline + 1)...]
            }
            line += rest
            try checkLength(line.count, "line \(number + 1)")
        }
        if !line.isEmpty { try finish() }
    }

    /// NGSI-LD: an entity or an array of entities, normalized (attributes as Property /
    /// Relationship / GeoProperty objects) or key-values; NGSI v2 entities (attributes as
    /// `{type, value, metadata}`) are read the same way, and so are the entities of a
    /// subscription's notification. Each entity is handed over as a flat record
    /// (``JSONRecords/keyValues(_:entityNumber:)``).
    public static func readNGSI(from source: ByteSource, maximumRecords: Int, blockSize: Int = 1 << 16,
                                _ handle: (_ record: [String: JSONValue], _ entity: Int) throws -> Void) throws {
        var splitter = ArrayElements()
        var count = 0
        func entity(_ bytes: [UInt8], inArray: Bool) throws {
            count += 1
            guard count <= maximumRecords else { throw PrivacyError(.invalidValue, "more than \(maximumRecords) entities") }
            let value: JSONValue
            do { value = try JSONParser.parse(bytes, limits: .init(maximumDepth: 64, maximumBytes: max(bytes.count, 1))) } catch let error as CryptoError {
                throw PrivacyError(.invalidValue, inArray ? "entity \(count) is not JSON: \(error.message)" : "the body is not JSON: \(error.message)")
            }
            guard let object = value.objectValue else {
                throw PrivacyError(.invalidValue, inArray ? "entity \(count) is not a JSON object" : "NGSI-LD content is an entity or an array of entities")
            }
            // A subscription's notification (NGSI-LD `{"type": "Notification", "data": [...]}`,
            // NGSI v2 `{"subscriptionId": …, "data": [...]}`) carries its entities in `data`.
            if !inArray, case .array(let entities)? = object["data"], object["type"]?.stringValue == "Notification" || object["subscriptionId"] != nil {
                count -= 1
                for item in entities {
                    count += 1
                    guard count <= maximumRecords else { throw PrivacyError(.invalidValue, "more than \(maximumRecords) entities") }
                    guard let entity = item.objectValue else { throw PrivacyError(.invalidValue, "entity \(count) of the notification is not a JSON object") }
                    try handle(JSONRecords.keyValues(entity, entityNumber: count), count)
                }
                return
            }
            try handle(JSONRecords.keyValues(object, entityNumber: count), count)
        }
        try forEachBlock(of: source, blockSize: blockSize) { block in try splitter.add(block, element: entity) }
        try splitter.finish(element: entity)
    }

    private static func checkLength(_ count: Int, _ what: String) throws {
        guard count <= maximumRecordBytes else { throw PrivacyError(.invalidValue, "\(what) is longer than \(maximumRecordBytes) bytes") }
    }

    private static func forEachBlock(of source: ByteSource, blockSize: Int, _ body: ([UInt8]) throws -> Void) throws {
        var block = [UInt8](repeating: 0, count: max(blockSize, 1))
        while true {
            let count = try block.withUnsafeMutableBytes { try source.read(into: $0) }
            if count == 0 { return }
            try body(count == block.count ? block : Array(block[0..<count]))
        }
    }

    /// Splits a JSON text into the elements of its top-level array (or hands over the whole
    /// text when it is not an array), tracking strings and nesting only: each element is then
    /// parsed, and so checked, on its own.
    struct ArrayElements {
        private enum State { case start, inArray, afterArray, notArray }
        private var state = State.start
        private var element: [UInt8] = []
        private var depth = 0, inString = false, escaped = false
        private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }

        /// Hands each element to `handle`, with whether it came from an array.
        mutating func add(_ bytes: [UInt8], element handle: (_ element: [UInt8], _ inArray: Bool) throws -> Void) throws {
            for byte in bytes {
                switch state {
                case .start:
                    if Self.isSpace(byte) { continue }
                    if byte == UInt8(ascii: "[") { state = .inArray } else { state = .notArray; element.append(byte) }
                case .notArray:
                    element.append(byte)
                    try JSONRecordReader.checkLength(element.count, "the entity")
                case .afterArray:
                    guard Self.isSpace(byte) else { throw PrivacyError(.invalidValue, "the body is not JSON: content after the array of entities") }
                case .inArray:
                    if inString {
                        element.append(byte)
                        if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                        continue
                    }
                    if depth == 0 {
                        if Self.isSpace(byte) { continue }
                        if byte == UInt8(ascii: ",") || byte == UInt8(ascii: "]") {
                            if element.isEmpty {
                                guard byte == UInt8(ascii: "]"), !seenElement else { throw PrivacyError(.invalidValue, "the body is not JSON: an empty element in the array of entities") }
                            } else {
                                try handle(element, true)
                                element.removeAll(keepingCapacity: true)
                                seenElement = true
                            }
                            if byte == UInt8(ascii: "]") { state = .afterArray }
                            continue
                        }
                    }
                    element.append(byte)
                    try JSONRecordReader.checkLength(element.count, "an entity")
                    switch byte {
                    case UInt8(ascii: "\""): inString = true
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
                    default: break
                    }
                }
            }
        }

        /// Whether an element ended with a comma, so `]` right after it is an empty element.
        private var seenElement = false

        mutating func finish(element handle: (_ element: [UInt8], _ inArray: Bool) throws -> Void) throws {
            switch state {
            case .start: throw PrivacyError(.invalidValue, "the body is not JSON: it is empty")
            case .notArray: try handle(element, false)
            case .inArray: throw PrivacyError(.invalidValue, "the body is not JSON: the array of entities is not closed")
            case .afterArray: break
            }
        }
    }
}
