import CivitasBroker
import CivitasModel
import Foundation
import Prometheus

/// The broker's Prometheus metrics, each with its `# HELP`: requests by route and status with
/// their durations and refusals by error code, counted as they are answered; and, brought up to
/// date from ``BrokerFigures`` whenever /metrics is read, deliveries by kind, the log's size, its
/// latest checkpoint's size and age, the ε each agreement spent and may spend, and each feed's
/// windows waiting for acknowledgement.
final class BrokerMetrics: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    private let lock = NSLock()
    /// Deliveries of each kind already counted, so the counter moves by what the store gained.
    private var deliveriesCounted: [Delivery.Kind: Int] = [:]

    static var requests: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "http_requests", unitName: "total",
                                               helpText: "HTTP requests answered, by method, route and status.") }
    static var durations: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "http_request_duration", unitName: "seconds",
                                                helpText: "Time to answer an HTTP request, by route.") }
    static var refusals: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "refusals", unitName: "total",
                                               helpText: "Requests refused, by the error code of the answer (bad_signature, forbidden, budget_exhausted, ...).") }
    static var deliveries: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "deliveries", unitName: "total",
                                                 helpText: "Deliveries made (sealed, signed and logged), by kind: release, aggregate, window.") }
    static var logEntries: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "log", unitName: "entries",
                                                 helpText: "Entries in the exchange log.") }
    static var checkpointEntries: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "log_checkpoint", unitName: "entries",
                                                        helpText: "Entries the latest signed checkpoint of the log covers.") }
    static var checkpointAge: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "log_checkpoint_age", unitName: "seconds",
                                                    helpText: "Seconds since the latest checkpoint of the log was signed (-1 when none is known).") }
    static var epsilonSpent: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "epsilon_spent", unitName: "ratio",
                                                   helpText: "Privacy budget (epsilon) an agreement has spent.") }
    static var epsilonBudget: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "epsilon_budget", unitName: "ratio",
                                                    helpText: "Privacy budget (epsilon) an agreement may spend in all.") }
    static var rhoSpent: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "rho_spent", unitName: "ratio",
                                               helpText: "Privacy budget (zCDP rho) an agreement that counts rho has spent.") }
    static var rhoBudget: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "rho_budget", unitName: "ratio",
                                                helpText: "Privacy budget (zCDP rho) an agreement that counts rho may spend in all.") }
    static var feedBacklog: MetricNameDescriptor { MetricNameDescriptor(namespace: "civitas", metricName: "feed_backlog", unitName: "windows",
                                                  helpText: "Feed windows delivered and not yet acknowledged by the partner.") }

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Counts one answered request (and its refusal code, if refused).
    func answered(method: String, route: String, status: Int, code: String?, duration: Duration) {
        registry.makeCounter(descriptor: Self.requests, labels: [("method", method), ("route", route), ("status", String(status))]).increment()
        registry.makeDurationHistogram(descriptor: Self.durations, labels: [("route", route)], buckets: Self.buckets).recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        if let code { registry.makeCounter(descriptor: Self.refusals, labels: [("code", code)]).increment() }
    }

    /// The exposition text, with the state figures brought up to date first.
    func exposition(figures: BrokerFigures, now: Int64) -> [UInt8] {
        lock.withLock {
            for kind in [Delivery.Kind.release, .aggregate, .window, .synthetic] {
                let made = figures.deliveries[kind] ?? 0
                let gained = made - (deliveriesCounted[kind] ?? 0)
                // Created at zero so a kind with no delivery yet is still listed.
                let counter = registry.makeCounter(descriptor: Self.deliveries, labels: [("kind", kind.rawValue)])
                if gained > 0 { counter.increment(by: Int64(gained)) }
                deliveriesCounted[kind] = max(made, deliveriesCounted[kind] ?? 0)
            }
        }
        registry.makeGauge(descriptor: Self.logEntries).set(Double(figures.log.entries))
        registry.makeGauge(descriptor: Self.checkpointEntries).set(Double(figures.log.checkpointEntries))
        registry.makeGauge(descriptor: Self.checkpointAge).set(figures.log.checkpointSigned.map { Double(max(0, now - $0.secondsSince1970)) } ?? -1)
        for budget in figures.budgets {
            let (spent, total) = budget.countsRho ? (Self.rhoSpent, Self.rhoBudget) : (Self.epsilonSpent, Self.epsilonBudget)
            registry.makeGauge(descriptor: spent, labels: [("agreement", budget.agreement)]).set(Double(budget.spentMicro) / 1_000_000)
            registry.makeGauge(descriptor: total, labels: [("agreement", budget.agreement)]).set(Double(budget.budgetMicro) / 1_000_000)
        }
        for backlog in figures.backlogs {
            registry.makeGauge(descriptor: Self.feedBacklog, labels: [("feed", backlog.feed)]).set(Double(backlog.windows))
        }
        return registry.emitToBuffer()
    }

    static let buckets: [Duration] = [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                      .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
                                      .seconds(5), .seconds(10), .seconds(30), .seconds(60)]
}
