import ArgumentParser
import CivitasCrypto

/// `civitas web login`: a one-time link that opens the broker's web view as you, read-only.
struct WebCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "web", abstract: "The broker's web view.", subcommands: [Login.self])

    struct Login: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "login",
            abstract: "Print a one-time link that signs you in to the broker's web view, read-only.",
            discussion: """
                The request is signed with your key; the link works once, within five minutes, and opens a session of \
                eight hours (or until you sign out) that can read what the broker holds for you and change nothing.
                """)
        @OptionGroup var options: BrokerOptions
        @OptionGroup var report: ReportFormat

        func run() async throws {
            let (_, json) = try await BrokerClient(options).send("POST", "/web/sessions", body: Array("{}".utf8))
            guard let link = json["link"]?.stringValue else { throw CLIError("the broker did not answer with a login link") }
            try report.emit(json, text: "\(link)\n(open it within five minutes, once; it signs in \(json["participant"]?.stringValue ?? "you") as \(json["role"]?.stringValue ?? "?"), read-only)")
        }
    }
}
