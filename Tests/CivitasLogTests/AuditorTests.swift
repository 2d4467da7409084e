import CivitasCrypto
import Foundation
import Testing
@testable import CivitasLog

/// A small but complete history: participants, a dataset, an agreement and
/// releases whose envelopes the broker really sealed.
struct Scenario {
    let broker: SecretKeys
    let agency: SecretKeys
    let partner: SecretKeys
    var log: ExchangeLog
    var checkpoints: [String] = []
    let policy = SHA256Hasher.hash(Array("policy".utf8))

    init() throws {
        broker = try SecretKeys.generate(name: "broker")
        agency = try SecretKeys.generate(name: "transport")
        partner = try SecretKeys.generate(name: "health")
        log = try ExchangeLog(origin: "civitas.example/test-log")
        try log.append(time: "2026-03-01T09:00:00Z", type: .participantRegistered, members: LogEvents.participantRegistered(agency.publicKeys, role: "agency"))
        try log.append(time: "2026-03-01T09:00:01Z", type: .participantRegistered, members: LogEvents.participantRegistered(partner.publicKeys, role: "partner"))
        try log.append(time: "2026-03-01T09:01:00Z", type: .datasetRegistered,
                       members: LogEvents.datasetRegistered(dataset: "traffic-flow", publisher: agency.keyID, schemaSHA256: SHA256Hasher.hash([1])))
        try offer("ag-1", from: "2026-03-01T00:00:00Z", until: "2026-12-31T23:59:59Z", budgetMicro: 1_000_000)
        try log.append(time: "2026-03-02T10:00:00Z", type: .agreementAccepted, members: LogEvents.agreementAccepted(agreement: "ag-1", partner: partner.keyID))
        checkpoints.append(try log.checkpoint(signer: broker))
    }

    mutating func offer(_ id: String, from: String, until: String, budgetMicro: UInt64, time: String = "2026-03-02T09:00:00Z") throws {
        try log.append(time: time, type: .agreementOffered, members: LogEvents.agreementOffered(
            agreement: id, dataset: "traffic-flow", publisher: agency.keyID, partner: partner.keyID, purposes: ["mobility-planning"],
            policySHA256: policy, legalBasis: "public-task", validFrom: from, validUntil: until, epsilonBudgetMicro: budgetMicro))
    }

    mutating func release(_ id: String, agreement: String = "ag-1", time: String, epsilonMicro: UInt64, signer: SecretKeys? = nil) throws {
        let summary = try Self.seal(signer ?? broker, to: partner.publicKeys)
        try log.append(time: time, type: .releaseDelivered, members: LogEvents.releaseDelivered(
            release: id, agreement: agreement, dataset: "traffic-flow", partner: partner.keyID, purpose: "mobility-planning",
            policySHA256: policy, envelope: summary, recordsReleased: 120, recordsSuppressed: 3, kAchieved: 5,
            epsilonMicro: epsilonMicro, transforms: ["k": 5]))
    }

    static func seal(_ issuer: SecretKeys, to recipient: PublicKeys) throws -> EnvelopeSummary {
        let sink = MemorySink()
        return try EnvelopeSealer(issuer: issuer, recipient: recipient, contentType: "text/csv")
            .seal(from: MemorySource(Array("a,b\n1,2\n".utf8)), payloadLength: 8, to: sink)
    }

    mutating func checkpoint() throws { checkpoints.append(try log.checkpoint(signer: broker)) }

    /// The export with a checkpoint line after the entries each checkpoint covers.
    func export() throws -> [UInt8] {
        let key = try NoteKey(name: log.origin, publicKey: broker.publicKeys.signingKey)
        var lines = [try LogExport.header(origin: log.origin, logKey: key)]
        var pending = checkpoints.map { (try? Checkpoint.verify(note: $0, key: key)).map { ($0.size, $0) } }.compactMap { $0 }
        var notes = checkpoints
        for (i, entry) in log.entries.enumerated() {
            lines.append(entry)
            while let first = pending.first, first.0 == UInt64(i + 1) {
                lines.append(try LogExport.checkpointLine(notes.removeFirst()))
                pending.removeFirst()
            }
        }
        return lines.flatMap { $0 + [0x0A] }
    }

    func audit(_ export: [UInt8], saved: String? = nil) -> AuditReport {
        Auditor(broker: broker.publicKeys).audit(MemorySource(export), savedCheckpoint: saved)
    }
}

