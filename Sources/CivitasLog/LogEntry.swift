import CivitasCrypto

/// The kinds of event the exchange log records (docs/log-format.md).
public enum LogEntryType: String, Sendable, CaseIterable {
    case participantRegistered = "participant.registered"
    case keyRotated = "key.rotated"
    case datasetRegistered = "dataset.registered"
    case agreementOffered = "agreement.offered"
    case agreementAccepted = "agreement.accepted"
    case agreementRevoked = "agreement.revoked"
    case agreementExpired = "agreement.expired"
    /// One subject's consent event (written by earlier versions; logs holding these entries still verify).
    case consentGranted = "consent.granted"
    case consentRevoked = "consent.revoked"
    /// The consent events of one request, committed to by the Merkle root of their receipts.
    case consentRecorded = "consent.recorded"
    case releaseDelivered = "release.delivered"
    case releaseRefused = "release.refused"
    /// The broker's signing key was replaced: the retiring key signed the introduction of the new one.
    case brokerKeyRotated = "broker.key_rotated"

    /// Members an entry of this type may carry besides its required ones.
    var optionalMembers: [(String, LogField)] {
        switch self {
        case .agreementOffered: [("aggregate_keys", .object), ("rho_budget_micro", .count)]
        case .releaseDelivered: [("rho_micro", .count)]
        default: []
        }
    }

    /// The members an entry of this type carries besides index, prev, time and type.
    var members: [(String, LogField)] {
        switch self {
        case .participantRegistered:
            [("participant", .keyID), ("name", .name), ("role", .name), ("ed25519", .publicKey), ("x25519", .publicKey)]
        case .keyRotated:
            [("participant", .keyID), ("replacement", .keyID), ("ed25519", .publicKey), ("x25519", .publicKey)]
        case .datasetRegistered:
            [("dataset", .name), ("publisher", .keyID), ("schema_sha256", .digest)]
        case .agreementOffered:
            [("agreement", .name), ("dataset", .name), ("publisher", .keyID), ("partner", .keyID), ("purposes", .names),
             ("policy_sha256", .digest), ("legal_basis", .name), ("valid_from", .time), ("valid_until", .time),
             ("epsilon_budget_micro", .count)]
        case .agreementAccepted:
            [("agreement", .name), ("partner", .keyID)]
        case .agreementRevoked:
            [("agreement", .name), ("by", .keyID)]
        case .agreementExpired:
            [("agreement", .name)]
        case .consentGranted, .consentRevoked:
            [("dataset", .name), ("subject", .digest), ("purpose", .name), ("recorded_by", .keyID)]
        case .consentRecorded:
            [("datasets", .names), ("recorded_by", .keyID), ("receipts", .count), ("receipts_root", .digest),
             ("granted", .count), ("withdrawn", .count)]
        case .releaseDelivered:
            [("release", .name), ("agreement", .name), ("dataset", .name), ("partner", .keyID), ("purpose", .name),
             ("policy_sha256", .digest), ("envelope_manifest", .object), ("envelope_signature", .signature),
             ("records_released", .count), ("records_suppressed", .count), ("k_achieved", .count),
             ("epsilon_micro", .count), ("transforms", .object)]
        case .releaseRefused:
            [("agreement", .name), ("partner", .keyID), ("reason", .name)]
        case .brokerKeyRotated:
            [("previous", .keyID), ("previous_ed25519", .publicKey), ("previous_x25519", .publicKey),
             ("replacement", .keyID), ("name", .name), ("ed25519", .publicKey), ("x25519", .publicKey), ("introduction", .signature)]
        }
    }
}

/// The value kinds an entry member may have. Entries hold ids, hashes and
/// counts only: no member kind can carry free text about a person.
enum LogField {
    case keyID, name, names, digest, publicKey, signature, time, count, object

    func validate(_ value: JSONValue) -> Bool {
        switch self {
        case .keyID: return value.stringValue.flatMap(KeyID.init(hex:)) != nil
        case .name: return value.stringValue.map(LogField.isName) ?? false
        case .names:
            guard case .array(let items) = value, !items.isEmpty, items.count <= 64 else { return false }
            return items.allSatisfy { $0.stringValue.map(LogField.isName) ?? false }
        case .digest: return value.stringValue.map { $0.utf8.count == 64 && Hex.decode($0) != nil && $0 == $0.lowercased() } ?? false
        case .publicKey: return value.stringValue.flatMap(Base64.decode)?.count == 32
        case .signature: return value.stringValue.flatMap(Base64.decode)?.count == 64
        case .time: return value.stringValue.map(LogTime.isValid) ?? false
        case .count: return value.exactUnsignedInteger != nil
        case .object: return value.objectValue != nil
        }
    }

    /// Identifiers and codes: 1-128 characters of letters, digits and `.:_/-`.
    static func isName(_ text: String) -> Bool {
        (1...128).contains(text.utf8.count) && text.utf8.allSatisfy {
            (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) || [46, 58, 95, 47, 45].contains($0)
        }
    }
}

