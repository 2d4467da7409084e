import CivitasBroker
import CivitasCrypto
import CivitasLog
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Synchronization

/// The witnesses the broker asks to cosign its checkpoints (C2SP tlog-witness): each new
/// checkpoint goes to every witness whose cosignature it lacks, with a consistency proof from
/// the size that witness last cosigned, and the cosignatures it answers are kept with the
/// checkpoint. A witness that cannot be reached or refuses leaves the checkpoint without its
/// cosignature; readers that require a quorum see that.
public final class CheckpointWitnesses: Sendable {
    /// One witness: where its submission prefix is and the key it cosigns with.
    public struct Witness: Sendable, Equatable {
        public let url: String
        public let key: CosignerKey

        /// Parses `URL VERIFIER-KEY` (the witness's submission prefix and its cosigner key).
        public init(_ text: String) throws {
            let parts = text.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count == 2, DatasetDescription.isWebIRI(String(parts[0])) else {
                throw WitnessConfigurationError("a witness is given as \"URL VERIFIER-KEY\" (its http(s) submission prefix, a space, its key), not '\(text.prefix(120))'")
            }
            url = parts[0].hasSuffix("/") ? String(parts[0].dropLast()) : String(parts[0])
            do { key = try CosignerKey(verifierKey: String(parts[1])) } catch {
                throw WitnessConfigurationError("witness \(parts[0]): \(error)")
            }
        }
    }

    /// Longest a witness may take to answer, in seconds.
    public static let timeout: TimeInterval = 5
    /// Longest witness answer read.
    static let maximumAnswer = 16 * 1024

    public let witnesses: [Witness]
    let broker: Broker
    let logger: Logger
    /// The size each witness (by name) last cosigned, as far as this node learnt.
    private let cosignedSizes = Mutex<[String: UInt64]>([:])
    /// Witnesses that failed, by name: how often in a row, and until when they are left alone
    /// (2 s doubling to a minute), so that readers do not wait on a witness that is down.
    private let backoff = Mutex<[String: (failures: Int, until: Date)]>([:])
    private let session = URLSession(configuration: .ephemeral, delegate: RedirectRefusal(), delegateQueue: nil)

    public init(_ witnesses: [Witness], broker: Broker, logger: Logger) throws {
        guard Set(witnesses.map(\.key.name)).count == witnesses.count else {
            throw WitnessConfigurationError("two witnesses share a name: each witness is named once")
        }
        self.witnesses = witnesses
        self.broker = broker
        self.logger = logger
    }

    /// The log's latest checkpoint with the cosignatures the witnesses give it. When a witness
    /// already cosigned a larger checkpoint (another node's), that one is taken instead.
    public func latestCheckpoint() async throws -> String {
        var note = try broker.checkpoint()
        for _ in 0..<3 {
            let (cosigned, witnessIsAhead) = await cosign(note)
            guard witnessIsAhead else { return cosigned }
            note = try broker.checkpoint()
        }
        return note
    }

    /// `note` with the cosignature of every witness that gives one (kept with the checkpoint),
    /// and whether some witness has cosigned a larger checkpoint of the log already.
    public func cosign(_ note: String) async -> (note: String, witnessIsAhead: Bool) {
        guard !witnesses.isEmpty, let checkpoint = try? Checkpoint.statement(of: note) else { return (note, false) }
        let present = (try? Cosignature.verified(note: note, trusted: witnesses.map(\.key))) ?? [:]
        let now = Date()
        let missing = witnesses.filter { witness in
            present[witness.key] == nil && (backoff.withLock { $0[witness.key.name] }.map { $0.until <= now } ?? true)
        }
        guard !missing.isEmpty else { return (note, false) }
        var lines: [String] = []
        var witnessIsAhead = false
        await withTaskGroup(of: Outcome.self) { group in
            for witness in missing {
                group.addTask {
                    let outcome = await self.submit(note, checkpoint: checkpoint, to: witness)
                    self.backoff.withLock { backoff in
                        if case .failed = outcome {
                            let failures = (backoff[witness.key.name]?.failures ?? 0) + 1
                            backoff[witness.key.name] = (failures, Date().addingTimeInterval(Double(min(1 << min(failures, 6), 60))))
                        } else {
                            backoff[witness.key.name] = nil
                        }
                    }
                    return outcome
                }
            }
            for await outcome in group {
                switch outcome {
                case .cosigned(let line): lines.append(line)
                case .ahead: witnessIsAhead = true
                case .failed: break
                }
            }
        }
        guard !lines.isEmpty else { return (note, witnessIsAhead) }
        do {
            return (try broker.keepCosignatures(checkpointSize: checkpoint.size, lines: lines), witnessIsAhead)
        } catch {
            logger.error("cannot keep the witnesses' cosignatures", metadata: ["size": "\(checkpoint.size)", "error": "\(error)"])
            return (Cosignature.merged(note, adding: lines), witnessIsAhead)
        }
    }

