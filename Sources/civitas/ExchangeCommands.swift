import ArgumentParser
import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasTime
import Foundation
import NIOCore

struct AgreementsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agreements", abstract: "Offer, accept, revoke and show sharing agreements.",
        subcommands: [Draft.self, Offer.self, Accept.self, Revoke.self, Show.self, List.self])

    struct Draft: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "draft",
            abstract: "Write a policy to edit and offer, from the dataset's schema (its publisher).",
            discussion: """
                The draft names you as publisher and the partner by its key id, allows every field the schema does not \
                mark drop (each listed with its privacy class in the output), asks k = 5 with up to 5% of records \
                suppressed when a quasi-identifier is released, takes the purposes the dataset is offered for (or --purpose), \
                the legal basis consent when the records have a subject field (public-task otherwise), an ε budget of 1 and \
                a year's validity from today. It is checked as the broker will check it before it is written. Edit it, then \
                `civitas agreements offer FILE`.
                """)
        @OptionGroup var options: BrokerOptions
        @Option(help: "The dataset id.") var dataset: String
        @Option(help: ArgumentHelp("The partner: its name, its key id, or its .pub file.", valueName: "NAME|KEY-ID|FILE.pub")) var partner: String
        @Option(help: "The agreement's id (default: ag-DATASET-PARTNER).") var id: String?
        @Option(name: .customLong("purpose"), help: "A purpose (repeatable; default: the purposes the dataset is offered for).") var purposes: [String] = []
        @Option(help: "Write the policy here (refused if it exists; default: standard output).") var out: String?
        @OptionGroup var report: ReportFormat

        func run() async throws {
            guard !(report.json && out == nil) else { throw CLIError("--json reports on standard output: give the policy a file with --out FILE") }
            let client = try BrokerClient(options)
            let (_, shown) = try await client.send("GET", "/datasets/\(dataset)")
            guard let schemaValue = shown["schema"], schemaValue.objectValue != nil else { throw CLIError("the broker did not show the schema of \(dataset)") }
            let schema = try DatasetSchema.parse(try CanonicalJSON.encode(schemaValue))
            let partnerKeys = try await resolvePartner(client)
            var offered: [String] = []
            if case .array(let items)? = shown["purposes"] { offered = items.compactMap(\.stringValue) }
            let purposes = self.purposes.isEmpty ? offered : self.purposes
            guard !purposes.isEmpty else { throw CLIError("dataset \(dataset) is offered for no purpose: give --purpose") }
            let released = schema.fields.filter { $0.privacy != .drop }
            let quasi = released.contains { $0.privacy == .quasiIdentifier }
            let hasSubject = schema.fields.contains { $0.privacy == .subject }
            let today = UTCTime(secondsSince1970: Int64(Date().timeIntervalSince1970) / 86_400 * 86_400)
            let policy: JSONValue = .object([
                "agreement": .string(id ?? "ag-\(dataset)-\(partnerKeys.name)".lowercased()),
                "dataset": .string(dataset), "publisher": .string(client.keys.keyID.hex), "partner": .string(partnerKeys.keyID.hex),
                "purposes": .array(purposes.map(JSONValue.string)), "legal_basis": .string(hasSubject ? "consent" : "public-task"),
                "fields": .array(released.map { .string($0.name) }),
                "treatment": .object(quasi ? ["k": .number(5), "suppression_limit": .number(0.05)] : ["k": .number(1)]),
                "epsilon_budget": .number(1),
                "valid_from": .string(today.rfc3339),
                "valid_until": .string(UTCTime(secondsSince1970: today.secondsSince1970 + 365 * 86_400).rfc3339),
            ])
            // Checked as the broker will check it.
            do {
                try AgreementPolicy.parse(policy).check(against: schema, offeredPurposes: offered)
            } catch let error as BrokerError {
                throw CLIError("the draft does not pass the broker's checks: \(error.message)")
            }
            let text = String(decoding: try CanonicalJSON.encode(policy), as: UTF8.self)
            let pretty = try JSONSerialization.data(withJSONObject: try JSONSerialization.jsonObject(with: Data(text.utf8)),
                                                    options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            let classes = released.map { "\($0.name) (\($0.privacy.rawValue))" }.joined(separator: ", ")
            if let out {
                let file = try Files.AtomicFile(path: out, mode: 0o644)
                try Array(pretty + Data("\n".utf8)).withUnsafeBytes { try FileDescriptorSink(descriptor: file.descriptor, name: out).write($0) }
                try file.commit(replacing: false)
                if report.json {
                    try report.emit(["out": .string(out), "agreement": policy["agreement"] ?? .null, "dataset": .string(dataset),
                                     "partner": .string(partnerKeys.keyID.hex), "purposes": .array(purposes.map(JSONValue.string)),
                                     "fields": .array(released.map { ["name": .string($0.name), "privacy": .string($0.privacy.rawValue)] })], text: "")
                } else {
                    Output.warn("wrote \(out): fields \(classes); edit it, then civitas agreements offer \(out)")
                }
            } else {
                print(String(decoding: pretty, as: UTF8.self))
                Output.warn("fields \(classes)")
            }
        }

        /// The partner's keys, from a .pub file, or from the broker's participants by key id or name.
        func resolvePartner(_ client: BrokerClient) async throws -> PublicKeys {
            if partner.hasSuffix(".pub") { return try Files.publicKeys(partner) }
            let (_, json) = try await client.send("GET", "/participants")
            guard case .array(let participants)? = json["participants"] else { throw CLIError("the broker's answer lists no participants") }
            let partners = participants.filter { $0["role"]?.stringValue == "partner" }
            let matches = partners.filter { $0["key_id"]?.stringValue == partner || $0["name"]?.stringValue == partner }
            guard matches.count == 1, let match = matches.first, let name = match["name"]?.stringValue,
                  let signing = match["ed25519"]?.stringValue.flatMap(Base64.decode),
                  let encryption = match["x25519"]?.stringValue.flatMap(Base64.decode) else {
                throw CLIError(matches.isEmpty ? "no registered partner is named or has the key id \(partner)"
                                               : "\(matches.count) partners are named \(partner): give its key id")
            }
            return try PublicKeys(name: name, signingKey: signing, encryptionKey: encryption)
        }
    }

    struct Offer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "offer",
            abstract: "Offer an agreement (the dataset's publisher): the policy is signed over its canonical hash.",
            discussion: "The policy format is in docs/exchanges.md; Schemas/agreement-policy.schema.json describes it.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Argument(help: "The policy (JSON).") var policy: String

        func run() async throws {
            let client = try BrokerClient(options)
            let value = try JSONParser.parse(try Files.read(policy, limit: AgreementPolicy.maximumSize, what: "policy"))
            let hash = SHA256Hasher.hash(try CanonicalJSON.encode(value))
            let signature = client.keys.sign(AgreementPolicy.offerMessage(policySHA256: hash))
            let body = try CanonicalJSON.encode(["policy": value, "signature": .string(Base64.encode(signature))])
            let (_, json) = try await client.send("POST", "/agreements", body: body)
            try report.emit(["agreement": json["id"] ?? .null, "state": json["state"] ?? .string("offered"), "policy_sha256": .string(Hex.encode(hash))],
                            text: "offered agreement \(json["id"]?.stringValue ?? "?") (policy sha256 \(Hex.encode(hash)))")
        }
    }

    struct Accept: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "accept",
            abstract: "Accept an agreement (its partner): the policy is fetched, hashed here and the hash signed.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Argument(help: "Agreement id.") var agreement: String

        func run() async throws {
            let client = try BrokerClient(options)
            let (_, shown) = try await client.send("GET", "/agreements/\(agreement)")
            guard let policy = shown["policy"] else { throw CLIError("the broker returned no policy for \(agreement)") }
            let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
            guard Hex.encode(hash) == shown["policy_sha256"]?.stringValue else {
                throw CLIError("the policy of \(agreement) does not hash to the sha256 the broker states; not accepting")
            }
            let parsed = try AgreementPolicy.parse(policy)
            if !report.json { print("agreement \(agreement): \(parsed.dataset) for \(parsed.purposes.joined(separator: ", ")), fields \(parsed.fields.joined(separator: ",")), k = \(parsed.treatment.k), \(parsed.accounting == .rho ? "ρ" : "ε") budget \(MicroUnits.decimal(parsed.budgetMicro)), \(parsed.validFrom) to \(parsed.validUntil)") }
            let signature = client.keys.sign(AgreementPolicy.acceptMessage(policySHA256: hash))
            _ = try await client.send("POST", "/agreements/\(agreement)/accept",
                                      body: try CanonicalJSON.encode(["signature": .string(Base64.encode(signature))]))
            try report.emit(["agreement": .string(agreement), "state": .string("accepted"), "policy_sha256": .string(Hex.encode(hash)),
                             "dataset": .string(parsed.dataset), "purposes": .array(parsed.purposes.map(JSONValue.string)),
                             "valid_from": .string(parsed.validFrom.rfc3339), "valid_until": .string(parsed.validUntil.rfc3339)],
                            text: "accepted agreement \(agreement) (policy sha256 \(Hex.encode(hash)))")
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke an agreement (either party); nothing is released under it afterwards.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Argument(help: "Agreement id.") var agreement: String

        func run() async throws {
            _ = try await BrokerClient(options).send("POST", "/agreements/\(agreement)/revoke", body: Array("{}".utf8))
            try report.emit(["agreement": .string(agreement), "state": .string("revoked")], text: "revoked agreement \(agreement)")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Print an agreement (state, policy, signatures) or its ODRL form.")
        @OptionGroup var options: BrokerOptions
        @Flag(help: "Print the policy as an ODRL 2.2 Agreement (JSON-LD).") var odrl = false
        @Argument(help: "Agreement id.") var agreement: String

        func run() async throws {
            let (_, json) = try await BrokerClient(options).send("GET", "/agreements/\(agreement)\(odrl ? "/odrl" : "")")
            print(String(decoding: try CanonicalJSON.encode(json), as: UTF8.self))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the agreements you are a party to.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat

        func run() async throws {
            let (_, json) = try await BrokerClient(options).send("GET", "/agreements")
            guard case .array(let agreements)? = json["agreements"] else { throw CLIError("the broker's answer lists no agreements") }
            let rows = agreements.map { item in
                // The budget in the agreement's unit: ε, or ρ under zCDP.
                let unit = item["budget_unit"]?.stringValue ?? "epsilon"
                return [item["id"], item["state"], item["dataset"], item["partner"], .string(unit == "rho" ? "ρ" : "ε"), item["\(unit)_spent"], item["\(unit)_budget"]]
                    .map { $0?.stringValue ?? "?" }
            }
            try report.emit(["agreements": .array(agreements)],
                            text: Table.text(headers: ["ID", "STATE", "DATASET", "PARTNER", "UNIT", "SPENT", "BUDGET"], rows: rows))
        }
    }
}

struct ConsentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consent", abstract: "Record a subject's consent or its withdrawal (publisher or consent service).",
        discussion: """
            The broker stores only a keyed hash of the subject id and returns a receipt for each event (an ISO/IEC TS 27560 \
            record with its inclusion proof in the Merkle tree of its request's receipts, whose root the broker signs and logs). \
            A subjects file of any length is sent \(Broker.maximumConsentEvents) events per request, each request under the \
            idempotency key KEY-part-1, KEY-part-2, …: if the command is interrupted, run it again with the --idempotency-key it \
            printed, and the requests already recorded are answered with their first receipts (nothing is recorded twice) while \
            the rest are recorded.
            """)

    @OptionGroup var options: BrokerOptions
    @Argument(help: "grant or withdraw.") var action: String
    @Option(help: "Dataset id.") var dataset: String
    @Option(help: "The subject's id as it appears in the dataset's subject field.") var subject: String?
    @Option(help: "A file of subject ids, one per line: one event each.") var subjects: String?
    @Option(help: "Purpose code.") var purpose: String
    @Option(help: "The notice shown to the subject (id or URL).") var notice: String
    @Option(help: "How consent was collected, as recorded in each receipt: web-form, paper-form, phone… (default: web-form).") var method: String = "web-form"
    @Option(help: "Jurisdiction code.") var jurisdiction: String
    @Option(help: "Write the receipts here (JSON Lines: each request's batch line, then its receipts).") var receipt: String?
    @Option(name: .customLong("idempotency-key"),
            help: "Send the requests under KEY-part-1, KEY-part-2, …; running the command again with the same key records nothing twice (default: a fresh key, printed on standard error).")
    var idempotencyKey: String?
    @Flag(help: "Do not draw progress (it is drawn only when standard error is a terminal).") var noProgress = false
    @OptionGroup var report: ReportFormat

    func run() async throws {
        guard action == "grant" || action == "withdraw" else { throw CLIError("the action is grant or withdraw") }
        guard (subject == nil) != (subjects == nil) else { throw CLIError("give --subject ID or --subjects FILE") }
        let client = try BrokerClient(options)
        let output = try receipt.map { try ReceiptFile(path: $0) }
        let runKey = idempotencyKey ?? "consent-" + Hex.encode(Sodium.randomBytes(12))
        if idempotencyKey == nil && subjects != nil {
            Output.warn("request key \(runKey) (if this is interrupted, run the same command again with --idempotency-key \(runKey): nothing is recorded twice)")
        }
        let drawing = !noProgress && !report.json && subjects != nil && isatty(2) == 1
        var events = 0, requests = 0, replayed = 0
        var entries: [Int] = []
        // Every event is the same object but for its subject, which sorts last: write the rest once.
        var opening = try CanonicalJSON.encode(["action": .string(action), "collection_method": .string(method), "dataset": .string(dataset),
                                                "jurisdiction": .string(jurisdiction), "notice": .string(notice), "purpose": .string(purpose)])
        opening.removeLast()
        opening += Array(#","subject":"#.utf8)
        // Three requests in flight, so the broker works on two while another travels; answers are
        // written in the order of the file.
        var inFlight: [(count: Int, answer: Task<(status: Int, body: ByteBuffer), any Error>)] = []
        defer { for request in inFlight { request.answer.cancel() } }
        func finishOldest() async throws {
            let (count, task) = inFlight.removeFirst()
            let (status, answer): (Int, ByteBuffer)
            do { (status, answer) = try await task.value } catch let error as BrokerClient.TransportError {
                if drawing { Output.progress("\n") }
                throw CLIError("\(error.message); the broker may have recorded part \(requests + 1) meanwhile: run the same command again with --idempotency-key \(runKey) (nothing is recorded twice)")
            }
            guard let end = answer.readableBytesView.firstIndex(of: 0x0A),
                  let batch = try? JSONParser.parse(Array(answer.readableBytesView[..<end]))["batch"],
                  let index = batch["log_entry"]?["index"]?.exactUnsignedInteger, batch["log_entry"]?["receipts"]?.exactUnsignedInteger == UInt64(count) else {
                throw CLIError("the broker did not answer with a batch of \(count) receipts")
            }
            try output?.write(answer)
            events += count
            requests += 1
            if status == 200 { replayed += 1 }
            entries.append(Int(index))
            if drawing { Output.progress("\rrecording consent: \(events) events in \(requests) request(s)\(replayed > 0 ? ", \(replayed) recorded before" : "")") }
        }
        func send(_ ids: [String]) async throws {
            if inFlight.count == 3 { try await finishOldest() }
            var body: [UInt8] = []
            body.reserveCapacity(ids.count * (opening.count + 32))
            for id in ids {
                body += opening
                CanonicalJSON.appendString(id, to: &body)
                body += Array("}\n".utf8)
            }
            let key = subjects == nil ? (idempotencyKey ?? runKey) : "\(runKey)-part-\(requests + inFlight.count + 1)"
            inFlight.append((ids.count, Task { [body] in try await client.post("/consent", body: body, contentType: "application/jsonl", retryKey: key) }))
        }
        if let subject {
            try await send([subject])
        } else if let subjects {
            var chunk: [String] = []
            try await SubjectsFile.forEachLine(subjects) { id in
                chunk.append(id)
                if chunk.count == Broker.maximumConsentEvents {
                    try await send(chunk)
                    chunk.removeAll(keepingCapacity: true)
                }
            }
            if !chunk.isEmpty { try await send(chunk) }
        }
        while !inFlight.isEmpty { try await finishOldest() }
        if drawing { Output.progress("\n") }
        if let subjects, events == 0 { throw CLIError("\(subjects) lists no subjects") }
        try output?.commit()
        // Requests in flight may be logged in either order.
        let logged = entries.count == 1 ? "log entry \(entries[0])" : "log entries \(entries.min() ?? 0)–\(entries.max() ?? 0)"
        try report.emit(["action": .string(action), "dataset": .string(dataset), "purpose": .string(purpose), "events": .number(Double(events)),
                         "requests": .number(Double(requests)), "log_entries": .array(entries.sorted().map { .number(Double($0)) }),
                         "receipts": receipt.map(JSONValue.string) ?? .null, "method": .string(method), "idempotency_key": .string(runKey),
                         "requests_recorded_before": .number(Double(replayed))],
                        text: "consent \(action == "grant" ? "granted" : "withdrawn") for \(purpose): \(events) event(s) in \(requests) request(s)\(replayed > 0 ? " (\(replayed) recorded by an earlier run, answered with their first receipts)" : ""), \(logged), collected by \(method)\(self.method == "web-form" ? " (--method to record another way)" : "")\(receipt.map { "; receipts in \($0)" } ?? "")")
    }
}

