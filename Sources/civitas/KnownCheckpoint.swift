import CivitasCrypto
import CivitasLog
import Foundation

/// The last checkpoint of a broker's log a partner verified, kept in a file (the signed note, as
/// `civitas audit --checkpoint` keeps it). Each newer checkpoint the broker shows must extend it:
/// the same root at the same size, or an RFC 9162 consistency proof from it to the larger tree.
/// A broker that shows one partner a log and others a different one (a fork), or takes entries
/// back (a rollback), is caught at the partner's next pull, not only at the next audit.
struct KnownCheckpoint {
    let path: String
    let broker: PublicKeys
    /// Keys the broker signed its log with before rotating to `broker`: the kept checkpoint may be theirs.
    var previousBrokers: [PublicKeys] = []
    /// Longest checkpoint file read.
    static let maximumBytes = 16 * 1024

    /// What became of the kept checkpoint.
    enum Outcome: Equatable {
        /// None was kept: `latest` is kept from now on.
        case firstKept
        /// `latest` is the kept one.
        case unchanged
        /// `latest` extends the kept one (of `from` entries) and replaces it.
        case extended(from: UInt64)

        /// How the pull reports it.
        func sentence(_ path: String) -> String {
            switch self {
            case .firstKept: return "now kept in \(path) (the first checkpoint of this log seen)"
            case .unchanged: return "the one kept in \(path)"
            case .extended(let from): return "which extends the one of \(from) entries kept in \(path) (consistency proof checked)"
            }
        }
    }

    /// Checks `latest` (a note signed by the broker) against the kept checkpoint, asking `proof`
    /// for the consistency proof between two sizes when it is larger, and keeps it. Throws, and
    /// keeps the file as it was, when the two cannot both be true.
    func advance(to latest: String, proof: (_ from: UInt64, _ to: UInt64) async throws -> [MerkleDigest]) async throws -> Outcome {
        let new = try Self.verify(latest, broker: broker, what: "the broker's checkpoint")
        guard Files.exists(path) else {
            try keep(latest)
            return .firstKept
        }
        let keptNote = String(decoding: try Files.read(path, limit: Self.maximumBytes, what: "checkpoint file"), as: UTF8.self)
        let kept: Checkpoint
        if let earlier = previousBrokers.lazy.compactMap({ try? Self.verify(keptNote, broker: $0, what: "") }).first {
            kept = earlier
        } else {
            kept = try Self.verify(keptNote, broker: broker, what: "the checkpoint kept in \(path)")
        }
        guard kept.origin == new.origin else {
            throw CLIError("the broker's checkpoint is for log \"\(new.origin)\", but \(path) keeps one of log \"\(kept.origin)\"")
        }
        if new.size < kept.size {
            throw CLIError("the broker's log was rolled back or forked: it now shows \(new.size) entries, but \(path) keeps its signed checkpoint of \(kept.size) (root \(Hex.encode(kept.rootHash)))")
        }
        if new.size == kept.size {
            guard new.rootHash == kept.rootHash else {
                throw CLIError("the broker's log forked: two signed checkpoints of \(new.size) entries with different roots, \(Hex.encode(kept.rootHash)) in \(path) and \(Hex.encode(new.rootHash)) now")
            }
            return .unchanged
        }
        let hashes = try await proof(kept.size, new.size)
        do {
            try MerkleVerifier.verifyConsistency(size1: kept.size, size2: new.size, root1: kept.rootHash, root2: new.rootHash, proof: hashes)
        } catch let error as MerkleProofError {
            throw CLIError("the broker's log forked: its checkpoint of \(new.size) entries (root \(Hex.encode(new.rootHash))) does not extend the one of \(kept.size) entries in \(path) (root \(Hex.encode(kept.rootHash))): \(error.message)")
        }
        try keep(latest)
        return .extended(from: kept.size)
    }

    private func keep(_ note: String) throws {
        let file = try Files.AtomicFile(path: path, mode: 0o644)
        try Array(note.utf8).withUnsafeBytes { try FileDescriptorSink(descriptor: file.descriptor, name: path).write($0) }
        try file.commit(replacing: true)
    }

    private static func verify(_ note: String, broker: PublicKeys, what: String) throws -> Checkpoint {
        guard let origin = note.split(separator: "\n", maxSplits: 1).first.map(String.init) else {
            throw CLIError("\(what) has no origin line")
        }
        do {
            return try Checkpoint.verify(note: note, key: try NoteKey(name: origin, publicKey: broker.signingKey))
        } catch let error as LogError {
            throw CLIError("\(what) is not signed by the broker: \(error.message)")
        }
    }
}
