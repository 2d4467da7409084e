import CivitasBroker
import CivitasCrypto
import CivitasPrivacy
import CivitasModel
import Foundation
import HTTPTypes
import Hummingbird
import NIOPosix
import Logging
import Prometheus

/// What the broker holds at once across all requests: request bodies in memory, spooled uploads
/// on disk, envelopes being read from the store. Past each, requests are answered 503 with
/// `Retry-After` rather than held.
public struct ServiceLimits: Sendable, Equatable {
    public var bodyBytesInFlight: Int
    public var spooledBytes: Int
    public var envelopeReaders: Int

    public init(bodyBytesInFlight: Int = BrokerAPI.maximumBodyBytesInFlight, spooledBytes: Int = BrokerAPI.maximumSpooledBytes,
                envelopeReaders: Int = BrokerAPI.maximumEnvelopeReaders) {
        self.bodyBytesInFlight = bodyBytesInFlight
        self.spooledBytes = spooledBytes
        self.envelopeReaders = envelopeReaders
    }
}

/// The broker's HTTP API: public routes (health, metrics, OpenAPI, catalog) and routes that
/// need a signed request from a registered participant with the right role.
public struct BrokerAPI: Sendable {
    /// Largest request body accepted (a batch upload).
    public static let maximumBodySize = 64 << 20
    /// Request-body bytes all requests may hold at once by default (each authenticated before it is read).
    public static let maximumBodyBytesInFlight = 2 * maximumBodySize
    let bodies: SharedAllowance
    /// Bytes all spooled uploads may hold on disk at once by default.
    public static let maximumSpooledBytes = 4 * maximumBodySize
    let spooledBytes: SharedAllowance
    let catalogCache = StateVersionCache()
    let turtleCatalogCache = StateVersionCache()
    let participantsCache = StateVersionCache()
    /// Envelopes read from the store at once by default (each holds one of its readers while it downloads).
    public static let maximumEnvelopeReaders = 4
    let envelopeReaders: SharedAllowance
    static let idempotencyHeader = HTTPField.Name("Idempotency-Key")
    /// Names the idempotency key of the batch an upload follows (the part before it of a large file).
    static let followsHeader = HTTPField.Name("Follows-Idempotency-Key")

    let broker: Broker
    let metrics: PrometheusCollectorRegistry
    let clock: @Sendable () -> Int64
    /// The catalog's settings, read for each catalog built (the public URL may be known only once the server listens).
    let catalogSettings: @Sendable () -> CatalogSettings
    /// The URL partners are given (scheme, authority and any path prefix), when the operator set
    /// one: signatures are checked against it rather than against the scheme the broker listens
    /// with and the Host header.
    let publicURL: String?
    /// The scheme the broker listens with: `https` when it terminates TLS itself.
    let scheme: String
    /// The witnesses that cosign the log's checkpoints, if the operator configured any.
    let witnesses: CheckpointWitnesses?
    /// Whether signed requests must come with a TLS client certificate for the signing key.
    let clientCertificates: Bool
    /// The web view's templates (nil if they do not parse: the pages then answer 500 saying so).
    let webPages: WebPages?

    public init(broker: Broker, metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                catalog: @escaping @Sendable () -> CatalogSettings = { CatalogSettings() }, publicURL: String? = nil, tls: Bool = false,
                witnesses: CheckpointWitnesses? = nil, clientCertificates: Bool = false, limits: ServiceLimits = ServiceLimits(),
                clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.broker = broker
        self.bodies = SharedAllowance(limit: limits.bodyBytesInFlight)
        self.spooledBytes = SharedAllowance(limit: limits.spooledBytes)
        self.envelopeReaders = SharedAllowance(limit: limits.envelopeReaders)
        self.scheme = tls ? "https" : "http"
        self.witnesses = witnesses
        self.clientCertificates = clientCertificates
        self.catalogSettings = catalog
        self.publicURL = publicURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.metrics = metrics
        self.clock = clock
        webPages = try? WebPages()
    }

