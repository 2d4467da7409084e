import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation

/// Feeds: new records delivered in windows to pull, stream or push.
extension Broker {
    /// Subscribes the partner to new records under the agreement (which must have feed terms).
    public func subscribe(agreement id: String, purpose: String, webhook: String?, by partner: Participant, now: UTCTime) throws -> Feed {
        let (_, policy, _) = try authorize(id, purpose: purpose, partner: partner, now: now)
        guard policy.feed != nil else { throw BrokerError(.invalid, "agreement \(id) has no feed terms") }
        if let webhook { try webhooks.check(webhook) }
        return try change { transaction in
            let agreement = try transaction.agreement(id)
            let feed = Feed(id: "feed-" + Hex.encode(Sodium.randomBytes(8)), agreement: id, purpose: purpose,
                            nextBatch: try transaction.lastBatch(of: agreement.dataset) + 1, delivered: 0, acknowledged: 0, webhook: webhook, pushed: 0, created: now)
            try transaction.insertFeed(feed)
            return feed
        }
    }

    /// Closes every feed window that is due at `now` (enough records, or the oldest waiting
    /// long enough) and delivers it. Windows that cannot reach k wait for more records or are
    /// suppressed, as the agreement says. Returns the deliveries made.
    /// With `dataset`, only that dataset's feeds are looked at (an upload closes what it filled).
    /// A feed that fails (its agreement out of budget, say) is reported to `failed` and skipped:
    /// it never stops the others.
    public func closeDueWindows(now: UTCTime, dataset only: String? = nil,
                                failed: (_ feed: String, _ error: any Error) -> Void = { _, _ in }) throws -> [ReleaseResult] {
        var results: [ReleaseResult] = []
        for feed in try store.feeds() {
            do {
                // One node treats a window at a time; the others leave it to that node.
                if let result = try claimed("feed-window:\(feed.id)", seconds: Self.windowClaimSeconds, {
                    try closeWindow(of: feed, now: now, dataset: only)
                }) ?? nil {
                    results.append(result)
                }
            } catch {
                failed(feed.id, error)
            }
        }
        return results
    }

    /// How long a node may take to treat a window before another may take it over.
    static let windowClaimSeconds = 300

    /// Closes `feed`'s window if it is due; nil when nothing was delivered.
    func closeWindow(of feed: Feed, now: UTCTime, dataset only: String?) throws -> ReleaseResult? {
        guard let agreement = try store.agreement(feed.agreement), only == nil || agreement.dataset == only,
              (try? Self.checkActive(agreement, at: now)) != nil,
              let policy = try? AgreementPolicy.parse(try JSONParser.parse(agreement.policy)), let terms = policy.feed,
              let dataset = try store.dataset(agreement.dataset) else { return nil }
        let pending = try store.batches(of: dataset.id, from: feed.nextBatch)
        guard let first = pending.first, let last = pending.last else { return nil }
        // A window that could not reach k is tried again only once a new batch has joined it.
        if waitingWindows.lastBatch(of: feed.id) == last.sequence { return nil }
        let waiting = pending.reduce(0) { $0 + $1.records }
        let waited = now.seconds(since: first.created)
        guard waiting >= terms.windowRecords || waited >= Int64(terms.windowSeconds) else { return nil }
        let window = feed.nextBatch..<(last.sequence + 1)
        do {
            // Batches another delivery to this partner already drew from are passed over.
            let batches = try undrawn(pending.map(\.sequence), partner: agreement.partner, dataset: dataset.id)
            guard !batches.isEmpty else { throw BrokerError(.nothingToRelease, "every batch of the window was already delivered") }
            let deliveryID = Self.newDeliveryID(.window)
            var treated = try treat(batches: batches, agreement: agreement, policy: policy, dataset: dataset, purpose: feed.purpose,
                                    suppressionLimit: terms.belowK == .suppress ? 1 : nil, deliveryID: deliveryID)
            let delivery = try deliver(payload: treated.takePayload(), records: treated.outcome.recordsReleased, id: deliveryID, kind: .window, agreement: agreement, policy: policy, purpose: feed.purpose,
                                       outcome: treated.outcome, epsilonMicro: treated.outcome.epsilonMicro,
                                       feedWindow: (feed: feed.id, from: window.lowerBound, to: window.upperBound), drawnBatches: batches, now: now)
            return ReleaseResult(delivery: delivery, outcome: treated.outcome, epsilonMicro: treated.outcome.epsilonMicro,
                                 rhoMicro: policy.rhoCharge(epsilonMicro: treated.outcome.epsilonMicro))
        } catch let error as BrokerError where error.code == .kUnreachable && terms.belowK == .wait {
            waitingWindows.record(feed.id, lastBatch: last.sequence)
        } catch let error as BrokerError where error.code == .kUnreachable || error.code == .nothingToRelease {
            try change { transaction in
                // Unless another caller moved the feed on meanwhile, it passes over the batches.
                let current = try transaction.feed(feed.id)
                guard current.nextBatch == window.lowerBound else { return }
                try transaction.updateFeed(current.with(nextBatch: window.upperBound))
            }
        } catch let error as BrokerError where error.code == .conflict {
            // another caller (an upload, the schedule, another node) delivered this window first
        }
        return nil
    }

