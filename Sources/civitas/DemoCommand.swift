import ArgumentParser
import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasServer
import CivitasStore
import Foundation
import Hummingbird
import Logging

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the data space end to end: publishing, consent, agreements, privacy-treated releases, DP aggregates, a feed, and an offline audit.",
        discussion: """
            The broker starts on embedded SQLite on a loopback port (with --postgres, as two nodes on
            that PostgreSQL database, the agencies talking to one and health and the auditor to the other). Emergency services publishes 911
            calls and records its callers' consent; transport publishes traffic-flow observations; health
            is the partner; an auditor checks everything. Every step is a signed HTTP request. Health
            receives a consent-checked, pseudonymized, k-anonymous release of the calls, differentially
            private traffic counts charged to a budget, and a feed window after some callers withdraw
            consent; it verifies and decrypts each delivery. The auditor fetches the broker's log and
            verifies it offline; tampered copies are refused. Uses
            ../shared/data/montgomery-911/911_sample.csv when present (with generated caller numbers,
            which the public sample lacks), otherwise generated rows of the same shape.
            """
    )

    @Option(help: ArgumentHelp("Keep the database, keys, envelopes, received files and the log export in this directory.", valueName: "DIR"))
    var keep: String?

    @Option(help: ArgumentHelp("911 calls as CSV (default: the Montgomery County sample if present).", valueName: "FILE"))
    var data: String?

    @Option(help: ArgumentHelp("The schemas folder.", valueName: "DIR"))
    var schemas = "Schemas/datasets"

    @Option(help: ArgumentHelp("Run two broker nodes on this empty PostgreSQL database instead of one on SQLite.", valueName: "URL"))
    var postgres: String?

    @Flag(help: "Keep the broker serving after the demo, and print its web address and a login link for each participant (until Ctrl-C).")
    var browse = false

    /// The demo log's origin line.
    static let logOrigin = "civitas.example/demo-log"

    static let healthPurpose = "public-health-surveillance"
    /// Calls held back and published after health subscribes to the feed.
    static let laterCalls = 1000
    /// Callers who withdraw consent before the later calls are published.
    static let withdrawing = 40

    func run() async throws {
        ProcessMemory.returnLargeBlocksToTheSystem()
        umask(0o077)  // the kept folder holds the broker's database, keys and deliveries: owner-only, as serve makes them
        let directory = try keep ?? makeTemporaryDirectory()
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: directory) } }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let started = ContinuousClock.now
        // The walkthrough, one step per method (DemoSteps.swift), each handing the next what it needs.
        let keys = try createKeys(in: directory)
        let session = try await startBroker(in: directory, keys: keys)
        defer { for server in session.servers { server.stop() } }
        let (calls, laterCalls) = try await publish(session)
        let callers = try await consent(session, calls: calls)
        try await offerAgreements(session)
        let (envelope, envelopePath) = try await releaseCalls(session, callers: callers)
        try await aggregates(session)
        let (window, withoutConsent) = try await feed(session, later: laterCalls)
        try await revoke(session)
        let (export, exportPath) = try await audit(session, window: window, withoutConsent: withoutConsent)
        try tamper(session, envelope: envelope, export: export)
        if browse { try await printWebLinks(session) }
        let keyDirectory = keys.directory
        let elapsed = ContinuousClock.now - started
        print("")
        print("Done in \(elapsed.components.seconds) s.", terminator: " ")
        if keep != nil {
            print("The database, keys, envelopes, received files and the log export are in \(directory). Try:")
            print("  civitas audit --broker \(keyDirectory)/broker.pub \(exportPath)")
            print("  civitas open --key \(keyDirectory)/health.secret --issuer \(keyDirectory)/broker.pub \(envelopePath) -")
        } else {
            print("(Run with --keep DIR to inspect the database, keys, envelopes and log.)")
        }
        if browse {
            print("The broker keeps serving its web view at \(session.servers[0].url)/ until you press Ctrl-C.")
            await Self.waitForInterrupt()
        } else {
            print("(Add --browse to keep the broker serving its web view, with a login link for each participant.)")
        }
    }

    /// The web view's address and a one-time login link for each participant, each asked for by
    /// that participant's signed request.
    func printWebLinks(_ session: DemoSession) async throws {
        print("")
        print("The web view: \(session.servers[0].url)/ (the catalog, the register of agreements, the transparency log, the audit in your browser)")
        print("Sign in within five minutes, one link each (read-only):")
        for (name, client) in [("emergency-services", session.emergencyClient), ("transport", session.transportClient),
                               ("health", session.healthClient), ("auditor", session.auditorClient), ("operator", session.operatorClient)] {
            let (_, json) = try await client.send("POST", "/web/sessions", body: Array("{}".utf8))
            print("  \(name.padding(toLength: 19, withPad: " ", startingAt: 0)) \(json["link"]?.stringValue ?? "?")")
        }
        print("For a new link later: civitas web login --key KEYS/NAME.secret --broker \(session.servers[0].url)")
    }

    /// Returns when the process is asked to stop (Ctrl-C or SIGTERM).
    static func waitForInterrupt() async {
        fflush(nil)  // everything printed so far is shown before the wait, also through a pipe
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let once = InterruptOnce(done)
            for number in [SIGINT, SIGTERM] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .main)
                source.setEventHandler { once.fire() }
                source.resume()
                once.keep(source)
            }
        }
    }

    private func makeTemporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "civitas-demo-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

/// Resumes a continuation once, whichever signal comes first, and keeps the signal sources alive.
private final class InterruptOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Void, Never>?
    private var sources: [any DispatchSourceSignal] = []

    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = continuation }

    func keep(_ source: any DispatchSourceSignal) { lock.withLock { sources.append(source) } }

    func fire() {
        let pending = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            defer { continuation = nil }
            return continuation
        }
        pending?.resume()
    }
}
