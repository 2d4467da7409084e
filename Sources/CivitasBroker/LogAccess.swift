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

    /// Keeps the witnesses' cosignature lines (each without its newline) with the checkpoint of
    /// `size` entries; returns the note as now kept.
    public func keepCosignatures(checkpointSize size: UInt64, lines: [String]) throws -> String {
        try mapStore { try store.addSignatures(toCheckpointOfSize: size, lines: lines) }
    }

    /// The whole log as the auditor's export, checkpointed to its current size.
    public func logExport(for participant: Participant) throws -> any LogPages {
        try mapStore { try store.logExporter(signer: keys, pageEntries: 10_000) }
    }

    /// The RFC 9162 consistency proof from the log's first `size1` entries to its first `size2`
    /// (the log's size now when nil), and that size: with the two signed checkpoints of those
    /// sizes, it shows the larger log extends the smaller.
    public func consistencyProof(from size1: UInt64, to size2: UInt64?) throws -> (size: UInt64, proof: [MerkleDigest]) {
        let size = size2 ?? store.logSize
        return (size, try mapStore { try store.logConsistencyProof(from: size1, to: size) })
    }

    /// Entry `index` with its inclusion proof and a signed checkpoint covering it.
    public func inclusionEvidence(index: UInt64, for participant: Participant) throws -> InclusionEvidence {
        try mapStore { try store.logInclusionEvidence(index: index, signer: keys) }
    }
}