/// A file of subject ids, one per line, read a block at a time.
enum SubjectsFile {
    /// Longest subject id read (the broker's limit on a consent field).
    static let maximumLine = Broker.maximumConsentFieldLength

    /// Calls `body` with each non-blank line, trimmed of spaces.
    static func forEachLine(_ path: String, _ body: (String) async throws -> Void) async throws {
        let descriptor = try EnvelopeFiles.openInput(path)
        defer { close(descriptor) }
        var block = [UInt8](repeating: 0, count: 1 << 20)
        var pending: [UInt8] = []
        var lineNumber = 0
        func emit(_ line: ArraySlice<UInt8>) async throws {
            lineNumber += 1
            // An ASCII line is trimmed of ASCII white space as bytes; any other by Foundation's
            // white space and newlines, which beyond ASCII include more.
            var trimmed = line
            while let first = trimmed.first, first == 0x20 || (0x09...0x0D).contains(first) { trimmed.removeFirst() }
            while let last = trimmed.last, last == 0x20 || (0x09...0x0D).contains(last) { trimmed.removeLast() }
            let text = trimmed.allSatisfy { $0 < 0x80 } ? String(decoding: trimmed, as: UTF8.self)
                : String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { return }
            guard text.utf8.count <= maximumLine else { throw CLIError("\(path) line \(lineNumber): a subject id is at most \(maximumLine) bytes") }
            try await body(text)
        }
        while true {
            let count = block.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count >= 0 else { throw CLIError("cannot read \(path): \(Files.errorText())") }
            if count == 0 { break }
            pending += block[..<count]
            var start = pending.startIndex
            while let end = pending[start...].firstIndex(of: 0x0A) {
                try await emit(pending[start..<end])
                start = end + 1
            }
            pending.removeSubrange(..<start)
            guard pending.count <= maximumLine + 2 else { throw CLIError("\(path) line \(lineNumber + 1): a subject id is at most \(maximumLine) bytes") }
        }
        if !pending.isEmpty { try await emit(pending[...]) }
    }
}

