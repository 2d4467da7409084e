import ArgumentParser
import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasServer
import CivitasStore
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the broker's HTTP API on embedded SQLite, or as one of several nodes on PostgreSQL.",
        discussion: """
            Listens on 127.0.0.1 unless told otherwise. The database (SQLite, WAL) is at --db or $CIVITAS_DB; \
            with --postgres URL (or $CIVITAS_POSTGRES) the broker keeps its state in that PostgreSQL database \
            instead, which any number of broker nodes may share: give every node the same --storage-key and \
            --broker-key files.

            Records are encrypted at rest under per-dataset keys wrapped by the storage key file \
            (created with mode 0600 if missing). --operator registers the operator's public key at start. \
            The broker signs envelopes, log checkpoints and consent receipts with --broker-key (created with \
            its .pub beside it when missing; give partners and auditors the .pub). Every few seconds it expires \
            agreements past their validity, closes feed windows that are due by time, checkpoints the log for \
            its witnesses and pushes windows to webhooks.

            Every option can come from a config file instead (--config FILE, JSON, the option's name with _ for -) \
            or a CIVITAS_ environment variable; `civitas config check FILE` shows what applies.
            """
    )

    @Option(help: "SQLite database file (default: $CIVITAS_DB or civitas.sqlite).") var db: String?
    @Option(help: ArgumentHelp("A PostgreSQL database shared by every broker node, as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require] (default: $CIVITAS_POSTGRES; SQLite when neither is set).",
                               valueName: "URL"))
    var postgres: String?
    @Option(help: "Connections each node opens to PostgreSQL at most.") var postgresConnections: Int?
    @Option(help: "Address to listen on.") var host: String?
    @Option(help: ArgumentHelp("Serve HTTPS with this PEM certificate chain (with --tls-key); a renewed file is served from the next connection on.", valueName: "CHAIN.pem"))
    var tlsCert: String?
    @Option(help: ArgumentHelp("The private key of --tls-cert, PEM (owner-only).", valueName: "KEY.pem")) var tlsKey: String?
    @Option(help: ArgumentHelp("Require a TLS client certificate issued by these authorities (PEM) on every connection, for the very key that signs each request (with --tls-cert).", valueName: "CA.pem"))
    var clientCa: String?
    @Option(help: "Port (0 picks a free one and prints it; default 8080).") var port: Int?
    @Option(help: "Storage key file (default: the database path + .storage-key).") var storageKey: String?
    @Option(help: ArgumentHelp("Register this public key as the operator at start.", valueName: "OPERATOR.pub")) var `operator`: String?
    @Option(help: ArgumentHelp("The broker's secret key (created with its .pub if missing).", valueName: "KEY.secret"))
    var brokerKey: String?
    @Option(help: ArgumentHelp("Rotate the broker's key: the log's checkpoints so far are signed by this key, which introduces --broker-key in the log (same passphrase options).", valueName: "OLD.secret"))
    var previousBrokerKey: String?
    @Option(help: "Seconds a participant's old key is still accepted once the operator approved its rotation (default 86400).")
    var keyGracePeriod: Int?
    @Option(help: "MiB of request bodies all requests may hold in memory at once (default 128); past it, 503 with Retry-After.")
    var bodyMemoryMib: Int?
    @Option(help: "MiB of uploads being spooled that may sit on disk at once (default 256); past it, 503 with Retry-After.")
    var uploadDiskMib: Int?
    @Option(help: "Envelopes read from the database at once (default 4); past it, 503 with Retry-After.")
    var envelopeReaders: Int?
    @OptionGroup var passphrase: PassphraseOptions
    @Option(help: "Seconds between scheduled rounds (expiry, time-closed feed windows, webhook pushes).") var scheduleInterval: Int?
    @Option(help: "The exchange log's origin line (fixed when the database is created).") var logOrigin: String?
    @Option(help: ArgumentHelp("A webhook host (name or address) the broker may call although it is internal (loopback, private, link-local); repeatable.",
                               valueName: "HOST"))
    var webhookAllow: [String] = []
    @Option(help: ArgumentHelp("The URL partners reach the broker at, through any proxy: it names the catalog's datasets and API, and signed requests are checked against it (default: http://HOST:PORT, signatures checked against http:// and the request's Host).", valueName: "URL"))
    var publicURL: String?
    @Option(help: ArgumentHelp("A witness that cosigns the log's checkpoints (C2SP tlog-witness), as \"URL VERIFIER-KEY\": its submission prefix and the key `civitas witness serve` prints; repeatable.",
                               valueName: "URL KEY"))
    var witness: [String] = []
    @Option(help: ArgumentHelp("The catalog's own description, as JSON: {title, description, homepage, license, spatial: [IRI], contact: {name, email}}, every field optional.",
                               valueName: "FILE"))
    var catalog: String?
    @Option(help: ArgumentHelp("Read the settings from this JSON file (default: $CIVITAS_CONFIG); options and CIVITAS_* environment variables override it. `civitas config check FILE` prints what applies.",
                               valueName: "FILE"))
    var config: String?

    /// The settings this command runs with: its options over the environment over the config file.
    func settings() async throws -> ServeSettings {
        var settings = try await ServeSettings.load(file: config ?? Environment.value(of: "CIVITAS_CONFIG"))
        settings.override(\.db, "db", given: db)
        settings.override(\.postgres, "postgres", given: postgres)
        settings.override(\.postgresConnections, "postgres_connections", with: postgresConnections)
        settings.override(\.host, "host", with: host)
        settings.override(\.tlsCert, "tls_cert", given: tlsCert)
        settings.override(\.tlsKey, "tls_key", given: tlsKey)
        settings.override(\.clientCA, "client_ca", given: clientCa)
        settings.override(\.port, "port", with: port)
        settings.override(\.storageKey, "storage_key", given: storageKey)
        settings.override(\.operator, "operator", given: `operator`)
        settings.override(\.brokerKey, "broker_key", with: brokerKey)
        settings.override(\.keyGracePeriod, "key_grace_period", with: keyGracePeriod)
        settings.override(\.bodyMemoryMiB, "body_memory_mib", with: bodyMemoryMib)
        settings.override(\.uploadDiskMiB, "upload_disk_mib", with: uploadDiskMib)
        settings.override(\.envelopeReaders, "envelope_readers", with: envelopeReaders)
        settings.override(\.previousBrokerKey, "previous_broker_key", given: previousBrokerKey)
        settings.override(\.scheduleInterval, "schedule_interval", with: scheduleInterval)
        settings.override(\.logOrigin, "log_origin", with: logOrigin)
        settings.override(\.webhookAllow, "webhook_allow", with: webhookAllow.isEmpty ? nil : webhookAllow)
        settings.override(\.publicURL, "public_url", given: publicURL)
        settings.override(\.witness, "witness", with: witness.isEmpty ? nil : witness)
        settings.override(\.catalog, "catalog", given: catalog)
        return settings
    }

    func run() async throws {
        let settings = try await settings()
        try settings.check()
        // The database, its WAL and shared-memory files and the storage key are the operator's alone.
        umask(0o077)
        ProcessMemory.returnLargeBlocksToTheSystem()
        let store: any BrokerStorage, location: String
        if let url = settings.postgres {
            guard settings.db == nil else { throw CLIError("--db and --postgres name two databases: give one") }
            guard let storageKey = settings.storageKey else { throw CLIError("--postgres needs --storage-key: every node opens the records with the same key") }
            let database = try PostgresLocation(url: url)
            store = try PostgresStore(location: database, storageKey: try StorageKeyFile.loadOrCreate(storageKey), logOrigin: settings.logOrigin,
                                      connections: settings.postgresConnections)
            location = "PostgreSQL \(database)"
        } else {
            let path = settings.db ?? "civitas.sqlite"
            store = try BrokerStore(path: path, storageKey: try StorageKeyFile.loadOrCreate(settings.storageKey ?? path + ".storage-key"), logOrigin: settings.logOrigin)
            location = path
        }
        let keys = try Self.brokerKeys(settings.brokerKey, passphrase: passphrase)
        let broker = try Broker(store: store, keys: keys, webhooks: WebhookTargets(allowed: settings.webhookAllow),
                                keyGracePeriod: Int64(settings.keyGracePeriod))
        let previousKeys = try settings.previousBrokerKey.map { try Files.secretKeys($0, passphrase: passphrase) }
        do {
            if case .rotated(let entry, let size) = try broker.adoptKey(previous: previousKeys, now: .now), let previousKeys {
                Output.line("rotated the broker's key: \(previousKeys.keyID) introduced \(keys.keyID) in log entry \(entry); the checkpoint of \(size) entries carries both signatures")
            }
        } catch let error as BrokerError {
            throw CLIError(error.message)
        }
        if let operatorKey = settings.operator {
            let operatorKeys = try Files.publicKeys(operatorKey)
            do {
                try broker.registerOperator(operatorKeys, now: .now)
            } catch let error as BrokerError where error.code == .duplicate {
                // Another node starting at the same moment registered it first.
                try broker.registerOperator(operatorKeys, now: .now)
            }
        }
        var logger = Logger(label: "civitas")
        logger.logLevel = .info
        let witnesses: CheckpointWitnesses?
        do {
            witnesses = settings.witness.isEmpty ? nil : try CheckpointWitnesses(try settings.witness.map(CheckpointWitnesses.Witness.init), broker: broker, logger: logger)
        } catch { throw CLIError("--witness: \(error)") }
        let (publicURL, host, port, logOrigin) = (settings.publicURL, settings.host, settings.port, settings.logOrigin)
        let schedule = BrokerSchedule(broker: broker, logger: logger, witnesses: witnesses)
        let interval = settings.scheduleInterval
        let scheduled = Task { await schedule.run(every: .seconds(interval)) }
        // Until the server listens (on a port picked when --port is 0), the URL it was asked for.
        let certificates = try Self.tlsCertificates(settings)
        let scheme = certificates == nil ? "http" : "https"
        let catalog = CatalogSettingsBox(try Self.catalogSettings(settings, url: publicURL ?? "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)"))
        let clientCAs = try settings.clientCA.map { path -> [NIOSSLCertificate] in
            guard let found = try? NIOSSLCertificate.fromPEMFile(path), !found.isEmpty else { throw CLIError("client_ca: \(path) holds no PEM certificate") }
            return found
        }
        let server: HTTPServerBuilder = try certificates.map { try .tls(.http1(), tlsConfiguration: $0.serverConfiguration(clientCAs: clientCAs)) } ?? .http1()
        let app = Application(
            router: BrokerAPI(broker: broker, catalog: { catalog.current }, publicURL: publicURL, tls: certificates != nil,
                              witnesses: witnesses, clientCertificates: clientCAs != nil,
                              limits: ServiceLimits(bodyBytesInFlight: settings.bodyMemoryMiB << 20, spooledBytes: settings.uploadDiskMiB << 20,
                                                    envelopeReaders: settings.envelopeReaders)).router(),
            server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: "civitas"),
            onServerRunning: { channel in
                if publicURL == nil, let port = channel.localAddress?.port, let address = channel.localAddress?.ipAddress {
                    catalog.current = (try? Self.catalogSettings(settings, url: "\(scheme)://\(address.contains(":") ? "[\(address)]" : address):\(port)")) ?? catalog.current
                }
                Output.line("civitas broker \(keys.keyID) (log \(logOrigin), \(store.logSize) entries)")
                Output.line("civitas log verifier key \((try? NoteKey(name: store.logOrigin, publicKey: keys.publicKeys.signingKey).verifierKey) ?? "?")")
                Output.line("civitas broker listening on \(scheme)://\(channel.localAddress?.ipAddress ?? "?"):\(channel.localAddress?.port ?? 0) (database \(location))")
            },
            logger: logger)
        // SIGTERM or SIGINT: the server stops taking connections and answers the requests in
        // flight; then the schedule finishes the round it is in and stops.
        do {
            try await app.runService()
        } catch {
            scheduled.cancel()
            await scheduled.value
            throw error
        }
        scheduled.cancel()
        await scheduled.value
    }

    /// The certificate and key --tls-cert and --tls-key name, if any: both or neither.
    static func tlsCertificates(_ settings: ServeSettings) throws -> TLSCertificateFiles? {
        switch (settings.tlsCert, settings.tlsKey) {
        case (nil, nil): return nil
        case let (certificate?, key?):
            Files.warnIfExposed(key)
            do { return try TLSCertificateFiles(certificate: certificate, key: key) } catch let error as TLSFileError {
                throw CLIError(error.message)
            }
        default: throw CLIError("--tls-cert and --tls-key go together")
        }
    }

    /// The catalog's settings: --catalog's description, or the defaults, for the broker at `url`.
    static func catalogSettings(_ settings: ServeSettings, url: String) throws -> CatalogSettings {
        guard let catalog = settings.catalog else { return CatalogSettings(publicURL: url) }
        do {
            return try CatalogSettings.parse(try JSONParser.parse(try Files.read(catalog, limit: 1 << 16, what: "catalog description")), publicURL: url)
        } catch let error as BrokerError {
            throw CLIError("\(catalog): \(error.message)")
        }
    }

    /// The broker's keys from `path`, generated (with the .pub beside it) when the file does not exist.
    static func brokerKeys(_ path: String, passphrase: PassphraseOptions) throws -> SecretKeys {
        if !Files.exists(path) {
            let url = URL(fileURLWithPath: path)
            let name = url.deletingPathExtension().lastPathComponent
            let generated = try KeyGeneration.generate(name: name, directory: url.deletingLastPathComponent().path, force: false,
                                                       passphrase: nil, cost: .interactive)
            Output.line("created the broker's keys: \(generated.secretPath) (0600) and \(generated.publicPath)")
        }
        return try Files.secretKeys(path, passphrase: passphrase)
    }
}

