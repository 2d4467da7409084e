import CivitasBroker
import CivitasCrypto
import CivitasTime
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import CivitasServer

@Suite("Web view: signing in, read-only sessions")
struct WebSessionTests {
    /// Signs `key` in through the API and the login page; returns the session cookie (`name=value`).
    static func signIn(_ client: some TestClientProtocol, key: SecretKeys) async throws -> (cookie: String, token: String) {
        let started = try await client.execute(try TestBroker.signed(.post, "/web/sessions", body: Array("{}".utf8), key: key))
        #expect(started.status == .created)
        let link = try #require(try json(started)["link"]?.stringValue)
        let token = try #require(link.split(separator: "=").last.map(String.init))
        let page = try await client.execute(uri: "/web/login?token=\(token)", method: .get)
        #expect(page.status == .ok && String(buffer: page.body).contains("Sign in as \(key.publicKeys.name)"))
        let signedIn = try await client.execute(uri: "/web/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                                                body: ByteBuffer(string: "token=\(token)"))
        #expect(signedIn.status == .seeOther && signedIn.headers[.location] == "/web/me")
        let cookie = try #require(signedIn.headers[.setCookie])
        #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/web"))
        return (try #require(cookie.split(separator: ";").first.map(String.init)), token)
    }

    @Test("A signed request makes a one-time link; the link opens a session once; the session reads the participant's pages until it ends")
    func loginFlow() async throws {
        let broker = try TestBroker()
        try await broker.application.test(.router) { client in
            let (cookie, token) = try await Self.signIn(client, key: broker.partner)
            let me = try await client.execute(uri: "/web/me", method: .get, headers: [.cookie: cookie])
            #expect(me.status == .ok && String(buffer: me.body).contains(broker.partner.keyID.hex))
            #expect(me.headers[.cacheControl] == "no-store")
            // The link works once.
            let again = try await client.execute(uri: "/web/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                                                 body: ByteBuffer(string: "token=\(token)"))
            #expect(again.status == .unauthorized)
            // Without the cookie, or with a made-up one, the page says how to sign in.
            let anonymous = try await client.execute(uri: "/web/me", method: .get)
            #expect(anonymous.status == .unauthorized && String(buffer: anonymous.body).contains("civitas web login"))
            let forged = try await client.execute(uri: "/web/me", method: .get,
                                                  headers: [.cookie: "civitas_session=\(String(repeating: "A", count: 43))"])
            #expect(forged.status == .unauthorized)
            // Signing out from another site is refused; from the page it ends the session.
            let crossSite = try await client.execute(uri: "/web/logout", method: .post, headers: [.cookie: cookie, .origin: "https://elsewhere.example"])
            #expect(crossSite.status == .forbidden)
            #expect(try await client.execute(uri: "/web/me", method: .get, headers: [.cookie: cookie]).status == .ok)
            let out = try await client.execute(uri: "/web/logout", method: .post, headers: [.cookie: cookie])
            #expect(out.status == .seeOther && out.headers[.setCookie]?.contains("Max-Age=0") == true)
            #expect(try await client.execute(uri: "/web/me", method: .get, headers: [.cookie: cookie]).status == .unauthorized)
        }
    }

    @Test("A session cookie reaches no route that changes anything, and no signed route at all")
    func cookieReachesNoMutatingRoute() async throws {
        let broker = try TestBroker()
        let routes = broker.api.router().routes.map { (path: $0.path.description, method: $0.method) }
        try await broker.application.test(.router) { client in
            let (cookie, _) = try await Self.signIn(client, key: broker.operatorKeys)
            // Positive control: the cookie does sign the operator in to the web view.
            #expect(try await client.execute(uri: "/web/me", method: .get, headers: [.cookie: cookie]).status == .ok)
            var checked = 0
            for route in routes where !["web/login", "web/logout"].contains(route.path.description.trimmingCharacters(in: CharacterSet(charactersIn: "/"))) {
                let path = "/" + route.path.split(separator: "/").map { $0.hasPrefix(":") ? "x" : String($0) }.joined(separator: "/")
                let isWebPage = path.hasPrefix("/web/") || path == "/"
                guard route.method != .get || !isWebPage else { continue }
                let response = try await client.execute(uri: path, method: route.method, headers: [.cookie: cookie, .contentType: "application/json"],
                                                        body: ByteBuffer(string: "{}"))
                let isPublicRead = route.method == .get && ["/healthz", "/metrics", "/openapi.json", "/catalog", "/odrl/profile.jsonld",
                                                            "/log/checkpoint", "/log/consistency", "/favicon.ico"].contains(path)
                if !isPublicRead {
                    #expect(response.status == .unauthorized, "\(route.method) \(path) with a session cookie: \(response.status)")
                    checked += 1
                }
            }
            #expect(checked > 20)
            // The operator's data is untouched: nobody was registered through the cookie.
            #expect(try broker.broker.store.participants().count == 3)
        }
    }

    @Test("A login link expires after five minutes; a session after eight hours")
    func expiry() throws {
        let broker = try TestBroker()
        let partner = try #require(try broker.broker.store.participant(broker.partner.keyID))
        let start = UTCTime(secondsSince1970: TestBroker.now)
        let (late, _) = try broker.broker.startWebLogin(for: partner, now: start)
        #expect(throws: BrokerError.self) {
            try broker.broker.redeemWebLogin(late, now: UTCTime(secondsSince1970: TestBroker.now + Broker.webLoginLifetime))
        }
        let (link, _) = try broker.broker.startWebLogin(for: partner, now: start)
        let (session, _, _) = try broker.broker.redeemWebLogin(link, now: start)
        #expect(try broker.broker.webSession(session, now: UTCTime(secondsSince1970: TestBroker.now + Broker.webSessionLifetime - 1)) != nil)
        #expect(try broker.broker.webSession(session, now: UTCTime(secondsSince1970: TestBroker.now + Broker.webSessionLifetime)) == nil)
        // A session token is not a login link, nor the other way round.
        #expect(throws: BrokerError.self) { try broker.broker.redeemWebLogin(session, now: start) }
        #expect(try broker.broker.webSession(link, now: start) == nil)
    }
}
