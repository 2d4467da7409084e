import CivitasCrypto
import CivitasLog
import Foundation
import Synchronization
import Testing
@testable import CivitasStore

/// Several broker nodes on one PostgreSQL database, as separate stores would be in separate
/// processes: the database, not a lock in one process, keeps budgets, the log and nonces whole.
@Suite("Broker nodes sharing one PostgreSQL database")
struct SharedDatabaseTests {
    static let now: UTCTime = "2026-12-05T10:00:00Z"

    @Test("Charges from three nodes at once spend a budget exactly; the log stays one chain every node can prove")
    func concurrentCharges() throws {
        let database = try TemporaryPostgres()
        let nodes = try (0..<3).map { _ in try database.node(connections: 6) }
        let agency = try SecretKeys.generate(name: "agency"), partner = try SecretKeys.generate(name: "partner")
        try nodes[0].registerParticipant(agency.publicKeys, role: .agency, now: Self.now)
        try nodes[1].registerParticipant(partner.publicKeys, role: .partner, now: Self.now)
        try nodes[2].registerDataset(id: "calls", publisher: agency.keyID, schema: Array("{}".utf8), now: Self.now)
        let charge: UInt64 = 10_000
        try nodes[0].transaction { transaction in
            try transaction.insertAgreement(StoredAgreement(id: "ag-1", dataset: "calls", publisher: agency.keyID, partner: partner.keyID,
                                                            policy: Array("{}".utf8), policySHA256: SHA256Hasher.hash([1]), offerSignature: [1],
                                                            validFrom: "2026-12-01T00:00:00Z", validUntil: "2026-12-31T00:00:00Z",
                                                            budgetMicro: 100 * charge, offered: Self.now))
        }
        let before = nodes[0].logSize

        // 400 charges, spread over the three nodes, each a read of the budget, a check, a charge and a log entry.
        let outcomes = Mutex<(charged: Int, refused: Int, failed: [String])>((0, 0, []))
        DispatchQueue.concurrentPerform(iterations: 400) { attempt in
            let node = nodes[attempt % nodes.count]
            do {
                let charged = try node.transaction { transaction -> Bool in
                    var agreement = try transaction.agreement("ag-1")
                    guard agreement.spentMicro + charge <= agreement.budgetMicro else { return false }
                    agreement.spentMicro += charge
                    try transaction.updateAgreement(agreement)
                    _ = try transaction.appendLog(time: Self.now, type: .consentGranted,
                                                  members: LogEvents.consentRecorded(dataset: "calls", subject: SHA256Hasher.hash(Array("\(attempt)".utf8)),
                                                                                     purpose: "research", recordedBy: agency.keyID))
                    return true
                }
                outcomes.withLock { if charged { $0.charged += 1 } else { $0.refused += 1 } }
            } catch {
                outcomes.withLock { $0.failed.append("\(error)") }
            }
        }
        let result = outcomes.withLock { $0 }
        #expect(result.failed.isEmpty, "\(result.failed.prefix(3))")
        #expect(result.charged == 100 && result.refused == 300)
        #expect(try nodes[1].agreement("ag-1")?.spentMicro == 100 * charge)
        for node in nodes { #expect(node.logSize == before + 100) }

        // Every node proves the newest entry (its cache catches up) and exports a log the auditor accepts.
        let broker = try SecretKeys.generate(name: "broker")
        var notes: Set<String> = []
        for node in nodes {
            let evidence = try node.logInclusionEvidence(index: before + 99, signer: broker)
            notes.insert(evidence.checkpoint)
            let exporter = try node.logExporter(signer: broker, pageEntries: 37)
            var export: [UInt8] = []
            while let page = try exporter.nextPage() { export += page }
            let report = Auditor(broker: broker.publicKeys).audit(MemorySource(export))
            #expect(report.findings.isEmpty && report.entries == before + 100, "\(report.findings.prefix(3))")
        }
        // Any node signs the same checkpoint for the same log.
        #expect(notes.count == 1)
        // A node started now checks the whole shared log and agrees.
        #expect(try database.node().logSize == before + 100)
    }

    @Test("Two nodes that lock the same rows in opposite orders deadlock; the one PostgreSQL picks runs again and both changes commit")
    func deadlockIsRunAgain() throws {
        let database = try TemporaryPostgres()
        let nodes = [try database.node(), try database.node()]
        let agency = try SecretKeys.generate(name: "agency"), partner = try SecretKeys.generate(name: "partner")
        try nodes[0].registerParticipant(agency.publicKeys, role: .agency, now: Self.now)
        try nodes[0].registerParticipant(partner.publicKeys, role: .partner, now: Self.now)
        try nodes[0].registerDataset(id: "calls", publisher: agency.keyID, schema: Array("{}".utf8), now: Self.now)
        for id in ["ag-1", "ag-2"] {
            try nodes[0].transaction { transaction in
                try transaction.insertAgreement(StoredAgreement(id: id, dataset: "calls", publisher: agency.keyID, partner: partner.keyID,
                                                                policy: Array("{}".utf8), policySHA256: SHA256Hasher.hash(Array(id.utf8)), offerSignature: [1],
                                                                validFrom: "2026-12-01T00:00:00Z", validUntil: "2026-12-31T00:00:00Z",
                                                                budgetMicro: 1_000, offered: Self.now))
            }
        }
        let runs = Mutex(0)
        let failures = Mutex<[String]>([])
        // Each holds its first row before either asks for its second: a deadlock for sure.
        let holding = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        let both = DispatchGroup()
        for index in 0..<2 {
            both.enter()
            Thread.detachNewThread {
                defer { both.leave() }
                let order = index == 0 ? ["ag-1", "ag-2"] : ["ag-2", "ag-1"]
                var attempt = 0
                do {
                    try nodes[index].transaction { transaction in
                        runs.withLock { $0 += 1 }
                        attempt += 1
                        for (step, id) in order.enumerated() {
                            var agreement = try transaction.agreement(id)
                            agreement.spentMicro += 1
                            try transaction.updateAgreement(agreement)
                            if step == 0 && attempt == 1 {
                                holding[index].signal()
                                _ = holding[1 - index].wait(timeout: .now() + 10)
                            }
                        }
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        both.wait()
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        #expect(runs.withLock { $0 } >= 3, "no transaction was run again: there was no deadlock to resolve")
        #expect(try nodes[1].agreement("ag-1")?.spentMicro == 2 && nodes[1].agreement("ag-2")?.spentMicro == 2)
    }

    @Test("A nonce recorded by one node is a replay at another")
    func noncesAcrossNodes() throws {
        let database = try TemporaryPostgres()
        let first = try database.node(), second = try database.node()
        try first.recordNonce(keyID: "k1", nonce: "n1", created: 1000, oldestAccepted: 700)
        #expect(throws: StoreError(.replayed, "")) { try second.recordNonce(keyID: "k1", nonce: "n1", created: 1001, oldestAccepted: 701) }
        // The same nonce sent to both at once is taken by exactly one.
        let taken = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            let node = index == 0 ? first : second
            if (try? node.recordNonce(keyID: "k2", nonce: "race", created: 1000, oldestAccepted: 700)) != nil { taken.withLock { $0 += 1 } }
        }
        #expect(taken.withLock { $0 } == 1)
    }

    @Test("Nodes starting together migrate the database once; a tampered head row stops a node from starting")
    func startingAndTampering() throws {
        let database = try TemporaryPostgres()
        let opened = Mutex<[Result<[String], any Error>]>([])
        DispatchQueue.concurrentPerform(iterations: 3) { _ in
            let result = Result { try database.node().appliedMigrations() }
            opened.withLock { $0.append(result) }
        }
        let migrations = try opened.withLock { results in try results.map { try $0.get() } }
        #expect(Set(migrations.map { $0 }).count == 1 && migrations[0] == PostgresMigrations.all.map(\.name))

        let node = try database.node()
        _ = try node.transaction { try $0.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": "ag-1"]) }
        _ = try database.node()
        try node.withSession { try $0.execute("UPDATE log_head SET last_leaf = decode(repeat('11', 32), 'hex')") }
        #expect(throws: StoreError(.corrupt, "")) { try database.node() }
    }
}
