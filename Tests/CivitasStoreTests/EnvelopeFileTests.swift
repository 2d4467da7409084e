import CivitasCrypto
import CivitasLog
import Foundation
import GRDB
import Testing
@testable import CivitasStore

/// Where the SQLite store keeps envelopes of a MiB or more: owner-only files beside the
/// database, written before the transaction that names them commits, removed when it does not.
@Suite("Envelope files (SQLite)")
struct EnvelopeFileTests {
    static let now: UTCTime = "2026-11-27T10:00:00Z"

    /// A store with two participants, a dataset and an agreement, and a way to deliver.
    struct Broker {
        let temporary: TemporaryStore
        let world: StorageContractTests.World
        var folder: String { temporary.path + "-envelopes" }

        init() throws {
            temporary = try TemporaryStore()
            world = try StorageContractTests.World(storage: temporary.store)
            try world.storage.transaction { [world] in try $0.insertAgreement(world.agreement("ag-1")) }
        }

        struct Refused: Error {}

        /// Seals `payloadBytes` random bytes for the partner and delivers the envelope; returns it.
        @discardableResult
        func deliver(_ id: String, payloadBytes: Int, fail: Bool = false) throws -> [UInt8] {
            let sink = MemorySink()
            let summary = try EnvelopeSealer(issuer: world.agency, recipient: world.partner.publicKeys)
                .seal(from: MemorySource(EnvelopeFileTests.random(payloadBytes)), payloadLength: UInt64(payloadBytes), to: sink)
            try deliver(id, envelope: sink.bytes, summary: summary, fail: fail)
            return sink.bytes
        }

        func deliver(_ id: String, envelope: [UInt8], summary: EnvelopeSummary, fail: Bool) throws {
            let members = LogEvents.releaseDelivered(release: id, agreement: "ag-1", dataset: "calls", partner: world.partner.keyID, purpose: "research",
                                                     policySHA256: [UInt8](repeating: 1, count: 32), envelope: summary, recordsReleased: 1,
                                                     recordsSuppressed: 0, kAchieved: 1, epsilonMicro: 0, transforms: [:])
            try temporary.store.transaction { transaction in
                let index = try transaction.appendLog(time: EnvelopeFileTests.now, type: .releaseDelivered, members: members)
                try transaction.insertDelivery(Delivery(id: id, agreement: "ag-1", partner: world.partner.keyID, kind: .release, feed: nil,
                                                        feedSequence: nil, logIndex: index, records: 1, envelope: envelope, created: EnvelopeFileTests.now))
                if fail { throw Refused() }
            }
        }

        func files() throws -> [String] {
            guard FileManager.default.fileExists(atPath: folder) else { return [] }
            return try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        }

        /// The envelope's bytes in the database row, and the file it names.
        func row(_ id: String) throws -> (blobBytes: Int, file: String?) {
            let queue = try DatabaseQueue(path: temporary.path)
            return try queue.read { db in
                let row = try #require(try Row.fetchOne(db, sql: "SELECT length(envelope) AS n, envelope_file FROM delivery WHERE id = ?", arguments: [id]))
                return (row["n"], row["envelope_file"])
            }
        }
    }

    static func random(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    static func mode(_ path: String) throws -> Int {
        try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    @Test("An envelope of a MiB or more is an owner-only file beside the database, not in its pages; a smaller one stays in its row")
    func largeEnvelopesAreFiles() throws {
        let broker = try Broker()
        let large = try broker.deliver("rel-large", payloadBytes: EnvelopeFiles.threshold)
        let small = try broker.deliver("rel-small", payloadBytes: 1000)
        #expect(large.count >= EnvelopeFiles.threshold && small.count < EnvelopeFiles.threshold)
        let name = EnvelopeFiles.name(of: "rel-large")
        #expect(try broker.files() == [name])
        #expect(try Self.mode(broker.folder) == 0o700)
        #expect(try Self.mode(broker.folder + "/" + name) == 0o600)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: broker.folder + "/" + name))) == large)
        #expect(try broker.row("rel-large") == (0, name))
        #expect(try broker.row("rel-small") == (small.count, nil))
        let reopened = try broker.temporary.reopen()
        #expect(try reopened.delivery("rel-large")?.envelope == large)
        #expect(try reopened.delivery("rel-small")?.envelope == small)
        #expect(try reopened.deliveryEnvelope("rel-large")?.byteCount == large.count)
    }

    @Test("A transaction that does not commit leaves no envelope file behind")
    func refusedTransactionsLeaveNoFile() throws {
        let broker = try Broker()
        #expect(throws: Broker.Refused.self) { try broker.deliver("rel-1", payloadBytes: 2 << 20, fail: true) }
        #expect(try broker.files().isEmpty)
        #expect(try broker.temporary.store.delivery("rel-1") == nil)
        // A second delivery with a committed one's id is refused before its file replaces the first.
        let first = try broker.deliver("rel-1", payloadBytes: 2 << 20)
        #expect(throws: StoreError.self) { try broker.deliver("rel-1", payloadBytes: 2 << 20) }
        #expect(try broker.temporary.store.delivery("rel-1")?.envelope == first)
        #expect(try broker.files() == [EnvelopeFiles.name(of: "rel-1")])
    }

    @Test("Opening the store removes files no delivery names and keeps every named one")
    func openingSweepsStrayFiles() throws {
        let broker = try Broker()
        let envelope = try broker.deliver("rel-1", payloadBytes: EnvelopeFiles.threshold + 17)
        for stray in [EnvelopeFiles.name(of: "rel-never-committed"), EnvelopeFiles.name(of: "rel-2") + ".partial"] {
            #expect(FileManager.default.createFile(atPath: broker.folder + "/" + stray, contents: Data([1, 2, 3])))
        }
        #expect(try broker.files().count == 3)
        let reopened = try broker.temporary.reopen()
        #expect(try broker.files() == [EnvelopeFiles.name(of: "rel-1")])
        #expect(try reopened.delivery("rel-1")?.envelope == envelope)
    }

    @Test("A missing envelope file is reported as corruption naming the file, not read as empty")
    func missingFileIsCorruption() throws {
        let broker = try Broker()
        try broker.deliver("rel-1", payloadBytes: EnvelopeFiles.threshold)
        let name = EnvelopeFiles.name(of: "rel-1")
        try FileManager.default.removeItem(atPath: broker.folder + "/" + name)
        let reads: [() throws -> Void] = [{ _ = try broker.temporary.store.delivery("rel-1") },
                                          { _ = try broker.temporary.store.deliveryEnvelope("rel-1") },
                                          { try broker.temporary.store.readEnvelope(of: "rel-1", pieceSize: 4096) { _ in true } }]
        for read in reads {
            let error = try #require(throws: StoreError.self) { try read() }
            #expect(error.code == .corrupt && error.message.contains(name))
        }
    }

    @Test("A delivery id that reads as a path still names a file inside the folder")
    func idsStayInsideTheFolder() throws {
        let broker = try Broker()
        let id = "../../escaped/rel-1"
        let envelope = try broker.deliver(id, payloadBytes: EnvelopeFiles.threshold)
        #expect(try broker.files() == [EnvelopeFiles.name(of: id)])
        #expect(!EnvelopeFiles.name(of: id).contains("/"))
        #expect(try broker.temporary.store.delivery(id)?.envelope == envelope)
    }
}