/// Splits an export into lines and joins them back.
private func lines(_ export: [UInt8]) -> [[UInt8]] { export.split(separator: 0x0A).map(Array.init) }
private func join(_ lines: [[UInt8]]) -> [UInt8] { lines.flatMap { $0 + [0x0A] } }

@Suite("Auditor")
struct AuditorTests {
    func sound() throws -> Scenario {
        var scenario = try Scenario()
        try scenario.release("r-1", time: "2026-03-03T08:00:00Z", epsilonMicro: 400_000)
        try scenario.checkpoint()
        try scenario.release("r-2", time: "2026-03-04T08:00:00Z", epsilonMicro: 400_000)
        try scenario.checkpoint()
        return scenario
    }

    @Test("A sound log passes: every checkpoint, envelope and budget checks out")
    func passes() throws {
        let scenario = try sound()
        let report = scenario.audit(try scenario.export())
        #expect(report.passed, "\(report.findings)")
        #expect(report.entries == 7)
        #expect(report.checkpointsVerified == 3)
        #expect(report.releasesVerified == 2)
        #expect(report.agreements["ag-1"]?.spentMicro == 800_000)
        #expect(report.latestCheckpoint?.size == 7)
    }

    @Test("A flipped byte inside any entry but the last names that entry")
    func flippedValue() throws {
        let scenario = try sound()
        let original = lines(try scenario.export())
        let entryLines = original.indices.filter { !original[$0].starts(with: Array(#"{"checkpoint""#.utf8)) && $0 > 0 }
        for (entryIndex, lineIndex) in entryLines.enumerated() {
            // Change a time digit: still valid, canonical JSON, so only the hashes can tell.
            var mutated = original
            let line = mutated[lineIndex]
            guard let at = Self.range(of: Array(#""time":"2026-0"#.utf8), in: line) else { continue }
            mutated[lineIndex][at + 14] = UInt8(ascii: "4")
            let report = scenario.audit(join(mutated))
            let finding = try #require(report.findings.first, "entry \(entryIndex) tamper not caught")
            #expect(finding.entry == UInt64(entryIndex), "\(finding)")
            #expect([.entryAltered, .checkpointMismatch].contains(finding.code))
        }
    }

    @Test("A byte that breaks an entry's JSON or canonical form is named")
    func brokenEntry() throws {
        let scenario = try sound()
        var mutated = lines(try scenario.export())
        mutated[3][0] = UInt8(ascii: " ")
        let finding = try #require(scenario.audit(join(mutated)).findings.first)
        #expect(finding.code == .invalidEntry && finding.entry == 2)
    }

    @Test("A dropped entry and two reordered entries are named")
    func droppedAndReordered() throws {
        let scenario = try sound()
        var dropped = lines(try scenario.export())
        dropped.remove(at: 3)   // entry 2
        let droppedFinding = try #require(scenario.audit(join(dropped)).findings.first)
        #expect(droppedFinding.code == .entryOutOfOrder && droppedFinding.entry == 2)

        var reordered = lines(try scenario.export())
        reordered.swapAt(2, 3)  // entries 1 and 2
        let reorderedFinding = try #require(scenario.audit(join(reordered)).findings.first)
        #expect(reorderedFinding.code == .entryOutOfOrder && reorderedFinding.entry == 1)
    }

    @Test("A forked history re-signed with the broker key is refused against the auditor's saved checkpoint")
    func fork() throws {
        let honest = try sound()
        let saved = try #require(honest.checkpoints.last)
        // Same key, different history: r-1 charged less, everything re-chained and re-signed.
        var forked = try Scenario()
        var forkedLog = try ExchangeLog(origin: honest.log.origin)
        for bytes in honest.log.entries.prefix(5) {
            let entry = try LogEntry.parse(bytes, position: forkedLog.size)
            try forkedLog.append(time: entry.time, type: entry.type, members: entry.members)
        }
        forked = Scenario(copying: forked, log: forkedLog, broker: honest.broker, agency: honest.agency, partner: honest.partner)
        try forked.release("r-1", time: "2026-03-03T08:00:00Z", epsilonMicro: 100_000)
        try forked.release("r-2", time: "2026-03-04T08:00:00Z", epsilonMicro: 100_000)
        try forked.release("r-3", time: "2026-03-05T08:00:00Z", epsilonMicro: 100_000)
        try forked.checkpoint()
        // On its own the fork is internally consistent...
        #expect(forked.audit(try forked.export()).passed)
        // ...but not with what the auditor saw before.
        let report = forked.audit(try forked.export(), saved: saved)
        let finding = try #require(report.findings.first)
        #expect(finding.code == .fork)
        #expect(finding.evidence["saved"] == saved)
        #expect(finding.evidence["latest"] != nil)
        #expect(!(finding.evidence["proof"] ?? "").isEmpty)
    }

    @Test("A rollback to a shorter log is refused")
    func rollback() throws {
        let scenario = try sound()
        let saved = try #require(scenario.checkpoints.last)
        // The export an operator rolled back: the first five entries and the genuine checkpoint over them.
        let all = lines(try scenario.export())
        let cut = try #require(all.firstIndex { $0.starts(with: Array(#"{"checkpoint""#.utf8)) })
        let shorter = join(Array(all[...cut]))
        #expect(scenario.audit(shorter).passed)
        let finding = try #require(scenario.audit(shorter, saved: saved).findings.first)
        #expect(finding.code == .rollback)
        #expect(finding.evidence["saved"] == saved)
    }

    @Test("A checkpoint not signed by the broker, or entries after the last checkpoint, are refused")
    func unsignedOrUncovered() throws {
        var scenario = try sound()
        var mutated = lines(try scenario.export())
        let stranger = try SecretKeys.generate(name: "stranger")
        let forged = try scenario.log.checkpoint(signer: stranger)
        mutated[mutated.count - 1] = try LogExport.checkpointLine(forged)
        #expect(scenario.audit(join(mutated)).findings.first?.code == .badCheckpoint)

        try scenario.release("r-3", time: "2026-03-05T08:00:00Z", epsilonMicro: 100_000)
        #expect(scenario.audit(try scenario.export()).findings.first?.code == .uncoveredEntries)
    }

    @Test("Compliance: releases outside an active agreement, over budget or with a foreign envelope are named")
    func compliance() throws {
        var scenario = try Scenario()
        let stranger = try SecretKeys.generate(name: "stranger")
        try scenario.release("r-early", time: "2026-03-02T09:30:00Z", epsilonMicro: 100_000)       // before acceptance
        try scenario.release("r-1", time: "2026-03-03T08:00:00Z", epsilonMicro: 500_000)
        try scenario.release("r-2", time: "2026-03-04T08:00:00Z", epsilonMicro: 500_000)            // 1.1 > 1.0
        try scenario.release("r-forged", time: "2026-03-04T09:00:00Z", epsilonMicro: 0, signer: stranger)
        try scenario.release("r-ghost", agreement: "ag-none", time: "2026-03-04T10:00:00Z", epsilonMicro: 0)
        try scenario.log.append(time: "2026-03-05T00:00:00Z", type: .agreementRevoked,
                                members: LogEvents.agreementRevoked(agreement: "ag-1", by: scenario.agency.keyID))
        try scenario.release("r-late", time: "2026-03-06T08:00:00Z", epsilonMicro: 0)
        try scenario.checkpoint()
        let report = scenario.audit(try scenario.export())
        let codes = report.findings.map { "\($0.code):\($0.entry ?? 99)" }
        #expect(codes.contains("agreementNotActive:5"), "\(codes)")
        #expect(codes.contains("budgetExceeded:7"), "\(codes)")
        #expect(codes.contains("badEnvelopeSignature:8"), "\(codes)")
        #expect(codes.contains("unknownAgreement:9"), "\(codes)")
        #expect(codes.contains("agreementNotActive:11"), "\(codes)")
        #expect(report.agreements["ag-1"]?.spentMicro == 1_100_000)
    }

    @Test("Charges that add up past 2^64 millionths are a finding, not a crash")
    func overflowingCharges() throws {
        var scenario = try Scenario()
        // An entry's count is at most 2^53 (exact in JSON); 2,049 of them pass 2^64.
        for i in 0..<2_049 {
            try scenario.release("r-\(i)", time: "2026-03-03T08:00:00Z", epsilonMicro: 1 << 53)
        }
        try scenario.checkpoint()
        let report = scenario.audit(try scenario.export())
        #expect(report.findings.contains { $0.code == .budgetExceeded })
        #expect(report.findings.contains { $0.message.contains("overflows") }, "\(report.findings)")
    }

    static func range(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        return (0...(haystack.count - needle.count)).first { Array(haystack[$0..<$0 + needle.count]) == needle }
    }
}

extension Scenario {
    /// A scenario with another log and key set (to build forks and rollbacks).
    init(copying other: Scenario, log: ExchangeLog, broker: SecretKeys, agency: SecretKeys, partner: SecretKeys) {
        self.broker = broker
        self.agency = agency
        self.partner = partner
        self.log = log
        self.checkpoints = []
    }
}
