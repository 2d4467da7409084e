import CivitasCrypto
@_exported import CivitasTime

// The records the broker keeps and its adapters show: what a store persists and returns, what
// the broker's use cases take and give, what the HTTP layer encodes. No behaviour beyond data.

/// A participant of the data space and what it may do.
public struct Participant: Sendable, Equatable {
    public enum Role: String, Sendable, CaseIterable {
        case operator_ = "operator", agency, partner, auditor, consentService = "consent-service"
    }
    /// The keys the participant was registered with: their key id is the participant's id in
    /// agreements, datasets and the log, whatever key it signs with now.
    public let keys: PublicKeys
    public let role: Role
    public let registered: UTCTime
    /// The keys the participant signs with and receives envelopes for now: the registered ones
    /// until a rotation the operator approved replaced them.
    public let currentKeys: PublicKeys

    public init(keys: PublicKeys, role: Role, registered: UTCTime, currentKeys: PublicKeys? = nil) {
        self.keys = keys
        self.role = role
        self.registered = registered
        self.currentKeys = currentKeys ?? keys
    }
}

/// A key a participant asked to sign with instead of its current one: pending until the
/// operator approves it, then current until a later rotation retires it (it is accepted until
/// `retires`, the end of its grace period).
public struct ParticipantKey: Sendable, Equatable {
    public let keys: PublicKeys
    /// The participant's id (the key id it was registered with).
    public let participant: KeyID
    public let requested: UTCTime
    public let approved: UTCTime?
    public let retires: UTCTime?

    public init(keys: PublicKeys, participant: KeyID, requested: UTCTime, approved: UTCTime? = nil, retires: UTCTime? = nil) {
        self.keys = keys
        self.participant = participant
        self.requested = requested
        self.approved = approved
        self.retires = retires
    }
}

/// A registered dataset.
public struct Dataset: Sendable, Equatable {
    public let id: String
    public let publisher: KeyID
    public let schema: [UInt8]
    public let schemaSHA256: [UInt8]
    /// Purposes the publisher offers the dataset for (codes such as `public-health-surveillance`).
    public let purposes: [String]
    public let registered: UTCTime

    public init(id: String, publisher: KeyID, schema: [UInt8], schemaSHA256: [UInt8], purposes: [String], registered: UTCTime) {
        self.id = id
        self.publisher = publisher
        self.schema = schema
        self.schemaSHA256 = schemaSHA256
        self.purposes = purposes
        self.registered = registered
    }
}

/// A stored batch of records.
public struct Batch: Sendable, Equatable {
    public let dataset: String
    /// Position of the batch in its dataset, from 1, without gaps.
    public let sequence: Int64
    public let records: Int
    public let idempotencyKey: String?
    /// SHA-256 of the batch's canonical content (columns and rows).
    public let contentSHA256: [UInt8]
    /// True when an earlier upload with the same idempotency key is returned instead of a new batch.
    public let replayed: Bool

    public init(dataset: String, sequence: Int64, records: Int, idempotencyKey: String?, contentSHA256: [UInt8], replayed: Bool) {
        self.dataset = dataset
        self.sequence = sequence
        self.records = records
        self.idempotencyKey = idempotencyKey
        self.contentSHA256 = contentSHA256
        self.replayed = replayed
    }
}

/// A sharing agreement as stored: the canonical policy, both parties' signatures over its
/// hash, its state and its privacy budget (ε in millionths).
public struct StoredAgreement: Sendable, Equatable {
    public enum State: String, Sendable {
        case offered, accepted, revoked, expired
    }
    public let id: String
    public let dataset: String
    public let publisher: KeyID
    public let partner: KeyID
    /// The policy's canonical JSON (RFC 8785).
    public let policy: [UInt8]
    public let policySHA256: [UInt8]
    public let offerSignature: [UInt8]
    public var acceptSignature: [UInt8]?
    public var state: State
    public let validFrom: UTCTime
    public let validUntil: UTCTime
    public let budgetMicro: UInt64
    public var spentMicro: UInt64
    public let offered: UTCTime
    public var accepted: UTCTime?
    public var ended: UTCTime?

    public init(id: String, dataset: String, publisher: KeyID, partner: KeyID, policy: [UInt8], policySHA256: [UInt8],
                offerSignature: [UInt8], validFrom: UTCTime, validUntil: UTCTime, budgetMicro: UInt64, offered: UTCTime) {
        self.id = id
        self.dataset = dataset
        self.publisher = publisher
        self.partner = partner
        self.policy = policy
        self.policySHA256 = policySHA256
        self.offerSignature = offerSignature
        self.acceptSignature = nil
        self.state = .offered
        self.validFrom = validFrom
        self.validUntil = validUntil
        self.budgetMicro = budgetMicro
        self.spentMicro = 0
        self.offered = offered
    }
}

