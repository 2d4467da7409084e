import CivitasBroker
import CivitasCrypto
import CivitasModel
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging

/// The broker's periodic work: expiring agreements past their validity, closing feed windows
/// that are due by time, checkpointing the log for its witnesses to cosign, and pushing windows to partners' webhooks with retries and
/// exponential backoff (1 s doubling to 5 min). Pushes are at least once: a window counts as
/// pushed when the webhook answers 2xx; partners can always pull what a push missed.
public final class BrokerSchedule: @unchecked Sendable {
    let broker: Broker
    let logger: Logger
    let clock: @Sendable () -> Int64
    let witnesses: CheckpointWitnesses?
    private let lock = NSLock()
    private var backoff: [String: (failures: Int, next: Int64)] = [:]
    /// Longest a webhook may take to answer, in seconds.
    public static let webhookTimeout: TimeInterval = 10
    /// Pushes follow no redirect: a webhook answers itself, or the push failed.
    private let session = URLSession(configuration: .ephemeral, delegate: RedirectRefusal(), delegateQueue: nil)

    public init(broker: Broker, logger: Logger, witnesses: CheckpointWitnesses? = nil,
                clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.broker = broker
        self.witnesses = witnesses
        self.logger = logger
        self.clock = clock
    }

    /// Runs ``tick()`` every `interval` until the task is cancelled.
    public func run(every interval: Duration) async {
        while !Task.isCancelled {
            await tick()
            try? await Task.sleep(for: interval)
        }
    }

    /// One round of the periodic work.
    public func tick() async {
        let now = UTCTime(secondsSince1970: clock())
        // Each step, and each feed within a step, fails on its own: one never stops the others.
        do {
            let expired = try broker.expireAgreements(now: now)
            for id in expired { logger.info("agreement expired", metadata: ["agreement": "\(id)"]) }
        } catch {
            logger.error("expiring agreements failed", metadata: ["error": "\(error)"])
        }
        do {
            let windows = try broker.closeDueWindows(now: now) { feed, error in
                logger.warning("feed window not delivered", metadata: ["feed": "\(feed)", "error": "\(error)"])
            }
            for window in windows {
                logger.info("feed window delivered", metadata: ["feed": "\(window.delivery.feed ?? "")", "delivery": "\(window.delivery.id)",
                                                                "records": "\(window.delivery.records)"])
            }
        } catch {
            logger.error("closing feed windows failed", metadata: ["error": "\(error)"])
        }
        do {
            try await pushWebhooks()
        } catch {
            logger.error("pushing webhooks failed", metadata: ["error": "\(error)"])
        }
        if let witnesses {
            do {
                _ = try await witnesses.latestCheckpoint()
            } catch {
                logger.error("checkpointing the log for its witnesses failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Pushes every window not yet accepted by its feed's webhook, in order, honouring backoff.
    func pushWebhooks() async throws {
        let now = clock()
        for feed in try broker.feedsToPush() {
            guard let webhook = feed.webhook, let url = URL(string: webhook) else { continue }
            if let state = lock.withLock({ backoff[feed.id] }), state.next > now { continue }
            // Checked again before every push: the host's addresses may have changed since the feed was made.
            do { try broker.webhooks.check(webhook) } catch {
                lock.withLock { backoff[feed.id] = ((backoff[feed.id]?.failures ?? 0) + 1, now + 300) }
                logger.warning("webhook refused", metadata: ["feed": "\(feed.id)", "error": "\(error)"])
                continue
            }
            // One node pushes a feed's windows at a time; the others leave the feed to it.
            guard try broker.claim(work: "webhook:\(feed.id)", seconds: Self.pushClaimSeconds) else { continue }
            do {
                // Read again under the claim: another node may have pushed meanwhile.
                if let current = try broker.feedsToPush().first(where: { $0.id == feed.id }) {
                    try await push(current, to: url, now: now)
                }
            } catch {
                try? broker.release(work: "webhook:\(feed.id)")
                throw error
            }
            try broker.release(work: "webhook:\(feed.id)")
        }
    }

    /// How long a node may take to push a feed's windows before another may take over.
    static let pushClaimSeconds = 300

    /// Pushes `feed`'s windows after the last one its webhook accepted, in order, until one fails.
    private func push(_ feed: Feed, to url: URL, now: Int64) async throws {
        for delivery in try broker.windowsToPush(of: feed.id, after: feed.pushed, limit: 20) {
            var request = URLRequest(url: url, timeoutInterval: Self.webhookTimeout)
            request.httpMethod = "POST"
            request.setValue("application/vnd.civitas.envelope", forHTTPHeaderField: "Content-Type")
            request.setValue(feed.id, forHTTPHeaderField: "Civitas-Feed")
            request.setValue(String(delivery.feedSequence ?? 0), forHTTPHeaderField: "Civitas-Sequence")
            request.setValue(delivery.id, forHTTPHeaderField: "Civitas-Delivery")
            let accepted: Bool
            do {
                let (_, response) = try await session.upload(for: request, from: Data(delivery.envelope))
                accepted = ((response as? HTTPURLResponse)?.statusCode).map { (200..<300).contains($0) } ?? false
            } catch {
                accepted = false
            }
            guard accepted else {
                let failures = (lock.withLock { backoff[feed.id]?.failures } ?? 0) + 1
                let delay = Int64(min(1 << min(failures - 1, 20), 300))
                lock.withLock { backoff[feed.id] = (failures, now + delay) }
                logger.warning("webhook push failed; retrying later", metadata: ["feed": "\(feed.id)", "attempt": "\(failures)", "retry_in_s": "\(delay)"])
                break
            }
            lock.withLock { _ = backoff.removeValue(forKey: feed.id) }
            try broker.markPushed(feed: feed.id, through: delivery.feedSequence ?? 0)
        }
    }
}

/// Refuses every HTTP redirect, so a webhook cannot send the broker on to an internal address.
final class RedirectRefusal: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void) {
        completionHandler(nil)
    }
}
