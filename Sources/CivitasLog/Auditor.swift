import CivitasCrypto

/// One thing the auditor found wrong, with the evidence to show someone else.
public struct AuditFinding: Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case malformedExport, wrongLogKey, invalidEntry, entryOutOfOrder, entryAltered
        case badCheckpoint, checkpointMismatch, uncoveredEntries, rollback, fork
        case badEnvelopeSignature, unknownAgreement, agreementNotActive, releaseOutsideAgreement, budgetExceeded
        case unknownParticipant, timeWentBack
        /// A rotation of the broker's key that the retiring key did not sign, or that breaks the chain of keys.
        case badKeyRotation
        /// A batch of a dataset was drawn by two deliveries to one partner.
        case deliveredTwice
        /// An aggregate's group keys did not come from the domain its agreement declared.
        case undeclaredGroupKeys
    }

    public let code: Code
    /// The entry at fault, when one can be named.
    public let entry: UInt64?
    public let message: String
    /// Named pieces of evidence (hashes, checkpoints, proofs), as text.
    public let evidence: [String: String]

    init(_ code: Code, entry: UInt64? = nil, _ message: String, evidence: [String: String] = [:]) {
        self.code = code
        self.entry = entry
        self.message = message
        self.evidence = evidence
    }

    public var description: String {
        (entry.map { "entry \($0): " } ?? "") + message
    }
}

/// Per-agreement figures the auditor replayed.
public struct AgreementAudit: Sendable, Equatable {
    public let agreement: String
    public let partner: KeyID
    /// The budget in millionths: of ε, or of ρ when `countsRho`.
    public let budgetMicro: UInt64
    public var spentMicro: UInt64 = 0
    public var releases: Int = 0
    /// Whether the agreement counts its privacy loss in ρ (zCDP): then every release's ρ is summed,
    /// aggregates' and synthetic releases' alike.
    public var countsRho = false
}

/// What the auditor established: counts, the latest verified checkpoint and
/// the findings (empty when the log is sound).
public struct AuditReport: Sendable {
    public var entries: UInt64 = 0
    public var checkpointsVerified = 0
    public var latestCheckpoint: Checkpoint?
    /// The latest checkpoint's signed note, to save for the next audit.
    public var latestCheckpointNote: String?
    public var releasesVerified = 0
    /// The broker's keys the log was signed with, in order: the key given, then each key a rotation introduced.
    public var brokerKeys: [KeyID] = []
    public var agreements: [String: AgreementAudit] = [:]
    public var findings: [AuditFinding] = []
    public var passed: Bool { findings.isEmpty }
}

/// The auditor's offline verifier: reads an export, recomputes the tree,
/// verifies every checkpoint, checks the history against the auditor's last
/// checkpoint, verifies each release's envelope signature and replays
/// compliance. Stops at the first integrity failure (what follows a broken
/// entry cannot be trusted); reports compliance failures in log order.
public struct Auditor {
    /// The broker's public keys: they sign checkpoints and envelope manifests.
    public let broker: PublicKeys

    public init(broker: PublicKeys) { self.broker = broker }

    /// Audits the export read from `source`. `savedCheckpoint` is the signed note
    /// the auditor kept from its previous audit, if any.
    public func audit(_ source: ByteSource, savedCheckpoint: String? = nil) -> AuditReport {
        var report = AuditReport()
        do {
            try run(source, savedCheckpoint: savedCheckpoint, report: &report)
        } catch let finding as AuditFinding {
            report.findings.insert(finding, at: 0)
        } catch {
            report.findings.insert(AuditFinding(.malformedExport, "\(error)"), at: 0)
        }
        return report
    }