/// The receipts file: written as answers arrive (owner-only), in place only once every request succeeded.
final class ReceiptFile {
    private let file: Files.AtomicFile
    private let sink: FileDescriptorSink

    init(path: String) throws {
        file = try Files.AtomicFile(path: path, mode: 0o600)
        sink = FileDescriptorSink(descriptor: file.descriptor, name: path)
    }

    func write(_ bytes: ByteBuffer) throws { try bytes.withUnsafeReadableBytes { try sink.write($0) } }

    func commit() throws { try file.commit(replacing: true) }
}

/// The idempotency key of a release or an aggregate: the same key answers the first delivery.
struct RequestKeyOption: ParsableArguments {
    @Option(name: .customLong("idempotency-key"),
            help: "Send the request under this key; a repeated request with the same key answers the first delivery (default: a fresh key, printed on standard error).")
    var value: String?

    /// The key to send, after telling the user on standard error how to ask for the same delivery again.
    func announced() -> String {
        let key = value ?? "req-" + Hex.encode(Sodium.randomBytes(12))
        Output.warn("request key \(key) (if this is interrupted, send it again with --idempotency-key \(key) to get the same delivery)")
        return key
    }
}

struct RequestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "request", abstract: "Ask the broker for a release, a DP aggregate, DP synthetic rows or a feed under an agreement (partner).",
        subcommands: [Release.self, Aggregate.self, Synthetic.self, Feed.self])

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "release", abstract: "Request a privacy-treated release of the dataset; fetch it with `civitas pull --delivery`.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Option(help: "Purpose code.") var purpose: String
        @OptionGroup var key: RequestKeyOption
        @Argument(help: "Agreement id.") var agreement: String

        func run() async throws {
            let requestKey = key.announced()
            let (_, json) = try await BrokerClient(options).send("POST", "/agreements/\(agreement)/releases",
                                                                 body: try CanonicalJSON.encode(["purpose": .string(purpose)]),
                                                                 retryKey: requestKey)
            try report.emit(DeliveryText.withKey(json, requestKey), text: DeliveryText.summary(json))
        }
    }

    struct Aggregate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "aggregate", abstract: "Request a differentially private count, sum or mean, charged to the agreement's ε budget.")
        @OptionGroup var options: BrokerOptions
        @Option(help: "Purpose code.") var purpose: String
        @Option(help: "count, sum or mean.") var statistic: String = "count"
        @Option(help: "The measure to sum or average.") var measure: String?
        @Option(help: "Columns to group by, comma-separated.") var groupBy: String?
        @Option(help: "ε for this aggregate.") var epsilon: Double
        @OptionGroup var key: RequestKeyOption
        @OptionGroup var report: ReportFormat
        @Argument(help: "Agreement id.") var agreement: String

        func run() async throws {
            var body: [String: JSONValue] = ["purpose": .string(purpose), "statistic": .string(statistic), "epsilon": .number(epsilon),
                                             "group_by": .array((groupBy?.split(separator: ",").map { .string(String($0)) }) ?? [])]
            if let measure { body["measure"] = .string(measure) }
            let requestKey = key.announced()
            let (_, json) = try await BrokerClient(options).send("POST", "/agreements/\(agreement)/aggregates", body: try CanonicalJSON.encode(.object(body)),
                                                                 retryKey: requestKey)
            try report.emit(DeliveryText.withKey(json, requestKey), text: DeliveryText.summary(json))
        }
    }

    struct Synthetic: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "synthetic",
            abstract: "Request differentially private synthetic rows, charged ρ to the agreement's zCDP budget; fetch them with `civitas pull --delivery`.")
        @OptionGroup var options: BrokerOptions
        @Option(help: "Purpose code.") var purpose: String
        @Option(help: "ρ (zCDP) for this release.") var rho: Double
        @OptionGroup var key: RequestKeyOption
        @OptionGroup var report: ReportFormat
        @Argument(help: "Agreement id.") var agreement: String

        func run() async throws {
            let requestKey = key.announced()
            let body: JSONValue = ["purpose": .string(purpose), "rho": .number(rho)]
            let (_, json) = try await BrokerClient(options).send("POST", "/agreements/\(agreement)/synthetic", body: try CanonicalJSON.encode(body),
                                                                 retryKey: requestKey)
            try report.emit(DeliveryText.withKey(json, requestKey), text: DeliveryText.summary(json))
        }
    }

    struct Feed: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "feed", abstract: "Subscribe to new records in windows; pull them with `civitas pull --feed`.")
        @OptionGroup var options: BrokerOptions
        @Option(help: "Purpose code.") var purpose: String
        @Option(help: "Also push each window to this URL (POST, the envelope as body).") var webhook: String?
        @OptionGroup var report: ReportFormat
        @Argument(help: "Agreement id.") var agreement: String

        func run() async throws {
            var body: [String: JSONValue] = ["purpose": .string(purpose)]
            if let webhook { body["webhook"] = .string(webhook) }
            let (_, json) = try await BrokerClient(options).send("POST", "/agreements/\(agreement)/feeds", body: try CanonicalJSON.encode(.object(body)))
            try report.emit(json, text: "subscribed: feed \(json["id"]?.stringValue ?? "?")")
        }
    }
}