/// A subject's keyed hash (32 bytes) as a compact dictionary key.
public struct SubjectDigest: Hashable, Sendable {
    private let a: UInt64, b: UInt64, c: UInt64, d: UInt64

    /// Hashed by its first eight bytes: a keyed hash's bytes are already uniform (equality still compares all 32).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(a)
    }

    /// The digest of exactly 32 bytes; nil for any other length.
    public init?(_ bytes: [UInt8]) {
        guard let digest = bytes.withUnsafeBytes({ Self(bytes: $0) }) else { return nil }
        self = digest
    }

    /// The digest of exactly 32 bytes; nil for any other length.
    public init?(bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 32 else { return nil }
        func word(_ at: Int) -> UInt64 { UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        a = word(0)
        b = word(8)
        c = word(16)
        d = word(24)
    }
}

/// A subject's consent event as stored: the latest one per dataset, subject and purpose counts.
public struct StoredConsent: Sendable, Equatable {
    public let dataset: String
    /// The subject's keyed hash for the dataset, never the subject itself.
    public let subject: [UInt8]
    public let purpose: String
    public let granted: Bool
    /// The ISO/IEC TS 27560 record, as canonical JSON.
    public let record: [UInt8]
    /// The `consent.recorded` log entry of the request that recorded the event (nil for events
    /// recorded before requests were tied to their entries).
    public var logIndex: UInt64?

    public init(dataset: String, subject: [UInt8], purpose: String, granted: Bool, record: [UInt8], logIndex: UInt64? = nil) {
        self.dataset = dataset
        self.subject = subject
        self.purpose = purpose
        self.granted = granted
        self.record = record
        self.logIndex = logIndex
    }
}

/// How often the broker refused a partner's requests under an agreement for one reason.
public struct RefusalCount: Sendable, Equatable {
    /// The refusal's stable code (`budget_exhausted`, `k_unreachable`…).
    public let code: String
    public let count: Int
    public let last: UTCTime

    public init(code: String, count: Int, last: UTCTime) {
        self.code = code
        self.count = count
        self.last = last
    }
}

/// A one-time login link or a web session, kept by the SHA-256 of its secret token (the token
/// itself is only ever in the participant's hands).
public struct WebToken: Sendable, Equatable {
    public enum Kind: String, Sendable { case login, session }
    public let sha256: [UInt8]
    public let kind: Kind
    public let participant: KeyID
    public let created: UTCTime
    public let expires: UTCTime
    /// When it was used (a login link) or ended (a session).
    public var ended: UTCTime?

    public init(sha256: [UInt8], kind: Kind, participant: KeyID, created: UTCTime, expires: UTCTime, ended: UTCTime? = nil) {
        self.sha256 = sha256
        self.kind = kind
        self.participant = participant
        self.created = created
        self.expires = expires
        self.ended = ended
    }
}

/// A recorder's idempotency key for a consent request: the request it was used for and the
/// `consent.recorded` entry that request made.
public struct ConsentKey: Sendable, Equatable {
    public let recorder: KeyID
    public let key: String
    /// SHA-256 over the request's events.
    public let requestSHA256: [UInt8]
    public let logIndex: UInt64
    public let created: UTCTime

    public init(recorder: KeyID, key: String, requestSHA256: [UInt8], logIndex: UInt64, created: UTCTime) {
        self.recorder = recorder
        self.key = key
        self.requestSHA256 = requestSHA256
        self.logIndex = logIndex
        self.created = created
    }
}

/// A payload delivered to a partner: a release, an aggregate or a feed window, as its envelope.
public struct Delivery: Sendable, Equatable {
    public enum Kind: String, Sendable { case release, aggregate, window, synthetic }
    public let id: String
    public let agreement: String
    public let partner: KeyID
    public let kind: Kind
    public let feed: String?
    /// Position in the feed, from 1 (feed windows only).
    public let feedSequence: Int64?
    /// The `release.delivered` log entry that records it.
    public let logIndex: UInt64
    public let records: Int
    public let envelope: [UInt8]
    public let created: UTCTime

    public init(id: String, agreement: String, partner: KeyID, kind: Kind, feed: String?, feedSequence: Int64?, logIndex: UInt64,
                records: Int, envelope: [UInt8], created: UTCTime) {
        self.id = id
        self.agreement = agreement
        self.partner = partner
        self.kind = kind
        self.feed = feed
        self.feedSequence = feedSequence
        self.logIndex = logIndex
        self.records = records
        self.envelope = envelope
        self.created = created
    }
}

