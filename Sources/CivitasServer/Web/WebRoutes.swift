import CivitasBroker
import Hummingbird

/// The web view's routes: public pages anyone may read, and the assets they load.
extension BrokerAPI {
    func addWebRoutes(to router: Router<CivitasRequestContext>) {
        router.get("/") { _, _ in try await webPage { pages in pages.page("home", title: "A city's data, shared with care", values: try WebViews.home(broker), navigation: "home") } }
        router.get("web/catalog") { _, _ in try await webPage { pages in pages.page("catalog", title: "Catalog", values: try WebViews.catalog(broker), navigation: "catalog") } }
        router.get("web/agreements") { _, _ in
            try await webPage { pages in pages.page("agreements", title: "Register of data-sharing agreements", values: try WebViews.agreements(broker), navigation: "agreements") }
        }
        router.get("web/log") { _, _ in
            let note = try await latestCheckpoint()
            return try await webPage { pages in pages.page("log", title: "Transparency log", values: try WebViews.log(broker, note: note), navigation: "log") }
        }
        router.get("web/assets/style.css") { _, _ in WebPages.asset(PackageResources.style_css, contentType: "text/css; charset=utf-8") }
    }

    /// Renders a page from the broker's state on NIO's pool for blocking work (pages read the database).
    func webPage(_ render: @escaping @Sendable (WebPages) throws -> Response) async throws -> Response {
        guard let pages = webPages else { throw APIError(.internalServerError, "internal", "the web view's templates do not parse") }
        return try await offloaded { try brokerCall { try render(pages) } }
    }
}
