import CivitasCrypto
import Testing
@testable import CivitasLog

/// The auditor follows the broker's keys through a rotation: the checkpoints before it are the
/// old key's, the one first covering it carries both signatures, those after it the new key's,
/// and the envelopes after it are signed by the new key. Each way of breaking that is refused,
/// beside the sound log that passes.
@Suite("Auditing a rotation of the broker's key")
struct KeyRotationAuditTests {
    /// A sound log: releases under the old key, the rotation, releases under the new key.
    struct RotatedLog {
        var scenario: Scenario
        let newKey: SecretKeys
        let rotationIndex: UInt64
        /// Checkpoint notes, each placed after the entries it covers.
        var notes: [String]

        init(rotationCheckpointSigners: (SecretKeys, SecretKeys) -> [SecretKeys] = { [$0, $1] },
             introducer: SecretKeys? = nil, laterSigner: ((SecretKeys, SecretKeys) -> SecretKeys)? = nil) throws {
            var scenario = try Scenario()
            let old = scenario.broker
            let new = try SecretKeys.generate(name: "broker-2027")
            try scenario.release("r-1", time: "2026-03-03T08:00:00Z", epsilonMicro: 200_000)
            try scenario.checkpoint()
            let rotation = try BrokerKeyRotation(origin: scenario.log.origin, previous: introducer ?? old, replacement: new.publicKeys)
            var members = rotation.members
            if introducer != nil {
                // A rotation that names the old key as retiring but was signed by another.
                members["previous"] = .string(old.keyID.hex)
                members["previous_ed25519"] = .string(Base64.encode(old.publicKeys.signingKey))
                members["previous_x25519"] = .string(Base64.encode(old.publicKeys.encryptionKey))
            }
            try scenario.log.append(time: "2026-03-04T00:00:00Z", type: .brokerKeyRotated, members: members)
            rotationIndex = scenario.log.size - 1
            var notes = scenario.checkpoints
            notes.append(try Self.note(scenario.log, signers: rotationCheckpointSigners(old, new)))
            try scenario.release("r-2", time: "2026-03-05T08:00:00Z", epsilonMicro: 200_000, signer: new)
            notes.append(try Self.note(scenario.log, signers: [laterSigner?(old, new) ?? new]))
            self.scenario = scenario
            self.newKey = new
            self.notes = notes
        }

        static func note(_ log: ExchangeLog, signers: [SecretKeys]) throws -> String {
            let checkpoint = try Checkpoint(origin: log.origin, size: log.size, rootHash: try log.tree.root())
            var note = try checkpoint.signedNote(signer: signers[0], keyName: log.origin)
            for signer in signers.dropFirst() { note += try checkpoint.signatureLine(signer: signer, keyName: log.origin) + "\n" }
            return note
        }

        func export(headerKey: SecretKeys? = nil) throws -> [UInt8] {
            let key = try NoteKey(name: scenario.log.origin, publicKey: (headerKey ?? newKey).publicKeys.signingKey)
            var lines = [try LogExport.header(origin: scenario.log.origin, logKey: key)]
            var pending = try notes.map { (try Checkpoint.statement(of: $0).size, $0) }
            for (i, entry) in scenario.log.entries.enumerated() {
                lines.append(entry)
                while let first = pending.first, first.0 == UInt64(i + 1) {
                    lines.append(try LogExport.checkpointLine(first.1))
                    pending.removeFirst()
                }
            }
            return lines.flatMap { $0 + [0x0A] }
        }

        func audit(_ export: [UInt8], key: PublicKeys? = nil, saved: String? = nil) -> AuditReport {
            Auditor(broker: key ?? scenario.broker.publicKeys).audit(MemorySource(export), savedCheckpoint: saved)
        }
    }

    @Test("The sound rotation passes, and the report names both keys in order")
    func soundRotation() throws {
        let log = try RotatedLog()
        let report = log.audit(try log.export())
        #expect(report.passed, "\(report.findings)")
        #expect(report.brokerKeys == [log.scenario.broker.keyID, log.newKey.keyID])
        #expect(report.releasesVerified == 2)
        // The auditor's checkpoint saved before the rotation is still a prefix of the log.
        #expect(log.audit(try log.export(), saved: log.notes[0]).passed)
    }

    @Test("The checkpoint first covering the rotation must carry both keys' signatures")
    func rotationCheckpointNeedsBoth() throws {
        for signers in [{ (_: SecretKeys, new: SecretKeys) in [new] }, { (old: SecretKeys, _: SecretKeys) in [old] }] {
            let log = try RotatedLog(rotationCheckpointSigners: signers)
            let finding = try #require(log.audit(try log.export()).findings.first)
            #expect(finding.code == .badKeyRotation, "\(finding)")
        }
    }

    @Test("After the rotation a checkpoint signed only by the retired key is refused")
    func retiredKeyRefused() throws {
        let log = try RotatedLog(laterSigner: { old, _ in old })
        let finding = try #require(log.audit(try log.export()).findings.first)
        #expect(finding.code == .badKeyRotation && finding.message.contains("retired"), "\(finding)")
    }

    @Test("A rotation the retiring key did not sign is refused")
    func forgedIntroduction() throws {
        let log = try RotatedLog(introducer: try SecretKeys.generate(name: "intruder"))
        let finding = try #require(log.audit(try log.export()).findings.first)
        #expect(finding.code == .badKeyRotation && finding.message.contains("did not sign"), "\(finding)")
    }

    @Test("Checkpoints signed by a key the log never introduced are refused")
    func keyNotIntroduced() throws {
        var scenario = try Scenario()
        try scenario.release("r-1", time: "2026-03-03T08:00:00Z", epsilonMicro: 200_000)
        let stranger = try SecretKeys.generate(name: "broker-2027")
        let note = try RotatedLog.note(scenario.log, signers: [stranger])
        scenario.checkpoints = [note]
        let key = try NoteKey(name: scenario.log.origin, publicKey: scenario.broker.publicKeys.signingKey)
        var lines = [try LogExport.header(origin: scenario.log.origin, logKey: key)]
        lines += scenario.log.entries
        lines.append(try LogExport.checkpointLine(note))
        let report = scenario.audit(lines.flatMap { $0 + [0x0A] })
        #expect(report.findings.first?.code == .badCheckpoint, "\(report.findings)")
    }

    @Test("An export that names a key other than the one the log ends with is refused")
    func headerNamesTheCurrentKey() throws {
        let log = try RotatedLog()
        let report = log.audit(try log.export(headerKey: log.scenario.broker))
        #expect(report.findings.first?.code == .wrongLogKey, "\(report.findings)")
    }
}