    private func run(_ source: ByteSource, savedCheckpoint: String?, report: inout AuditReport) throws {
        let reader = LogExport.LineReader(source)
        guard let first = try reader.next() else { throw AuditFinding(.malformedExport, "the export is empty") }
        let header: LogExport.Header
        do { header = try LogExport.parseHeader(first) } catch { throw AuditFinding(.malformedExport, "\(error)") }
        let givenKey = try NoteKey(name: header.origin, publicKey: broker.signingKey)
        // The chain of keys: the one given signs the first checkpoints; each rotation the key
        // then current introduces takes over from the checkpoint that first covers it.
        var current = broker
        var chain = [broker]
        var pendingRotation: (index: UInt64, key: PublicKeys)?
        var tree = MerkleTree()
        var previous: MerkleDigest = [UInt8](repeating: 0, count: MerkleHash.size)
        var lastTime = ""
        var replay = ComplianceReplay(broker: broker)
        var checkpointNotes: [(Checkpoint, String)] = []

        while let line = try reader.next() {
            switch try LogExport.parseLine(line, number: reader.lineNumber) {
            case .entry(let bytes):
                let position = tree.size
                let entry: LogEntry
                do { entry = try LogEntry.parse(bytes, position: position) } catch {
                    throw AuditFinding(.invalidEntry, entry: position, "\(error)")
                }
                guard entry.index == position else {
                    throw AuditFinding(.entryOutOfOrder, entry: position,
                                       "the entry at position \(position) says it is entry \(entry.index): an entry was dropped, duplicated or moved",
                                       evidence: ["line": String(reader.lineNumber)])
                }
                guard entry.previous == previous else {
                    throw AuditFinding(.entryAltered, entry: position - 1,
                                       "does not match the hash entry \(position) recorded for it: one of the two was altered",
                                       evidence: ["recorded": Hex.encode(entry.previous), "computed": Hex.encode(previous)])
                }
                if entry.time < lastTime {
                    report.findings.append(AuditFinding(.timeWentBack, entry: position, "time \(entry.time) is earlier than the entry before (\(lastTime))"))
                }
                lastTime = max(lastTime, entry.time)
                previous = MerkleHash.leaf(bytes)
                tree.append(leafHash: previous)
                report.entries = tree.size
                if entry.type == .brokerKeyRotated {
                    guard let rotation = BrokerKeyRotation(entry: entry) else {
                        throw AuditFinding(.badKeyRotation, entry: position, "the key rotation names keys that do not match its key ids")
                    }
                    guard pendingRotation == nil else {
                        throw AuditFinding(.badKeyRotation, entry: position, "a second key rotation before a checkpoint covered the one at entry \(pendingRotation?.index ?? 0)")
                    }
                    guard rotation.previous.keyID == current.keyID else {
                        throw AuditFinding(.badKeyRotation, entry: position, "the rotation retires key \(rotation.previous.keyID), but the log is signed by \(current.keyID) here")
                    }
                    guard rotation.isIntroduced(origin: header.origin) else {
                        throw AuditFinding(.badKeyRotation, entry: position, "the retiring key \(current.keyID) did not sign the introduction of \(rotation.replacement.keyID)")
                    }
                    pendingRotation = (position, rotation.replacement)
                    replay.broker = rotation.replacement
                }
                report.findings += replay.apply(entry, report: &report)
            case .checkpoint(let note):
                let checkpoint: Checkpoint
                do {
                    checkpoint = try verifyCheckpoint(note, origin: header.origin, current: current, chain: chain, pending: pendingRotation,
                                                      headerKey: header.logKey, givenKey: givenKey)
                } catch let finding as AuditFinding {
                    throw finding
                } catch {
                    throw AuditFinding(.badCheckpoint, "line \(reader.lineNumber): \(error)", evidence: ["checkpoint": note])
                }
                if let rotation = pendingRotation, checkpoint.size > rotation.index {
                    current = rotation.key
                    chain.append(rotation.key)
                    pendingRotation = nil
                }
                guard checkpoint.origin == header.origin, checkpoint.size <= tree.size else {
                    throw AuditFinding(.badCheckpoint, "line \(reader.lineNumber): checkpoint for \(checkpoint.size) entries of \(checkpoint.origin) appears after only \(tree.size) entries",
                                       evidence: ["checkpoint": note])
                }
                let root = try tree.root(atSize: checkpoint.size)
                guard root == checkpoint.rootHash else {
                    let last = checkpoint.size == 0 ? nil : checkpoint.size - 1
                    throw AuditFinding(.checkpointMismatch, entry: last,
                                       "the entries up to \(checkpoint.size) do not hash to the signed checkpoint: the log was rewritten",
                                       evidence: ["checkpoint": note, "signed_root": Hex.encode(checkpoint.rootHash), "computed_root": Hex.encode(root)])
                }
                report.checkpointsVerified += 1
                checkpointNotes.append((checkpoint, note))
            }
        }
        report.entries = tree.size
        guard let (latest, latestNote) = checkpointNotes.last else {
            throw AuditFinding(.uncoveredEntries, "the export has no checkpoint: nothing in it is signed")
        }
        guard latest.size == tree.size else {
            throw AuditFinding(.uncoveredEntries, entry: latest.size,
                               "entries \(latest.size) to \(tree.size - 1) are not covered by any checkpoint")
        }
        report.latestCheckpoint = latest
        report.latestCheckpointNote = latestNote
        report.brokerKeys = chain.map(\.keyID)
        let currentKey = try NoteKey(name: header.origin, publicKey: current.signingKey)
        guard header.logKey == currentKey else {
            throw AuditFinding(.wrongLogKey, "the export's log key \(header.logKey.verifierKey) is not the key the log is signed with now (\(currentKey.verifierKey))")
        }
        if let savedCheckpoint {
            try checkHistory(saved: savedCheckpoint, latest: latest, latestNote: latestNote,
                             keys: try chain.map { try NoteKey(name: header.origin, publicKey: $0.signingKey) }, tree: tree)
        }
    }

