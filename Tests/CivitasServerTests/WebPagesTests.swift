import CivitasBroker
import CivitasCrypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import CivitasServer

@Suite("Web view: public pages")
struct WebPagesTests {
    @Test("The built-in templates parse")
    func templatesParse() throws {
        _ = try WebPages()
    }

    @Test("Every public page renders as HTML that runs no script but its own, with text from the broker escaped")
    func publicPages() async throws {
        let broker = try TestBroker()
        try await broker.application.test(.router) { client in
            // A schema title written to break out of the page.
            let hostile = callSchema.replacingOccurrences(of: #""title":"Calls""#, with: #""title":"<script>alert(1)</script> Calls""#)
            let register = Array(#"{"id":"calls","schema":\#(hostile),"purposes":["public-health-surveillance"]}"#.utf8)
            #expect(try await client.execute(try TestBroker.signed(.post, "/datasets", body: register, key: broker.agency)).status == .created)
            for (path, expected) in [("/", "datasets in the catalog"), ("/web/catalog", "quasi-identifier"),
                                     ("/web/agreements", "No agreement has been signed yet"), ("/web/log", "the broker&#39;s signature")] {
                let response = try await client.execute(uri: path, method: .get)
                let html = String(buffer: response.body)
                #expect(response.status == .ok, "\(path)")
                #expect(response.headers[.contentType] == "text/html; charset=utf-8", "\(path)")
                #expect(response.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true, "\(path)")
                #expect(html.contains(expected), "\(path) does not show '\(expected)'")
                #expect(!html.contains("<script>alert(1)</script>"), "\(path) carries the schema title unescaped")
            }
            let catalog = String(buffer: try await client.execute(uri: "/web/catalog", method: .get).body)
            // Positive control: the title is there, escaped.
            #expect(catalog.contains("&lt;script&gt;alert(1)&lt;/script&gt; Calls"))
            let style = try await client.execute(uri: "/web/assets/style.css", method: .get)
            #expect(style.status == .ok && style.headers[.contentType] == "text/css; charset=utf-8")
        }
    }
}
