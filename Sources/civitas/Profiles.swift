import ArgumentParser
import CivitasCrypto
import Foundation

/// Named sets of connection settings (the broker's URL, the key that signs, TLS files) kept in a
/// file, so that a participant does not repeat them on every command. An option wins over its
/// environment variable, which wins over the profile.
struct Profiles {
    /// One profile's settings; each may be absent.
    struct Profile: Equatable {
        var broker: String?
        var key: String?
        var caFile: String?
        var clientCert: String?
        var clientKey: String?

        static let members = ["broker", "key", "ca_file", "client_cert", "client_key"]

        var json: JSONValue {
            var object: [String: JSONValue] = [:]
            for (name, value) in zip(Self.members, [broker, key, caFile, clientCert, clientKey]) {
                if let value { object[name] = .string(value) }
            }
            return .object(object)
        }
    }

    /// The profiles by name.
    var profiles: [String: Profile] = [:]

    /// The profile commands use without --profile or $CIVITAS_PROFILE.
    static let defaultName = "default"
    /// Largest profiles file read.
    static let maximumSize = 1 << 20

    /// `$CIVITAS_PROFILES`, else `$XDG_CONFIG_HOME/civitas/profiles.json`, else `~/.config/civitas/profiles.json`.
    static var path: String {
        if let set = Environment.value(of: "CIVITAS_PROFILES"), !set.isEmpty { return set }
        if let config = Environment.value(of: "XDG_CONFIG_HOME"), !config.isEmpty { return "\(config)/civitas/profiles.json" }
        let home = Environment.value(of: "HOME").flatMap { $0.isEmpty ? nil : $0 } ?? FileManager.default.homeDirectoryForCurrentUser.path
        return "\(home)/.config/civitas/profiles.json"
    }

    /// The profile to use: `name`, else `$CIVITAS_PROFILE`, else `default`.
    static func selectedName(_ name: String?) -> String {
        name ?? Environment.value(of: "CIVITAS_PROFILE").flatMap { $0.isEmpty ? nil : $0 } ?? defaultName
    }

    /// The profiles in the file (none when it does not exist); a file that does not parse, or holds
    /// a member that is not a setting, is refused naming it.
    static func load(from path: String = Profiles.path) throws -> Profiles {
        guard Files.exists(path) else { return Profiles() }
        let value: JSONValue
        do { value = try JSONParser.parse(try Files.read(path, limit: maximumSize, what: "profiles file")) } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("\(path) is not JSON: \(error)")
        }
        guard case .object(let root)? = value["profiles"].map({ $0 }), root.count <= 1000, value.objectValue?.count == 1 else {
            throw CLIError("\(path) must hold one object, {\"profiles\": {NAME: {…}}}")
        }
        var loaded = Profiles()
        for (name, settings) in root {
            guard case .object(let members) = settings else { throw CLIError("\(path): profile \(name) is not an object") }
            var profile = Profile()
            for (member, value) in members {
                guard Profile.members.contains(member) else {
                    throw CLIError("\(path): profile \(name) has '\(member)', which is not one of \(Profile.members.joined(separator: ", "))")
                }
                guard let text = value.stringValue, !text.isEmpty else { throw CLIError("\(path): profile \(name): \(member) is not a non-empty string") }
                switch member {
                case "broker": profile.broker = text
                case "key": profile.key = text
                case "ca_file": profile.caFile = text
                case "client_cert": profile.clientCert = text
                default: profile.clientKey = text
                }
            }
            loaded.profiles[name] = profile
        }
        return loaded
    }

    /// Writes the profiles (owner-only), replacing the file in one step.
    func save(to path: String = Profiles.path) throws {
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        let value: JSONValue = ["profiles": .object(profiles.mapValues(\.json))]
        let pretty = try JSONSerialization.data(withJSONObject: try JSONSerialization.jsonObject(with: Data(try CanonicalJSON.encode(value))),
                                                options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        let file = try Files.AtomicFile(path: path, mode: 0o600)
        try Array(pretty + Data("\n".utf8)).withUnsafeBytes { try FileDescriptorSink(descriptor: file.descriptor, name: path).write($0) }
        try file.commit(replacing: true)
    }
}

