import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import CivitasServer

let visitSchema = #"{"title":"Visits","description":"Clinic visits, one per visit.","type":"object","additionalProperties":false,"required":["person","age","zip","diagnosis"],"x-privacy":{"subject":"person"},"properties":{"person":{"type":"string","maxLength":32,"x-privacy":{"class":"subject"}},"age":{"type":"integer","minimum":0,"maximum":120,"x-privacy":{"class":"quasi-identifier","hierarchy":{"intervals":[10,20,40]}}},"zip":{"type":"string","pattern":"^[0-9]{5}$","x-privacy":{"class":"quasi-identifier","hierarchy":{"mask":[1,1,1]}}},"diagnosis":{"type":"string","maxLength":40,"x-privacy":{"class":"sensitive"}}}}"#

@Suite("Exchanges over the HTTP API (in process)")
struct ExchangeAPITests {
    static func visits(_ range: Range<Int>) -> [UInt8] {
        var csv = "person,age,zip,diagnosis\n"
        for i in range { csv += "P\(i),\(20 + (i * 7) % 60),1910\(i % 5),\(["flu", "asthma", "covid"][i % 3])\n" }
        return Array(csv.utf8)
    }

    func policy(_ broker: TestBroker, id: String, extra: [String: JSONValue] = [:]) -> JSONValue {
        var object: [String: JSONValue] = [
            "agreement": .string(id), "dataset": "visits", "publisher": .string(broker.agency.keyID.hex), "partner": .string(broker.partner.keyID.hex),
            "purposes": ["public-health-surveillance"], "legal_basis": "consent", "fields": ["person", "age", "zip", "diagnosis"],
            "treatment": ["k": 3, "suppression_limit": 0.3], "aggregates": ["group_by": ["zip"], "group_keys": ["zip": .array((0...9).map { .string("1910\($0)") })], "max_epsilon_per_query": 0.5],
            "epsilon_budget": 1, "valid_from": "2026-11-01T00:00:00Z", "valid_until": "2026-12-31T23:59:59Z",
            "feed": ["window_records": 10, "window_seconds": 3600, "below_k": "suppress"],
        ]
        object.merge(extra) { _, new in new }
        return .object(object)
    }

    func body(_ value: JSONValue) throws -> [UInt8] { try CanonicalJSON.encode(value) }

