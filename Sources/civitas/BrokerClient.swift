import ArgumentParser
import AsyncHTTPClient
import CivitasBroker
import CivitasCrypto
import CivitasServer
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// Options every command that talks to a broker takes.
struct BrokerOptions: ParsableArguments {
    @Option(help: "The broker's URL (default: $CIVITAS_BROKER, the profile's, or http://127.0.0.1:8080).") var broker: String?
    @Option(help: ArgumentHelp("Your secret key file; requests are signed with it (default: $CIVITAS_KEY, or the profile's).", valueName: "KEY.secret")) var key: String?
    @OptionGroup var passphrase: PassphraseOptions
    @Option(help: ArgumentHelp("Trust only the certificate authorities in this PEM file for an https:// broker (a city's private CA; default: $CIVITAS_CA_FILE, else the system's authorities).",
                               valueName: "CA.pem"))
    var caFile: String?
    @Option(help: ArgumentHelp("Present this TLS client certificate (PEM) for your signing key, when the broker requires one (default: $CIVITAS_CLIENT_CERT).", valueName: "CERT.pem"))
    var clientCert: String?
    @Option(help: ArgumentHelp("The private key of --client-cert, PEM (`civitas keys tls-key` writes it from your key; default: $CIVITAS_CLIENT_KEY).", valueName: "KEY.pem"))
    var clientKey: String?

    @Option(help: ArgumentHelp("Take the settings not given here or in the environment from this profile (default: $CIVITAS_PROFILE, else 'default'; see `civitas profile`).",
                               valueName: "NAME"))
    var profile: String?

    /// One connection setting as a command uses it, and where it came from.
    struct Setting {
        let name: String
        let value: String?
        /// `option`, `environment variable NAME`, `profile NAME`, `default` or `unset`.
        let source: String
    }

    /// Every connection setting: the option, else its environment variable, else the profile, else the default.
    func effectiveSettings() throws -> [Setting] {
        let name = Profiles.selectedName(profile)
        let profiles = try Profiles.load()
        if let profile, profiles.profiles[profile] == nil {
            throw CLIError("there is no profile \(profile) in \(Profiles.path) (civitas profile set --profile \(profile) …)")
        }
        let saved = profiles.profiles[name]
        func setting(_ setting: String, _ option: String?, _ variable: String, _ fromProfile: String?, default fallback: String? = nil) -> Setting {
            if let option { return Setting(name: setting, value: option, source: "option") }
            if let value = Environment.value(of: variable), !value.isEmpty { return Setting(name: setting, value: value, source: "environment variable \(variable)") }
            if let fromProfile { return Setting(name: setting, value: fromProfile, source: "profile \(name)") }
            return Setting(name: setting, value: fallback, source: fallback == nil ? "unset" : "default")
        }
        return [setting("broker", broker, "CIVITAS_BROKER", saved?.broker, default: "http://127.0.0.1:8080"),
                setting("key", key, "CIVITAS_KEY", saved?.key),
                setting("ca_file", caFile, "CIVITAS_CA_FILE", saved?.caFile),
                setting("client_cert", clientCert, "CIVITAS_CLIENT_CERT", saved?.clientCert),
                setting("client_key", clientKey, "CIVITAS_CLIENT_KEY", saved?.clientKey)]
    }

    /// The settings as a command uses them.
    struct Resolved {
        let baseURL: String
        let keyFile: String
        let caFile: String?
        let clientCertificate: (chain: String, key: String)?
    }

    func resolved() throws -> Resolved {
        let settings = Dictionary(uniqueKeysWithValues: try effectiveSettings().map { ($0.name, $0.value) })
        var url = (settings["broker"] ?? nil) ?? "http://127.0.0.1:8080"
        while url.hasSuffix("/") { url.removeLast() }
        guard let path = settings["key"] ?? nil, !path.isEmpty else {
            throw CLIError("give your secret key file with --key KEY.secret (or set CIVITAS_KEY, or keep it in a profile: civitas profile set --key KEY.secret): the broker answers signed requests only")
        }
        let certificate = settings["client_cert"] ?? nil, certificateKey = settings["client_key"] ?? nil
        guard (certificate == nil) == (certificateKey == nil) else { throw CLIError("--client-cert and --client-key go together") }
        return Resolved(baseURL: url, keyFile: path, caFile: settings["ca_file"] ?? nil,
                        clientCertificate: certificate.flatMap { cert in certificateKey.map { (cert, $0) } })
    }
}

