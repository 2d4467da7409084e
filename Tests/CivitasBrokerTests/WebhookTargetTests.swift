import CivitasBroker
import CivitasCrypto
import Foundation
import Testing

/// A partner's webhook URL cannot make the broker call inside the operator's network.
@Suite("Webhook targets")
struct WebhookTargetTests {
    /// Names resolved as a DNS server an attacker controls would answer.
    static let names: [String: [[UInt8]]] = [
        "hooks.partner.example": [[93, 184, 216, 34]],
        "metadata.attacker.example": [[169, 254, 169, 254]],
        "rebind.attacker.example": [[93, 184, 216, 34], [10, 0, 0, 7]],
        "mapped.attacker.example": [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 127, 0, 0, 1]],
    ]
    static let targets = WebhookTargets(resolve: { names[$0] ?? WebhookTargets.systemResolve($0) })

    @Test("Loopback, private, link-local, metadata, unique-local and mapped addresses are refused; public ones pass")
    func internalAddressesRefused() throws {
        for url in ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://172.20.0.1/hook", "http://192.168.1.1/hook",
                    "http://169.254.169.254/latest/meta-data/", "http://[::1]/hook", "http://[fe80::1]/hook", "http://[fd00::1]/hook",
                    "http://100.64.0.1/hook", "http://0.0.0.0/hook", "https://metadata.attacker.example/hook",
                    "https://rebind.attacker.example/hook", "https://mapped.attacker.example/hook"] {
            let error = try #require(throws: BrokerError.self, "\(url)") { try Self.targets.check(url) }
            #expect(error.code == .invalid && error.message.contains("address"), "\(url): \(error.message)")
        }
        try Self.targets.check("https://hooks.partner.example/civitas")
        try Self.targets.check("http://93.184.216.34/civitas")
        #expect(throws: BrokerError.self) { try Self.targets.check("ftp://hooks.partner.example/") }
    }

    @Test("The operator may allow an internal host by name or address")
    func allowList() throws {
        let allowing = WebhookTargets(allowed: ["127.0.0.1", "Hooks.Internal"], resolve: { $0 == "hooks.internal" ? [[10, 0, 0, 9]] : WebhookTargets.systemResolve($0) })
        try allowing.check("http://127.0.0.1:9000/hook")
        try allowing.check("http://hooks.internal/hook")
        #expect(throws: BrokerError.self) { try allowing.check("http://10.0.0.9/hook") }
    }

    @Test("A feed with a webhook at a loopback address is refused, and nothing is created")
    func subscribeRefused() throws {
        let fixture = try BrokerFixture()
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, extra: [
            "feed": ["window_records": 10, "window_seconds": 600],
        ]), partner: fixture.partnerAKeys)
        let before = try fixture.stateFingerprint()
        let error = try #require(throws: BrokerError.self) {
            try fixture.broker.subscribe(agreement: id, purpose: BrokerFixture.purpose, webhook: "http://127.0.0.1:9/hook", by: fixture.partnerA, now: fixture.now)
        }
        #expect(error.message.contains("loopback"))
        #expect(try fixture.stateFingerprint() == before)
    }
}