struct ProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile", abstract: "Keep the broker's URL, your key and TLS files in a named profile instead of repeating them.",
        discussion: """
            Profiles live in ~/.config/civitas/profiles.json ($XDG_CONFIG_HOME/civitas/profiles.json, or the file \
            $CIVITAS_PROFILES names), owner-only. Commands that talk to a broker use the profile --profile names, else \
            $CIVITAS_PROFILE, else 'default'; an option wins over its environment variable (CIVITAS_BROKER, CIVITAS_KEY, \
            CIVITAS_CA_FILE, CIVITAS_CLIENT_CERT, CIVITAS_CLIENT_KEY), which wins over the profile. Files are kept as \
            absolute paths.
            """,
        subcommands: [SetProfile.self, Show.self, Remove.self])

    struct SetProfile: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Create a profile or change some of its settings.")
        @Option(help: "The profile's name (default: $CIVITAS_PROFILE or 'default').") var profile: String?
        @Option(help: "The broker's URL.") var broker: String?
        @Option(help: ArgumentHelp("Your secret key file.", valueName: "KEY.secret")) var key: String?
        @Option(help: ArgumentHelp("Certificate authorities to trust for an https:// broker.", valueName: "CA.pem")) var caFile: String?
        @Option(help: ArgumentHelp("Your TLS client certificate.", valueName: "CERT.pem")) var clientCert: String?
        @Option(help: ArgumentHelp("Its private key.", valueName: "KEY.pem")) var clientKey: String?
        @OptionGroup var report: ReportFormat

        func run() throws {
            let name = Profiles.selectedName(profile)
            guard (1...64).contains(name.utf8.count), name.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw CLIError("a profile's name is 1 to 64 visible ASCII characters")
            }
            guard broker != nil || key != nil || caFile != nil || clientCert != nil || clientKey != nil else {
                throw CLIError("give at least one setting: --broker, --key, --ca-file, --client-cert or --client-key")
            }
            if let broker, URL(string: broker)?.scheme.map({ ["http", "https"].contains($0) }) != true {
                throw CLIError("--broker \(broker.prefix(80)) is not an http:// or https:// URL")
            }
            var profiles = try Profiles.load()
            var settings = profiles.profiles[name] ?? Profiles.Profile()
            func absolute(_ path: String?) throws -> String? {
                guard let path else { return nil }
                guard Files.exists(path) else { throw CLIError("\(path) does not exist") }
                return URL(fileURLWithPath: path).standardizedFileURL.path
            }
            if let broker { settings.broker = broker }
            if let key = try absolute(key) { settings.key = key }
            if let caFile = try absolute(caFile) { settings.caFile = caFile }
            if let clientCert = try absolute(clientCert) { settings.clientCert = clientCert }
            if let clientKey = try absolute(clientKey) { settings.clientKey = clientKey }
            profiles.profiles[name] = settings
            try profiles.save()
            try report.emit(["profile": .string(name), "file": .string(Profiles.path), "settings": settings.json],
                            text: "profile \(name) saved in \(Profiles.path)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Print the settings a command would use, each with where it comes from.")
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat

        func run() throws {
            let effective = try options.effectiveSettings()
            let rows = effective.map { [$0.name, $0.value ?? "-", $0.source] }
            try report.emit(["profile": .string(Profiles.selectedName(options.profile)), "file": .string(Profiles.path),
                             "settings": .object(Dictionary(uniqueKeysWithValues: effective.map {
                                 ($0.name, ["value": $0.value.map(JSONValue.string) ?? .null, "source": .string($0.source)])
                             }))],
                            text: Table.text(headers: ["SETTING", "VALUE", "FROM"], rows: rows))
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a profile.")
        @OptionGroup var report: ReportFormat
        @Argument(help: "The profile's name.") var name: String

        func run() throws {
            var profiles = try Profiles.load()
            guard profiles.profiles.removeValue(forKey: name) != nil else { throw CLIError("there is no profile \(name) in \(Profiles.path)") }
            try profiles.save()
            try report.emit(["profile": .string(name), "removed": .bool(true)], text: "removed profile \(name)")
        }
    }
}
