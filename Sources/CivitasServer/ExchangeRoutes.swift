import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasModel
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Routes for agreements, consent, releases, aggregates, feeds, deliveries and the log.
extension BrokerAPI {
    /// Longest a pull or an event stream waits for a new window, in seconds.
    public static let maximumWait = 60
    /// Most windows returned by one pull.
    public static let maximumPulled = 100
    static let envelopeType = "application/vnd.civitas.envelope"

    func addExchangeRoutes(to signed: RouterGroup<CivitasRequestContext>) {
        signed.post("agreements") { _, context in try offerAgreement(context) }
        signed.get("agreements") { _, context in try listAgreements(context) }
        signed.get("agreements/:agreement") { _, context in try showAgreement(context) }
        signed.get("agreements/:agreement/odrl") { _, context in try agreementODRL(context) }
        signed.post("agreements/:agreement/accept") { _, context in try acceptAgreement(context) }
        signed.post("agreements/:agreement/revoke") { _, context in try revokeAgreement(context) }
        signed.post("agreements/:agreement/releases") { request, context in
            let key = Self.idempotencyKey(request)
            return try await offloaded { try requestRelease(context, requestKey: key) }
        }
        signed.post("agreements/:agreement/aggregates") { request, context in
            let key = Self.idempotencyKey(request)
            return try await offloaded { try requestAggregate(context, requestKey: key) }
        }
        signed.post("agreements/:agreement/synthetic") { request, context in
            let key = Self.idempotencyKey(request)
            return try await offloaded { try requestSynthetic(context, requestKey: key) }
        }
        signed.post("agreements/:agreement/feeds") { _, context in try subscribe(context) }
        signed.get("feeds/:feed") { _, context in try showFeed(context) }
        signed.get("feeds/:feed/deliveries") { request, context in try await pull(request, context) }
        signed.get("feeds/:feed/events") { request, context in try events(request, context) }
        signed.post("feeds/:feed/ack") { _, context in try acknowledge(context) }
        signed.get("deliveries/:delivery") { _, context in try await offloaded { try fetchDelivery(context) } }
        signed.post("consent") { request, context in try await offloaded { try recordConsent(request, context) } }
        signed.get("log/export") { _, context in try await exportLog(context) }
        signed.get("log/entries/:index/proof") { _, context in try await inclusionEvidence(context) }
    }

    // MARK: Agreements

    func offerAgreement(_ context: CivitasRequestContext) throws -> Response {
        let publisher = try require(context, roles: [.agency])
        let body = try jsonBody(context)
        guard let policy = body["policy"], let signature = body["signature"]?.stringValue.flatMap(Base64.decode), signature.count == 64 else {
            throw APIError.badRequest("an offer needs the policy and the publisher's signature over its hash (base64)")
        }
        let agreement = try brokerCall { try broker.offerAgreement(policy: policy, signature: signature, by: publisher, now: now()) }
        return JSONResponse.make(status: .created, Self.json(agreement))
    }

    func listAgreements(_ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        let agreements = try brokerCall { try broker.agreements(for: participant) }
        return JSONResponse.make(.object(["agreements": .array(agreements.map(Self.json))]))
    }

    func showAgreement(_ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        let (agreement, _) = try brokerCall { try broker.agreement(parameter(context, "agreement"), for: participant) }
        var json = Self.json(agreement).objectValue ?? [:]
        json["policy"] = (try? JSONParser.parse(agreement.policy)) ?? .null
        json["offer_signature"] = .string(Base64.encode(agreement.offerSignature))
        if let accept = agreement.acceptSignature { json["accept_signature"] = .string(Base64.encode(accept)) }
        return JSONResponse.make(.object(json))
    }

    func agreementODRL(_ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        let (agreement, policy) = try brokerCall { try broker.agreement(parameter(context, "agreement"), for: participant) }
        return JSONResponse.make(policy.odrl(agreed: agreement.accepted), contentType: "application/ld+json")
    }

    func acceptAgreement(_ context: CivitasRequestContext) throws -> Response {
        let partner = try require(context, roles: [.partner])
        guard let signature = try jsonBody(context)["signature"]?.stringValue.flatMap(Base64.decode), signature.count == 64 else {
            throw APIError.badRequest("an acceptance needs the partner's signature over the policy hash (base64)")
        }
        let agreement = try brokerCall { try broker.acceptAgreement(parameter(context, "agreement"), signature: signature, by: partner, now: now()) }
        return JSONResponse.make(Self.json(agreement))
    }