    /// Verifies a checkpoint against the key that signs the log at its size: the current key, and
    /// also the new one when it is the first checkpoint covering a rotation. A checkpoint signed
    /// only by a retired key, or by a key not yet introduced, is refused naming which.
    private func verifyCheckpoint(_ note: String, origin: String, current: PublicKeys, chain: [PublicKeys],
                                  pending: (index: UInt64, key: PublicKeys)?, headerKey: NoteKey, givenKey: NoteKey) throws -> Checkpoint {
        let statement = try Checkpoint.statement(of: note)
        let currentKey = try NoteKey(name: origin, publicKey: current.signingKey)
        if let pending, statement.size > pending.index {
            let next = try NoteKey(name: origin, publicKey: pending.key.signingKey)
            do {
                _ = try Checkpoint.verify(note: note, key: currentKey)
                return try Checkpoint.verify(note: note, key: next)
            } catch {
                throw AuditFinding(.badKeyRotation, entry: pending.index,
                                   "the checkpoint of \(statement.size) entries is the first to cover the key rotation, so it must carry the signatures of both \(current.keyID) and \(pending.key.keyID): \(error)",
                                   evidence: ["checkpoint": note])
            }
        }
        do {
            return try Checkpoint.verify(note: note, key: currentKey)
        } catch {
            if let pending, (try? Checkpoint.verify(note: note, key: NoteKey(name: origin, publicKey: pending.key.signingKey))) != nil {
                throw AuditFinding(.badKeyRotation, entry: pending.index,
                                   "the checkpoint of \(statement.size) entries is signed by \(pending.key.keyID), which the log introduces only from entry \(pending.index) on",
                                   evidence: ["checkpoint": note])
            }
            if let retired = chain.dropLast().first(where: { (try? Checkpoint.verify(note: note, key: NoteKey(name: origin, publicKey: $0.signingKey))) != nil }) {
                throw AuditFinding(.badKeyRotation, "the checkpoint of \(statement.size) entries is signed only by \(retired.keyID), a key the log retired",
                                   evidence: ["checkpoint": note])
            }
            if chain.count == 1, headerKey != givenKey {
                throw AuditFinding(.wrongLogKey, "the export's log key \(headerKey.verifierKey) is not the broker key given (\(givenKey.verifierKey))")
            }
            throw error
        }
    }