struct PullCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Fetch deliveries, verify the broker's signature, decrypt and write them as CSV or JSON Lines (partner).",
        discussion: """
            With --delivery, one release or aggregate. With --feed, every window after the last acknowledged one
            (waiting up to --wait seconds for the first), written one after another; --ack then acknowledges them,
            so the next pull starts after them. Unacknowledged windows are delivered again. --save-envelopes keeps
            the envelopes as received, for `civitas open` and `civitas verify`.
            """)

    @OptionGroup var options: BrokerOptions
    @Option(help: ArgumentHelp("The broker's public key: envelopes must be signed by it.", valueName: "BROKER.pub")) var issuer: String
    @Option(help: "A delivery id.") var delivery: String?
    @Option(help: "A feed id.") var feed: String?
    @Option(help: "Seconds to wait for a feed window.") var wait: Int = 0
    @Flag(help: "Acknowledge the feed windows written.") var ack = false
    @Option(help: "csv or jsonl.") var format: String = "csv"
    @Option(help: ArgumentHelp("Directory to keep the envelopes in.", valueName: "DIR")) var saveEnvelopes: String?
    @Option(help: "Output file, or '-' for standard output.") var out: String = "-"
    @Option(help: ArgumentHelp("Your last verified checkpoint of the broker's log: each delivery's checkpoint must extend it (a consistency proof is fetched and checked), then replaces it (default: BROKER.pub's path + .checkpoint; the file `civitas audit --checkpoint` keeps).",
                               valueName: "FILE"))
    var checkpoint: String?
    @Option(help: ArgumentHelp("A key the broker signed its log with before it rotated to --issuer: the kept checkpoint may be signed by it; repeatable.", valueName: "OLD.pub"))
    var previousIssuer: [String] = []
    @OptionGroup var witnesses: WitnessQuorum
    @OptionGroup var report: ReportFormat

    func run() async throws {
        guard (delivery == nil) != (feed == nil) else { throw CLIError("give --delivery ID or --feed ID") }
        guard !(report.json && out == "-") else { throw CLIError("--json reports on standard output: give the records a file with --out FILE") }
        var pulled: [JSONValue] = []
        var acknowledged: Int64?
        guard format == "csv" || format == "jsonl" else { throw CLIError("--format is csv or jsonl") }
        let client = try BrokerClient(options)
        let broker = try Files.publicKeys(issuer)
        let known = KnownCheckpoint(path: checkpoint ?? issuer + ".checkpoint", broker: broker,
                                    previousBrokers: try previousIssuer.map(Files.publicKeys))
        var ids: [(id: String, sequence: Int64?)] = []
        if let delivery {
            ids = [(delivery, nil)]
        } else if let feed {
            let (_, json) = try await client.send("GET", "/feeds/\(feed)/deliveries?wait=\(max(0, min(wait, 60)))")
            if case .array(let items)? = json["deliveries"] {
                ids = items.compactMap { item in item["id"]?.stringValue.map { ($0, item["sequence"]?.exactUnsignedInteger.map { Int64($0) }) } }
            }
        }
        // Everything streams through files: the envelope as it downloads, its verified payload,
        // then the output (which appears only once every delivery verified).
        let file = out == "-" ? nil : try Files.AtomicFile(path: out, mode: 0o600)
        let writer = PayloadWriter(format: format, output: file?.descriptor ?? 1, name: out == "-" ? "standard output" : out, direct: file != nil)
        for (id, sequence) in ids {
            // The envelope is verified and decrypted on its own thread as it downloads; a copy is
            // kept only to save it.
            let envelope = saveEnvelopes == nil ? nil : try Files.anonymousTemporaryFile()
            defer { envelope.map { _ = close($0) } }
            let channel = ByteChannel(capacity: 8 << 20)
            let opener = EnvelopeOpener(recipient: client.keys, issuer: broker)
            let opening = Task {
                try await onOwnThread { [writer] in
                    defer { channel.stopReading() }
                    return try writer.write(payloadOf: id) { sink in try opener.open(channel, to: sink) }
                }
            }
            // The log evidence is asked for as soon as the headers say where the delivery is
            // logged, and arrives while the envelope downloads; it is checked against the
            // envelope once that has verified.
            let logIndex: UInt64
            let evidence: Task<JSONValue, Error>
            do {
                let sink: ByteSink = envelope.map { TeeSink(channel, FileDescriptorSink(descriptor: $0, name: "envelope \(id)")) } ?? channel
                let download = try await client.startDownload("/deliveries/\(id)")
                guard let index = download.headers["civitas-log-index"].flatMap(UInt64.init) else {
                    throw CLIError("the broker did not say where it logged delivery \(id)")
                }
                logIndex = index
                evidence = Task { try await client.send("GET", "/log/entries/\(index)/proof").json }
                do { try await download.stream(to: sink) } catch {
                    evidence.cancel()
                    throw error
                }
                channel.finish()
            } catch {
                channel.finish(error: error)
                // A refusal by the reader (a bad signature, say) explains a stopped download best.
                _ = try await opening.value
                throw error
            }
            let summary: EnvelopeSummary
            do { summary = try await opening.value } catch {
                evidence.cancel()
                throw error
            }
            let evidenceJSON = try await evidence.value
            let logged = try DeliveryText.checkLogged(evidenceJSON, delivery: id, summary: summary, broker: broker)
            guard let note = evidenceJSON["checkpoint"]?.stringValue else { throw CLIError("the broker's log evidence has no checkpoint") }
            try witnesses.require(on: note)
            let history = try await known.advance(to: note) { from, to in
                let (_, json) = try await client.send("GET", "/log/consistency?from=\(from)&to=\(to)")
                return try DeliveryText.consistencyProof(json, from: from, to: to)
            }
            if let saveEnvelopes {
                try FileManager.default.createDirectory(atPath: saveEnvelopes, withIntermediateDirectories: true)
                let saved = try Files.AtomicFile(path: "\(saveEnvelopes)/\(id).envelope", mode: 0o644)
                guard let envelope else { throw CLIError("the envelope of \(id) was not kept") }
                lseek(envelope, 0, SEEK_SET)
                try Files.copy(from: envelope, to: saved.descriptor, name: "envelope \(id)")
                try saved.commit(replacing: true)
                try Data(try CanonicalJSON.encode(evidenceJSON) + [0x0A]).write(to: URL(fileURLWithPath: "\(saveEnvelopes)/\(id).evidence.json"))
            }
            let records = summary.manifest.metadata["records"]?.exactUnsignedInteger.map { "\($0)" } ?? "?"
            pulled.append(["id": .string(id), "window": sequence.map { .number(Double($0)) } ?? .null,
                           "records": summary.manifest.metadata["records"] ?? .null, "issuer": .string(summary.manifest.issuer.hex),
                           "ciphertext_sha256": .string(Hex.encode(summary.ciphertextSHA256)), "log_index": .number(Double(logIndex)),
                           "checkpoint_size": .number(Double(logged.size))])
            Output.warn("\(id)\(sequence.map { " (window \($0))" } ?? ""): \(records) records, signed by the broker \(summary.manifest.issuer), ciphertext sha256 \(Hex.encode(summary.ciphertextSHA256).prefix(16))…; logged as entry \(logIndex), included in the broker's signed checkpoint of \(logged.size) entries, \(history.sentence(known.path))")
        }
        try writer.output.finishFlushing()
        try file?.commit(replacing: true)
        if let feed, ack, let last = ids.last?.sequence {
            _ = try await client.send("POST", "/feeds/\(feed)/ack", body: try CanonicalJSON.encode(["through": .number(Double(last))]))
            Output.warn("acknowledged windows through \(last)")
            acknowledged = last
        }
        if feed != nil && ids.isEmpty { Output.warn("no new window") }
        if report.json {
            try report.emit(["deliveries": .array(pulled), "out": .string(out), "format": .string(format),
                             "acknowledged_through": acknowledged.map { .number(Double($0)) } ?? .null], text: "")
        }
    }
}

