import CivitasCrypto
import CivitasLog
import Foundation
import Testing
@testable import CivitasStore

/// The contract every ``BrokerStorage`` keeps: it persists and reads back exactly, refuses
/// duplicates and replays with typed errors, and commits a transaction whole or not at all.
/// Each test runs against every implementation.
@Suite("Storage contract")
struct StorageContractTests {
    /// The implementations under contract, each made fresh for a test.
    enum Implementation: String, CaseIterable, Sendable, CustomStringConvertible {
        case sqlite
        var description: String { rawValue }

        func make() throws -> any BrokerStorage {
            switch self {
            case .sqlite: return try TemporaryStore().store
            }
        }
    }

    static let now: UTCTime = "2026-11-27T10:00:00Z"

    /// Two participants and a dataset.
    struct World {
        let storage: any BrokerStorage
        let agency: SecretKeys
        let partner: SecretKeys

        init(_ implementation: Implementation) throws {
            storage = try implementation.make()
            agency = try SecretKeys.generate(name: "agency")
            partner = try SecretKeys.generate(name: "partner")
            _ = try storage.registerParticipant(agency.publicKeys, role: .agency, now: StorageContractTests.now)
            _ = try storage.registerParticipant(partner.publicKeys, role: .partner, now: StorageContractTests.now)
            _ = try storage.registerDataset(id: "calls", publisher: agency.keyID, schema: Array("{}".utf8), purposes: ["research"], now: StorageContractTests.now)
        }

        func agreement(_ id: String, budgetMicro: UInt64 = 1_000_000) -> StoredAgreement {
            StoredAgreement(id: id, dataset: "calls", publisher: agency.keyID, partner: partner.keyID, policy: Array("{}".utf8),
                            policySHA256: SHA256Hasher.hash(Array(id.utf8)), offerSignature: [1], validFrom: "2026-11-01T00:00:00Z",
                            validUntil: "2026-12-31T23:59:59Z", budgetMicro: budgetMicro, offered: StorageContractTests.now)
        }
    }

