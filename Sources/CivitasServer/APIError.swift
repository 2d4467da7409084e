import CivitasBroker
import CivitasCrypto
import HTTPTypes
import Hummingbird
import NIOCore

/// An error the API reports to the client: a status, a stable code and a message naming the
/// problem; for refused uploads, the list of problems (row, field, reason). Body:
/// `{"error":{"code":…,"message":…,"details":[…]}}`. Never carries a secret or a record.
public struct APIError: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public let details: [String]
    /// Extra response headers (Allow on 405, Retry-After on 503).
    public let headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, details: [String] = [], headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var error: [String: JSONValue] = ["code": .string(code), "message": .string(message)]
        if !details.isEmpty { error["details"] = .array(details.map(JSONValue.string)) }
        var response = JSONResponse.make(status: status, .object(["error": .object(error)]))
        response.headers.append(contentsOf: headers)
        return response
    }

    /// The one mapping of the broker's refusals to HTTP: its stable code, message and evidence, with a status.
    init(_ error: BrokerError) {
        let status: HTTPResponse.Status = switch error.code {
        case .notFound: .notFound
        case .forbidden, .purposeNotAllowed: .forbidden
        case .replayed, .unauthorized: .unauthorized
        case .duplicate, .agreementNotActive, .budgetExhausted, .conflict, .previousBatchMissing: .conflict
        case .invalid, .invalidBatch, .invalidSchema, .kUnreachable, .nothingToRelease, .badSignature: .unprocessableContent
        case .busy: .serviceUnavailable
        }
        self.init(status, error.code.rawValue, error.message, details: error.details,
                  headers: error.code == .busy ? [.retryAfter: "1"] : [:])
    }

    static func unauthorized(_ message: String) -> APIError { APIError(.unauthorized, "unauthorized", message) }
    static func forbidden(_ message: String) -> APIError { APIError(.forbidden, "forbidden", message) }
    static func badRequest(_ message: String) -> APIError { APIError(.badRequest, "bad_request", message) }
    static func notFound(_ message: String) -> APIError { APIError(.notFound, "not_found", message) }
    static func conflict(_ message: String) -> APIError { APIError(.conflict, "conflict", message) }
}

/// Canonical JSON responses.
enum JSONResponse {
    static func make(status: HTTPResponse.Status = .ok, _ value: JSONValue, contentType: String = "application/json") -> Response {
        let bytes = ((try? CanonicalJSON.encode(value)) ?? Array("{}".utf8)) + [0x0A]
        return Response(status: status, headers: [.contentType: contentType],
                        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