    /// The auditor's last checkpoint must be a prefix of this log: same origin, not larger, same root.
    private func checkHistory(saved note: String, latest: Checkpoint, latestNote: String, keys: [NoteKey], tree: MerkleTree) throws {
        guard let saved = keys.lazy.compactMap({ try? Checkpoint.verify(note: note, key: $0) }).first else {
            throw AuditFinding(.badCheckpoint, "the saved checkpoint does not verify with any of the log's keys", evidence: ["saved": note])
        }
        guard saved.size <= latest.size else {
            throw AuditFinding(.rollback, "the log went back: the saved checkpoint has \(saved.size) entries, this export \(latest.size)",
                               evidence: ["saved": note, "latest": latestNote])
        }
        guard saved.size > 0 else { return }
        let proof = try tree.consistencyProof(from: saved.size, to: latest.size)
        do {
            try MerkleVerifier.verifyConsistency(size1: saved.size, size2: latest.size, root1: saved.rootHash,
                                                 root2: latest.rootHash, proof: proof)
        } catch let error as MerkleProofError {
            throw AuditFinding(.fork, "the log forked: the saved checkpoint at \(saved.size) entries is not a prefix of this log (\(error.message))",
                               evidence: ["saved": note, "latest": latestNote, "proof": error.proof.joined(separator: ","),
                                          "computed_root": error.computedRoot ?? "", "expected_root": error.expectedRoot ?? ""])
        }
    }
}

extension AuditFinding: Error {}

/// Replays agreements, releases and budgets in log order.
struct ComplianceReplay {
    struct Agreement {
        let offer: LogEntry
        var acceptedAt: String?
        var endedAt: String?
    }

    /// The broker's key at this point of the log: it signs the envelopes delivered.
    var broker: PublicKeys
    var participants: Set<KeyID> = []
    /// Keys that rotations introduced, by the participant id (registered key id) they sign for.
    var rotatedTo: [KeyID: KeyID] = [:]
    var agreements: [String: Agreement] = [:]
    /// Per partner and dataset: the batch runs drawn so far, with the entry that drew each.
    var drawn: [String: [(runs: [Range<Int64>], entry: UInt64)]] = [:]

    init(broker: PublicKeys) { self.broker = broker }

    mutating func apply(_ entry: LogEntry, report: inout AuditReport) -> [AuditFinding] {
        let i = entry.index
        switch entry.type {
        case .participantRegistered:
            if let id = entry.keyID("participant") { participants.insert(id) }
        case .keyRotated:
            if let id = entry.keyID("replacement"), let replaced = entry.keyID("participant") {
                participants.insert(id)
                rotatedTo[id] = rotatedTo[replaced] ?? replaced
            }
        case .agreementOffered:
            guard let id = entry.string("agreement"), let partner = entry.keyID("partner") else { return [] }
            var findings: [AuditFinding] = []
            for role in ["publisher", "partner"] {
                if let key = entry.keyID(role), !participants.contains(key) {
                    findings.append(AuditFinding(.unknownParticipant, entry: i, "agreement \(id) names \(role) \(key), who was never registered"))
                }
            }
            agreements[id] = Agreement(offer: entry)
            let rhoBudget = entry.count("rho_budget_micro")
            report.agreements[id] = AgreementAudit(agreement: id, partner: partner, budgetMicro: rhoBudget ?? entry.count("epsilon_budget_micro") ?? 0,
                                                   countsRho: rhoBudget != nil)
            return findings
        case .agreementAccepted:
            guard let id = entry.string("agreement") else { return [] }
            guard var agreement = agreements[id] else {
                return [AuditFinding(.unknownAgreement, entry: i, "acceptance of agreement \(id), which was never offered")]
            }
            guard entry.keyID("partner") == agreement.offer.keyID("partner") else {
                return [AuditFinding(.unknownParticipant, entry: i, "agreement \(id) accepted by someone other than its partner")]
            }
            agreement.acceptedAt = entry.time
            agreements[id] = agreement
        case .agreementRevoked, .agreementExpired:
            guard let id = entry.string("agreement") else { return [] }
            guard var agreement = agreements[id] else {
                return [AuditFinding(.unknownAgreement, entry: i, "\(entry.type.rawValue) for agreement \(id), which was never offered")]
            }
            agreement.endedAt = agreement.endedAt ?? entry.time
            agreements[id] = agreement
        case .releaseDelivered:
            return release(entry, report: &report)
        case .datasetRegistered, .consentGranted, .consentRevoked, .consentRecorded, .releaseRefused, .brokerKeyRotated:
            break
        }
        return []
    }