/// Sends signed requests (RFC 9421) to the broker and reads its JSON answers.
struct BrokerClient {
    let baseURL: String
    let keys: SecretKeys
    /// The HTTP client, trusting the authorities the options name.
    let http: HTTPClient

    init(_ options: BrokerOptions) throws {
        let settings = try options.resolved()
        baseURL = settings.baseURL
        keys = try Files.secretKeys(settings.keyFile, passphrase: options.passphrase)
        http = try Self.client(trusting: settings.caFile, certificate: settings.clientCertificate)
    }

    init(baseURL: String, keys: SecretKeys) {
        self.baseURL = baseURL
        self.keys = keys
        http = Self.http
    }

    /// Clients trusting a CA file, by its path: one per file for the life of the command.
    private static let trustingClients = Mutex<[String: HTTPClient]>([:])

    /// The shared client, or one that trusts only the certificates in the PEM file at `caFile`.
    static func client(trusting caFile: String?, certificate: (chain: String, key: String)? = nil) throws -> HTTPClient {
        guard caFile != nil || certificate != nil else { return http }
        let name = (caFile ?? "") + "\n" + (certificate.map { $0.chain + "\n" + $0.key } ?? "")
        return try trustingClients.withLock { clients in
            if let client = clients[name] { return client }
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile {
                let certificates: [NIOSSLCertificate]
                do { certificates = try NIOSSLCertificate.fromPEMFile(caFile) } catch {
                    throw CLIError("\(caFile) holds no PEM certificate to trust: \(error)")
                }
                guard !certificates.isEmpty else { throw CLIError("\(caFile) holds no PEM certificate to trust") }
                tls.trustRoots = .certificates(certificates)
            }
            if let certificate {
                Files.warnIfExposed(certificate.key)
                do {
                    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate.chain).map { .certificate($0) }
                    tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: certificate.key, format: .pem))
                } catch {
                    throw CLIError("the client certificate \(certificate.chain) and key \(certificate.key) do not load: \(error)")
                }
            }
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration(tls: tls))
            clients[name] = client
            return client
        }
    }

    /// The HTTP client every command shares: connections time out after 10 s, answers never
    /// (a release of millions of records takes as long as it takes; the client waits on the
    /// socket without using the CPU).
    static let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration(tls: nil))

    /// A connection that cannot be made (refused, or a certificate that does not verify) fails at
    /// once instead of being tried again until the connect timeout: commands say so, and a keyed
    /// request is sent again by ``send(_:_:body:contentType:headers:retryKey:)`` itself.
    static func configuration(tls: TLSConfiguration?) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                                     timeout: .init(connect: .seconds(10), read: nil))
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }
    /// Largest answer read into memory: a JSON document, or an envelope or log page a command fetches.
    static let maximumAnswer = 1 << 31

    /// Sends a signed request; returns the status and the parsed JSON body, or throws the broker's error as one line.
    /// With `retryKey` (an idempotency key the request carries), a request whose connection fails
    /// is sent again with the same key, up to four more times, waiting 1, 2, 4 and 8 seconds between tries.
    /// A request the broker answers busy (503 with Retry-After: it changed nothing) is sent again,
    /// freshly signed, after the time it names, up to ``busyAttempts`` times in all.
    func send(_ method: String, _ path: String, body: [UInt8] = [], contentType: String = "application/json",
              headers: [String: String] = [:], retryKey: String? = nil) async throws -> (status: Int, json: JSONValue) {
        let (status, data, answerHeaders) = try await exchange(method, path, body: body, contentType: contentType, headers: headers, retryKey: retryKey)
        return try answer(Array(buffer: data), status: status, headers: answerHeaders)
    }

    /// Sends a signed POST and returns the status and raw body of a successful answer (JSON Lines,
    /// for instance), or throws the broker's error as one line; retried as ``send(_:_:body:contentType:headers:retryKey:)`` is.
    func post(_ path: String, body: [UInt8], contentType: String, retryKey: String? = nil) async throws -> (status: Int, body: ByteBuffer) {
        let (status, answer, headers) = try await exchange("POST", path, body: body, contentType: contentType, headers: [:], retryKey: retryKey)
        if !(200..<300).contains(status) { _ = try self.answer(Array(buffer: answer), status: status, headers: headers) }
        return (status, answer)
    }

    /// The answer to a signed request, sent again while the broker is busy and, with `retryKey`, when the connection fails.
    private func exchange(_ method: String, _ path: String, body: [UInt8], contentType: String, headers extra: [String: String],
                          retryKey: String?) async throws -> (status: Int, body: ByteBuffer, headers: [String: String]) {
        var headers = extra
        if let retryKey { headers["Idempotency-Key"] = retryKey }
        var attempt = 0, busy = 1
        while true {
            var request = try signedRequest(method, path, bodySHA256: SHA256Hasher.hash(body), contentType: contentType, headers: headers)
            request.body = .bytes(ByteBuffer(bytes: body))
            do {
                let (status, data, answerHeaders) = try await executeKeepingBuffer(request)
                if status == 503, busy < Self.busyAttempts, let wait = answerHeaders["retry-after"].flatMap(Int.init) {
                    busy += 1
                    try await Task.sleep(for: .seconds(min(max(wait, 1), 10)))
                    continue
                }
                return (status, data, answerHeaders)
            } catch let error as TransportError where retryKey != nil && attempt < 4 {
                attempt += 1
                Output.warn("\(error.message); sending the request again with the same key (\(attempt) of 4)")
                try await Task.sleep(nanoseconds: UInt64(1 << (attempt - 1)) * 1_000_000_000)
            }
        }
    }

    /// Sends a signed GET and returns the raw body (an envelope, a log export), or throws the broker's error as one line.
    func fetch(_ path: String, accept: String = "*/*") async throws -> (bytes: [UInt8], headers: [String: String]) {
        var request = try signedRequest("GET", path, bodySHA256: SHA256Hasher.hash([]), contentType: "application/json", headers: ["Accept": accept])
        request.body = .bytes(ByteBuffer())
        let (status, data, headers) = try await execute(request)
        _ = try answer(data, status: status, headers: headers)
        return (data, headers)
    }

    /// Sends a signed GET and streams the body into `sink` as it arrives (an envelope of any
    /// size is never held whole); returns the answer's headers.
    func download(_ path: String, to sink: ByteSink) async throws -> [String: String] {
        let download = try await startDownload(path)
        try await download.stream(to: sink)
        return download.headers
    }

    /// A successful answer to a signed GET whose headers have arrived and whose body is still to be read.
    struct PendingDownload {
        /// The answer's headers, by lowercased name.
        let headers: [String: String]
        fileprivate let response: HTTPClientResponse
        fileprivate let baseURL: String

        /// Streams the body into `sink` as it arrives.
        func stream(to sink: ByteSink) async throws {
            do {
                for try await buffer in response.body {
                    try buffer.withUnsafeReadableBytes { try sink.write($0) }
                }
            } catch let error as CLIError {
                throw error
            } catch {
                throw TransportError(message: "the download from \(baseURL) broke off: \(error)")
            }
        }
    }

    /// Sends a signed GET and returns once the answer's headers arrive (so a command can start
    /// other requests while the body downloads), or throws the broker's error as one line.
    /// A broker busy sending other envelopes (503 with Retry-After) is asked again after the time
    /// it names (1 to 10 s), with a fresh signature, up to ``busyAttempts`` times in all.
    func startDownload(_ path: String) async throws -> PendingDownload {
        var attempt = 1
        var (response, headers) = try await downloadResponse(path)
        while response.status == .serviceUnavailable, attempt < Self.busyAttempts, let wait = headers["retry-after"].flatMap(Int.init) {
            _ = try await response.body.collect(upTo: 1 << 20)
            try await Task.sleep(for: .seconds(min(max(wait, 1), 10)))
            attempt += 1
            (response, headers) = try await downloadResponse(path)
        }
        guard (200..<300).contains(Int(response.status.code)) else {
            let body = try await response.body.collect(upTo: 1 << 20)
            _ = try answer(Array(buffer: body), status: Int(response.status.code), headers: headers)
            throw CLIError("the broker answered \(response.status.code) to GET \(path)")
        }
        return PendingDownload(headers: headers, response: response, baseURL: baseURL)
    }

    /// Most times a download asks a busy broker.
    static let busyAttempts = 30

    /// The answer to a signed GET of `path`, its body not read yet, and its headers by lowercased name.
    private func downloadResponse(_ path: String) async throws -> (HTTPClientResponse, [String: String]) {
        var request = try signedRequest("GET", path, bodySHA256: SHA256Hasher.hash([]), contentType: "application/json", headers: [:])
        request.body = .bytes(ByteBuffer())
        let response: HTTPClientResponse
        do { response = try await http.execute(request, deadline: .distantFuture) } catch {
            throw TransportError(message: "cannot reach the broker at \(baseURL): \(error) (is it running? give its URL with --broker URL or CIVITAS_BROKER)")
        }
        var headers: [String: String] = [:]
        for header in response.headers { headers[header.name.lowercased()] = header.value }
        return (response, headers)
    }

    /// Streams a file as the body of a signed POST, drawing progress on a terminal; the file is never held in memory whole.
    /// `handedOver` is called once the whole file has been handed to the connection (the answer
    /// comes after the broker has stored it).
    func upload(_ path: String, file: UploadFile, contentType: String, headers extra: [String: String],
                progress: UploadProgress, handedOver: @escaping @Sendable () -> Void = {}) async throws -> (status: Int, json: JSONValue) {
        var request = try signedRequest("POST", path, bodySHA256: file.sha256, contentType: contentType, headers: extra)
        request.headers.replaceOrAdd(name: "Content-Length", value: String(file.size))
        // The progress line ends once every byte is handed over, before the next part's starts.
        let sent = FinishedOnce()
        let finished: @Sendable () -> Void = {
            guard sent.first() else { return }
            progress.finish()
            handedOver()
        }
        request.body = .stream(FileChunks(file: file, progress: progress, handedOver: finished), length: .known(Int64(file.size)))
        let answer: (status: Int, body: [UInt8], headers: [String: String])
        do { answer = try await execute(request) } catch {
            if progress.enabled && sent.first() { Output.progress("\n") }
            throw error
        }
        finished()
        if answer.status == 409, (try? JSONParser.parse(answer.body))?["error"]?["code"]?.stringValue == "previous_batch_missing" {
            throw PreviousBatchMissing()
        }
        return try self.answer(answer.body, status: answer.status, headers: answer.headers)
    }

    /// The broker's refusal of a batch sent to follow one it does not hold yet.
    struct PreviousBatchMissing: Error {}

    /// True the first time it is asked, false after.
    private final class FinishedOnce: @unchecked Sendable {
        private let lock = NSLock()
        private var done = false
        func first() -> Bool { lock.withLock { defer { done = true }; return !done } }
    }

    /// Registers a participant's public keys with a role (the operator's request).
    func registerParticipant(_ keys: PublicKeys, role: String) async throws {
        let body = try CanonicalJSON.encode(["name": .string(keys.name), "role": .string(role),
                                             "ed25519": .string(Base64.encode(keys.signingKey)),
                                             "x25519": .string(Base64.encode(keys.encryptionKey))])
        _ = try await send("POST", "/admin/participants", body: body)
    }

    /// A request that got no answer: the broker could not be reached, or the connection broke.
    struct TransportError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    private func execute(_ request: HTTPClientRequest) async throws -> (status: Int, body: [UInt8], headers: [String: String]) {
        let (status, body, headers) = try await executeKeepingBuffer(request)
        return (status, Array(buffer: body), headers)
    }

    /// Sends the request and collects the answer in the buffer it arrived in.
    private func executeKeepingBuffer(_ request: HTTPClientRequest) async throws -> (status: Int, body: ByteBuffer, headers: [String: String]) {
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await http.execute(request, deadline: .distantFuture)
            body = try await response.body.collect(upTo: Self.maximumAnswer)
        } catch {
            throw TransportError(message: "cannot reach the broker at \(baseURL): \(error) (is it running? give its URL with --broker URL or CIVITAS_BROKER)")
        }
        var headers: [String: String] = [:]
        for header in response.headers { headers[header.name.lowercased()] = header.value }
        return (Int(response.status.code), body, headers)
    }

    private func signedRequest(_ method: String, _ path: String, bodySHA256: [UInt8], contentType: String,
                               headers extra: [String: String]) throws -> HTTPClientRequest {
        let target = baseURL + path
        guard URL(string: target) != nil else { throw CLIError("'\(target)' is not a URL") }
        var request = HTTPClientRequest(url: target)
        request.method = HTTPMethod(rawValue: method)
        request.headers.add(name: "Content-Type", value: contentType)
        for (name, value) in extra { request.headers.replaceOrAdd(name: name, value: value) }
        for (name, value) in try RequestSigner.headers(method: method, targetURI: target, bodySHA256: bodySHA256, key: keys,
                                                       created: Int64(Date().timeIntervalSince1970)) {
            request.headers.replaceOrAdd(name: name, value: value)
        }
        return request
    }

    private func answer(_ data: [UInt8], status: Int, headers: [String: String]) throws -> (status: Int, json: JSONValue) {
        let json = (try? JSONParser.parse(data)) ?? .null
        guard (200..<300).contains(status) else {
            let message = json["error"]?["message"]?.stringValue ?? "HTTP \(status)"
            var line = "broker refused (\(status)): \(message)"
            if case .array(let details)? = json["error"]?["details"] {
                line += "; " + details.compactMap(\.stringValue).prefix(20).joined(separator: "; ")
                if details.count > 20 { line += "; …" }
            }
            if let requestID = headers["request-id"] { line += " (request id \(requestID))" }
            throw CLIError(line)
        }
        return (status, json)
    }
}