/// Writes verified CSV payloads one after another, a block at a time: as CSV, where a payload
/// with the same columns as the one before continues its table (its header is left out), or as
/// JSON Lines, one object per record. A CSV payload bound for an output file is decrypted straight
/// into it (the file appears only once everything verified); otherwise it goes through an
/// owner-only temporary file first. An output file is flushed to disk behind the writing (call
/// `output.finishFlushing()` before committing it).
final class PayloadWriter: @unchecked Sendable {
    let format: String
    let output: FileDescriptorSink
    let direct: Bool
    private var columns: [String]?

    init(format: String, output descriptor: Int32, name: String, direct: Bool) {
        self.format = format
        output = FileDescriptorSink(descriptor: descriptor, name: name, flushingBehind: direct)
        self.direct = direct
    }

    /// Runs `open` (which writes delivery `id`'s verified payload into the sink it is given) and
    /// writes that payload to the output; returns what `open` returns.
    func write(payloadOf id: String, open: (ByteSink) throws -> EnvelopeSummary) throws -> EnvelopeSummary {
        if format == "csv" && direct {
            let sink = ContinuedCSV(output: output, previous: columns)
            let summary = try open(sink)
            try sink.finish()
            columns = sink.columns ?? columns
            return summary
        }
        let payload = try Files.anonymousTemporaryFile()
        defer { close(payload) }
        let name = "payload of \(id)"
        let summary = try open(FileDescriptorSink(descriptor: payload, name: name))
        lseek(payload, 0, SEEK_SET)
        let source = FileDescriptorSource(descriptor: payload, name: name)
        if format == "jsonl" {
            var header: [String] = []
            try CSVTable.read(from: source, delimiter: 0x2C, chunkRows: 4_096, header: { header = $0 }) { rows, _ in
                try DeliveryText.jsonLines(CSVTable(columns: header, rows: rows)).withUnsafeBytes { try output.write($0) }
            }
            return summary
        }
        let sink = ContinuedCSV(output: output, previous: columns)
        var block = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = try block.withUnsafeMutableBytes { try source.read(into: $0) }
            if count == 0 { break }
            try block[0..<count].withUnsafeBytes { try sink.write($0) }
        }
        try sink.finish()
        columns = sink.columns ?? columns
        return summary
    }
}

