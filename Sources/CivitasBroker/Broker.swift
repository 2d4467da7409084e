import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// The broker's use cases: agreements, consent, releases, DP aggregates and feeds. Every
/// change is one store transaction together with its log entry; a refusal changes nothing.
public final class Broker: Sendable {
    /// Where the broker's state persists (SQLite by default; any ``BrokerStorage``).
    public let store: any BrokerStorage
    /// The broker's keys: they sign envelopes, checkpoints and consent receipts.
    public let keys: SecretKeys
    let master: PseudonymMasterKey
    let subjects: DomainPRF
    /// Feeds whose window could not reach k, with the last batch it held then.
    let waitingWindows = WaitingWindows()
    /// Wakes partners waiting for a feed's next window when it is delivered.
    public let feedSignals = FeedSignals()
    /// The webhook URLs the broker may call (checked when a feed is created and before every push).
    public let webhooks: WebhookTargets
    /// Where noise and contribution sampling draw their randomness (the CSPRNG unless a test injects another).
    let randomness: @Sendable () -> AnyRandomWords
    /// Records the nonces of concurrent signed requests in one transaction.
    let requestNonces: RequestNonceWriter
    /// Participants already read, by signing key.
    let knownParticipants = KnownParticipants()
    /// Batches this node is storing now, which a following batch may wait for.
    let batchesInProgress = BatchesInProgress()
    /// Who this broker is when it claims scheduled work that other nodes on the same database could also do.
    public let node = "node-" + Hex.encode(Sodium.randomBytes(8))

    /// How long a participant's key stays accepted after the operator approved its replacement.
    public let keyGracePeriod: Int64

    /// Largest subject id, notice, method or jurisdiction text accepted in a consent event.
    public static let maximumConsentFieldLength = 256

    public init(store: any BrokerStorage, keys: SecretKeys, webhooks: WebhookTargets = WebhookTargets(),
                randomness: @escaping @Sendable () -> AnyRandomWords = { AnyRandomWords(SystemRandomness()) },
                keyGracePeriod: Int64 = 86_400) throws {
        guard keyGracePeriod >= 0 else { throw BrokerError(.invalid, "a key's grace period is 0 seconds or more") }
        self.keyGracePeriod = keyGracePeriod
        self.store = store
        self.keys = keys
        self.webhooks = webhooks
        self.randomness = randomness
        requestNonces = RequestNonceWriter { [store] nonces, oldestAccepted in try store.recordNonces(nonces, oldestAccepted: oldestAccepted) }
        var secret = try store.secret(named: "broker-master")
        master = try PseudonymMasterKey(bytes: &secret)
        subjects = try master.prf(domain: "civitas-consent-subjects/1")
        // Windows other nodes deliver wake this node's waiters too.
        let signals = feedSignals
        try store.watchWindows { feed in signals.signal(feed) }
    }

    /// Claims the scheduled work `name` for this node for `seconds`: false when another node holds it.
    public func claim(work name: String, seconds: Int) throws -> Bool {
        try mapStore { try store.claimWork(name, holder: node, seconds: seconds) }
    }

    /// Gives up this node's claim on `name`.
    public func release(work name: String) throws {
        try mapStore { try store.releaseWork(name, holder: node) }
    }

    /// Runs `body` when this node claims the work `name` (for at most `seconds`), and gives the
    /// claim up after it; nil when another node holds it.
    func claimed<T>(_ name: String, seconds: Int, _ body: () throws -> T) throws -> T? {
        guard try claim(work: name, seconds: seconds) else { return nil }
        defer { try? release(work: name) }
        return try body()
    }

    func existing(_ id: String) throws -> StoredAgreement {
        guard let agreement = try store.agreement(id) else { throw BrokerError(.notFound, "agreement \(id) does not exist") }
        return agreement
    }

    /// Runs `body` as one storage transaction: what it writes and logs commits together, or nothing does.
    func change<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        try mapStore { try store.transaction(body) }
    }

    /// Store refusals as broker errors.
    func mapStore<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StoreError {
            switch error.code {
            case .notFound: throw BrokerError(.notFound, error.message)
            case .duplicate: throw BrokerError(.duplicate, error.message)
            case .superseded: throw BrokerError(.conflict, error.message)
            case .invalidArgument: throw BrokerError(.invalid, error.message)
            case .contended: throw BrokerError(.busy, error.message)
            case .replayed, .corrupt, .database: throw error
            }
        }
    }
}
