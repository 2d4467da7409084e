import CivitasCrypto
import CivitasLog
@testable import CivitasStore

/// Writes participants and datasets through the storage transaction with the log entries the
/// broker would append, for tests of the store on its own.
extension BrokerStorage {
    @discardableResult
    func registerParticipant(_ keys: PublicKeys, role: Participant.Role, now: UTCTime) throws -> Participant {
        let participant = Participant(keys: keys, role: role, registered: now)
        try transaction { transaction in
            try transaction.insertParticipant(participant)
            _ = try transaction.appendLog(time: now, type: .participantRegistered, members: LogEvents.participantRegistered(keys, role: role.rawValue))
        }
        return participant
    }

    @discardableResult
    func registerDataset(id: String, publisher: KeyID, schema: [UInt8], purposes: [String] = [], now: UTCTime) throws -> Dataset {
        let dataset = Dataset(id: id, publisher: publisher, schema: schema, schemaSHA256: SHA256Hasher.hash(schema), purposes: purposes, registered: now)
        try transaction { transaction in
            try transaction.insertDataset(dataset)
            _ = try transaction.appendLog(time: now, type: .datasetRegistered,
                                          members: LogEvents.datasetRegistered(dataset: id, publisher: publisher, schemaSHA256: dataset.schemaSHA256))
        }
        return dataset
    }
}