    @Test("Participants and datasets read back as written; duplicates are refused", arguments: Implementation.allCases)
    func participantsAndDatasets(_ implementation: Implementation) throws {
        let world = try World(implementation)
        #expect(try world.storage.participant(world.agency.keyID)?.role == .agency)
        #expect(try world.storage.participants().count == 2)
        #expect(throws: StoreError(.duplicate, "")) { try world.storage.registerParticipant(world.agency.publicKeys, role: .partner, now: Self.now) }
        let dataset = try #require(try world.storage.dataset("calls"))
        #expect(dataset.publisher == world.agency.keyID && dataset.purposes == ["research"])
        #expect(throws: StoreError(.duplicate, "")) {
            try world.storage.registerDataset(id: "calls", publisher: world.agency.keyID, schema: [], purposes: [], now: Self.now)
        }
        #expect(throws: StoreError(.invalidArgument, "")) {
            try world.storage.registerDataset(id: "Not An Id", publisher: world.agency.keyID, schema: [], purposes: [], now: Self.now)
        }
        #expect(try world.storage.dataset("missing") == nil)
    }

    @Test("A request nonce is accepted once per key until it ages out", arguments: Implementation.allCases)
    func nonces(_ implementation: Implementation) throws {
        let storage = try implementation.make()
        try storage.recordNonce(keyID: "k1", nonce: "n1", created: 1000, oldestAccepted: 700)
        #expect(throws: StoreError(.replayed, "")) { try storage.recordNonce(keyID: "k1", nonce: "n1", created: 1001, oldestAccepted: 701) }
        try storage.recordNonce(keyID: "k2", nonce: "n1", created: 1001, oldestAccepted: 701)
        try storage.recordNonce(keyID: "k1", nonce: "n1", created: 2000, oldestAccepted: 1700)
    }

    @Test("Batches are stored whole, in order, idempotently; records read back exactly", arguments: Implementation.allCases)
    func batches(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let rows = (0..<2_500).map { ["P\($0)", "caller \($0), \"quoted\"", String($0 % 7)] }
        let first = try world.storage.appendBatch(dataset: "calls", columns: ["person", "note", "n"], rows: rows, idempotencyKey: "k-1", now: Self.now)
        #expect(first.sequence == 1 && first.records == 2_500 && !first.replayed)
        let again = try world.storage.appendBatch(dataset: "calls", columns: ["person", "note", "n"], rows: rows, idempotencyKey: "k-1", now: Self.now)
        #expect(again.replayed && again.sequence == 1)
        #expect(throws: StoreError(.duplicate, "")) {
            try world.storage.appendBatch(dataset: "calls", columns: ["person", "note", "n"], rows: [["other", "", "0"]], idempotencyKey: "k-1", now: Self.now)
        }
        _ = try world.storage.appendBatch(dataset: "calls", columns: ["person", "note", "n"], rows: [["P9", "last", "1"]], idempotencyKey: nil, now: Self.now)
        var read: [[String]] = []
        try world.storage.records(of: "calls", batches: nil) { columns, batch in
            #expect(columns == ["person", "note", "n"])
            read += batch
        }
        #expect(read == rows + [["P9", "last", "1"]])
        var second: [[String]] = []
        try world.storage.records(of: "calls", batches: 2..<3) { _, batch in second += batch }
        #expect(second == [["P9", "last", "1"]])
        #expect(try world.storage.batches(of: "calls", from: 2).map(\.sequence) == [2])
    }

    @Test("A batch handed over in chunks is stored whole; a producer that fails stores nothing", arguments: Implementation.allCases)
    func chunkedBatches(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let rows = (0..<2_345).map { ["P\($0)", "note \($0)", String($0 % 3)] }
        let columns = ["person", "note", "n"]
        func produce(_ emit: ([String], [[String]]) throws -> Void) throws {
            try emit(columns, [])
            for start in stride(from: 0, to: rows.count, by: 700) { try emit(columns, Array(rows[start..<min(rows.count, start + 700)])) }
        }
        struct Refused: Error {}
        #expect(throws: Refused.self) {
            try world.storage.appendBatch(dataset: "calls", idempotencyKey: "k", now: Self.now) { emit in
                try produce(emit)
                throw Refused()
            }
        }
        #expect(try world.storage.batches(of: "calls", from: 1).isEmpty)
        let chunked = try world.storage.appendBatch(dataset: "calls", idempotencyKey: "k", now: Self.now, produce: produce)
        #expect(chunked.records == 2_345 && !chunked.replayed)
        // The same rows given whole hash the same: the key answers the stored batch.
        let whole = try world.storage.appendBatch(dataset: "calls", columns: columns, rows: rows, idempotencyKey: "k", now: Self.now)
        #expect(whole.replayed && whole.sequence == chunked.sequence && whole.contentSHA256 == chunked.contentSHA256)
        var read: [[String]] = []
        try world.storage.records(of: "calls", batches: nil) { _, batch in read += batch }
        #expect(read == rows)
    }

    @Test("Agreements move offered → accepted → ended, each change logged once", arguments: Implementation.allCases)
    func agreements(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let size = world.storage.logSize
        try world.storage.offerAgreement(world.agreement("ag-1"), purposes: ["research"], legalBasis: "consent", aggregateKeys: [:])
        #expect(throws: StoreError(.duplicate, "")) {
            try world.storage.offerAgreement(world.agreement("ag-1"), purposes: ["research"], legalBasis: "consent", aggregateKeys: [:])
        }
        #expect(try world.storage.agreement("ag-1")?.state == .offered)
        #expect(try world.storage.acceptAgreement("ag-1", signature: [2], now: Self.now).state == .accepted)
        #expect(try world.storage.endAgreement("ag-1", as: .revoked, by: world.partner.keyID, now: Self.now).state == .revoked)
        #expect(world.storage.logSize == size + 3)
        #expect(try world.storage.agreements(involving: world.partner.keyID).map(\.id) == ["ag-1"])
        #expect(try world.storage.agreements(involving: try SecretKeys.generate(name: "x").keyID).isEmpty)
    }

    @Test("Consent: the latest event per subject and purpose wins", arguments: Implementation.allCases)
    func consent(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let subject = SHA256Hasher.hash(Array("person".utf8))
        func event(_ granted: Bool) -> BrokerStore.ConsentEvent {
            .init(dataset: "calls", subject: subject, purpose: "research", granted: granted, record: Array("{}".utf8))
        }
        _ = try world.storage.recordConsents([event(true)], recordedBy: world.agency.keyID, now: Self.now)
        #expect(try world.storage.consentStates(dataset: "calls", purpose: "research") == [Hex.encode(subject): true])
        _ = try world.storage.recordConsents([event(false)], recordedBy: world.agency.keyID, now: Self.now)
        #expect(try world.storage.consentStates(dataset: "calls", purpose: "research") == [Hex.encode(subject): false])
    }

    @Test("An exchange transaction commits whole or not at all; a batch is drawn once per partner", arguments: Implementation.allCases)
    func exchangeTransactions(_ implementation: Implementation) throws {
        let world = try World(implementation)
        try world.storage.offerAgreement(world.agreement("ag-1"), purposes: ["research"], legalBasis: "consent", aggregateKeys: [:])
        _ = try world.storage.acceptAgreement("ag-1", signature: [2], now: Self.now)
        let size = world.storage.logSize
        func deliver(_ id: String, batches: [Int64], fail: Bool = false) throws {
            try world.storage.exchangeTransaction { transaction in
                let agreement = try transaction.agreement("ag-1")
                try transaction.setSpent(agreement.spentMicro + 10, of: "ag-1")
                let index = try transaction.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": "ag-1"])
                try transaction.insertDelivery(Delivery(id: id, agreement: "ag-1", partner: world.partner.keyID, kind: .release, feed: nil,
                                                        feedSequence: nil, logIndex: index, records: 0, envelope: [9], created: Self.now))
                try transaction.recordDrawnBatches(batches, dataset: "calls", partner: world.partner.keyID, delivery: id)
                if fail { throw StoreError(.conflict, "refused by the caller") }
            }
        }
        #expect(throws: StoreError(.conflict, "")) { try deliver("rel-0", batches: [1], fail: true) }
        #expect(try world.storage.delivery("rel-0") == nil)
        #expect(world.storage.logSize == size)
        #expect(try world.storage.agreement("ag-1")?.spentMicro == 0)
        try deliver("rel-1", batches: [1, 2])
        #expect(try world.storage.drawnBatches(partner: world.partner.keyID, dataset: "calls") == [1, 2])
        #expect(try world.storage.agreement("ag-1")?.spentMicro == 10)
        #expect(world.storage.logSize == size + 1)
        #expect(throws: StoreError(.superseded, "")) { try deliver("rel-2", batches: [3, 2]) }
        #expect(try world.storage.delivery("rel-2") == nil)
        #expect(world.storage.logSize == size + 1)
        #expect(try world.storage.delivery("rel-1")?.envelope == [9])
    }

    @Test("Feeds move on, are acknowledged within what was delivered, and record pushes", arguments: Implementation.allCases)
    func feeds(_ implementation: Implementation) throws {
        let world = try World(implementation)
        try world.storage.offerAgreement(world.agreement("ag-1"), purposes: ["research"], legalBasis: "consent", aggregateKeys: [:])
        let feed = try world.storage.createFeed(id: "feed-1", agreement: "ag-1", purpose: "research", webhook: "https://hooks.example/x", now: Self.now)
        #expect(feed.nextBatch == 1 && feed.delivered == 0)
        try world.storage.skipFeedBatches("feed-1", from: 1, to: 3)
        #expect(throws: StoreError(.superseded, "")) { try world.storage.skipFeedBatches("feed-1", from: 1, to: 4) }
        #expect(try world.storage.feed("feed-1")?.nextBatch == 3)
        #expect(throws: StoreError(.invalidArgument, "")) { try world.storage.acknowledge(feed: "feed-1", through: 1) }
        try world.storage.markPushed(feed: "feed-1", through: 0)
        #expect(try world.storage.feeds().map(\.id) == ["feed-1"])
    }

    @Test("The log's checkpoint is signed over what is stored, and its export and evidence verify", arguments: Implementation.allCases)
    func logReaders(_ implementation: Implementation) throws {
        let world = try World(implementation)
        try world.storage.offerAgreement(world.agreement("ag-1"), purposes: ["research"], legalBasis: "consent", aggregateKeys: [:])
        let broker = try SecretKeys.generate(name: "broker")
        let note = try world.storage.checkpointLog(signer: broker)
        let key = try NoteKey(name: String(note.prefix { $0 != "\n" }), publicKey: broker.publicKeys.signingKey)
        #expect(try Checkpoint.verify(note: note, key: key).size == world.storage.logSize)
        let exporter = try world.storage.logExporter(signer: broker, pageEntries: 2)
        var export: [UInt8] = []
        while let page = try exporter.nextPage() { export += page }
        let report = Auditor(broker: broker.publicKeys).audit(MemorySource(export))
        #expect(report.entries == world.storage.logSize, "\(report.findings)")
        let evidence = try world.storage.logInclusionEvidence(index: 0, signer: broker)
        #expect(evidence.index == 0)
    }
}
