import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasServer
import CivitasStore
import Configuration
import Foundation
import SystemPackage

/// What `civitas serve` runs with, and where each setting came from: its command-line option
/// first, then the environment (`CIVITAS_` and the setting's name in capitals, lists separated by
/// commas), then the config file (JSON, one member per setting, named like the option with `_`
/// for `-`), then the default. Paths in the file are relative to the file's folder.
struct ServeSettings: Sendable {
    var host = "127.0.0.1"
    var port = 8080
    var tlsCert: String?
    var tlsKey: String?
    var clientCA: String?
    var publicURL: String?
    var db: String?
    var postgres: String?
    var postgresConnections = 16
    var storageKey: String?
    var `operator`: String?
    var brokerKey = "Keys/broker.secret"
    var previousBrokerKey: String?
    var keyGracePeriod = 86_400
    var bodyMemoryMiB = BrokerAPI.maximumBodyBytesInFlight >> 20
    var uploadDiskMiB = BrokerAPI.maximumSpooledBytes >> 20
    var envelopeReaders = BrokerAPI.maximumEnvelopeReaders
    var scheduleInterval = 5
    var logOrigin = BrokerStore.defaultLogOrigin
    var webhookAllow: [String] = []
    var witness: [String] = []
    var catalog: String?
    /// Where each setting that is not its default came from (`option`, `environment NAME`, `file`).
    var sources: [String: String] = [:]

    enum Kind { case text, number, list, path }

    /// One setting: its name in the file, its kind, and where it lives in the settings.
    struct Setting {
        let name: String
        let kind: Kind
        let secret: Bool
        let text: WritableKeyPath<ServeSettings, String?>?
        let number: WritableKeyPath<ServeSettings, Int>?
        let list: WritableKeyPath<ServeSettings, [String]>?
        let required: WritableKeyPath<ServeSettings, String>?

        static func text(_ name: String, _ path: WritableKeyPath<ServeSettings, String?>, kind: Kind = .text, secret: Bool = false) -> Setting {
            Setting(name: name, kind: kind, secret: secret, text: path, number: nil, list: nil, required: nil)
        }
        static func text(_ name: String, _ path: WritableKeyPath<ServeSettings, String>, kind: Kind = .text) -> Setting {
            Setting(name: name, kind: kind, secret: false, text: nil, number: nil, list: nil, required: path)
        }
        static func number(_ name: String, _ path: WritableKeyPath<ServeSettings, Int>) -> Setting {
            Setting(name: name, kind: .number, secret: false, text: nil, number: path, list: nil, required: nil)
        }
        static func list(_ name: String, _ path: WritableKeyPath<ServeSettings, [String]>) -> Setting {
            Setting(name: name, kind: .list, secret: false, text: nil, number: nil, list: path, required: nil)
        }
    }

    /// Every setting, in the order `civitas config check` prints them.
    static var all: [Setting] { [
        .text("host", \.host), .number("port", \.port),
        .text("tls_cert", \.tlsCert, kind: .path), .text("tls_key", \.tlsKey, kind: .path), .text("client_ca", \.clientCA, kind: .path), .text("public_url", \.publicURL),
        .text("db", \.db, kind: .path), .text("postgres", \.postgres, secret: true), .number("postgres_connections", \.postgresConnections),
        .text("storage_key", \.storageKey, kind: .path), .text("broker_key", \.brokerKey, kind: .path),
        .text("previous_broker_key", \.previousBrokerKey, kind: .path), .text("operator", \.operator, kind: .path),
        .number("schedule_interval", \.scheduleInterval), .number("key_grace_period", \.keyGracePeriod),
        .number("body_memory_mib", \.bodyMemoryMiB), .number("upload_disk_mib", \.uploadDiskMiB), .number("envelope_readers", \.envelopeReaders), .text("log_origin", \.logOrigin),
        .list("webhook_allow", \.webhookAllow), .list("witness", \.witness), .text("catalog", \.catalog, kind: .path),
    ] }

    /// Longest config file read.
    static let maximumFileBytes = 1 << 20

    /// The settings from `file` (if any) and the environment, before command-line options.
    static func load(file: String?) async throws -> ServeSettings {
        var settings = ServeSettings()
        let environment = EnvironmentVariablesProvider().prefixKeys(with: ["civitas"])
        var fileProvider: FileProvider<JSONSnapshot>?
        var folder = ""
        if let file {
            let data = try Files.read(file, limit: maximumFileBytes, what: "config file")
            try checkMembers(data, file: file)
            do { fileProvider = try await FileProvider<JSONSnapshot>(filePath: FilePath(file)) } catch {
                throw CLIError("\(file) is not a JSON config file: \(error)")
            }
            folder = URL(fileURLWithPath: file).deletingLastPathComponent().path
        }
        for setting in all {
            let key = AbsoluteConfigKey([setting.name])
            let type: ConfigType = setting.kind == .number ? .int : setting.kind == .list ? .stringArray : .string
            var found: (ConfigContent, String)?
            do {
                let result = try environment.value(forKey: key, type: type)
                if let value = result.value { found = (value.content, "environment \(result.encodedKey)") }
            } catch {
                throw CLIError("environment variable CIVITAS_\(setting.name.uppercased()) must be \(describe(setting.kind))")
            }
            if found == nil, let fileProvider {
                do {
                    if let value = try fileProvider.value(forKey: key, type: type).value { found = (value.content, "file") }
                } catch {
                    throw CLIError("\(file ?? "config file"): \"\(setting.name)\" must be \(describe(setting.kind))")
                }
            }
            guard let (content, source) = found else { continue }
            switch content {
            case .string(var text):
                if setting.kind == .path, source == "file", !text.hasPrefix("/") { text = folder + "/" + text }
                if let path = setting.text { settings[keyPath: path] = text }
                if let path = setting.required { settings[keyPath: path] = text }
            case .int(let number):
                if let path = setting.number { settings[keyPath: path] = number }
            case .stringArray(let items):
                if let path = setting.list { settings[keyPath: path] = items.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            default:
                throw CLIError("\"\(setting.name)\" must be \(describe(setting.kind))")
            }
            settings.sources[setting.name] = source
        }
        return settings
    }

    /// Refuses a file whose top level is not an object, or names a setting that does not exist
    /// (a misspelt name would otherwise be ignored).
    static func checkMembers(_ data: [UInt8], file: String) throws {
        guard let value = try? JSONParser.parse(data, limits: .init(maximumDepth: 4, maximumBytes: maximumFileBytes)),
              case .object(let members) = value else {
            throw CLIError("\(file) is not a JSON object")
        }
        let known = Set(all.map(\.name))
        let unknown = members.keys.filter { !known.contains($0) && !$0.hasPrefix("_") }.sorted()
        guard unknown.isEmpty else {
            throw CLIError("\(file): unknown setting\(unknown.count == 1 ? "" : "s") \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")) (the settings are \(all.map(\.name).joined(separator: ", ")); a member starting with _ is a comment)")
        }
    }

