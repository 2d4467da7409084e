import CivitasCrypto
import CivitasLog
import CivitasStore
import Foundation

/// The start-up check of a stored log: a SQLite store with `entries` consent entries (10,000
/// per transaction) and a checkpoint is reopened, which verifies every entry, link, leaf hash,
/// checkpoint and delivery before the log is served.
func runStoredLogBenchmark(entries: Int) throws {
    let directory = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/civitas-bench-stored-log-\(getpid())"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let key = try SealedStorageKey.generate()
    let broker = try SecretKeys.generate(name: "bench-broker"), agency = try SecretKeys.generate(name: "bench-agency")
    let path = directory + "/broker.sqlite"
    let building = try seconds {
        let store = try BrokerStore(path: path, storageKey: key)
        let registered: UTCTime = "2026-11-27T09:00:00Z", recorded: UTCTime = "2026-11-27T10:00:00Z"
        let schema = Array("{}".utf8)
        try store.transaction { transaction in
            try transaction.insertParticipant(Participant(keys: agency.publicKeys, role: .agency, registered: registered))
            try transaction.insertDataset(Dataset(id: "calls", publisher: agency.keyID, schema: schema, schemaSHA256: SHA256Hasher.hash(schema),
                                                  purposes: ["research"], registered: registered))
        }
        let record = Array(#"{"schema_version":"ISO/IEC TS 27560:2023"}"#.utf8)
        for start in stride(from: 0, to: entries, by: 10_000) {
            try store.transaction { transaction in
                for i in start..<min(entries, start + 10_000) {
                    let consent = StoredConsent(dataset: "calls", subject: SHA256Hasher.hash(withUnsafeBytes(of: i, Array.init)), purpose: "research",
                                                granted: true, record: record)
                    try transaction.appendConsent(consent, now: recorded)
                    _ = try transaction.appendLog(time: recorded, type: .consentGranted, members: LogEvents.consentRecorded(
                        dataset: consent.dataset, subject: consent.subject, purpose: consent.purpose, recordedBy: agency.keyID))
                }
            }
        }
        try store.checkpointLog(signer: broker)
    }
    _ = Memory.resetPeak()
    let before = Memory.statusValue("VmRSS")
    var size: UInt64 = 0
    let reopening = try seconds { size = try BrokerStore(path: path, storageKey: key).logSize }
    let file = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    print("| entries | database | building it | reopening: every entry, link, leaf, checkpoint and delivery verified | peak RSS growth while reopening |")
    print("|---|---|---|---|---|")
    print(String(format: "| %@ | %@ | %.1f s | %.2f s (%.0f entries/s) | %@ |", size.formatted(), mib(file), building, reopening,
                 Double(size) / reopening, mib(Memory.peak() - before)))
}