    enum Outcome: Sendable {
        case cosigned(String)
        case ahead
        case failed
    }

    /// Submits `note` to `witness`, learning the size it last cosigned from a conflict and
    /// submitting again from that size.
    private func submit(_ note: String, checkpoint: Checkpoint, to witness: Witness) async -> Outcome {
        var oldSize = cosignedSizes.withLock { $0[witness.key.name] } ?? 0
        for _ in 0..<3 {
            guard oldSize <= checkpoint.size else { return .ahead }
            let proof: [MerkleDigest]
            do {
                proof = oldSize == 0 || oldSize == checkpoint.size ? [] : try broker.consistencyProof(from: oldSize, to: checkpoint.size).proof
            } catch {
                logger.error("no consistency proof for a witness", metadata: ["witness": "\(witness.key.name)", "from": "\(oldSize)", "error": "\(error)"])
                return .failed
            }
            let body = AddCheckpointRequest(oldSize: oldSize, proof: proof, note: note).body
            guard let url = URL(string: witness.url + "/add-checkpoint") else { return .failed }
            var request = URLRequest(url: url, timeoutInterval: Self.timeout)
            request.httpMethod = "POST"
            let status: Int, answer: Data
            do {
                let (data, response) = try await session.upload(for: request, from: Data(body.utf8))
                status = (response as? HTTPURLResponse)?.statusCode ?? 0
                answer = data.prefix(Self.maximumAnswer)
            } catch {
                logger.warning("witness unreachable", metadata: ["witness": "\(witness.key.name)", "url": "\(witness.url)", "error": "\(error.localizedDescription)"])
                return .failed
            }
            let text = String(decoding: answer, as: UTF8.self)
            switch status {
            case 200:
                let line = text.split(separator: "\n").map(String.init).first { candidate in
                    (try? Cosignature.verified(note: Cosignature.merged(note, adding: [candidate]), trusted: [witness.key]))?.isEmpty == false
                }
                guard let line else {
                    logger.error("witness answered no valid cosignature", metadata: ["witness": "\(witness.key.name)"])
                    return .failed
                }
                cosignedSizes.withLock { $0[witness.key.name] = checkpoint.size }
                return .cosigned(line)
            case 409 where UInt64(text.trimmingCharacters(in: .newlines)) != nil:
                let size = UInt64(text.trimmingCharacters(in: .newlines)) ?? 0
                cosignedSizes.withLock { $0[witness.key.name] = size }
                if size == oldSize {
                    // The witness holds this size with another root: it saw a fork of the log.
                    logger.critical("witness refused the checkpoint: it cosigned another root for this size", metadata: ["witness": "\(witness.key.name)", "size": "\(size)"])
                    return .failed
                }
                oldSize = size
            default:
                let level: Logger.Level = status == 422 || status == 409 ? .critical : .warning
                logger.log(level: level, "witness refused the checkpoint", metadata: [
                    "witness": "\(witness.key.name)", "status": "\(status)", "size": "\(checkpoint.size)", "reason": "\(text.prefix(300))"])
                return .failed
            }
        }
        return .failed
    }
}

/// A witness given to the broker is not in the expected form.
public struct WitnessConfigurationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
