import CivitasBroker
import CivitasCrypto
import Foundation
import Testing

@Suite("Request nonces")
struct RequestNonceTests {
    @Test("Concurrent requests share writes, yet each nonce is accepted once, and still after the broker restarts")
    func concurrentAndDurable() async throws {
        let fixture = try BrokerFixture()
        let broker = fixture.broker
        let key = fixture.partnerA.keys.keyID
        // 400 requests at once, every nonce sent twice: exactly one of each pair is accepted.
        let accepted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for attempt in 0..<400 {
                group.addTask {
                    do {
                        try await broker.acceptNonce("n-\(attempt % 200)", keyID: key, created: 1_000, oldestAccepted: 700)
                        return true
                    } catch let error as BrokerError where error.code == .replayed {
                        return false
                    }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(accepted == 200)
        // A broker started anew on the same store still refuses them: the nonces were stored.
        let restarted = try Broker(store: fixture.store, keys: fixture.brokerKeys)
        let replay = await #expect(throws: BrokerError.self) {
            try await restarted.acceptNonce("n-17", keyID: key, created: 1_001, oldestAccepted: 701)
        }
        #expect(replay?.code == .replayed)
        try await restarted.acceptNonce("n-17", keyID: fixture.partnerB.keys.keyID, created: 1_001, oldestAccepted: 701)
    }
}
