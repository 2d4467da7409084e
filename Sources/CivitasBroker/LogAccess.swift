import CivitasCrypto
import CivitasLog
import CivitasStore

/// The exchange log as its readers see it: the signed checkpoint for anyone, the export and
/// inclusion evidence for participants.
extension Broker {
    /// The log's latest checkpoint, signed by the broker (a new one when entries were added).
    public func checkpoint() throws -> String {
        try mapStore { try store.checkpointLog(signer: keys) }
    }

    /// The whole log as the auditor's export, checkpointed to its current size.
    public func logExport(for participant: Participant) throws -> any LogPages {
        try mapStore { try store.logExporter(signer: keys, pageEntries: 10_000) }
    }

    /// Entry `index` with its inclusion proof and a signed checkpoint covering it.
    public func inclusionEvidence(index: UInt64, for participant: Participant) throws -> InclusionEvidence {
        try mapStore { try store.logInclusionEvidence(index: index, signer: keys) }
    }
}
