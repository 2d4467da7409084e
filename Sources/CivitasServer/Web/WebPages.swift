import HTTPTypes
import Hummingbird
import Mustache
import NIOCore

/// The web view's templates (compiled into the binary) and the HTML responses rendered from them.
struct WebPages: Sendable {
    private let library: MustacheLibrary

    /// Every template by name; `head` and `foot` are the partials each page opens and closes with.
    static let templates: [(name: String, text: [UInt8])] = [
        ("head", PackageResources.head_mustache), ("foot", PackageResources.foot_mustache), ("home", PackageResources.home_mustache),
        ("catalog", PackageResources.catalog_mustache), ("agreements", PackageResources.agreements_mustache),
        ("log", PackageResources.log_mustache), ("message", PackageResources.message_mustache), ("login", PackageResources.login_mustache),
        ("me", PackageResources.me_mustache), ("entries", PackageResources.entries_mustache), ("audit", PackageResources.audit_mustache),
    ]

    init() throws {
        var library = MustacheLibrary()
        for (name, text) in Self.templates { try library.register(String(decoding: text, as: UTF8.self), named: name) }
        self.library = library
    }

    /// The page `template` rendered with `values` (HTML-escaped), as a response that may run no
    /// script but its own, load nothing from elsewhere and be framed by no one.
    func page(_ template: String, title: String, values: [String: Any], navigation: String, session: WebSessionView? = nil,
              status: HTTPResponse.Status = .ok) -> Response {
        var context = values
        context["title"] = title
        context["nav"] = [navigation: true]
        if let session { context["session"] = ["name": session.name, "role": session.role] }
        let html = library.render(context, withTemplate: template) ?? ""
        return Response(status: status, headers: Self.headers(contentType: "text/html; charset=utf-8", personal: session != nil || template == "login"),
                        body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// A page that only says something (a refusal, what to do next).
    func message(title: String, message: String, next: String?, status: HTTPResponse.Status) -> Response {
        page("message", title: title, values: ["message": message, "next": next.map { [$0] } ?? []], navigation: "", status: status)
    }

    /// A static asset (the style sheet, the audit script).
    static func asset(_ bytes: [UInt8], contentType: String) -> Response {
        var headers = Self.headers(contentType: contentType, personal: false)
        headers[.cacheControl] = "public, max-age=300"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Headers every web response carries; a page shown to a signed-in participant is never stored.
    static func headers(contentType: String, personal: Bool) -> HTTPFields {
        var headers: HTTPFields = [.contentType: contentType]
        headers[.contentSecurityPolicy] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        headers[.xContentTypeOptions] = "nosniff"
        for (name, value) in [("Referrer-Policy", "same-origin"), ("X-Frame-Options", "DENY")] {
            if let name = HTTPField.Name(name) { headers[name] = value }
        }
        headers[.cacheControl] = personal ? "no-store" : "no-cache"
        return headers
    }
}

/// Who a page is shown to, in its header.
struct WebSessionView: Sendable {
    let name: String
    let role: String
}