    private mutating func release(_ entry: LogEntry, report: inout AuditReport) -> [AuditFinding] {
        let i = entry.index
        var findings: [AuditFinding] = []
        // The envelope: canonical manifest signed by the broker, addressed to the partner.
        if let manifestObject = entry.members["envelope_manifest"],
           let signature = entry.string("envelope_signature").flatMap(Base64.decode),
           let bytes = try? CanonicalJSON.encode(manifestObject) {
            let signed = broker.isValidSignature(signature, for: EnvelopeFormat.signatureContext + bytes)
            let manifest = try? EnvelopeManifest.parse(bytes)
            if !signed || manifest?.issuer != broker.keyID {
                findings.append(AuditFinding(.badEnvelopeSignature, entry: i, "the envelope manifest is not signed by the broker's key \(broker.keyID)",
                                             evidence: ["manifest": String(decoding: bytes, as: UTF8.self)]))
            } else if let recipient = manifest?.recipient, (rotatedTo[recipient] ?? recipient) != entry.keyID("partner") {
                findings.append(AuditFinding(.releaseOutsideAgreement, entry: i, "the envelope is addressed to \(manifest?.recipient.hex ?? "?"), not to the release's partner"))
            } else {
                report.releasesVerified += 1
            }
        }
        guard let id = entry.string("agreement"), let agreement = agreements[id] else {
            return findings + [AuditFinding(.unknownAgreement, entry: i, "release under agreement \(entry.string("agreement") ?? "?"), which was never offered")]
        }
        let offer = agreement.offer
        let time = entry.time
        if agreement.acceptedAt.map({ $0 > time }) ?? true {
            findings.append(AuditFinding(.agreementNotActive, entry: i, "release under agreement \(id) before the partner accepted it"))
        }
        if let ended = agreement.endedAt, ended <= time {
            findings.append(AuditFinding(.agreementNotActive, entry: i, "release under agreement \(id) after it was revoked or expired (\(ended))"))
        }
        if let from = offer.string("valid_from"), let until = offer.string("valid_until"), time < from || time > until {
            findings.append(AuditFinding(.agreementNotActive, entry: i, "release at \(time) is outside agreement \(id)'s validity (\(from) to \(until))"))
        }
        if entry.keyID("partner") != offer.keyID("partner") || entry.string("dataset") != offer.string("dataset")
            || entry.string("policy_sha256") != offer.string("policy_sha256") {
            findings.append(AuditFinding(.releaseOutsideAgreement, entry: i, "release's partner, dataset or policy differs from agreement \(id)"))
        }
        if case .array(let purposes)? = offer.members["purposes"], let purpose = entry.members["purpose"], !purposes.contains(purpose) {
            findings.append(AuditFinding(.releaseOutsideAgreement, entry: i, "purpose \(entry.string("purpose") ?? "?") is not among agreement \(id)'s purposes"))
        }
        findings += composition(entry, offer: offer)
        if var audit = report.agreements[id] {
            let epsilon = entry.count("epsilon_micro") ?? 0
            var charge = epsilon
            if audit.countsRho {
                // Under zCDP a pure ε step costs at least ε²/2; a release must state what it was charged.
                charge = entry.count("rho_micro") ?? 0
                let least = MicroUnits.rhoOfPureEpsilon(epsilon)
                if entry.count("rho_micro") == nil || charge < least {
                    findings.append(AuditFinding(.budgetExceeded, entry: i,
                                                 "release under agreement \(id), which counts ρ, was charged ρ \(MicroUnits.decimal(charge)); its ε \(MicroUnits.decimal(epsilon)) costs at least \(MicroUnits.decimal(least))"))
                    charge = max(charge, least)
                }
            }
            let (spent, overflow) = audit.spentMicro.addingReportingOverflow(charge)
            audit.releases += 1
            if overflow {
                report.agreements[id] = audit
                findings.append(AuditFinding(.budgetExceeded, entry: i, "agreement \(id)'s charges now add up past 2^64 millionths of \(audit.countsRho ? "ρ" : "ε"): the sum overflows"))
                return findings
            }
            audit.spentMicro = spent
            report.agreements[id] = audit
            if audit.spentMicro > audit.budgetMicro {
                findings.append(AuditFinding(.budgetExceeded, entry: i,
                                             "agreement \(id) has now spent \(audit.countsRho ? "ρ" : "ε") \(MicroUnits.decimal(audit.spentMicro)) of its budget \(MicroUnits.decimal(audit.budgetMicro))"))
            }
        }
        return findings
    }
}