    static func describe(_ kind: Kind) -> String {
        switch kind {
        case .text, .path: "a string"
        case .number: "a whole number"
        case .list: "a list of strings"
        }
    }

    /// Sets `name` from a command-line option, when it was given.
    mutating func override<Value>(_ path: WritableKeyPath<ServeSettings, Value>, _ name: String, with value: Value?) {
        guard let value else { return }
        self[keyPath: path] = value
        sources[name] = "option"
    }

    /// Sets the optional setting `name` from a command-line option, when it was given.
    mutating func override<Value>(_ path: WritableKeyPath<ServeSettings, Value?>, _ name: String, given value: Value?) {
        guard let value else { return }
        self[keyPath: path] = value
        sources[name] = "option"
    }

    /// Each setting's effective value as text (a password in a database URL hidden) and its source.
    var effective: [(name: String, value: String, source: String)] {
        Self.all.map { setting in
            let value: String
            if let path = setting.text { value = self[keyPath: path].map { setting.secret ? Self.hidingPassword($0) : $0 } ?? "(none)" }
            else if let path = setting.required { value = self[keyPath: path] }
            else if let path = setting.number { value = String(self[keyPath: path]) }
            else if let path = setting.list { value = self[keyPath: path].isEmpty ? "(none)" : self[keyPath: path].joined(separator: ", ") }
            else { value = "" }
            return (setting.name, value, sources[setting.name] ?? "default")
        }
    }

    /// Every problem of the settings at once, each naming its setting; refuses when there is one.
    func check() throws {
        var problems: [String] = []
        if !(0...65535).contains(port) { problems.append("port must be 0 to 65535") }
        if !(1...1000).contains(postgresConnections) { problems.append("postgres_connections must be 1 to 1000") }
        if !(1...3600).contains(scheduleInterval) { problems.append("schedule_interval must be 1 to 3600 seconds") }
        let largestBody = BrokerAPI.maximumBodySize >> 20
        if !(largestBody...65_536).contains(bodyMemoryMiB) { problems.append("body_memory_mib must be \(largestBody) (one largest request body) to 65536") }
        if !(largestBody...1_048_576).contains(uploadDiskMiB) { problems.append("upload_disk_mib must be \(largestBody) (one largest upload) to 1048576") }
        if !(1...256).contains(envelopeReaders) { problems.append("envelope_readers must be 1 to 256") }
        if !(0...31_536_000).contains(keyGracePeriod) { problems.append("key_grace_period must be 0 to 31536000 seconds (a year)") }
        if let publicURL, !DatasetDescription.isWebIRI(publicURL) { problems.append("public_url must be an http(s) URL") }
        if (tlsCert == nil) != (tlsKey == nil) { problems.append("tls_cert and tls_key go together") }
        if clientCA != nil && tlsCert == nil { problems.append("client_ca needs tls_cert and tls_key: client certificates come with TLS") }
        if postgres != nil && db != nil { problems.append("db and postgres name two databases: give one") }
        if postgres != nil && storageKey == nil { problems.append("postgres needs storage_key: every node opens the records with the same key") }
        if let postgres {
            do { _ = try PostgresLocation(url: postgres) } catch { problems.append("postgres: \(error)") }
        }
        for entry in witness {
            do { _ = try CheckpointWitnesses.Witness(entry) } catch { problems.append("witness: \(error)") }
        }
        do { _ = try Checkpoint(origin: logOrigin, size: 0, rootHash: MerkleHash.emptyRoot) } catch { problems.append("log_origin: \(error)") }
        for (name, path) in [("tls_cert", tlsCert), ("tls_key", tlsKey), ("operator", `operator`), ("catalog", catalog), ("client_ca", clientCA),
                             ("previous_broker_key", previousBrokerKey)] {
            if let path, !Files.exists(path) { problems.append("\(name): \(path) does not exist") }
        }
        guard problems.isEmpty else {
            throw CLIError(problems.count == 1 ? problems[0] : "\(problems.count) problems: " + problems.joined(separator: "; "))
        }
    }

    /// A URL with any password replaced by `***`.
    static func hidingPassword(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? "(hidden)"
    }
}
