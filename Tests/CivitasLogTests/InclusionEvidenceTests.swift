import CivitasCrypto
import Testing
@testable import CivitasLog

@Suite("Inclusion evidence")
struct InclusionEvidenceTests {
    func log(entries: Int) throws -> (ExchangeLog, SecretKeys) {
        let broker = try SecretKeys.generate(name: "broker")
        var log = try ExchangeLog(origin: "civitas.example/evidence")
        for number in 0..<entries {
            try log.append(time: "2026-11-27T10:00:00Z", type: .agreementExpired, members: ["agreement": .string("ag-\(number)")])
        }
        return (log, broker)
    }

    func evidence(_ log: ExchangeLog, _ broker: SecretKeys, index: UInt64) throws -> InclusionEvidence {
        InclusionEvidence(entry: log.entries[Int(index)], index: index, proof: try log.tree.inclusionProof(index: index),
                          checkpoint: try log.checkpoint(signer: broker))
    }

    @Test("Every entry of logs up to 17 entries proves its inclusion, also after a JSON round trip")
    func everyEntry() throws {
        for size in 1...17 {
            let (log, broker) = try log(entries: size)
            for index in 0..<UInt64(size) {
                let parsed = try InclusionEvidence.parse(try evidence(log, broker, index: index).jsonValue())
                let (entry, checkpoint) = try parsed.verify(broker: broker.publicKeys)
                #expect(entry.string("agreement") == "ag-\(index)" && checkpoint.size == UInt64(size))
            }
        }
    }

    @Test("An altered entry, a proof for another entry, another key's checkpoint or a wrong index are refused")
    func refusals() throws {
        let (log, broker) = try log(entries: 9)
        let good = try evidence(log, broker, index: 4)
        var altered = good.entry
        altered[altered.count - 3] ^= 0x01
        let other = try evidence(log, broker, index: 5)
        let stranger = try SecretKeys.generate(name: "broker")
        let cases: [InclusionEvidence] = [
            InclusionEvidence(entry: altered, index: 4, proof: good.proof, checkpoint: good.checkpoint),
            InclusionEvidence(entry: good.entry, index: 4, proof: other.proof, checkpoint: good.checkpoint),
            InclusionEvidence(entry: good.entry, index: 4, proof: good.proof, checkpoint: try log.checkpoint(signer: stranger)),
            InclusionEvidence(entry: good.entry, index: 5, proof: good.proof, checkpoint: good.checkpoint),
            InclusionEvidence(entry: good.entry, index: 4, proof: Array(good.proof.dropLast()), checkpoint: good.checkpoint),
        ]
        for evidence in cases {
            #expect(throws: LogError.self) { _ = try evidence.verify(broker: broker.publicKeys) }
        }
        _ = try good.verify(broker: broker.publicKeys)
    }
}