extension ComplianceReplay {
    /// The rules that keep deliveries from combining: a row-level delivery draws only batches no
    /// earlier delivery to the partner drew from; an aggregate's keys come from its agreement's
    /// declared domain, never from the data.
    mutating func composition(_ entry: LogEntry, offer: LogEntry) -> [AuditFinding] {
        let i = entry.index
        guard case .object(let transforms)? = entry.members["transforms"] else { return [] }
        var findings: [AuditFinding] = []
        if transforms["kind"]?.stringValue == "aggregate" {
            let declared = offer.members["aggregate_keys"]?.objectValue ?? [:]
            let sources = transforms["group_keys"]?.objectValue ?? [:]
            for column in (transforms["group_by"].flatMap { value -> [String]? in
                if case .array(let items) = value { return items.compactMap(\.stringValue) }
                return nil
            } ?? []) {
                guard let source = sources[column]?.stringValue, source == declared[column]?.stringValue else {
                    findings.append(AuditFinding(.undeclaredGroupKeys, entry: i,
                                                 "aggregate grouped by '\(column)' with keys from \(sources[column]?.stringValue ?? "the data"); agreement \(entry.string("agreement") ?? "?") declared \(declared[column]?.stringValue ?? "no keys")"))
                    continue
                }
            }
        } else if let text = transforms["batches"]?.stringValue {
            guard let runs = BatchRanges.parse(text) else {
                return [AuditFinding(.invalidEntry, entry: i, "transforms.batches '\(text.prefix(60))' is not ascending runs of batch numbers")]
            }
            let key = "\(entry.string("partner") ?? "?") \(entry.string("dataset") ?? "?")"
            for earlier in drawn[key] ?? [] {
                for run in runs {
                    if let overlap = earlier.runs.first(where: { $0.overlaps(run) }) {
                        let batch = max(overlap.lowerBound, run.lowerBound)
                        findings.append(AuditFinding(.deliveredTwice, entry: i,
                                                     "batch \(batch) of \(entry.string("dataset") ?? "?") was already delivered to partner \(entry.string("partner") ?? "?") in entry \(earlier.entry)"))
                    }
                }
            }
            drawn[key, default: []].append((runs, i))
        }
        return findings
    }
}

/// Privacy budgets in the log are integers in millionths (ε × 10^6), so sums are exact.
public enum MicroUnits {
    /// Millionths as a decimal: 1500000 → "1.5".
    public static func decimal(_ micro: UInt64) -> String {
        let whole = micro / 1_000_000, fraction = micro % 1_000_000
        guard fraction > 0 else { return String(whole) }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 6 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }

    /// What a pure ε-DP step costs under zero-concentrated DP, ρ = ε²/2 (Bun and Steinke 2016,
    /// Proposition 1.4), in millionths rounded up.
    public static func rhoOfPureEpsilon(_ epsilonMicro: UInt64) -> UInt64 {
        let square = UInt128(epsilonMicro) * UInt128(epsilonMicro)
        let (quotient, remainder) = square.quotientAndRemainder(dividingBy: 2_000_000)
        return UInt64(clamping: quotient + (remainder > 0 ? 1 : 0))
    }
}
