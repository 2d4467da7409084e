import CivitasCrypto
import CivitasModel
import CivitasStore

/// What an operator watches and alerts on, read from the broker's state (so it survives a
/// restart): the log and how far it is checkpointed, deliveries made, the privacy budget each
/// agreement has spent, and each feed's windows delivered but not yet acknowledged. Nothing
/// personal: agreement and feed ids, counts and ε.
public struct BrokerFigures: Sendable {
    public struct Budget: Sendable, Equatable {
        public let agreement: String
        public let spentMicro: UInt64
        public let budgetMicro: UInt64
        /// Whether the budget is of ρ (zero-concentrated DP) rather than ε.
        public let countsRho: Bool
    }

    public struct Backlog: Sendable, Equatable {
        public let feed: String
        /// Windows delivered and not acknowledged.
        public let windows: Int64
    }

    public let log: LogStatus
    public let deliveries: [Delivery.Kind: Int]
    public let budgets: [Budget]
    public let backlogs: [Backlog]
}

extension Broker {
    /// The figures of ``BrokerFigures``, as the broker's state holds them now.
    public func figures() throws -> BrokerFigures {
        try mapStore {
            BrokerFigures(log: try store.logStatus(), deliveries: try store.deliveryCounts(),
                          budgets: try store.agreements(involving: nil).map {
                              BrokerFigures.Budget(agreement: $0.id, spentMicro: $0.spentMicro, budgetMicro: $0.budgetMicro,
                                                   countsRho: (try? JSONParser.parse($0.policy))?["rho_budget"] != nil)
                          },
                          backlogs: try store.feeds().map { BrokerFigures.Backlog(feed: $0.id, windows: $0.delivered - $0.acknowledged) })
        }
    }
}