/// Passes a CSV payload through, leaving out its header line when it names the same columns as
/// the payload before (column names never hold a line break).
final class ContinuedCSV: ByteSink {
    private let output: FileDescriptorSink
    private let previous: [String]?
    private var header: [UInt8]? = []
    private(set) var columns: [String]?

    init(output: FileDescriptorSink, previous: [String]?) {
        self.output = output
        self.previous = previous
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var pending = header else { return try output.write(bytes) }
        guard let newline = bytes.firstIndex(of: 0x0A) else {
            pending += bytes
            header = pending
            return
        }
        pending += bytes[..<(newline + 1)]
        header = nil
        try decide(pending)
        try output.write(UnsafeRawBufferPointer(rebasing: bytes[(newline + 1)...]))
    }

    /// Writes a header line that never ended (a payload of a header alone, or empty).
    func finish() throws {
        if let pending = header, !pending.isEmpty { try decide(pending) }
        header = nil
    }

    private func decide(_ line: [UInt8]) throws {
        let names = try CSVTable.parse(line, delimiter: 0x2C).columns
        columns = names
        if names != previous { try line.withUnsafeBytes { try output.write($0) } }
    }
}

/// Opening and printing deliveries.
enum DeliveryText {
    /// Verifies and decrypts an envelope from the broker and parses its CSV payload.
    static func open(_ envelope: [UInt8], keys: SecretKeys, broker: PublicKeys) throws -> (CSVTable, EnvelopeSummary) {
        let sink = MemorySink()
        let summary = try EnvelopeOpener(recipient: keys, issuer: broker).open(MemorySource(envelope), to: sink)
        let payload = sink.bytes
        if payload.isEmpty { return (CSVTable(columns: [], rows: []), summary) }
        return (try CSVTable.parse(payload, delimiter: 0x2C), summary)
    }

