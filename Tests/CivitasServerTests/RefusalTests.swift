import CivitasCrypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import CivitasServer
@testable import CivitasBroker
import CivitasStore

/// A client's mistake is always a 4xx with the JSON error body and a Request-Id, never a 500.
@Suite("Refusals for clients' mistakes")
struct RefusalTests {
    /// A refusal as the API promises it: 4xx, `{"error":{"code","message"}}`, a Request-Id.
    static func expectRefusal(_ response: TestResponse, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect((400..<500).contains(response.status.code), "\(what): \(response.status)", sourceLocation: sourceLocation)
        // The web view's pages refuse as pages a person reads (saying how to sign in).
        if response.headers[.contentType] == "text/html; charset=utf-8" {
            #expect(String(buffer: response.body).contains("<h1>"), "\(what): an HTML refusal without a heading", sourceLocation: sourceLocation)
            #expect(response.headers[HTTPField.Name("Request-Id")!] != nil, "\(what): no Request-Id", sourceLocation: sourceLocation)
            return
        }
        let body = try? JSONParser.parse(Array(response.body.readableBytesView))
        #expect(body?["error"]?["code"]?.stringValue?.isEmpty == false, "\(what): body \(String(buffer: response.body).prefix(120))",
                sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("Request-Id")!] != nil, "\(what): no Request-Id", sourceLocation: sourceLocation)
    }

    @Test("Every route with every method, signed and unsigned: never a 500, every refusal a JSON error; 405 names what is allowed")
    func everyRouteEveryMethod() async throws {
        let broker = try TestBroker()
        let routes = broker.api.router().routes.map { (path: $0.path.description, method: $0.method) }
        let methods: [HTTPRequest.Method] = [.get, .post, .put, .patch, .delete, .options]
        try await broker.application.test(.router) { client in
            for route in routes {
                let path = "/" + route.path.split(separator: "/")
                    .map { $0.hasPrefix(":") ? "no-such-\($0.dropFirst())" : String($0) }.joined(separator: "/")
                let accepted = Set(routes.filter { $0.path == route.path }.map(\.method))
                for method in methods {
                    let unsigned = try await client.execute(uri: path, method: method, body: ByteBuffer(string: "{}"))
                    #expect(unsigned.status.code < 500, "\(method) \(path) unsigned: \(unsigned.status)")
                    if unsigned.status.code >= 400 { try Self.expectRefusal(unsigned, "\(method) \(path) unsigned") }
                    let signed = try await client.execute(try TestBroker.signed(method, path, body: Array("{}".utf8), key: broker.operatorKeys))
                    #expect(signed.status.code < 500, "\(method) \(path) signed: \(signed.status)")
                    if signed.status.code >= 400 { try Self.expectRefusal(signed, "\(method) \(path) signed") }
                    if !accepted.contains(method) {
                        #expect(signed.status == .methodNotAllowed, "\(method) \(path)")
                        let allow = signed.headers[.allow] ?? ""
                        #expect(accepted.allSatisfy { allow.contains($0.rawValue) }, "\(method) \(path): Allow \(allow)")
                    }
                }
            }
            let unknown = try await client.execute(uri: "/no/such/route", method: .get)
            #expect(unknown.status == .notFound)
            try Self.expectRefusal(unknown, "an unknown route")
        }
    }

    @Test("A change other broker nodes kept contending is answered 503 busy with Retry-After, from the store's refusal up")
    func contendedIsBusy() throws {
        let broker = try TestBroker()
        // The store's refusal, through the broker's one mapping of store refusals...
        let refusal = #expect(throws: BrokerError.self) {
            try broker.broker.mapStore { throw StoreError(.contended, "another broker node changed the same records") }
        }
        #expect(refusal?.code == .busy)
        // ...and the API's one mapping of broker refusals.
        let answer = APIError(try #require(refusal))
        #expect(answer.status == .serviceUnavailable && answer.code == "busy" && answer.headers[.retryAfter] == "1")
    }

    @Test("Behind its public URL, the broker checks signatures against that URL, and names the URL a request was signed for instead")
    func publicURL() async throws {
        let broker = try TestBroker()
        let api = BrokerAPI(broker: broker.broker, publicURL: "https://broker.city.example/", clock: { TestBroker.now })
        try await Application(router: api.router()).test(.router) { client in
            // Signed for the URL partners are given, and forwarded by a proxy: accepted.
            let proxied = try TestBroker.signed(.get, "/participants", key: broker.partner, origin: "https://broker.city.example")
            #expect(try await client.execute(proxied).status == .ok)
            // Signed for the address the request reached (or for another broker behind the same Host): refused, and said so.
            for origin in ["http://localhost", "https://localhost"] {
                let direct = try TestBroker.signed(.get, "/participants", key: broker.partner, origin: origin)
                let answer = try await client.execute(direct)
                #expect(answer.status == .unauthorized)
                #expect(String(buffer: answer.body).contains("signed for \(origin), not for this broker's URL https://broker.city.example"),
                        "\(String(buffer: answer.body))")
            }
            // A signature that verifies for no URL at all is refused as before.
            var tampered = try TestBroker.signed(.get, "/participants", key: broker.partner, origin: "https://broker.city.example")
            tampered.path = "/datasets/calls"
            let answer = try await client.execute(tampered)
            #expect(answer.status == .unauthorized && String(buffer: answer.body).contains("signature refused"))
        }
        // Without a public URL, a request signed for https:// reaching the broker in the clear is named too.
        try await broker.application.test(.router) { client in
            let answer = try await client.execute(try TestBroker.signed(.get, "/participants", key: broker.partner, origin: "https://localhost"))
            #expect(answer.status == .unauthorized && String(buffer: answer.body).contains("signed for https://localhost, not for this broker's URL http://localhost"))
        }
    }

    @Test("A validly signed request with an empty or overlong nonce is refused with 401, not 500")
    func nonceBounds() async throws {
        let broker = try TestBroker()
        try await broker.application.test(.router) { client in
            for nonce in ["", String(repeating: "n", count: 257)] {
                let response = try await client.execute(try TestBroker.signed(.get, "/participants", key: broker.operatorKeys, nonce: nonce))
                #expect(response.status == .unauthorized, "nonce of \(nonce.count) bytes")
                try Self.expectRefusal(response, "nonce of \(nonce.count) bytes")
            }
            let fine = try await client.execute(try TestBroker.signed(.get, "/participants", key: broker.operatorKeys,
                                                                      nonce: String(repeating: "n", count: 256)))
            #expect(fine.status == .ok)
        }
    }

    @Test("A header-only batch is refused as having no records, and nothing is stored")
    func headerOnlyBatch() async throws {
        let broker = try TestBroker()
        try await broker.application.test(.router) { client in
            let register = Array(#"{"id":"calls","schema":\#(callSchema),"purposes":["public-health-surveillance"]}"#.utf8)
            #expect(try await client.execute(try TestBroker.signed(.post, "/datasets", body: register, key: broker.agency)).status == .created)
            for body in ["twp,title,age\n", "\u{FEFF}twp,title,age\r\n"] {
                let upload = try await client.execute(try TestBroker.signed(.post, "/datasets/calls/batches", body: Array(body.utf8),
                                                                           key: broker.agency, contentType: "text/csv"))
                #expect(upload.status == .unprocessableContent, "\(body.debugDescription)")
                #expect(String(buffer: upload.body).contains("no records"), "\(String(buffer: upload.body))")
            }
            let bom = Array("\u{FEFF}twp,title,age\nAMBLER,EMS: FALL VICTIM,81\n".utf8)
            let stored = try await client.execute(try TestBroker.signed(.post, "/datasets/calls/batches", body: bom, key: broker.agency, contentType: "text/csv"))
            #expect(stored.status == .created, "a byte-order mark is skipped: \(String(buffer: stored.body))")
            #expect(try broker.store.batches(of: "calls").count == 1)
        }
    }
}
