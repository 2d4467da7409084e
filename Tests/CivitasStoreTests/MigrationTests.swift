import Foundation
import GRDB
import Testing
@testable import CivitasStore

@Suite("Migrations")
struct MigrationTests {
    @Test("Consent rows of a store from before the event table become events, oldest first, and read the same states")
    func consentEvents() throws {
        let directory = NSTemporaryDirectory() + "civitas-migration-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = Configuration()
        configuration.foreignKeysEnabled = false
        let queue = try DatabaseQueue(path: directory + "/old.sqlite", configuration: configuration)
        try BrokerStore.migrator.migrate(queue, upTo: "2026-12-04 request keys")
        let first = Data(repeating: 1, count: 32), second = Data(repeating: 2, count: 32)
        try queue.write { db in
            for (subject, granted, updated) in [(second, false, "2026-12-02T00:00:00Z"), (first, true, "2026-12-01T00:00:00Z")] {
                try db.execute(sql: "INSERT INTO consent (dataset, subject, purpose, granted, record, updated) VALUES ('calls', ?, 'research', ?, ?, ?)",
                               arguments: [subject, granted, Data("{}".utf8), updated])
            }
        }
        try BrokerStore.migrator.migrate(queue)
        try queue.read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT subject, granted, recorded FROM consent_event ORDER BY id")
            #expect(rows.map { $0["subject"] as Data } == [first, second])
            #expect(rows.map { $0["granted"] as Bool } == [true, false])
            #expect(rows.map { $0["recorded"] as String } == ["2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"])
            #expect(try db.tableExists("consent") == false)
        }
    }
}