    @Test("An envelope of several megabytes is sent exactly as read from the store, to its partner only; with every envelope reader busy the broker says so")
    func envelopeStreaming() async throws {
        let broker = try TestBroker()
        var generator = SystemRandomNumberGenerator()
        let envelope = (0..<(5 << 20) + 777).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let now: UTCTime = "2026-11-20T10:00:00Z"
        let logIndex = try broker.store.transaction { transaction -> UInt64 in
            let schema = Array("{}".utf8)
            try transaction.insertDataset(Dataset(id: "visits", publisher: broker.agency.keyID, schema: schema, schemaSHA256: SHA256Hasher.hash(schema),
                                                  purposes: ["research"], registered: now))
            try transaction.insertAgreement(StoredAgreement(id: "ag-1", dataset: "visits", publisher: broker.agency.keyID, partner: broker.partner.keyID,
                                                            policy: Array("{}".utf8), policySHA256: SHA256Hasher.hash(schema), offerSignature: [1],
                                                            validFrom: "2026-11-01T00:00:00Z", validUntil: "2026-12-31T23:59:59Z", budgetMicro: 0, offered: now))
            let index = try transaction.appendLog(time: now, type: .agreementExpired, members: ["agreement": "ag-1"])
            try transaction.insertDelivery(Delivery(id: "rel-big", agreement: "ag-1", partner: broker.partner.keyID, kind: .release, feed: nil,
                                                    feedSequence: nil, logIndex: index, records: 1, envelope: envelope, created: now))
            return index
        }
        try await broker.application.test(.live) { client in
            let fetched = try await client.execute(try TestBroker.signed(.get, "/deliveries/rel-big", key: broker.partner))
            #expect(fetched.status == .ok)
            #expect(Array(fetched.body.readableBytesView) == envelope)
            #expect(fetched.headers[.contentLength] == String(envelope.count))
            #expect(fetched.headers[try #require(HTTPField.Name("Civitas-Log-Index"))] == String(logIndex))
            #expect(try await client.execute(try TestBroker.signed(.get, "/deliveries/rel-big", key: broker.agency)).status == .forbidden)
            #expect(try await client.execute(try TestBroker.signed(.get, "/deliveries/rel-none", key: broker.partner)).status == .notFound)
            // Every reader taken: refused with a time to retry, not queued; given back: served again.
            for _ in 0..<BrokerAPI.maximumEnvelopeReaders { #expect(broker.api.envelopeReaders.reserve(1)) }
            let busy = try await client.execute(try TestBroker.signed(.get, "/deliveries/rel-big", key: broker.partner))
            #expect(busy.status == .serviceUnavailable && busy.headers[.retryAfter] == "1")
            for _ in 0..<BrokerAPI.maximumEnvelopeReaders { broker.api.envelopeReaders.release(1) }
            let again = try await client.execute(try TestBroker.signed(.get, "/deliveries/rel-big", key: broker.partner))
            #expect(Array(again.body.readableBytesView) == envelope)
        }
    }

    @Test("Offer, accept, consent, release, aggregate, feed (pull, SSE, ack), revoke and audit, each refusal with its status and code")
    func exchange() async throws {
        let broker = try TestBroker()
        try await broker.application.test(.router) { client in
            func send(_ method: HTTPRequest.Method, _ path: String, _ value: JSONValue? = nil, key: SecretKeys, contentType: String = "application/json",
                      raw: [UInt8]? = nil) async throws -> TestResponse {
                try await client.execute(try TestBroker.signed(method, path, body: try raw ?? value.map { try CanonicalJSON.encode($0) } ?? [],
                                                               key: key, contentType: contentType))
            }
            let register = Array(#"{"id":"visits","schema":\#(visitSchema),"purposes":["public-health-surveillance"]}"#.utf8)
            #expect(try await send(.post, "/datasets", key: broker.agency, raw: register).status == .created)
            #expect(try await send(.post, "/datasets/visits/batches", key: broker.agency, contentType: "text/csv", raw: Self.visits(0..<60)).status == .created)

            // Consent: one event, then a bulk sync; receipts are signed by the broker.
            let one = try await send(.post, "/consent", ["dataset": "visits", "subject": "P0", "purpose": "public-health-surveillance", "action": "grant",
                                                         "notice": "n-1", "collection_method": "web-form", "jurisdiction": "EU"], key: broker.agency)
            #expect(one.status == .created)
            let receipt = try json(one)
            let entry = try ConsentReceipts.verify(receipt: receipt, batch: try #require(receipt["batch"]), broker: broker.brokerKeys.publicKeys)
            #expect(entry.type == .consentRecorded)
            let events: [JSONValue] = (1..<50).map { ["dataset": "visits", "subject": .string("P\($0)"), "purpose": "public-health-surveillance", "action": "grant",
                                                       "notice": "n-1", "collection_method": "web-form", "jurisdiction": "EU"] }
            let bulk = try await send(.post, "/consent", ["events": .array(events)], key: broker.agency)
            #expect(bulk.status == .created)
            let bulkAnswer = try json(bulk)
            guard case .array(let bulkReceipts)? = bulkAnswer["receipts"] else { Issue.record("no receipts"); return }
            for receipt in bulkReceipts {
                _ = try ConsentReceipts.verify(receipt: receipt, batch: try #require(bulkAnswer["batch"]), broker: broker.brokerKeys.publicKeys)
            }
            // JSON Lines in, JSON Lines out: the batch line, then one receipt per event.
            let lines: [UInt8] = try events.flatMap { event -> [UInt8] in try CanonicalJSON.encode(event) + [0x0A] }
            let streamed = try await send(.post, "/consent", key: broker.agency, contentType: "application/jsonl", raw: lines)
            #expect(streamed.status == .created && streamed.headers[.contentType] == "application/jsonl")
            let answerLines = try Array(streamed.body.readableBytesView).split(separator: 0x0A).map { try JSONParser.parse(Array($0)) }
            #expect(answerLines.count == events.count + 1)
            for receipt in answerLines.dropFirst() {
                _ = try ConsentReceipts.verify(receipt: receipt, batch: try #require(answerLines.first?["batch"]), broker: broker.brokerKeys.publicKeys)
            }
            let badLine = try await send(.post, "/consent", key: broker.agency, contentType: "application/jsonl", raw: lines + Array("not json\n".utf8))
            #expect(badLine.status == .badRequest)
            #expect(try json(badLine)["error"]?["message"]?.stringValue?.contains("line 50") == true)
            let byPartner = try await send(.post, "/consent", ["events": .array(events)], key: broker.partner)
            #expect(byPartner.status == .forbidden)

            // Offer: a bad signature, a partner offering, then the real offer.
            let terms = policy(broker, id: "ag-visits")
            let hash = SHA256Hasher.hash(try CanonicalJSON.encode(terms))
            let forged = try await send(.post, "/agreements", ["policy": terms, "signature": .string(Base64.encode(broker.partner.sign(AgreementPolicy.offerMessage(policySHA256: hash))))], key: broker.agency)
            #expect(forged.status == .unprocessableContent)
            #expect(try json(forged)["error"]?["code"] == "bad_signature")
            let wrongRole = try await send(.post, "/agreements", ["policy": terms, "signature": .string(Base64.encode(broker.partner.sign(AgreementPolicy.offerMessage(policySHA256: hash))))], key: broker.partner)
            #expect(wrongRole.status == .forbidden)
            let offered = try await send(.post, "/agreements", ["policy": terms, "signature": .string(Base64.encode(broker.agency.sign(AgreementPolicy.offerMessage(policySHA256: hash))))], key: broker.agency)
            #expect(offered.status == .created)
            #expect(try json(offered)["policy_sha256"]?.stringValue == Hex.encode(hash))
            let early = try await send(.post, "/agreements/ag-visits/releases", ["purpose": "public-health-surveillance"], key: broker.partner)
            #expect(early.status == .conflict)
            #expect(try json(early)["error"]?["code"] == "agreement_not_active")
            let accepted = try await send(.post, "/agreements/ag-visits/accept", ["signature": .string(Base64.encode(broker.partner.sign(AgreementPolicy.acceptMessage(policySHA256: hash))))], key: broker.partner)
            #expect(accepted.status == .ok)
            #expect(try json(accepted)["state"] == "accepted")
            let odrl = try await send(.get, "/agreements/ag-visits/odrl", key: broker.partner)
            #expect(odrl.headers[.contentType] == "application/ld+json")
            #expect(try json(odrl)["@type"] == "Agreement")

            // A release: 50 of 60 people consented.
            let release = try await send(.post, "/agreements/ag-visits/releases", ["purpose": "public-health-surveillance"], key: broker.partner)
            #expect(release.status == .created)
            let figures = try json(release)
            #expect(figures["records_selected"] == 60 && figures["records_without_consent"] == 10)
            #expect((figures["k_achieved"]?.numberValue ?? 0) >= 3)
            let id = try #require(figures["id"]?.stringValue)
            let envelope = try await send(.get, "/deliveries/\(id)", key: broker.partner)
            #expect(envelope.headers[.contentType] == "application/vnd.civitas.envelope")
            let sink = MemorySink()
            _ = try EnvelopeOpener(recipient: broker.partner, issuer: broker.brokerKeys.publicKeys).open(MemorySource(Array(envelope.body.readableBytesView)), to: sink)
            let table = try CSVTable.parse(sink.bytes, delimiter: 0x2C)
            #expect(table.rows.count == figures["records"]?.numberValue.map { Int($0) })
            let notTheirs = try await send(.get, "/deliveries/\(id)", key: broker.agency)
            #expect(notTheirs.status == .forbidden)
            let otherPurpose = try await send(.post, "/agreements/ag-visits/releases", ["purpose": "marketing"], key: broker.partner)
            #expect(otherPurpose.status == .forbidden)

            // Aggregates until the budget is spent.
            let count: JSONValue = ["purpose": "public-health-surveillance", "statistic": "count", "group_by": ["zip"], "epsilon": 0.5]
            #expect(try await send(.post, "/agreements/ag-visits/aggregates", count, key: broker.partner).status == .created)
            #expect(try await send(.post, "/agreements/ag-visits/aggregates", count, key: broker.partner).status == .created)
            let spent = try await send(.post, "/agreements/ag-visits/aggregates", count, key: broker.partner)
            #expect(spent.status == .conflict)
            #expect(try json(spent)["error"]?["code"] == "budget_exhausted")

            // A feed: a batch fills a window; pull, SSE, acknowledge.
            let feed = try await send(.post, "/agreements/ag-visits/feeds", ["purpose": "public-health-surveillance"], key: broker.partner)
            #expect(feed.status == .created)
            let feedID = try #require(try json(feed)["id"]?.stringValue)
            #expect(try await send(.post, "/datasets/visits/batches", key: broker.agency, contentType: "text/csv", raw: Self.visits(0..<12)).status == .created)
            let pulled = try json(try await send(.get, "/feeds/\(feedID)/deliveries?wait=1", key: broker.partner))
            guard case .array(let windows)? = pulled["deliveries"] else { Issue.record("no deliveries in \(pulled)"); return }
            #expect(windows.count == 1 && windows.first?["sequence"] == 1)
            let sse = try await send(.get, "/feeds/\(feedID)/events?wait=0", key: broker.partner)
            #expect(sse.headers[.contentType] == "text/event-stream")
            let stream = String(buffer: sse.body)
            #expect(stream.contains("id: 1\nevent: delivery\ndata: {"), "\(stream)")
            #expect(try await send(.post, "/feeds/\(feedID)/ack", ["through": 1], key: broker.partner).status == .ok)
            let after = try json(try await send(.get, "/feeds/\(feedID)/deliveries", key: broker.partner))
            #expect(after["deliveries"] == .array([]))
            #expect(try await send(.get, "/feeds/\(feedID)/deliveries", key: broker.agency).status == .forbidden)

            // Revocation, then the log: public checkpoint, signed export, audit.
            #expect(try await send(.post, "/agreements/ag-visits/revoke", key: broker.agency).status == .ok)
            let revoked = try await send(.post, "/agreements/ag-visits/releases", ["purpose": "public-health-surveillance"], key: broker.partner)
            #expect(revoked.status == .conflict)
            let checkpoint = try await client.execute(uri: "/log/checkpoint", method: .get)
            #expect(String(buffer: checkpoint.body).hasPrefix(BrokerStore.defaultLogOrigin + "\n"))
            let export = try await send(.get, "/log/export", key: broker.partner)
            let report = Auditor(broker: broker.brokerKeys.publicKeys).audit(MemorySource(Array(export.body.readableBytesView)))
            #expect(report.passed, "\(report.findings)")
            #expect(report.releasesVerified == 4)
            #expect(report.agreements["ag-visits"]?.spentMicro == 1_000_000)
        }
    }
}