/// RFC 3339 UTC timestamps with whole seconds, which compare correctly as strings.
public enum LogTime {
    /// Whether `text` has the form 2026-11-26T12:00:00Z.
    public static func isValid(_ text: String) -> Bool {
        let b = Array(text.utf8)
        guard b.count == 20, b[4] == 45, b[7] == 45, b[10] == 84, b[13] == 58, b[16] == 58, b[19] == 90 else { return false }
        return [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].allSatisfy { (48...57).contains(b[$0]) }
    }
}

/// One log entry: its position, the hash of the entry before it, a time, a
/// type and the type's members. Stored and hashed as canonical JSON (RFC 8785);
/// the Merkle leaf is SHA-256(0x00 || those bytes).
public struct LogEntry: Sendable, Equatable {
    /// Position in the log, from 0.
    public let index: UInt64
    /// Leaf hash of the previous entry (32 zero bytes for the first), so a changed
    /// entry is named by the one after it.
    public let previous: MerkleDigest
    /// When the event happened (RFC 3339 UTC).
    public let time: String
    public let type: LogEntryType
    /// The type's members, validated.
    public let members: [String: JSONValue]

    /// Builds an entry, checking that `members` are exactly those of `type`, each of the right kind.
    public init(index: UInt64, previous: MerkleDigest, time: String, type: LogEntryType, members: [String: JSONValue]) throws {
        guard previous.count == MerkleHash.size else {
            throw LogError(.invalidEntry, "entry \(index): prev must be a 32-byte hash")
        }
        guard LogTime.isValid(time) else {
            throw LogError(.invalidEntry, "entry \(index): time '\(time.prefix(40))' is not RFC 3339 UTC like 2026-11-26T12:00:00Z")
        }
        let expected = type.members
        let names = Set(expected.map(\.0) + type.optionalMembers.map(\.0))
        if let unknown = Set(members.keys).subtracting(names).sorted().first {
            throw LogError(.invalidEntry, "entry \(index) (\(type.rawValue)): unknown member '\(unknown.prefix(60))'")
        }
        for (name, kind) in expected {
            guard let value = members[name] else {
                throw LogError(.invalidEntry, "entry \(index) (\(type.rawValue)): missing member '\(name)'")
            }
            guard kind.validate(value) else {
                throw LogError(.invalidEntry, "entry \(index) (\(type.rawValue)): member '\(name)' is not a valid \(kind)")
            }
        }
        for (name, kind) in type.optionalMembers {
            if let value = members[name], !kind.validate(value) {
                throw LogError(.invalidEntry, "entry \(index) (\(type.rawValue)): member '\(name)' is not a valid \(kind)")
            }
        }
        self.index = index
        self.previous = previous
        self.time = time
        self.type = type
        self.members = members
    }

    /// The entry as a JSON object.
    public var jsonValue: JSONValue {
        var object = members
        object["index"] = .number(Double(index))
        object["prev"] = .string(Hex.encode(previous))
        object["time"] = .string(time)
        object["type"] = .string(type.rawValue)
        return .object(object)
    }

    /// The canonical bytes that are hashed into the tree.
    public func canonicalBytes() throws -> [UInt8] {
        try CanonicalJSON.encode(jsonValue)
    }

    /// This entry's Merkle leaf hash.
    public func leafHash() throws -> MerkleDigest {
        MerkleHash.leaf(try canonicalBytes())
    }

    /// Parses stored entry bytes, which must be canonical JSON of a valid entry.
    public static func parse(_ bytes: [UInt8], position: UInt64) throws -> LogEntry {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes, limits: .init(maximumDepth: 16, maximumBytes: 256 * 1024))
        } catch let error as CryptoError {
            throw LogError(.invalidEntry, "entry \(position): \(error.message)")
        }
        guard try CanonicalJSON.encode(value) == bytes else {
            throw LogError(.invalidEntry, "entry \(position) is not in canonical JSON form (RFC 8785)")
        }
        guard var members = value.objectValue else { throw LogError(.invalidEntry, "entry \(position) is not a JSON object") }
        guard let index = members.removeValue(forKey: "index")?.exactUnsignedInteger,
              let previous = members.removeValue(forKey: "prev")?.stringValue.flatMap(Hex.decode),
              let time = members.removeValue(forKey: "time")?.stringValue,
              let typeName = members.removeValue(forKey: "type")?.stringValue else {
            throw LogError(.invalidEntry, "entry \(position) lacks index, prev, time or type")
        }
        guard let type = LogEntryType(rawValue: typeName) else {
            throw LogError(.invalidEntry, "entry \(position) has unknown type '\(typeName.prefix(40))'")
        }
        return try LogEntry(index: index, previous: previous, time: time, type: type, members: members)
    }

    // MARK: Typed reads for the auditor

    public func string(_ name: String) -> String? { members[name]?.stringValue }
    public func keyID(_ name: String) -> KeyID? { string(name).flatMap(KeyID.init(hex:)) }
    public func count(_ name: String) -> UInt64? { members[name]?.exactUnsignedInteger }
}