/// The storage key file: `civitas-storage-key/1 BASE64(32 bytes)`, mode 0600.
enum StorageKeyFile {
    static let tag = "civitas-storage-key/1"

    static func loadOrCreate(_ path: String) throws -> SealedStorageKey {
        if !Files.exists(path) {
            var key = Sodium.randomBytes(32)
            var line = Array("\(tag) ".utf8)
            var encoded = Base64.encodedBytes(key)
            line += encoded
            line.append(0x0A)
            Sodium.wipe(&encoded)
            Sodium.wipe(&key)
            defer { Sodium.wipe(&line) }
            let file = try Files.AtomicFile(path: path, mode: 0o600)
            try line.withUnsafeBytes { try FileDescriptorSink(descriptor: file.descriptor, name: path).write($0) }
            // Nodes started together on one database each try to make the key: one does, the others read its key.
            _ = try file.commitIfAbsent()
        }
        var bytes = try Files.read(path, limit: 256, what: "storage key file")
        defer { Sodium.wipe(&bytes) }
        let fields = bytes.split(separator: 0x20)
        guard fields.count == 2, Array(fields[0]) == Array(tag.utf8) else { throw CLIError("\(path) is not a storage key file") }
        var encoded = Array(fields[1])
        if encoded.last == 0x0A { encoded.removeLast() }
        defer { Sodium.wipe(&encoded) }
        guard var key = Base64.decode(String(decoding: encoded, as: UTF8.self)), key.count == 32 else {
            throw CLIError("\(path): the key is not 32 bytes of base64")
        }
        Files.warnIfExposed(path)
        return try SealedStorageKey(bytes: &key)
    }
}

/// The catalog's settings, set again once the server knows the port it listens on.
final class CatalogSettingsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var settings: CatalogSettings

    init(_ settings: CatalogSettings) { self.settings = settings }

    var current: CatalogSettings {
        get { lock.withLock { settings } }
        set { lock.withLock { settings = newValue } }
    }
}