    func revokeAgreement(_ context: CivitasRequestContext) throws -> Response {
        let party = try require(context, roles: [.agency, .partner])
        let agreement = try brokerCall { try broker.revokeAgreement(parameter(context, "agreement"), by: party, now: now()) }
        return JSONResponse.make(Self.json(agreement))
    }

    // MARK: Releases and aggregates

    /// The request's `Idempotency-Key`, if it carries one.
    static func idempotencyKey(_ request: Request) -> String? {
        idempotencyHeader.flatMap { request.headers[$0] }
    }

    func requestRelease(_ context: CivitasRequestContext, requestKey key: String?) throws -> Response {
        let partner = try require(context, roles: [.partner])
        guard let purpose = try jsonBody(context)["purpose"]?.stringValue else { throw APIError.badRequest("a release request names its purpose") }
        let result = try brokerCall { try broker.release(agreement: parameter(context, "agreement"), purpose: purpose, by: partner, now: now(), requestKey: key) }
        return JSONResponse.make(status: result.replayed ? .ok : .created, Self.json(result))
    }

    func requestAggregate(_ context: CivitasRequestContext, requestKey key: String?) throws -> Response {
        let partner = try require(context, roles: [.partner])
        let body = try jsonBody(context)
        guard let purpose = body["purpose"]?.stringValue, let statisticName = body["statistic"]?.stringValue,
              let statistic = AggregateRequest.Statistic(rawValue: statisticName), let epsilon = body["epsilon"]?.numberValue else {
            throw APIError.badRequest("an aggregate request needs purpose, statistic (count, sum or mean) and epsilon")
        }
        var groupBy: [String] = []
        if let value = body["group_by"] {
            guard case .array(let items) = value, items.count <= 8, let names = Optional(items.compactMap(\.stringValue)), names.count == items.count else {
                throw APIError.badRequest("group_by must be a list of at most 8 field names")
            }
            groupBy = names
        }
        let scaled = (epsilon * 1_000_000).rounded()
        guard epsilon > 0, epsilon <= 1000, abs(scaled - epsilon * 1_000_000) < 1e-3 else {
            throw APIError.badRequest("epsilon must be above 0, at most 1000, with at most six decimals")
        }
        let request = AggregateRequest(purpose: purpose, statistic: statistic, measure: body["measure"]?.stringValue, groupBy: groupBy,
                                       epsilonMicro: UInt64(scaled))
        let result = try brokerCall { try broker.aggregate(agreement: parameter(context, "agreement"), request: request, by: partner, now: now(), requestKey: key) }
        return JSONResponse.make(status: result.replayed ? .ok : .created, Self.json(result))
    }

    func requestSynthetic(_ context: CivitasRequestContext, requestKey key: String?) throws -> Response {
        let partner = try require(context, roles: [.partner])
        let body = try jsonBody(context)
        guard let purpose = body["purpose"]?.stringValue, let rho = body["rho"]?.numberValue else {
            throw APIError.badRequest("a synthetic request needs purpose and rho")
        }
        let scaled = (rho * 1_000_000).rounded()
        guard rho > 0, rho <= 1000, abs(scaled - rho * 1_000_000) < 1e-3 else {
            throw APIError.badRequest("rho must be above 0, at most 1000, with at most six decimals")
        }
        let result = try brokerCall {
            try broker.synthetic(agreement: parameter(context, "agreement"), purpose: purpose, rhoMicro: UInt64(scaled), by: partner, now: now(), requestKey: key)
        }
        return JSONResponse.make(status: result.replayed ? .ok : .created, Self.json(result))
    }