    /// A feed, for its partner.
    public func feed(_ id: String, for partner: Participant) throws -> Feed {
        guard let feed = try store.feed(id), let agreement = try store.agreement(feed.agreement), agreement.partner == partner.keys.keyID else {
            throw BrokerError(.notFound, "feed \(id) is not one of \(partner.keys.name)'s")
        }
        return feed
    }

    /// The partner acknowledges every window up to `sequence`; later pulls start after it.
    public func acknowledge(feed id: String, through sequence: Int64, by partner: Participant) throws -> Feed {
        _ = try feed(id, for: partner)
        return try change { transaction in
            let current = try transaction.feed(id)
            guard sequence <= current.delivered else {
                throw BrokerError(.invalid, "feed \(id) has delivered \(current.delivered) windows; \(sequence) cannot be acknowledged")
            }
            guard sequence > current.acknowledged else { return current }  // never moves back
            let acknowledged = current.with(acknowledged: sequence)
            try transaction.updateFeed(acknowledged)
            return acknowledged
        }
    }

    /// A delivery, for its partner (or an auditor, who can verify but not open it).
    public func delivery(_ id: String, for participant: Participant) throws -> Delivery {
        guard let delivery = try mapStore({ try store.delivery(id) }), Self.mayFetch(delivery.partner, participant) else {
            throw Self.notTheirs(id, participant)
        }
        return delivery
    }

    /// Where delivery `id` is logged and how long its envelope is, for its partner or an auditor,
    /// without reading the envelope.
    public func deliveryEnvelope(_ id: String, for participant: Participant) throws -> DeliveryEnvelope {
        guard let envelope = try mapStore({ try store.deliveryEnvelope(id) }), Self.mayFetch(envelope.partner, participant) else {
            throw Self.notTheirs(id, participant)
        }
        return envelope
    }

    /// Reads delivery `id`'s envelope, for its partner or an auditor, in pieces of at most
    /// `pieceSize` bytes handed to `each` in order (each valid only during the call), until the
    /// end or until `each` returns false.
    public func readEnvelope(of id: String, for participant: Participant, pieceSize: Int,
                             _ each: (UnsafeRawBufferPointer) throws -> Bool) throws {
        _ = try deliveryEnvelope(id, for: participant)
        try mapStore { try store.readEnvelope(of: id, pieceSize: pieceSize, each) }
    }

    /// Whether `participant` may fetch a delivery made to `partner`: its partner and auditors may.
    private static func mayFetch(_ partner: KeyID, _ participant: Participant) -> Bool {
        partner == participant.keys.keyID || participant.role == .auditor
    }

    private static func notTheirs(_ id: String, _ participant: Participant) -> BrokerError {
        BrokerError(.notFound, "delivery \(id) is not one of \(participant.keys.name)'s")
    }
    /// A feed's windows after `sequence`, in order, at most `limit`, for its partner.
    public func windows(of feed: String, after sequence: Int64, limit: Int, for partner: Participant) throws -> [Delivery] {
        _ = try self.feed(feed, for: partner)
        return try mapStore { try store.deliveries(feed: feed, after: sequence, limit: limit) }
    }

    /// Feeds with a webhook and windows it has not accepted yet.
    public func feedsToPush() throws -> [Feed] {
        try mapStore { try store.feeds() }.filter { $0.webhook != nil && $0.pushed < $0.delivered }
    }

    /// The windows of `feed` after `sequence` not yet pushed, in order, at most `limit` (for the schedule).
    public func windowsToPush(of feed: String, after sequence: Int64, limit: Int) throws -> [Delivery] {
        try mapStore { try store.deliveries(feed: feed, after: sequence, limit: limit) }
    }

    /// Records that `feed`'s webhook accepted every window through `sequence`.
    public func markPushed(feed: String, through sequence: Int64) throws {
        try change { transaction in
            let current = try transaction.feed(feed)
            if sequence > current.pushed { try transaction.updateFeed(current.with(pushed: sequence)) }
        }
    }
}


/// Feeds whose window could not reach k, and the last batch it held then (in memory: after a
/// restart each waiting window is tried once more).
final class WaitingWindows: @unchecked Sendable {
    private let lock = NSLock()
    private var batches: [String: Int64] = [:]

    func lastBatch(of feed: String) -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        return batches[feed]
    }

    func record(_ feed: String, lastBatch: Int64) {
        lock.lock()
        defer { lock.unlock() }
        batches[feed] = lastBatch
    }
}