    /// Checks the broker's inclusion evidence for a delivery: the checkpoint is signed by the broker,
    /// the proof leads from the entry to its root, and the entry records this delivery with the very
    /// manifest and signature of the envelope received. Returns the checkpoint.
    static func checkLogged(_ evidence: JSONValue, delivery: String, summary: EnvelopeSummary, broker: PublicKeys) throws -> Checkpoint {
        let (entry, checkpoint) = try InclusionEvidence.parse(evidence).verify(broker: broker)
        guard entry.type == .releaseDelivered, entry.string("release") == delivery,
              entry.members["envelope_manifest"] == summary.manifest.jsonValue,
              entry.string("envelope_signature") == Base64.encode(summary.signature) else {
            throw CLIError("the broker's log entry \(entry.index) does not record delivery \(delivery) as received")
        }
        return checkpoint
    }

    /// The proof hashes of a `GET /log/consistency` answer, which must be for the sizes asked.
    static func consistencyProof(_ json: JSONValue, from: UInt64, to: UInt64) throws -> [MerkleDigest] {
        guard json["from"]?.exactUnsignedInteger == from, json["to"]?.exactUnsignedInteger == to, case .array(let hashes)? = json["proof"], hashes.count <= 128 else {
            throw CLIError("the broker's consistency proof is not one from \(from) to \(to) entries")
        }
        return try hashes.map { item in
            guard let hash = item.stringValue.flatMap(Hex.decode), hash.count == MerkleHash.size else {
                throw CLIError("the broker's consistency proof holds a hash that is not 32 bytes of hex")
            }
            return hash
        }
    }

