import CivitasBroker
import CivitasCrypto

/// The consent events of a request: a JSON Lines body or a JSON object, read into
/// ``ConsentRequest``s with the line or event that is wrong named in the error.
enum ConsentLines {
    /// Longest line of a JSON Lines body.
    static let maximumLineBytes = 8192

    /// The events of a JSON Lines body, one object per non-blank line.
    static func requests(jsonLines body: [UInt8]) throws -> [ConsentRequest] {
        var requests: [ConsentRequest] = []
        try body.withUnsafeBufferPointer { body in
            var start = 0
            var number = 0
            while start < body.count {
                var end = start
                while end < body.count && body[end] != 0x0A { end += 1 }
                number += 1
                let line = UnsafeBufferPointer(rebasing: body[start..<end])
                start = end + 1
                guard line.contains(where: { $0 != 0x20 && $0 != 0x0D && $0 != 0x09 }) else { continue }
                guard requests.count < Broker.maximumConsentEvents else {
                    throw APIError.badRequest("send 1 to \(Broker.maximumConsentEvents) consent events at a time")
                }
                if line.count <= maximumLineBytes, let request = plainEvent(line) {
                    requests.append(request)
                    continue
                }
                guard let item = try? JSONParser.parse(Array(line), limits: .init(maximumDepth: 4, maximumBytes: maximumLineBytes)),
                      item.objectValue != nil else {
                    throw APIError.badRequest("line \(number) is not a JSON object of at most 8 KiB")
                }
                requests.append(try request(item, label: "event \(requests.count + 1): "))
            }
        }
        return requests
    }

    /// The event a JSON object states; `label` starts its error.
    static func request(_ item: JSONValue, label: String) throws -> ConsentRequest {
        guard let dataset = item["dataset"]?.stringValue, let subject = item["subject"]?.stringValue, let purpose = item["purpose"]?.stringValue,
              let action = item["action"]?.stringValue, action == "grant" || action == "withdraw" else {
            throw APIError.badRequest("\(label)a consent event needs dataset, subject, purpose and action (grant or withdraw)")
        }
        return ConsentRequest(dataset: dataset, subject: subject, purpose: purpose, granted: action == "grant",
                              notice: item["notice"]?.stringValue ?? "", collectionMethod: item["collection_method"]?.stringValue ?? "",
                              jurisdiction: item["jurisdiction"]?.stringValue ?? "")
    }

    /// The members an event may have, as ``plainEvent(_:)`` matches their names.
    private enum Member: Int, CaseIterable {
        case action, collectionMethod, dataset, jurisdiction, notice, purpose, subject

        var name: StaticString {
            switch self {
            case .action: "action"
            case .collectionMethod: "collection_method"
            case .dataset: "dataset"
            case .jurisdiction: "jurisdiction"
            case .notice: "notice"
            case .purpose: "purpose"
            case .subject: "subject"
            }
        }

        static func named(_ bytes: UnsafeBufferPointer<UInt8>) -> Member? {
            allCases.first { member in
                let name = member.name
                return UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount).elementsEqual(bytes)
            }
        }
    }

    /// The event of a line that is one flat object of known members, each an ASCII string without
    /// escapes or control characters, named once, with dataset, subject, purpose
    /// and an action of grant or withdraw: read without building a JSON value. Any other line is
    /// nil, and the general parser reads it (and names what is wrong).
    static func plainEvent(_ line: UnsafeBufferPointer<UInt8>) -> ConsentRequest? {
        var position = 0
        func skipSpace() {
            while position < line.count, line[position] == 0x20 || line[position] == 0x09 || line[position] == 0x0D { position += 1 }
        }
        func take(_ byte: UInt8) -> Bool {
            skipSpace()
            guard position < line.count, line[position] == byte else { return false }
            position += 1
            return true
        }
        /// The bytes of a string without escapes, from its opening quote.
        func plainString() -> UnsafeBufferPointer<UInt8>? {
            guard take(UInt8(ascii: "\"")) else { return nil }
            let start = position
            while position < line.count {
                let byte = line[position]
                if byte == UInt8(ascii: "\"") {
                    position += 1
                    return UnsafeBufferPointer(rebasing: line[start..<(position - 1)])
                }
                guard byte >= 0x20, byte != UInt8(ascii: "\\") else { return nil }
                position += 1
            }
            return nil
        }
        var values = [String?](repeating: nil, count: Member.allCases.count)
        guard take(UInt8(ascii: "{")) else { return nil }
        repeat {
            guard let name = plainString(), let member = Member.named(name), values[member.rawValue] == nil,
                  take(UInt8(ascii: ":")), let value = plainString(), value.allSatisfy({ $0 < 0x80 }) else { return nil }
            values[member.rawValue] = String(decoding: value, as: UTF8.self)
        } while take(UInt8(ascii: ","))
        guard take(UInt8(ascii: "}")) else { return nil }
        skipSpace()
        guard position == line.count, let dataset = values[Member.dataset.rawValue], let subject = values[Member.subject.rawValue],
              let purpose = values[Member.purpose.rawValue], let action = values[Member.action.rawValue],
              action == "grant" || action == "withdraw" else { return nil }
        return ConsentRequest(dataset: dataset, subject: subject, purpose: purpose, granted: action == "grant",
                              notice: values[Member.notice.rawValue] ?? "", collectionMethod: values[Member.collectionMethod.rawValue] ?? "",
                              jurisdiction: values[Member.jurisdiction.rawValue] ?? "")
    }
}
