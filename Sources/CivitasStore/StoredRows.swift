import CivitasCrypto
import Foundation
import GRDB

/// One stored row as a database hands it over, read by column name. Both stores read their
/// records through it, so a record is mapped from its columns in one place.
protocol StoredRow {
    func optionalText(_ column: String) throws -> String?
    func optionalInteger(_ column: String) throws -> Int64?
    func optionalBytes(_ column: String) throws -> [UInt8]?
    func flag(_ column: String) throws -> Bool
}

extension StoredRow {
    func text(_ column: String) throws -> String {
        guard let value = try optionalText(column) else { throw Self.missing(column) }
        return value
    }

    func integer(_ column: String) throws -> Int64 {
        guard let value = try optionalInteger(column) else { throw Self.missing(column) }
        return value
    }

    func bytes(_ column: String) throws -> [UInt8] {
        guard let value = try optionalBytes(column) else { throw Self.missing(column) }
        return value
    }

    func time(_ column: String) throws -> UTCTime {
        let text = try text(column)
        guard let time = UTCTime(rfc3339: text) else { throw StoreError(.corrupt, "a stored \(column) is not an RFC 3339 UTC time") }
        return time
    }

    func optionalTime(_ column: String) throws -> UTCTime? {
        guard let text = try optionalText(column) else { return nil }
        guard let time = UTCTime(rfc3339: text) else { throw StoreError(.corrupt, "a stored \(column) is not an RFC 3339 UTC time") }
        return time
    }

    func keyID(_ column: String) throws -> KeyID {
        guard let id = KeyID(hex: try text(column)) else { throw StoreError(.corrupt, "a stored \(column) is not a key id") }
        return id
    }

    static func missing(_ column: String) -> StoreError {
        StoreError(.corrupt, "a stored row has no \(column)")
    }
}

extension Row: StoredRow {
    func optionalText(_ column: String) throws -> String? { try decode(String?.self, forColumn: column) }
    func optionalInteger(_ column: String) throws -> Int64? { try decode(Int64?.self, forColumn: column) }
    func optionalBytes(_ column: String) throws -> [UInt8]? {
        try withUnsafeData(named: column) { data in data.map { [UInt8]($0) } }
    }
    func flag(_ column: String) throws -> Bool { try decode(Bool.self, forColumn: column) }
}

/// The broker's records from their stored columns, the same for every store.
enum StoredRecords {
    static func participant(from row: some StoredRow) throws -> Participant {
        let storedID = try row.text("key_id")
        guard let role = Participant.Role(rawValue: try row.text("role")) else {
            throw StoreError(.corrupt, "participant \(storedID.prefix(64)) has an unknown role")
        }
        let keys = try PublicKeys(name: try row.text("name"), signingKey: try row.bytes("ed25519"), encryptionKey: try row.bytes("x25519"))
        guard keys.keyID.hex == storedID else { throw StoreError(.corrupt, "participant \(keys.keyID): stored key id does not match its keys") }
        var current: PublicKeys?
        if let name = try row.optionalText("current_name"), let signing = try row.optionalBytes("current_ed25519"),
           let encryption = try row.optionalBytes("current_x25519") {
            current = try PublicKeys(name: name, signingKey: signing, encryptionKey: encryption)
        }
        return Participant(keys: keys, role: role, registered: try row.time("registered"), currentKeys: current)
    }

    /// The columns of a participant with its current key (`?` or `$1`: where the key id goes).
    static func participantQuery(where condition: String) -> String {
        """
        SELECT p.*, k.name AS current_name, k.ed25519 AS current_ed25519, k.x25519 AS current_x25519 FROM participant p
        LEFT JOIN participant_key k ON k.participant = p.key_id AND k.approved IS NOT NULL AND k.retires IS NULL \(condition)
        """
    }

    static func participantKey(from row: some StoredRow) throws -> ParticipantKey {
        let storedID = try row.text("key_id")
        let keys = try PublicKeys(name: try row.text("name"), signingKey: try row.bytes("ed25519"), encryptionKey: try row.bytes("x25519"))
        guard keys.keyID.hex == storedID else { throw StoreError(.corrupt, "participant key \(keys.keyID): stored key id does not match its keys") }
        return ParticipantKey(keys: keys, participant: try row.keyID("participant"), requested: try row.time("requested"),
                              approved: try row.optionalTime("approved"), retires: try row.optionalTime("retires"))
    }

    static func dataset(from row: some StoredRow) throws -> Dataset {
        let id = try row.text("id")
        guard case .array(let items)? = try? JSONParser.parse(Array(try row.text("purposes").utf8)) else {
            throw StoreError(.corrupt, "dataset \(id) has malformed purposes")
        }
        return Dataset(id: id, publisher: try row.keyID("publisher"), schema: try row.bytes("schema"), schemaSHA256: try row.bytes("schema_sha256"),
                       purposes: items.compactMap(\.stringValue), registered: try row.time("registered"))
    }