    func fetchDelivery(_ context: CivitasRequestContext) throws -> Response {
        let participant = try require(context, roles: [.partner, .auditor])
        let id = try parameter(context, "delivery")
        let envelope = try brokerCall { try broker.deliveryEnvelope(id, for: participant) }
        var headers: HTTPFields = [.contentType: Self.envelopeType]
        if let name = HTTPField.Name("Civitas-Log-Index") { headers[name] = String(envelope.logIndex) }
        guard envelopeReaders.reserve(1) else {
            throw APIError(.serviceUnavailable, "busy", "the broker is sending as many envelopes as it reads at once; retry shortly",
                           headers: [.retryAfter: "1"])
        }
        // Read from the store as it is sent, a piece at a time: the envelope is never held whole.
        let stream = EnvelopeStream(read: { [broker] each in
            try broker.readEnvelope(of: id, for: participant, pieceSize: EnvelopeStream.pieceSize, each)
        }, finished: { [envelopeReaders] in envelopeReaders.release(1) })
        let body = ResponseBody(contentLength: envelope.byteCount) { writer in
            do {
                for try await piece in stream { try await writer.write(piece) }
            } catch {
                stream.abandon()
                throw error
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: Feeds

    func subscribe(_ context: CivitasRequestContext) throws -> Response {
        let partner = try require(context, roles: [.partner])
        let body = try jsonBody(context)
        guard let purpose = body["purpose"]?.stringValue else { throw APIError.badRequest("a subscription names its purpose") }
        let feed = try brokerCall {
            try broker.subscribe(agreement: parameter(context, "agreement"), purpose: purpose, webhook: body["webhook"]?.stringValue, by: partner, now: now())
        }
        return JSONResponse.make(status: .created, Self.json(feed))
    }

    func showFeed(_ context: CivitasRequestContext) throws -> Response {
        let partner = try require(context, roles: [.partner])
        return JSONResponse.make(Self.json(try brokerCall { try broker.feed(parameter(context, "feed"), for: partner) }))
    }

    /// Windows after `after` (default: the last acknowledged), waiting up to `wait` seconds for one.
    func pull(_ request: Request, _ context: CivitasRequestContext) async throws -> Response {
        let partner = try require(context, roles: [.partner])
        let id = try parameter(context, "feed")
        let feed = try brokerCall { try broker.feed(id, for: partner) }
        let after = try Self.integerQuery(request, "after") ?? feed.acknowledged
        let wait = min(try Self.integerQuery(request, "wait") ?? 0, Int64(Self.maximumWait))
        let deadline = ContinuousClock.now + .seconds(wait)
        var version = broker.feedSignals.version(of: id)
        var deliveries = try brokerCall { try broker.windows(of: id, after: after, limit: Self.maximumPulled, for: partner) }
        while deliveries.isEmpty, ContinuousClock.now < deadline {
            await Self.waitForWindow(of: id, after: version, until: deadline, signals: broker.feedSignals)
            version = broker.feedSignals.version(of: id)
            deliveries = try brokerCall { try broker.windows(of: id, after: after, limit: Self.maximumPulled, for: partner) }
        }
        return JSONResponse.make(.object([
            "feed": .string(id), "acknowledged": .number(Double(feed.acknowledged)),
            "deliveries": .array(deliveries.map(Self.json)),
        ]))
    }

    /// Waits for the broker to signal a new window of `feed`, and at most five seconds at a time, so
    /// that a window another broker process delivered into the same database is seen too.
    static func waitForWindow(of feed: String, after version: UInt64, until deadline: ContinuousClock.Instant, signals: FeedSignals) async {
        await signals.wait(for: feed, after: version, until: min(deadline, ContinuousClock.now + .seconds(5)))
    }

    /// Server-Sent Events: one `delivery` event per window after `after` (or Last-Event-ID), for up to `wait` seconds.
    func events(_ request: Request, _ context: CivitasRequestContext) throws -> Response {
        let partner = try require(context, roles: [.partner])
        let id = try parameter(context, "feed")
        let feed = try brokerCall { try broker.feed(id, for: partner) }
        let lastEventID = HTTPField.Name("Last-Event-ID").flatMap { request.headers[$0] }.flatMap { Int64($0) }
        let start = try Self.integerQuery(request, "after") ?? lastEventID ?? feed.acknowledged
        let wait = min(try Self.integerQuery(request, "wait") ?? Int64(Self.maximumWait), Int64(Self.maximumWait))
        let body = ResponseBody { [broker] writer in
            var after = start
            let deadline = ContinuousClock.now + .seconds(wait)
            try await writer.write(ByteBuffer(string: ": civitas feed \(id)\nretry: 2000\n\n"))
            repeat {
                let version = broker.feedSignals.version(of: id)
                let deliveries = try broker.windows(of: id, after: after, limit: Self.maximumPulled, for: partner)
                for delivery in deliveries {
                    let data = String(decoding: try CanonicalJSON.encode(Self.json(delivery)), as: UTF8.self)
                    try await writer.write(ByteBuffer(string: "id: \(delivery.feedSequence ?? 0)\nevent: delivery\ndata: \(data)\n\n"))
                    after = delivery.feedSequence ?? after
                }
                if deliveries.isEmpty { await Self.waitForWindow(of: id, after: version, until: deadline, signals: broker.feedSignals) }
            } while ContinuousClock.now < deadline
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    func acknowledge(_ context: CivitasRequestContext) throws -> Response {
        let partner = try require(context, roles: [.partner])
        guard let through = try jsonBody(context)["through"]?.exactUnsignedInteger, through <= UInt64(Int64.max) else {
            throw APIError.badRequest("an acknowledgement names the last window received: {\"through\": N}")
        }
        let feed = try brokerCall { try broker.acknowledge(feed: parameter(context, "feed"), through: Int64(through), by: partner) }
        return JSONResponse.make(Self.json(feed))
    }

    // MARK: Consent and log

    /// Consent events → their receipts (docs/exchanges.md#consent), in one of three forms: one event
    /// object → that event's receipt with its batch; `{"events": [...]}` → `{"batch", "receipts"}`;
    /// JSON Lines (one event per line) → JSON Lines, the batch first, then one receipt per event.
    func recordConsent(_ request: Request, _ context: CivitasRequestContext) throws -> Response {
        let recorder = try require(context, roles: [.agency, .consentService])
        let contentType = Self.mediaType(request)
        let jsonLines = contentType == "application/jsonl" || contentType == "application/x-ndjson"
        let requests: [ConsentRequest]
        var single = false
        if jsonLines {
            requests = try ConsentLines.requests(jsonLines: context.body)
        } else {
            let body = try jsonBody(context)
            let items: [JSONValue]
            if body["events"] == nil {
                single = true
                items = [.object(body)]
            } else {
                guard case .array(let events)? = body["events"] else { throw APIError.badRequest("events must be a list of consent events") }
                items = events
            }
            requests = try items.enumerated().map { number, item in try ConsentLines.request(item, label: single ? "" : "event \(number + 1): ") }
        }
        let key = Self.idempotencyKey(request)
        let receipts = try brokerCall { try broker.recordConsent(requests, by: recorder, now: now(), requestKey: key) }
        if jsonLines {
            // Written as the socket takes it, in pieces below the allocator's large-block threshold:
            // ten thousand receipts are about 12 MB.
            let lines = try receipts.lines()
            let body = ResponseBody { writer in
                var lines = lines
                var piece: [UInt8] = []
                piece.reserveCapacity(72 << 10)
                while lines.write(to: &piece, atLeast: 64 << 10) {
                    try await writer.write(ByteBuffer(bytes: piece))
                    piece.removeAll(keepingCapacity: true)
                }
                try await writer.finish(nil)
            }
            return Response(status: receipts.replayed ? .ok : .created, headers: [.contentType: "application/jsonl"], body: body)
        }
        if single, case .object(var receipt) = try receipts.receiptJSON(0) {
            receipt["batch"] = try receipts.batchJSON()
            return JSONResponse.make(status: receipts.replayed ? .ok : .created, .object(receipt))
        }
        return JSONResponse.make(status: receipts.replayed ? .ok : .created, ["batch": try receipts.batchJSON(),
                                                    "receipts": .array(try (0..<receipts.count).map(receipts.receiptJSON))])
    }

    /// The whole log as an auditor's export (JSON Lines), checkpointed to its current size, streamed
    /// page by page.
    func exportLog(_ context: CivitasRequestContext) async throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        // Witnessed first, so that the export ends with the cosigned checkpoint.
        _ = try await latestCheckpoint()
        let exporter = try brokerCall { try broker.logExport(for: participant) }
        let body = ResponseBody { [exporter] writer in
            while let page = try exporter.nextPage() {
                try await writer.write(ByteBuffer(bytes: page))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/jsonl"], body: body)
    }

    /// One entry with its inclusion proof and a signed checkpoint covering it.
    func inclusionEvidence(_ context: CivitasRequestContext) async throws -> Response {
        let participant = try require(context, roles: Set(Participant.Role.allCases))
        guard let index = UInt64(try parameter(context, "index")) else { throw APIError.badRequest("the entry index is a whole number") }
        var evidence = try brokerCall { try broker.inclusionEvidence(index: index, for: participant) }
        if let witnesses {
            // A witness ahead of this checkpoint cosigned a later one (another node's): prove inclusion in that.
            for _ in 0..<3 {
                let (note, witnessIsAhead) = await witnesses.cosign(evidence.checkpoint)
                evidence = InclusionEvidence(entry: evidence.entry, index: evidence.index, proof: evidence.proof, checkpoint: note)
                guard witnessIsAhead else { break }
                evidence = try brokerCall { try broker.inclusionEvidence(index: index, for: participant) }
            }
        }
        return JSONResponse.make(try evidence.jsonValue())
    }

    // MARK: Helpers

    func parameter(_ context: CivitasRequestContext, _ name: String) throws -> String {
        guard let value = context.parameters.get(name), (1...128).contains(value.utf8.count) else { throw APIError.badRequest("missing \(name)") }
        return value
    }

    static func integerQuery(_ request: Request, _ name: String) throws -> Int64? {
        guard let text = request.uri.queryParameters[Substring(name)] else { return nil }
        guard let value = Int64(text), value >= 0 else { throw APIError.badRequest("query parameter \(name) must be a whole number") }
        return value
    }

    func brokerCallAsync<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as BrokerError {
            throw APIError(error)
        }
    }

    func brokerCall<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as BrokerError {
            throw APIError(error)
        } catch let error as PrivacyError {
            throw APIError(.unprocessableContent, "invalid", error.message)
        }
    }

    static func json(_ agreement: StoredAgreement) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(agreement.id), "dataset": .string(agreement.dataset), "publisher": .string(agreement.publisher.hex),
            "partner": .string(agreement.partner.hex), "state": .string(agreement.state.rawValue),
            "policy_sha256": .string(Hex.encode(agreement.policySHA256)), "valid_from": .string(agreement.validFrom.rfc3339),
            "valid_until": .string(agreement.validUntil.rfc3339), "offered": .string(agreement.offered.rfc3339),
        ]
        // The budget in the agreement's unit: ε, or ρ (zCDP) when the policy states a rho_budget.
        let unit = (try? JSONParser.parse(agreement.policy))?["rho_budget"] == nil ? "epsilon" : "rho"
        object["budget_unit"] = .string(unit)
        object["\(unit)_budget"] = .string(MicroUnits.decimal(agreement.budgetMicro))
        object["\(unit)_spent"] = .string(MicroUnits.decimal(agreement.spentMicro))
        if let accepted = agreement.accepted { object["accepted"] = .string(accepted.rfc3339) }
        if let ended = agreement.ended { object["ended"] = .string(ended.rfc3339) }
        return .object(object)
    }

    static func json(_ delivery: Delivery) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(delivery.id), "agreement": .string(delivery.agreement), "kind": .string(delivery.kind.rawValue),
            "records": .number(Double(delivery.records)), "log_index": .number(Double(delivery.logIndex)),
            "envelope_bytes": .number(Double(delivery.envelope.count)), "created": .string(delivery.created.rfc3339),
        ]
        if let feed = delivery.feed { object["feed"] = .string(feed) }
        if let sequence = delivery.feedSequence { object["sequence"] = .number(Double(sequence)) }
        return .object(object)
    }

    static func json(_ result: ReleaseResult) -> JSONValue {
        var object = json(result.delivery).objectValue ?? [:]
        object.merge(result.figures) { _, figure in figure }
        object["replayed"] = .bool(result.replayed)
        return .object(object)
    }

    static func json(_ feed: Feed) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(feed.id), "agreement": .string(feed.agreement), "purpose": .string(feed.purpose),
            "next_batch": .number(Double(feed.nextBatch)), "delivered": .number(Double(feed.delivered)),
            "acknowledged": .number(Double(feed.acknowledged)), "created": .string(feed.created.rfc3339),
        ]
        if let webhook = feed.webhook {
            object["webhook"] = .string(webhook)
            object["pushed"] = .number(Double(feed.pushed))
        }
        return .object(object)
    }
}
