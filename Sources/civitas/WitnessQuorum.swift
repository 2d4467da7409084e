import ArgumentParser
import CivitasLog

/// The witnesses a reader of the log requires: a checkpoint counts only when at least
/// `quorum` of them cosigned it, so a broker showing a forked log to one reader is caught
/// unless it also deceives that many witnesses.
struct WitnessQuorum: ParsableArguments {
    @Option(name: .customLong("witness"),
            help: ArgumentHelp("A witness's verifier key (`civitas witness serve` prints it) whose cosignature the log's checkpoint must carry; repeatable.",
                               valueName: "KEY"))
    var keys: [String] = []
    @Option(help: "How many of the --witness keys must have cosigned the checkpoint (default: all of them).") var quorum: Int?

    func validate() throws {
        if let quorum {
            guard !keys.isEmpty else { throw ValidationError("--quorum needs --witness keys") }
            guard (1...keys.count).contains(quorum) else { throw ValidationError("--quorum must be 1 to the number of --witness keys (\(keys.count))") }
        }
    }

    /// Refuses `note` (a checkpoint already verified as the broker's) unless the quorum of
    /// witnesses cosigned it; returns the names of those that did.
    @discardableResult
    func require(on note: String) throws -> [String] {
        guard !keys.isEmpty else { return [] }
        let trusted = try keys.map { text in
            do { return try CosignerKey(verifierKey: text) } catch { throw CLIError("--witness \(text.prefix(80)): \(error)") }
        }
        let required = quorum ?? trusted.count
        let checkpoint = try Checkpoint.statement(of: note)
        let cosigned: [CosignerKey: UInt64]
        do { cosigned = try Cosignature.verified(note: note, trusted: trusted) } catch {
            throw CLIError("the broker's checkpoint of \(checkpoint.size) entries carries a bad cosignature: \(error)")
        }
        guard cosigned.count >= required else {
            let missing = trusted.filter { cosigned[$0] == nil }.map(\.name)
            throw CLIError("the broker's checkpoint of \(checkpoint.size) entries is cosigned by \(cosigned.count) of the \(required) witnesses required (--quorum \(required)); missing: \(missing.joined(separator: ", ")). The witnesses may be unreachable from the broker, or may have refused its log as rolled back or forked; ask the operator")
        }
        return trusted.filter { cosigned[$0] != nil }.map(\.name)
    }
}