    static func agreement(from row: some StoredRow) throws -> StoredAgreement {
        let id = try row.text("id")
        guard let state = StoredAgreement.State(rawValue: try row.text("state")) else {
            throw StoreError(.corrupt, "agreement \(id) has an unknown state")
        }
        var agreement = StoredAgreement(id: id, dataset: try row.text("dataset"), publisher: try row.keyID("publisher"), partner: try row.keyID("partner"),
                                        policy: try row.bytes("policy"), policySHA256: try row.bytes("policy_sha256"),
                                        offerSignature: try row.bytes("offer_signature"), validFrom: try row.time("valid_from"),
                                        validUntil: try row.time("valid_until"), budgetMicro: try unsigned(row.integer("budget_micro")),
                                        offered: try row.time("offered"))
        agreement.acceptSignature = try row.optionalBytes("accept_signature")
        agreement.state = state
        agreement.spentMicro = try unsigned(row.integer("spent_micro"))
        agreement.accepted = try row.optionalTime("accepted")
        agreement.ended = try row.optionalTime("ended")
        return agreement
    }

    /// A stored delivery, with `envelope` when the row's own is kept elsewhere.
    static func delivery(from row: some StoredRow, envelope: [UInt8]? = nil) throws -> Delivery {
        let id = try row.text("id")
        guard let kind = Delivery.Kind(rawValue: try row.text("kind")) else { throw StoreError(.corrupt, "delivery \(id) has an unknown kind") }
        return Delivery(id: id, agreement: try row.text("agreement"), partner: try row.keyID("partner"), kind: kind, feed: try row.optionalText("feed"),
                        feedSequence: try row.optionalInteger("feed_sequence"), logIndex: try unsigned(row.integer("log_index")),
                        records: Int(try row.integer("records")), envelope: try envelope ?? row.bytes("envelope"), created: try row.time("created"))
    }

    static func deliverySummary(from row: some StoredRow) throws -> DeliverySummary {
        let id = try row.text("id")
        guard let kind = Delivery.Kind(rawValue: try row.text("kind")) else { throw StoreError(.corrupt, "delivery \(id) has an unknown kind") }
        return DeliverySummary(id: id, kind: kind, feedSequence: try row.optionalInteger("feed_sequence"), logIndex: try unsigned(row.integer("log_index")),
                               records: Int(try row.integer("records")), created: try row.time("created"))
    }

    static func feed(from row: some StoredRow) throws -> Feed {
        Feed(id: try row.text("id"), agreement: try row.text("agreement"), purpose: try row.text("purpose"), nextBatch: try row.integer("next_batch"),
             delivered: try row.integer("delivered"), acknowledged: try row.integer("acknowledged"), webhook: try row.optionalText("webhook"),
             pushed: try row.integer("pushed"), created: try row.time("created"))
    }

    static func requestKey(from row: some StoredRow, partner: KeyID, key: String) throws -> RequestKey {
        RequestKey(partner: partner, key: key, requestSHA256: try row.bytes("request_sha256"), delivery: try row.text("delivery"),
                   figures: try row.bytes("figures"), created: try row.time("created"))
    }

    static func refusalCount(from row: some StoredRow) throws -> RefusalCount {
        RefusalCount(code: try row.text("code"), count: Int(try row.integer("count")), last: try row.time("last"))
    }

    static func webToken(from row: some StoredRow) throws -> WebToken {
        guard let kind = WebToken.Kind(rawValue: try row.text("kind")), let participant = KeyID(hex: try row.text("participant")) else {
            throw StoreError(.corrupt, "a stored web token has an unknown kind or participant")
        }
        return WebToken(sha256: try row.bytes("sha256"), kind: kind, participant: participant, created: try row.time("created"),
                        expires: try row.time("expires"), ended: try row.optionalTime("ended"))
    }

    static func consentKey(from row: some StoredRow, recorder: KeyID, key: String) throws -> ConsentKey {
        ConsentKey(recorder: recorder, key: key, requestSHA256: try row.bytes("request_sha256"),
                   logIndex: try unsigned(try row.integer("log_index")), created: try row.time("created"))
    }

    static func batchSummary(from row: some StoredRow) throws -> BatchSummary {
        BatchSummary(sequence: try row.integer("sequence"), records: Int(try row.integer("records")), created: try row.time("created"))
    }

    /// A stored budget figure or log index, which is never negative.
    static func unsigned(_ value: Int64) throws -> UInt64 {
        guard let unsigned = UInt64(exactly: value) else { throw StoreError(.corrupt, "a stored count is negative") }
        return unsigned
    }

    /// A budget figure as a database stores it (a signed 64-bit integer).
    static func storable(_ micro: UInt64) throws -> Int64 {
        guard let value = Int64(exactly: micro) else { throw StoreError(.invalidArgument, "a budget figure above 2^63 cannot be stored") }
        return value
    }
}