/// A delivery without its envelope: what a list of deliveries shows.
public struct DeliverySummary: Sendable, Equatable {
    public let id: String
    public let kind: Delivery.Kind
    /// The window's number, for a feed window.
    public let feedSequence: Int64?
    /// The log entry that records the delivery (its figures are there).
    public let logIndex: UInt64
    public let records: Int
    public let created: UTCTime

    public init(id: String, kind: Delivery.Kind, feedSequence: Int64?, logIndex: UInt64, records: Int, created: UTCTime) {
        self.id = id
        self.kind = kind
        self.feedSequence = feedSequence
        self.logIndex = logIndex
        self.records = records
        self.created = created
    }
}

/// A delivery's partner, log entry and envelope length: what serving its envelope needs to know
/// before the envelope is read.
public struct DeliveryEnvelope: Sendable, Equatable {
    public let delivery: String
    public let partner: KeyID
    /// The `release.delivered` log entry that records the delivery.
    public let logIndex: UInt64
    public let byteCount: Int

    public init(delivery: String, partner: KeyID, logIndex: UInt64, byteCount: Int) {
        self.delivery = delivery
        self.partner = partner
        self.logIndex = logIndex
        self.byteCount = byteCount
    }
}

/// A signed request's nonce, as its key used it at `created` (seconds since 1970).
public struct RequestNonce: Sendable, Equatable {
    public let keyID: String
    public let nonce: String
    public let created: Int64

    public init(keyID: String, nonce: String, created: Int64) {
        self.keyID = keyID
        self.nonce = nonce
        self.created = created
    }
}

/// A partner's idempotency key for a release or an aggregate, and the delivery it made: the
/// same key with the same request answers that delivery again.
public struct RequestKey: Sendable, Equatable {
    public let partner: KeyID
    public let key: String
    /// SHA-256 over what was asked (the route and its canonical body).
    public let requestSHA256: [UInt8]
    public let delivery: String
    /// The delivery's figures as the broker answered them first (canonical JSON; counts only).
    public let figures: [UInt8]
    public let created: UTCTime

    public init(partner: KeyID, key: String, requestSHA256: [UInt8], delivery: String, figures: [UInt8], created: UTCTime) {
        self.partner = partner
        self.key = key
        self.requestSHA256 = requestSHA256
        self.delivery = delivery
        self.figures = figures
        self.created = created
    }
}

/// A partner's subscription to new records under an agreement.
public struct Feed: Sendable, Equatable {
    public let id: String
    public let agreement: String
    public let purpose: String
    /// The first batch not yet taken into a window.
    public let nextBatch: Int64
    /// Windows delivered so far (the last feed sequence).
    public let delivered: Int64
    /// The partner acknowledged every window up to this sequence.
    public let acknowledged: Int64
    /// Where windows are pushed, if anywhere, and up to which sequence they were accepted there.
    public let webhook: String?
    public let pushed: Int64
    public let created: UTCTime

    public init(id: String, agreement: String, purpose: String, nextBatch: Int64, delivered: Int64, acknowledged: Int64, webhook: String?, pushed: Int64, created: UTCTime) {
        self.id = id
        self.agreement = agreement
        self.purpose = purpose
        self.nextBatch = nextBatch
        self.delivered = delivered
        self.acknowledged = acknowledged
        self.webhook = webhook
        self.pushed = pushed
        self.created = created
    }

    /// The same feed with its positions moved.
    public func with(nextBatch: Int64? = nil, delivered: Int64? = nil, acknowledged: Int64? = nil, pushed: Int64? = nil) -> Feed {
        Feed(id: id, agreement: agreement, purpose: purpose, nextBatch: nextBatch ?? self.nextBatch, delivered: delivered ?? self.delivered,
             acknowledged: acknowledged ?? self.acknowledged, webhook: webhook, pushed: pushed ?? self.pushed, created: created)
    }
}

/// A stored batch's place and size, without its records.
public struct BatchSummary: Sendable, Equatable {
    public let sequence: Int64
    public let records: Int
    public let created: UTCTime

    public init(sequence: Int64, records: Int, created: UTCTime) {
        self.sequence = sequence
        self.records = records
        self.created = created
    }
}

/// The exchange log's export, read page by page (JSON Lines, checkpointed).
public protocol LogPages: AnyObject, Sendable {
    /// The next page of the export, or nil after the last.
    func nextPage() throws -> [UInt8]?
}