struct ParticipantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "participants", abstract: "Register and list participants; rotate their keys.",
                                                    subcommands: [Add.self, List.self, RotateKey.self, PendingKeys.self, ApproveKey.self])

    struct RotateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-key",
            abstract: "Ask to sign with a new key instead of your current one (signed with the current key); the operator approves.",
            discussion: """
                Make the new key with `civitas keys generate`, then run this with --key set to your current key. Once the \
                operator approves (`civitas participants approve-key`), sign with the new key: you stay the same participant \
                in your agreements, and envelopes are sealed to the new key. The old key is accepted for the broker's grace \
                period (a day unless the operator set another) and refused after it.
                """)
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Argument(help: "The new key's .pub file.") var newKey: String

        func run() async throws {
            let keys = try Files.publicKeys(newKey)
            let body = try CanonicalJSON.encode(["name": .string(keys.name), "ed25519": .string(Base64.encode(keys.signingKey)),
                                                 "x25519": .string(Base64.encode(keys.encryptionKey))])
            let (_, json) = try await BrokerClient(options).send("POST", "/participants/keys", body: body)
            try report.emit(json, text: "asked to rotate to \(keys.name) (\(keys.keyID)); the operator approves it with: civitas participants approve-key \(keys.keyID)")
        }
    }

    struct PendingKeys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "pending-keys", abstract: "List the key rotations awaiting approval (operator).")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat

        func run() async throws {
            let (_, json) = try await BrokerClient(options).send("GET", "/participants/keys")
            guard case .array(let keys)? = json["keys"] else { throw CLIError("the broker's answer lists no keys") }
            let rows = keys.map { key in ["key_id", "participant", "name", "requested"].map { key[$0]?.stringValue ?? "?" } }
            try report.emit(json, text: Table.text(headers: ["NEW KEY ID", "PARTICIPANT", "NAME", "REQUESTED"], rows: rows))
        }
    }

    struct ApproveKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "approve-key",
            abstract: "Approve a participant's key rotation (operator): the new key signs for it from now on.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Argument(help: "The new key's id (from `civitas participants pending-keys`).") var keyID: String

        func run() async throws {
            guard KeyID(hex: keyID) != nil else { throw CLIError("\(keyID.prefix(80)) is not a key id (32 hex digits)") }
            let (_, json) = try await BrokerClient(options).send("POST", "/participants/keys/\(keyID)/approve", body: Array("{}".utf8))
            try report.emit(json, text: "approved: \(keyID) signs for participant \(json["participant"]?.stringValue ?? "?"); the replaced key \(json["replaced_key"]?.stringValue ?? "?") is accepted until \(json["replaced_key_retires"]?.stringValue ?? "?")")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a participant's public key with a role (operator only).")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat
        @Option(help: "operator, agency, partner, auditor or consent-service.") var role: String
        @Argument(help: "The participant's .pub file.") var publicKey: String

        func run() async throws {
            let keys = try Files.publicKeys(publicKey)
            try await BrokerClient(options).registerParticipant(keys, role: role)
            try report.emit(["key_id": .string(keys.keyID.hex), "name": .string(keys.name), "role": .string(role)],
                            text: "registered \(keys.name) (\(keys.keyID)) as \(role)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the registered participants.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat

        func run() async throws {
            let (_, json) = try await BrokerClient(options).send("GET", "/participants")
            guard case .array(let participants)? = json["participants"] else { throw CLIError("the broker's answer lists no participants") }
            let rows = participants.map { participant in
                ["key_id", "role", "name"].map { participant[$0]?.stringValue ?? "?" }
            }
            try report.emit(["participants": .array(participants)], text: Table.text(headers: ["KEY ID", "ROLE", "NAME"], rows: rows))
        }
    }
}

struct DatasetsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "datasets", abstract: "Register datasets.", subcommands: [Register.self])

    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "register", abstract: "Register a dataset with its schema (agency).")
        @OptionGroup var options: BrokerOptions
        @Option(help: "Dataset id: 1-128 of a-z 0-9 . _ -") var id: String
        @Option(help: "Dataset schema (JSON Schema with x-privacy), e.g. Schemas/datasets/emergency-call.schema.json.") var schema: String
        @Option(name: .customLong("purpose"), help: "A purpose the dataset is offered for (repeatable), e.g. public-health-surveillance.")
        var purposes: [String] = []
        @OptionGroup var report: ReportFormat

        func run() async throws {
            let schemaValue = try JSONParser.parse(try Files.read(schema, limit: 4 << 20, what: "schema"))
            let body = try CanonicalJSON.encode(["id": .string(id), "schema": schemaValue,
                                                 "purposes": .array(purposes.map(JSONValue.string))])
            let (_, json) = try await BrokerClient(options).send("POST", "/datasets", body: body)
            try report.emit(["dataset": .string(id), "schema_sha256": json["schema_sha256"] ?? .null, "purposes": .array(purposes.map(JSONValue.string))],
                            text: "registered dataset \(id) (schema sha256 \(json["schema_sha256"]?.stringValue ?? "?"))")
        }
    }
}

struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Upload a batch of records to a dataset (its publisher only).",
        discussion: """
            The batch is validated whole: if any record fails the schema, nothing is stored and the first problems are \
            printed. Retrying with the same --idempotency-key never stores a batch twice. A CSV or JSON Lines file larger \
            than one batch may be (64 MiB, 1,000,000 records) is sent as consecutive batches cut at record boundaries, \
            each validated and stored whole, under the keys KEY-part-1, KEY-part-2, …: sending the file again stores \
            only the parts that were not stored yet.
            """
    )
    @OptionGroup var options: BrokerOptions
    @Option(help: "Makes retries safe (default: the SHA-256 of the file).") var idempotencyKey: String?
    @Option(help: "text/csv, application/x-ndjson or application/ld+json (default: from the file name: .csv, .jsonl/.ndjson, .json/.jsonld).")
    var contentType: String?
    @Flag(help: "Do not draw the upload's progress bar (it is drawn only when standard error is a terminal).") var noProgress = false
    @OptionGroup var report: ReportFormat
    @Argument(help: "Dataset id.") var dataset: String
    @Argument(help: "The batch: CSV, JSON Lines, or NGSI-LD entities (normalized or key-values).") var file: String

    func run() async throws {
        let size = try UploadFile.size(of: file)
        let type = contentType ?? {
            let lower = file.lowercased()
            if lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") { return "application/x-ndjson" }
            if lower.hasSuffix(".json") || lower.hasSuffix(".jsonld") { return "application/ld+json" }
            return "text/csv"
        }()
        let client = try BrokerClient(options)
        var batches: [JSONValue] = []
        // With --json, one object once every batch is stored (text reports each batch as it is stored).
        func finish() throws {
            guard report.json else { return }
            let records = batches.compactMap { $0["records"]?.numberValue }.reduce(0, +)
            try report.emit(["dataset": .string(dataset), "records": .number(records), "batches": .array(batches)], text: "")
        }
        guard size > BrokerAPI.maximumBodySize else {
            let upload = try UploadFile(path: file, limit: BrokerAPI.maximumBodySize)
            batches.append(try await send(upload, key: idempotencyKey ?? Hex.encode(upload.sha256), type: type, client: client, part: nil))
            try finish()
            return
        }
        guard type == "text/csv" || type == "application/x-ndjson" else {
            throw CLIError("\(file) is \(size) bytes; a batch is at most \(BrokerAPI.maximumBodySize) bytes, and only CSV and JSON Lines files are cut into consecutive batches: split it")
        }
        // A margin under the limit leaves room for the part's header line.
        // Each part follows the one before: it is uploaded while the broker stores that one, and stored after it.
        let splitter = BatchSplitter(csv: type == "text/csv", maximumBytes: BrokerAPI.maximumBodySize - (1 << 20), maximumRecords: Broker.maximumBatchRows)
        let stored = StoredParts()
        // The parts' keys name the file: by default its SHA-256, read while the first part is found.
        let path = file, given = idempotencyKey
        let fileKey = Task { try given ?? Hex.encode(UploadFile(path: path, limit: Int.max).sha256) }
        defer { fileKey.cancel() }
        try await splitter.split(file) { [self] part, _, number, turn in
            let key = try await fileKey.value
            let answer = try await send(part, key: "\(key)-part-\(number)", type: type, client: client, part: number,
                                        follows: number > 1 ? "\(key)-part-\(number - 1)" : nil, turn: turn)
            stored.add(number, answer)
        }
        batches = stored.inOrder
        try finish()
    }

    /// What the broker answered about each part, by number.
    private final class StoredParts: @unchecked Sendable {
        private let lock = NSLock()
        private var answers: [Int: JSONValue] = [:]
        func add(_ number: Int, _ answer: JSONValue) { lock.withLock { answers[number] = answer } }
        var inOrder: [JSONValue] { lock.withLock { answers.sorted { $0.key < $1.key }.map(\.value) } }
    }

    /// Sends one batch and reports it (in text at once); returns what the broker answered about it.
    /// A part that `follows` another lets the next part start once its bytes are handed over; if
    /// the broker does not hold the part before yet (another node stores it), it is sent again
    /// once that one is done.
    private func send(_ upload: UploadFile, key: String, type: String, client: BrokerClient, part: Int?,
                      follows previous: String? = nil, turn: BatchSplitter.PartTurn? = nil) async throws -> JSONValue {
        let label = "uploading \(dataset)" + (part.map { " (part \($0))" } ?? "")
        let progress = UploadProgress(total: upload.size, label: label, enabled: !noProgress && upload.size >= 1 << 20)
        var headers = ["Idempotency-Key": key]
        if let previous { headers["Follows-Idempotency-Key"] = previous }
        let handedOver: @Sendable () -> Void = turn.map { $0.sent } ?? { @Sendable in }
        let status: Int, json: JSONValue
        do {
            do {
                (status, json) = try await client.upload("/datasets/\(dataset)/batches", file: upload, contentType: type,
                                                         headers: headers, progress: progress, handedOver: handedOver)
            } catch is BrokerClient.PreviousBatchMissing {
                await turn?.previousDone()
                (status, json) = try await client.upload("/datasets/\(dataset)/batches", file: upload, contentType: type,
                                                         headers: headers, progress: progress)
            }
        } catch is BrokerClient.PreviousBatchMissing {
            throw CLIError("the broker does not hold the part before part \(part ?? 0) of \(file) (uploaded as \(previous ?? "?")), so this part was not stored")
        } catch let error as BrokerClient.TransportError {
            let again = idempotencyKey.map { "civitas publish --idempotency-key \($0) …" } ?? "the same command"
            throw CLIError("\(error.message); the broker may still be storing \(part.map { "part \($0) of " } ?? "")\(file): run \(again) again when it is reachable (it is idempotent: batches already stored are answered, never stored twice)")
        }
        let records = json["records"].map { (try? ECMAScriptNumber.format($0.numberValue ?? 0)) ?? "?" } ?? "?"
        let sequence = json["sequence"].map { (try? ECMAScriptNumber.format($0.numberValue ?? 0)) ?? "?" } ?? "?"
        let suffix = part.map { " (part \($0) of \(file))" } ?? ""
        if !report.json {
            // The next part's progress line may be on the terminal: the report replaces it (it is drawn again below).
            let clear = !noProgress && isatty(1) == 1 && isatty(2) == 1 ? "\r\u{1B}[K" : ""
            print(clear + (status == 200 ? "already stored as batch \(sequence) of \(dataset) (\(records) records)\(suffix)"
                                         : "stored \(records) records as batch \(sequence) of \(dataset)\(suffix)"))
        }
        return ["sequence": json["sequence"] ?? .null, "records": json["records"] ?? .null, "replayed": .bool(status == 200),
                "content_sha256": json["content_sha256"] ?? .null, "idempotency_key": .string(key), "part": part.map { .number(Double($0)) } ?? .null]
    }
}
