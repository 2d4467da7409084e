import CivitasCrypto
import CivitasLog
import CivitasModel
import CivitasStore
import CivitasTime

/// Which key signs the log when the broker starts: its own, after a rotation from the previous
/// key if the log was signed by that one until now.
public enum BrokerKeyAdoption: Sendable, Equatable {
    /// The log is new, or already signed by the broker's key.
    case current
    /// The previous key introduced the broker's key in log entry `entry`; the checkpoint of
    /// `checkpointSize` entries carries both keys' signatures.
    case rotated(entry: UInt64, checkpointSize: UInt64)
}

extension Broker {
    /// Makes the broker's key the one that signs the log. When the latest checkpoint is signed by
    /// `previous` instead, the log is first checkpointed by `previous`, then a
    /// `broker.key_rotated` entry records `previous` introducing the broker's key, and the
    /// checkpoint covering it is signed by both. Refuses (`conflict`) a log whose latest
    /// checkpoint neither key signed. Run while no other node of the broker writes.
    public func adoptKey(previous: SecretKeys?, now: UTCTime) throws -> BrokerKeyAdoption {
        try mapStore {
            let origin = store.logOrigin
            guard let latest = try store.latestCheckpointNote() else { return .current }
            let ownKey = try NoteKey(name: origin, publicKey: keys.publicKeys.signingKey)
            if let checkpoint = try? Checkpoint.verify(note: latest, key: ownKey) {
                // The checkpoint covering a rotation is also the retiring key's: that key signs no more.
                if checkpoint.size > 0,
                   let rotation = BrokerKeyRotation(entry: try LogEntry.parse(try store.logEntry(at: checkpoint.size - 1), position: checkpoint.size - 1)),
                   rotation.previous.keyID == keys.keyID {
                    throw BrokerError(.conflict, "the broker key \(keys.keyID) was retired in log entry \(checkpoint.size - 1): start with its replacement \(rotation.replacement.keyID)")
                }
                return .current
            }
            guard let previous else {
                throw BrokerError(.conflict, "the log's latest checkpoint is not signed by the broker key \(keys.keyID) (a key a rotation retired signs no more): start with the key that signed it, or rotate to this key by giving the previous key")
            }
            let previousKey = try NoteKey(name: origin, publicKey: previous.publicKeys.signingKey)
            guard let covered = try? Checkpoint.verify(note: latest, key: previousKey) else {
                throw BrokerError(.conflict, "the log's latest checkpoint is signed neither by the broker key \(keys.keyID) nor by the previous key \(previous.keyID)")
            }
            // An earlier start may have recorded the rotation and stopped before signing its checkpoint.
            var rotationEntry: UInt64?
            for index in covered.size..<store.logSize {
                let entry = try LogEntry.parse(try store.logEntry(at: index), position: index)
                if let rotation = BrokerKeyRotation(entry: entry), rotation.previous.keyID == previous.keyID,
                   rotation.replacement.keyID == keys.keyID, rotation.isIntroduced(origin: origin) {
                    rotationEntry = index
                }
            }
            if rotationEntry == nil {
                // Every entry before the rotation is under a checkpoint of the previous key.
                _ = try store.checkpointLog(signer: previous)
                let rotation = try BrokerKeyRotation(origin: origin, previous: previous, replacement: keys.publicKeys)
                rotationEntry = try store.transaction { transaction in
                    try transaction.appendLog(time: now, type: .brokerKeyRotated, members: rotation.members)
                }
            }
            let note = try store.checkpointLog(signer: keys)
            let checkpoint = try Checkpoint.verify(note: note, key: ownKey)
            _ = try store.addSignatures(toCheckpointOfSize: checkpoint.size, lines: [try checkpoint.signatureLine(signer: previous, keyName: origin)])
            return .rotated(entry: rotationEntry ?? 0, checkpointSize: checkpoint.size)
        }
    }
}
