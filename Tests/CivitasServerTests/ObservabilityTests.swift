import CivitasCrypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
@testable import CivitasServer

/// Keeps every log line (message and metadata, rendered) so a test can read what the server logged.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }

    var logger: Logger {
        Logger(label: "civitas-test") { _ in CapturingHandler(log: self) }
    }

    struct CapturingHandler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            let rendered = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            log.append("\(event.level) \(event.message) \(rendered)")
        }
    }
}

@Suite("Logs, request ids and metrics")
struct ObservabilityTests {
    @Test("Every request is logged once with its request id, route and status, and never with a body, a header value or a secret")
    func logs() async throws {
        let broker = try TestBroker()
        let captured = CapturedLog()
        let application = Application(router: broker.api.router(), logger: captured.logger)
        let secretMarker = "Dispatch-Secret-Value-7F3A"
        try await application.test(.router) { client in
            let register = Array(#"{"id":"calls","schema":\#(callSchema)}"#.utf8)
            _ = try await client.execute(try TestBroker.signed(.post, "/datasets", body: register, key: broker.agency))
            let good = try await client.execute(try TestBroker.signed(.post, "/datasets/calls/batches",
                                                                       body: Array("twp,title\nLOWER MERION,\(secretMarker)\n".utf8),
                                                                       key: broker.agency, contentType: "text/csv"))
            let refused = try await client.execute(try TestBroker.signed(.post, "/datasets/calls/batches",
                                                                          body: Array("twp,title,\(secretMarker)\nA,B,C\n".utf8),
                                                                          key: broker.agency, contentType: "text/csv"))
            #expect(refused.status == .unprocessableContent)
            let unsigned = try await client.execute(uri: "/participants", method: .get)
            #expect(unsigned.status == .unauthorized)

            let requestIDs = [good, refused, unsigned].compactMap { $0.headers[HTTPField.Name("Request-Id") ?? .contentType] }
            #expect(requestIDs.count == 3)
            #expect(Set(requestIDs).count == 3)
            let lines = captured.all
            for id in requestIDs {
                #expect(lines.filter { $0.contains("hb.request.id=\(id)") && $0.contains(" request ") }.count == 1,
                        "one request line for \(id)")
            }
            #expect(lines.contains { $0.contains("route=/datasets/{dataset}/batches") && $0.contains("status=422") && $0.contains("error=invalid_batch") })
            #expect(lines.contains { $0.contains("route=/participants") && $0.contains("status=401") && $0.contains("reason=the request is not signed") })
            let everything = lines.joined(separator: "\n")
            #expect(!everything.contains(secretMarker), "a record value reached the log")
            #expect(!everything.contains("sig1="), "a signature header reached the log")
            #expect(!everything.contains(Base64.encode(broker.agency.publicKeys.signingKey)))
        }
    }

    @Test("Metrics count requests by route and status and time them")
    func metrics() async throws {
        let broker = try TestBroker()
        try await broker.application.test(.router) { client in
            _ = try await client.execute(uri: "/healthz", method: .get)
            _ = try await client.execute(uri: "/participants", method: .get)
            let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(text.contains(#"civitas_http_requests_total{method="GET",route="/healthz",status="200"} 1"#))
            #expect(text.contains(#"civitas_http_requests_total{method="GET",route="/participants",status="401"} 1"#))
            #expect(text.contains(#"civitas_http_request_duration_seconds_count{route="/healthz"} 1"#))
        }
    }
}
