import CivitasBroker
import CivitasModel
import CivitasTime
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The web view's routes: public pages anyone may read, the pages of a signed-in participant
/// (read-only: every change stays a signed request), signing in and out, and the assets.
extension BrokerAPI {
    /// The session cookie's name; it is sent only to /web.
    static let sessionCookie = "civitas_session"

    func addWebRoutes(to router: Router<CivitasRequestContext>, signed: RouterGroup<CivitasRequestContext>) {
        router.get("/") { request, _ in
            try await webPage(request) { pages, session in
                pages.page("home", title: "A city's data, shared with care", values: try WebViews.home(broker), navigation: "home", session: session)
            }
        }
        router.get("web/catalog") { request, _ in
            try await webPage(request) { pages, session in
                pages.page("catalog", title: "Catalog", values: try WebViews.catalog(broker, now: now()), navigation: "catalog", session: session)
            }
        }
        router.get("web/agreements") { request, _ in
            try await webPage(request) { pages, session in
                pages.page("agreements", title: "Register of data-sharing agreements", values: try WebViews.agreements(broker), navigation: "agreements",
                           session: session)
            }
        }
        router.get("web/log") { request, _ in
            let note = try await latestCheckpoint()
            return try await webPage(request) { pages, session in
                pages.page("log", title: "Transparency log", values: try WebViews.log(broker, note: note), navigation: "log", session: session)
            }
        }
        router.get("web/login") { request, _ in try await loginPage(request) }
        router.post("web/login") { request, _ in try await signIn(request) }
        router.post("web/logout") { request, _ in try await signOut(request) }
        router.get("web/me") { request, _ in
            try await signedInPage(request) { pages, participant, expires in
                pages.page("me", title: "What the broker holds for \(participant.keys.name)",
                           values: try WebViews.me(broker, participant: participant, sessionExpires: expires), navigation: "me",
                           session: WebSessionView(name: participant.keys.name, role: participant.role.rawValue))
            }
        }
        router.get("web/entries") { request, _ in
            let start = try Self.integerQuery(request, "start").map { UInt64($0) }
            let (type, agreement, dataset) = (Self.textQuery(request, "type"), Self.textQuery(request, "agreement"), Self.textQuery(request, "dataset"))
            return try await signedInPage(request) { pages, participant, _ in
                pages.page("entries", title: "The log, entry by entry",
                           values: try WebViews.entries(broker, start: start, type: type, agreement: agreement, dataset: dataset),
                           navigation: "log", session: WebSessionView(name: participant.keys.name, role: participant.role.rawValue))
            }
        }
        router.get("web/deliveries/:delivery") { request, context in
            let context = try await signedInContext(request, context)
            return try await offloaded { try fetchDelivery(context) }
        }
        router.get("web/audit") { request, _ in
            try await webPage(request) { pages, session in
                pages.page("audit", title: "Audit the log in your browser", values: ["origin": broker.logOrigin], navigation: "audit", session: session)
            }
        }
        router.get("web/log/export") { request, context in try await exportLog(try await signedInContext(request, context)) }
        router.get("web/assets/style.css") { _, _ in WebPages.asset(PackageResources.style_css, contentType: "text/css; charset=utf-8") }
        router.get("web/assets/icon.svg") { _, _ in WebPages.asset(PackageResources.icon_svg, contentType: "image/svg+xml") }
        router.get("favicon.ico") { _, _ in WebPages.asset(PackageResources.icon_svg, contentType: "image/svg+xml") }
        router.get("web/assets/audit.js") { _, _ in WebPages.asset(PackageResources.audit_js, contentType: "text/javascript; charset=utf-8") }
        signed.post("web/sessions") { request, context in try startWebSession(request, context) }
    }

    // MARK: Signing in and out

    /// `POST /web/sessions` (signed, any participant): a one-time login link for the signer.
    func startWebSession(_ request: Request, _ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        let (token, expires) = try brokerCall { try broker.startWebLogin(for: participant, now: now()) }
        let origin = publicURL ?? "\(scheme)://\(request.head.authority ?? "localhost")"
        return JSONResponse.make(status: .created, ["link": .string("\(origin)/web/login?token=\(token)"), "expires": .string(expires.rfc3339),
                                                    "participant": .string(participant.keys.name), "role": .string(participant.role.rawValue)])
    }

    /// The page a login link opens: who it signs in, and a button that does (a link followed by a
    /// preview or a scanner uses nothing).
    func loginPage(_ request: Request) async throws -> Response {
        let token = request.uri.queryParameters.get("token").map { String($0) } ?? ""
        let now = now()
        return try await webPage(request) { pages, _ in
            guard let (participant, expires) = try broker.webLogin(token, now: now) else {
                return pages.message(title: "This link does not sign anyone in", message: "It was used already, it expired, or it never existed.",
                                     next: "Ask for another with: civitas web login --key YOUR.secret", status: .unauthorized)
            }
            return pages.page("login", title: "Sign in", values: ["name": participant.keys.name, "role": participant.role.rawValue,
                                                                  "keyId": participant.keys.keyID.hex, "expires": expires.rfc3339, "token": token],
                              navigation: "login")
        }
    }