    /// One JSON object per record.
    static func jsonLines(_ table: CSVTable) throws -> [UInt8] {
        var out: [UInt8] = []
        for row in table.rows {
            out += try CanonicalJSON.encode(.object(Dictionary(uniqueKeysWithValues: zip(table.columns, row.map(JSONValue.string)))))
            out.append(0x0A)
        }
        return out
    }

    /// The broker's answer to a release or aggregate request, with the idempotency key it was sent under.
    static func withKey(_ json: JSONValue, _ key: String) -> JSONValue {
        guard case .object(var members) = json else { return json }
        members["idempotency_key"] = .string(key)
        return .object(members)
    }

    static func summary(_ json: JSONValue) -> String {
        func number(_ key: String) -> String { json[key]?.numberValue.map { String(Int($0)) } ?? "?" }
        var line = "delivery \(json["id"]?.stringValue ?? "?"): \(number("records")) records, envelope \(number("envelope_bytes")) bytes, log entry \(number("log_index"))"
        if json["k_achieved"] != nil {
            line += "; selected \(number("records_selected")), without consent \(number("records_without_consent")), suppressed \(number("records_suppressed")), k achieved \(number("k_achieved"))"
        }
        if let epsilon = json["epsilon_charged"]?.stringValue, epsilon != "0" { line += "; ε charged \(epsilon)" }
        if let rho = json["rho_charged"]?.stringValue { line += "; ρ charged \(rho)" }
        return line
    }
}