    /// The log's latest checkpoint, cosigned by the witnesses that answer when there are any.
    func latestCheckpoint() async throws -> String {
        try await brokerCallAsync {
            if let witnesses { try await witnesses.latestCheckpoint() } else { try broker.checkpoint() }
        }
    }

    /// The router with every route of the API.
    public func router() -> Router<CivitasRequestContext> {
        let router = Router(context: CivitasRequestContext.self)
        let table = RouteTable()
        let observed = BrokerMetrics(registry: metrics)
        router.add(middleware: RequestObserver(metrics: observed, routes: table))
        router.get("healthz") { _, _ in JSONResponse.make(["status": "ok"]) }
        router.get("metrics") { _, _ in
            let exposition = observed.exposition(figures: try broker.figures(), now: clock())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: exposition)))
        }
        router.get("openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        router.get("catalog") { request, _ in try catalog(request) }
        router.get("odrl/profile.jsonld") { _, _ in
            JSONResponse.make(["@context": AgreementPolicy.odrlProfileContext], contentType: "application/ld+json")
        }
        router.get("log/checkpoint") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: try await latestCheckpoint())))
        }
        router.get("log/consistency") { request, _ in try consistencyProof(request) }

        let signed = router.group().add(middleware: SignatureAuthenticator(broker: broker, clock: clock, origin: publicURL, scheme: scheme, bodies: bodies,
                                                                                   spooledBytes: spooledBytes, spools: Self.spoolsBody,
                                                                                   clientCertificates: clientCertificates))
        signed.post("admin/participants") { _, context in try addParticipant(context) }
        signed.get("participants") { _, context in try listParticipants(context) }
        signed.post("participants/keys") { _, context in try askKeyRotation(context) }
        signed.get("participants/keys") { _, context in try pendingKeyRotations(context) }
        signed.post("participants/keys/:key_id/approve") { _, context in try approveKeyRotation(context) }
        signed.post("datasets") { _, context in try registerDataset(context) }
        signed.get("datasets/:dataset") { _, context in try showDataset(context) }
        signed.post("datasets/:dataset/batches") { request, context in try await uploadBatch(request, context) }
        addExchangeRoutes(to: signed)
        addWebRoutes(to: router, signed: signed)
        table.load(router.routes)
        return router
    }

    // MARK: Handlers

    /// Runs blocking broker work (the database, encryption, the k-anonymity search) on NIO's pool
    /// for blocking work, so the server's own threads keep answering other requests meanwhile.
    func offloaded<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }

    func require(_ context: CivitasRequestContext, roles: Set<Participant.Role>) throws -> Participant {
        guard let participant = context.participant else { throw APIError.unauthorized("a signed request is required") }
        guard roles.contains(participant.role) else {
            throw APIError.forbidden("\(participant.keys.name) (\(participant.role.rawValue)) may not do this; it needs the role \(roles.map(\.rawValue).sorted().joined(separator: " or "))")
        }
        return participant
    }

    func jsonBody(_ context: CivitasRequestContext) throws -> [String: JSONValue] {
        guard let object = (try? JSONParser.parse(context.body))?.objectValue else {
            throw APIError.badRequest("the body must be a JSON object")
        }
        return object
    }

    func now() -> UTCTime {
        UTCTime(secondsSince1970: clock())
    }

    func addParticipant(_ context: CivitasRequestContext) throws -> Response {
        let registrar = try require(context, roles: [.operator_])
        let body = try jsonBody(context)
        if let unknown = Set(body.keys).subtracting(["name", "role", "ed25519", "x25519"]).sorted().first {
            throw APIError.badRequest("a participant has no member '\(unknown.prefix(60))' (name, role, ed25519, x25519)")
        }
        guard let name = body["name"]?.stringValue, let roleName = body["role"]?.stringValue,
              let ed = body["ed25519"]?.stringValue.flatMap(Base64.decode), let x = body["x25519"]?.stringValue.flatMap(Base64.decode) else {
            throw APIError.badRequest("a participant needs name, role, ed25519 and x25519 (base64)")
        }
        guard let role = Participant.Role(rawValue: roleName) else {
            throw APIError.badRequest("role must be one of \(Participant.Role.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let keys: PublicKeys
        do { keys = try PublicKeys(name: name, signingKey: ed, encryptionKey: x) } catch let error as CryptoError {
            throw APIError.badRequest(error.message)
        }
        let participant = try broker.registerParticipant(keys, role: role, by: registrar, now: now())
        return JSONResponse.make(status: .created, Self.json(participant))
    }

    /// `POST /participants/keys`: the signing participant asks to sign with a new key.
    func askKeyRotation(_ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        let body = try jsonBody(context)
        if let unknown = Set(body.keys).subtracting(["name", "ed25519", "x25519"]).sorted().first {
            throw APIError.badRequest("a key has no member '\(unknown.prefix(60))' (name, ed25519, x25519)")
        }
        guard let name = body["name"]?.stringValue, let ed = body["ed25519"]?.stringValue.flatMap(Base64.decode),
              let x = body["x25519"]?.stringValue.flatMap(Base64.decode) else {
            throw APIError.badRequest("a key needs name, ed25519 and x25519 (base64)")
        }
        let keys: PublicKeys
        do { keys = try PublicKeys(name: name, signingKey: ed, encryptionKey: x) } catch let error as CryptoError {
            throw APIError.badRequest(error.message)
        }
        guard let signingKey = context.signingKey else { throw APIError.unauthorized("the request names no signing key") }
        let asked = try broker.requestKeyRotation(to: keys, by: participant, signedWith: signingKey, now: now())
        return JSONResponse.make(status: .accepted, ["key_id": .string(asked.keys.keyID.hex), "participant": .string(asked.participant.hex),
                                                     "state": .string("pending"), "requested": .string(asked.requested.rfc3339)])
    }

    /// `GET /participants/keys`: the rotations awaiting the operator.
    func pendingKeyRotations(_ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: [.operator_])
        let keys = try broker.pendingKeyRotations(for: participant).map { key -> JSONValue in
            .object(["key_id": .string(key.keys.keyID.hex), "participant": .string(key.participant.hex), "name": .string(key.keys.name),
                     "requested": .string(key.requested.rfc3339)])
        }
        return JSONResponse.make(["keys": .array(keys)])
    }

    /// `POST /participants/keys/{key_id}/approve`: the operator approves a rotation.
    func approveKeyRotation(_ context: CivitasRequestContext) throws -> Response {
        let approver = try require(context, roles: [.operator_])
        guard let keyID = KeyID(hex: try parameter(context, "key_id")) else { throw APIError.badRequest("key_id is 32 hex digits") }
        let rotation = try broker.approveKeyRotation(keyID, by: approver, now: now())
        return JSONResponse.make(["key_id": .string(rotation.key.keys.keyID.hex), "participant": .string(rotation.key.participant.hex),
                                  "state": .string("approved"), "approved": .string(rotation.key.approved?.rfc3339 ?? ""),
                                  "replaced_key": .string(rotation.replaced.keyID.hex),
                                  "replaced_key_retires": .string(rotation.replacedRetires.rfc3339)])
    }

    /// Every participant may list them all; the encoded list is kept until the broker's state changes
    /// (registrations and key rotations are logged, so they change it).
    func listParticipants(_ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        let (body, _) = try participantsCache.current(version: broker.stateVersion) {
            try CanonicalJSON.encode(.object(["participants": .array(try brokerCall { try broker.participants(for: participant) }.map(Self.json))])) + [0x0A]
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    func registerDataset(_ context: CivitasRequestContext) throws -> Response {
        let publisher = try require(context, roles: [.agency])
        let body = try jsonBody(context)
        guard let id = body["id"]?.stringValue, let schema = body["schema"], schema.objectValue != nil else {
            throw APIError.badRequest("a dataset needs an id and a schema (a JSON object)")
        }
        var purposes: [String] = []
        if let offered = body["purposes"] {
            guard case .array(let items) = offered, let codes = Optional(items.compactMap(\.stringValue)), codes.count == items.count else {
                throw APIError.badRequest("purposes must be a list of purpose codes")
            }
            purposes = codes
        }
        let dataset = try broker.registerDataset(id: id, schema: schema, purposes: purposes, by: publisher, now: now())
        return JSONResponse.make(status: .created, Self.json(dataset))
    }

    func showDataset(_ context: CivitasRequestContext) throws -> Response {
        _ = try require(context, roles: Set(Participant.Role.allCases))
        let id = context.parameters.get("dataset") ?? ""
        let dataset = try broker.dataset(id)
        guard case .object(var shown) = Self.json(dataset) else { return JSONResponse.make(Self.json(dataset)) }
        // The schema (what the catalog also describes), so a publisher can draft an agreement from it.
        shown["schema"] = (try? JSONParser.parse(dataset.schema)) ?? .null
        return JSONResponse.make(.object(shown))
    }

    /// Batch uploads (CSV, JSON Lines, NGSI) are read a block at a time, so their bodies are
    /// spooled to a temporary file instead of memory; other bodies are read whole.
    static func spoolsBody(_ request: Request) -> Bool {
        let path = request.uri.path.split(separator: "/")
        return request.method == .post && path.count == 3 && path[0] == "datasets" && path[2] == "batches"
    }

    /// The request's media type, without parameters (`text/csv; charset=utf-8` → `text/csv`).
    static func mediaType(_ request: Request) -> String {
        request.headers[.contentType]?.split(separator: ";").first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
    }

    /// `POST /datasets/{id}/batches`: a batch that follows one this node is still storing waits
    /// for it (without holding a thread), then is stored on the pool for blocking work.
    func uploadBatch(_ request: Request, _ context: CivitasRequestContext) async throws -> Response {
        let publisher = try require(context, roles: [.agency])
        let id = context.parameters.get("dataset") ?? ""
        let previous = Self.followsHeader.flatMap { request.headers[$0] }
        if let previous { await broker.batchStored(dataset: id, idempotencyKey: previous) }
        return try await offloaded { try storeUploadedBatch(request, context, dataset: id, by: publisher, follows: previous) }
    }

    private func storeUploadedBatch(_ request: Request, _ context: CivitasRequestContext, dataset id: String, by publisher: Participant,
                                    follows previous: String?) throws -> Response {
        let contentType = Self.mediaType(request)
        let format: BatchFormat
        switch contentType {
        case "text/csv": format = .csv
        case "application/x-ndjson", "application/jsonl": format = .jsonLines
        case "application/ld+json", "application/json": format = .ngsi
        default:
            throw APIError(.unsupportedMediaType, "unsupported_media_type",
                           "batches are text/csv, application/x-ndjson (JSON Lines) or application/ld+json (NGSI-LD, normalized or key-values)")
        }
        let idempotencyKey = Self.idempotencyKey(request)
        let spooled = context.spooled, inMemory = context.body
        let body = { () -> ByteSource in spooled?.source() ?? MemorySource(inMemory) }
        let batch = try broker.publishBatch(dataset: id, format: format, body: body, bodySHA256: context.bodySHA256, idempotencyKey: idempotencyKey,
                                            follows: previous, by: publisher, now: now()) { feed, error in
            context.logger.warning("feed window not delivered", metadata: ["feed": "\(feed)", "error": "\(error)"])
        }
        return JSONResponse.make(status: batch.replayed ? .ok : .created, .object([
            "dataset": .string(id), "sequence": .number(Double(batch.sequence)), "records": .number(Double(batch.records)),
            "content_sha256": .string(Hex.encode(batch.contentSHA256)), "replayed": .bool(batch.replayed),
        ]))
    }

    /// `GET /log/consistency?from=N&to=M`: the RFC 9162 consistency proof between the log's first
    /// N and first M entries (M defaults to the log's size now), public like the checkpoints it joins.
    func consistencyProof(_ request: Request) throws -> Response {
        guard let from = try Self.integerQuery(request, "from") else { throw APIError.badRequest("give from=N, the size of the checkpoint you hold") }
        let to = try Self.integerQuery(request, "to").map(UInt64.init)
        let (size, proof) = try brokerCall { try broker.consistencyProof(from: UInt64(from), to: to) }
        return JSONResponse.make(["from": .number(Double(from)), "to": .number(Double(size)), "proof": .array(proof.map { .string(Hex.encode($0)) })])
    }

    /// The catalog, served from a copy kept until the broker's state changes, with an ETag; a
    /// request whose `If-None-Match` names the current one is answered 304 without a body.
    func catalog(_ request: Request) throws -> Response {
        let turtle = Self.prefersTurtle(request.headers[.accept])
        let cache = turtle ? turtleCatalogCache : catalogCache
        // Kept until the broker's state changes or the hour turns (the quality figures' ages are in hours).
        let time = now()
        let hour = UInt64(max(0, time.secondsSince1970 / 3600))
        let (body, etag) = try cache.current(version: broker.stateVersion ^ (hour << 40)) { try catalogBody(turtle: turtle, now: time) }
        var headers: HTTPFields = [.contentType: turtle ? "text/turtle; charset=utf-8" : "application/ld+json", .eTag: etag,
                                   .cacheControl: "no-cache", .vary: "Accept"]
        if let asked = request.headers[.ifNoneMatch], asked.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == etag }) {
            headers[.contentType] = nil
            return Response(status: .notModified, headers: headers)
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// Whether an Accept header asks for Turtle rather than JSON-LD (the default).
    static func prefersTurtle(_ accept: String?) -> Bool {
        guard let accept = accept?.lowercased(), accept.contains("text/turtle") else { return false }
        let turtle = accept.range(of: "text/turtle")?.lowerBound
        let json = [accept.range(of: "application/ld+json")?.lowerBound, accept.range(of: "application/json")?.lowerBound].compactMap { $0 }.min()
        guard let turtle else { return false }
        return json.map { turtle < $0 } ?? true
    }

    /// The catalog as DCAT-AP 3 (``CatalogGraph``), in JSON-LD or Turtle. Nothing personal.
    func catalogBody(turtle: Bool, now: UTCTime) throws -> [UInt8] {
        let (brokerOperator, datasets) = try broker.catalog()
        var quality: [String: DatasetQualityFigures] = [:]
        for (dataset, _) in datasets { quality[dataset.id] = try broker.qualityFigures(of: dataset, now: now) }
        let graph = try CatalogGraph.build(settings: catalogSettings(), brokerOperator: brokerOperator, datasets: datasets, quality: quality)
        if turtle { return Array(graph.turtle(prefixes: Vocabulary.prefixes).utf8) }
        return try CanonicalJSON.encode(graph.jsonLD(prefixes: Vocabulary.prefixes)) + [0x0A]
    }

    static func json(_ participant: Participant) -> JSONValue {
        .object(["key_id": .string(participant.keys.keyID.hex), "name": .string(participant.keys.name),
                 "role": .string(participant.role.rawValue), "ed25519": .string(Base64.encode(participant.keys.signingKey)),
                 "x25519": .string(Base64.encode(participant.keys.encryptionKey)), "registered": .string(participant.registered.rfc3339),
                 "current_key_id": .string(participant.currentKeys.keyID.hex)])
    }

    static func json(_ dataset: Dataset) -> JSONValue {
        .object(["id": .string(dataset.id), "publisher": .string(dataset.publisher.hex),
                 "schema_sha256": .string(Hex.encode(dataset.schemaSHA256)),
                 "purposes": .array(dataset.purposes.map(JSONValue.string)), "registered": .string(dataset.registered.rfc3339)])
    }
}

/// Records every request in the metrics (``BrokerMetrics``, which /metrics serves) and in one
/// structured log line carrying the request id.
/// Logs name the method, route, status and duration only: never a body, a header value or a query.
struct RequestObserver: RouterMiddleware {
    typealias Context = CivitasRequestContext
    let metrics: BrokerMetrics
    let routes: RouteTable
    static let requestIDHeader = HTTPField.Name("Request-Id")

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        do {
            var response = try await next(request, context)
            if let name = Self.requestIDHeader { response.headers[name] = context.id }
            record(request, context: context, status: response.status.code, code: nil, started: started)
            return response
        } catch let failure as APIError {
            throw refused(failure, request, context: context, started: started)
        } catch let failure as BrokerError {
            throw refused(APIError(failure), request, context: context, started: started)
        } catch let error as HTTPResponseError where error.status == .notFound && (context.endpointPath ?? "NotFound") == "NotFound" {
            // No route takes the request: name the methods its path accepts, if any, in the error body.
            let allowed = routes.methods(for: request.uri.path)
            let refusal = allowed.isEmpty
                ? APIError.notFound("no route \(request.uri.path.prefix(200)); see /openapi.json")
                : APIError(.methodNotAllowed, "method_not_allowed", "\(request.method.rawValue) is not accepted here; use \(allowed.joined(separator: ", "))",
                           headers: [.allow: allowed.joined(separator: ", ")])
            record(request, context: context, status: refusal.status.code, code: refusal.code, started: started)
            throw RequestIDError(error: refusal, requestID: context.id)
        } catch let error as HTTPResponseError {
            record(request, context: context, status: error.status.code, code: nil, started: started)
            throw error
        } catch {
            record(request, context: context, status: 500, code: "internal", started: started)
            context.logger.error("request failed", metadata: ["error_type": "\(type(of: error))"])
            throw error
        }
    }

    /// Records a refusal and returns it with the request id.
    private func refused(_ error: APIError, _ request: Request, context: Context, started: ContinuousClock.Instant) -> RequestIDError {
        // Refusals of authentication and role name the reason (about the signature, never the data).
        let reason = error.status == .unauthorized || error.status == .forbidden ? error.message : nil
        record(request, context: context, status: error.status.code, code: error.code, reason: reason, started: started)
        return RequestIDError(error: error, requestID: context.id)
    }

    private func record(_ request: Request, context: Context, status: Int, code: String?, reason: String? = nil,
                        started: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - started
        let route = context.endpointPath ?? "unmatched"
        metrics.answered(method: request.method.rawValue, route: route, status: status, code: code, duration: elapsed)
        var metadata: Logger.Metadata = ["method": "\(request.method.rawValue)", "route": "\(route)", "status": "\(status)",
                                         "duration_ms": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)"]
        if let code { metadata["error"] = "\(code)" }
        if let reason { metadata["reason"] = "\(reason)" }
        context.logger.log(level: status >= 500 ? .error : .info, "request", metadata: metadata)
    }
}

/// An API error that also carries the request id, so a refused client can quote it.
struct RequestIDError: HTTPResponseError {
    let error: APIError
    let requestID: String
    var status: HTTPResponse.Status { error.status }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try error.response(from: request, context: context)
        if let name = RequestObserver.requestIDHeader { response.headers[name] = requestID }
        return response
    }
}

/// An encoded answer (the catalog, the participant list) and its ETag, kept while the broker's
/// state version stays the same.
final class StateVersionCache: @unchecked Sendable {
    private let lock = NSLock()
    private var kept: (version: UInt64, body: [UInt8], etag: String)?

    /// The answer for `version`: the kept copy, or `build`'s bytes, kept.
    func current(version: UInt64, build: () throws -> [UInt8]) throws -> (body: [UInt8], etag: String) {
        if let kept = lock.withLock({ kept }), kept.version == version { return (kept.body, kept.etag) }
        let body = try build()
        let etag = "\"" + Hex.encode(Array(SHA256Hasher.hash(body).prefix(16))) + "\""
        lock.withLock { kept = (version, body, etag) }
        return (body, etag)
    }
}