    /// `POST /web/login`: uses the link once and opens a session (a cookie only /web receives).
    func signIn(_ request: Request) async throws -> Response {
        try refuseCrossSite(request)
        let body = try await request.body.collect(upTo: 1024)
        let form = URLComponents(string: "?" + String(decoding: body.readableBytesView, as: UTF8.self))?.queryItems ?? []
        let token = form.first { $0.name == "token" }?.value ?? ""
        let now = now()
        let (session, _, _) = try brokerCall { try broker.redeemWebLogin(token, now: now) }
        var cookie = "\(Self.sessionCookie)=\(session); Path=/web; Max-Age=\(Broker.webSessionLifetime); HttpOnly; SameSite=Strict"
        if scheme == "https" || publicURL?.hasPrefix("https://") == true { cookie += "; Secure" }
        var headers = WebPages.headers(contentType: "text/plain; charset=utf-8", personal: true)
        headers[.location] = "/web/me"
        headers[.setCookie] = cookie
        return Response(status: .seeOther, headers: headers)
    }

    /// `POST /web/logout`: ends the session and clears the cookie.
    func signOut(_ request: Request) async throws -> Response {
        try refuseCrossSite(request)
        if let token = Self.sessionToken(request) {
            let now = now()
            try await offloaded { try brokerCall { try broker.endWebSession(token, now: now) } }
        }
        var headers = WebPages.headers(contentType: "text/plain; charset=utf-8", personal: true)
        headers[.location] = "/"
        headers[.setCookie] = "\(Self.sessionCookie)=; Path=/web; Max-Age=0; HttpOnly; SameSite=Strict"
        return Response(status: .seeOther, headers: headers)
    }

    /// Refuses a form posted from another site (a browser says where a request comes from).
    /// A browser that says where a request comes from (Sec-Fetch-Site) is believed; otherwise its
    /// Origin, when it sends one, must be this broker's.
    func refuseCrossSite(_ request: Request) throws {
        let refusal = APIError.forbidden("sign in and out from this broker's own pages")
        if let site = HTTPField.Name("Sec-Fetch-Site").flatMap({ request.headers[$0] }) {
            guard ["same-origin", "none"].contains(site) else { throw refusal }
            return
        }
        if let origin = request.headers[.origin] {
            let own = publicURL ?? "\(scheme)://\(request.head.authority ?? "")"
            guard origin == own else { throw refusal }
        }
    }

    // MARK: Sessions

    /// A query parameter's text, at most 200 characters; nil when absent or empty.
    static func textQuery(_ request: Request, _ name: String) -> String? {
        request.uri.queryParameters.get(name).flatMap { $0.isEmpty ? nil : String($0.prefix(200)) }
    }

    /// The session token the request's cookie carries, if any.
    static func sessionToken(_ request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0] == sessionCookie { return String(parts[1]) }
            }
        }
        return nil
    }

    /// The signed-in participant and when the session ends, if the request carries an open session.
    func sessionParticipant(_ request: Request) async throws -> (participant: Participant, expires: UTCTime)? {
        guard let token = Self.sessionToken(request) else { return nil }
        let now = now()
        return try await offloaded { try brokerCall { try broker.webSession(token, now: now) } }
    }

    /// The request's context as the signed-in participant's, for the API handlers a session may
    /// reach (reads only); a request without an open session is refused (401).
    func signedInContext(_ request: Request, _ context: CivitasRequestContext) async throws -> CivitasRequestContext {
        guard let participant = try await sessionParticipant(request)?.participant else {
            throw APIError.unauthorized("sign in first: civitas web login --key YOUR.secret prints a link")
        }
        var context = context
        context.participant = participant
        return context
    }

    /// The web view's templates, or a 500 saying they do not parse.
    func templates() throws -> WebPages {
        guard let pages = webPages else { throw APIError(.internalServerError, "internal", "the web view's templates do not parse") }
        return pages
    }

    /// Renders a page from the broker's state on NIO's pool for blocking work (pages read the
    /// database), shown to the signed-in participant when there is one.
    func webPage(_ request: Request, _ render: @escaping @Sendable (WebPages, WebSessionView?) throws -> Response) async throws -> Response {
        let pages = try templates()
        let session = try await sessionParticipant(request).map { WebSessionView(name: $0.participant.keys.name, role: $0.participant.role.rawValue) }
        return try await offloaded { try brokerCall { try render(pages, session) } }
    }

    /// A page only a signed-in participant sees; others are told how to sign in (401).
    func signedInPage(_ request: Request, _ render: @escaping @Sendable (WebPages, Participant, UTCTime) throws -> Response) async throws -> Response {
        let pages = try templates()
        guard let (participant, expires) = try await sessionParticipant(request) else {
            return pages.message(title: "Sign in to see this page", message: "This page shows what the broker holds for a participant.",
                                 next: "Run civitas web login --key YOUR.secret and open the link it prints.", status: .unauthorized)
        }
        return try await offloaded { try brokerCall { try render(pages, participant, expires) } }
    }
}
