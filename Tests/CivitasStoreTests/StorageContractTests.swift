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
        case postgres
        var description: String { rawValue }

        func make() throws -> any BrokerStorage {
            switch self {
            case .sqlite: return try TemporaryStore().store
            case .postgres: return try TemporaryPostgres().node()
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
            try self.init(storage: implementation.make())
        }

        init(storage: any BrokerStorage) throws {
            self.storage = storage
            agency = try SecretKeys.generate(name: "agency")
            partner = try SecretKeys.generate(name: "partner")
            let (agency, partner) = (agency, partner)
            try storage.transaction { transaction in
                try transaction.insertParticipant(Participant(keys: agency.publicKeys, role: .agency, registered: StorageContractTests.now))
                try transaction.insertParticipant(Participant(keys: partner.publicKeys, role: .partner, registered: StorageContractTests.now))
                try transaction.insertDataset(World.dataset("calls", publisher: agency.keyID))
            }
        }

        static func dataset(_ id: String, publisher: KeyID) -> Dataset {
            Dataset(id: id, publisher: publisher, schema: Array("{}".utf8), schemaSHA256: SHA256Hasher.hash(Array("{}".utf8)),
                    purposes: ["research"], registered: StorageContractTests.now)
        }

        func agreement(_ id: String, budgetMicro: UInt64 = 1_000_000) -> StoredAgreement {
            StoredAgreement(id: id, dataset: "calls", publisher: agency.keyID, partner: partner.keyID, policy: Array("{}".utf8),
                            policySHA256: SHA256Hasher.hash(Array(id.utf8)), offerSignature: [1], validFrom: "2026-11-01T00:00:00Z",
                            validUntil: "2026-12-31T23:59:59Z", budgetMicro: budgetMicro, offered: StorageContractTests.now)
        }
    }

    @Test("A participant's keys: a pending one is listed, an approved one becomes current, a replaced one keeps its retirement", arguments: Implementation.allCases)
    func participantKeys(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let next = try SecretKeys.generate(name: "partner-2027")
        let pending = ParticipantKey(keys: next.publicKeys, participant: world.partner.keyID, requested: Self.now)
        try world.storage.transaction { try $0.saveParticipantKey(pending) }
        #expect(try world.storage.participantKey(next.keyID) == pending)
        #expect(try world.storage.pendingParticipantKeys() == [pending])
        #expect(try world.storage.participant(world.partner.keyID)?.currentKeys == world.partner.publicKeys)

        let retires: UTCTime = "2026-11-28T10:00:00Z"
        let replaced = ParticipantKey(keys: world.partner.publicKeys, participant: world.partner.keyID, requested: Self.now, approved: Self.now, retires: retires)
        let approved = ParticipantKey(keys: next.publicKeys, participant: world.partner.keyID, requested: Self.now, approved: Self.now)
        try world.storage.transaction { transaction in
            try transaction.saveParticipantKey(replaced)
            try transaction.saveParticipantKey(approved)
            #expect(try transaction.participant(world.partner.keyID)?.currentKeys == next.publicKeys)
        }
        #expect(try world.storage.pendingParticipantKeys().isEmpty)
        #expect(try world.storage.participantKey(world.partner.keyID)?.retires == retires)
        let partner = try #require(try world.storage.participant(world.partner.keyID))
        #expect(partner.keys == world.partner.publicKeys && partner.currentKeys == next.publicKeys)
        #expect(try world.storage.participants().first(where: { $0.keys.keyID == world.partner.keyID })?.currentKeys == next.publicKeys)
        #expect(try world.storage.participant(world.agency.keyID)?.currentKeys == world.agency.publicKeys)
    }

    @Test("Participants and datasets read back as written; duplicates are refused", arguments: Implementation.allCases)
    func participantsAndDatasets(_ implementation: Implementation) throws {
        let world = try World(implementation)
        #expect(try world.storage.participant(world.agency.keyID)?.role == .agency)
        #expect(try world.storage.participants().count == 2)
        #expect(throws: StoreError(.duplicate, "")) {
            try world.storage.transaction { try $0.insertParticipant(Participant(keys: world.agency.publicKeys, role: .partner, registered: Self.now)) }
        }
        let dataset = try #require(try world.storage.dataset("calls"))
        #expect(dataset == World.dataset("calls", publisher: world.agency.keyID))
        #expect(throws: StoreError(.duplicate, "")) { try world.storage.transaction { try $0.insertDataset(dataset) } }
        let stranger = try SecretKeys.generate(name: "stranger").keyID
        #expect(throws: StoreError(.notFound, "")) { try world.storage.transaction { try $0.insertDataset(World.dataset("other", publisher: stranger)) } }
        #expect(try world.storage.dataset("missing") == nil)
        let (partner, stored, lastBatch) = try world.storage.transaction { transaction in
            (try transaction.participant(world.partner.keyID), try transaction.dataset("calls"), try transaction.lastBatch(of: "calls"))
        }
        #expect(partner?.role == .partner && stored == dataset && lastBatch == 0)
    }

    @Test("A request nonce is accepted once per key until it ages out", arguments: Implementation.allCases)
    func nonces(_ implementation: Implementation) throws {
        let storage = try implementation.make()
        try storage.recordNonce(keyID: "k1", nonce: "n1", created: 1000, oldestAccepted: 700)
        #expect(throws: StoreError(.replayed, "")) { try storage.recordNonce(keyID: "k1", nonce: "n1", created: 1001, oldestAccepted: 701) }
        try storage.recordNonce(keyID: "k2", nonce: "n1", created: 1001, oldestAccepted: 701)
        try storage.recordNonce(keyID: "k1", nonce: "n1", created: 2000, oldestAccepted: 1700)
        // Many in one write: each answered in order, a repeat within the list included.
        let batch = ["a", "b", "a", "n1", "c"].map { RequestNonce(keyID: "k1", nonce: $0, created: 2001) }
        #expect(try storage.recordNonces(batch, oldestAccepted: 1701) == [true, true, false, false, true])
    }

    @Test("Scheduled work is held by one holder at a time, until given up or past its time", arguments: Implementation.allCases)
    func workClaims(_ implementation: Implementation) throws {
        let storage = try implementation.make()
        #expect(try storage.claimWork("feed-window:f1", holder: "node-a", seconds: 60))
        #expect(try !storage.claimWork("feed-window:f1", holder: "node-b", seconds: 60))
        #expect(try storage.claimWork("feed-window:f1", holder: "node-a", seconds: 60))   // its holder extends it
        #expect(try storage.claimWork("feed-window:f2", holder: "node-b", seconds: 60))   // other work is free
        try storage.releaseWork("feed-window:f1", holder: "node-b")                       // not node-b's to give up
        #expect(try !storage.claimWork("feed-window:f1", holder: "node-b", seconds: 60))
        try storage.releaseWork("feed-window:f1", holder: "node-a")
        #expect(try storage.claimWork("feed-window:f1", holder: "node-b", seconds: 1))
        #expect(try !storage.claimWork("feed-window:f1", holder: "node-a", seconds: 60))
        Thread.sleep(forTimeInterval: 2.1)                                                 // past its time on the database's clock
        #expect(try storage.claimWork("feed-window:f1", holder: "node-a", seconds: 60))
        #expect(throws: StoreError(.invalidArgument, "")) { try storage.claimWork("", holder: "node-a", seconds: 60) }
        #expect(throws: StoreError(.invalidArgument, "")) { try storage.claimWork("w", holder: "node-a", seconds: 0) }
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
            try world.storage.appendBatch(dataset: "calls", idempotencyKey: "k", bodySHA256: nil, now: Self.now) { emit in
                try produce(emit)
                throw Refused()
            }
        }
        #expect(try world.storage.batches(of: "calls", from: 1).isEmpty)
        let body = SHA256Hasher.hash(Array("the upload's bytes".utf8))
        #expect(try world.storage.uploadedBatch(dataset: "calls", idempotencyKey: "k", bodySHA256: body) == nil)
        let chunked = try world.storage.appendBatch(dataset: "calls", idempotencyKey: "k", bodySHA256: body, now: Self.now, produce: produce)
        #expect(chunked.records == 2_345 && !chunked.replayed)
        // The same bytes under the same key are recognized by their digest alone; other bytes or another key are not.
        let uploaded = try world.storage.uploadedBatch(dataset: "calls", idempotencyKey: "k", bodySHA256: body)
        #expect(uploaded?.replayed == true && uploaded?.sequence == chunked.sequence && uploaded?.records == 2_345
                && uploaded?.contentSHA256 == chunked.contentSHA256)
        #expect(try world.storage.uploadedBatch(dataset: "calls", idempotencyKey: "k", bodySHA256: SHA256Hasher.hash([1])) == nil)
        #expect(try world.storage.uploadedBatch(dataset: "calls", idempotencyKey: "other", bodySHA256: body) == nil)
        // The key alone finds the batch's sequence, whatever bytes it came from; another key or dataset does not.
        #expect(try world.storage.batchSequence(dataset: "calls", idempotencyKey: "k") == chunked.sequence)
        #expect(try world.storage.batchSequence(dataset: "calls", idempotencyKey: "other") == nil)
        // The same rows given whole hash the same: the key answers the stored batch.
        let whole = try world.storage.appendBatch(dataset: "calls", columns: columns, rows: rows, idempotencyKey: "k", now: Self.now)
        #expect(whole.replayed && whole.sequence == chunked.sequence && whole.contentSHA256 == chunked.contentSHA256)
        var read: [[String]] = []
        try world.storage.records(of: "calls", batches: nil) { _, batch in read += batch }
        #expect(read == rows)
    }

    @Test("Agreements read back as written and as updated; duplicates are refused", arguments: Implementation.allCases)
    func agreements(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let offered = world.agreement("ag-1")
        try world.storage.transaction { try $0.insertAgreement(offered) }
        #expect(throws: StoreError(.duplicate, "")) { try world.storage.transaction { try $0.insertAgreement(offered) } }
        #expect(try world.storage.agreement("ag-1") == offered)
        var accepted = offered
        accepted.state = .accepted
        accepted.acceptSignature = [2, 3]
        accepted.accepted = Self.now
        accepted.spentMicro = 250_000
        try world.storage.transaction { try $0.updateAgreement(accepted) }
        #expect(try world.storage.agreement("ag-1") == accepted)
        var ended = accepted
        ended.state = .revoked
        ended.ended = "2026-11-28T00:00:00Z"
        try world.storage.transaction { transaction in
            #expect(try transaction.agreement("ag-1") == accepted)
            try transaction.updateAgreement(ended)
        }
        #expect(try world.storage.agreement("ag-1") == ended)
        #expect(throws: StoreError(.notFound, "")) { try world.storage.transaction { try $0.updateAgreement(world.agreement("ag-missing")) } }
        #expect(throws: StoreError(.notFound, "")) { try world.storage.transaction { _ = try $0.agreement("ag-missing") } }
        #expect(try world.storage.agreements(involving: world.partner.keyID).map(\.id) == ["ag-1"])
        #expect(try world.storage.agreements(involving: try SecretKeys.generate(name: "x").keyID).isEmpty)
    }

    @Test("Consent: the latest event per subject and purpose wins", arguments: Implementation.allCases)
    func consent(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let subject = SHA256Hasher.hash(Array("person".utf8)), other = SHA256Hasher.hash(Array("other".utf8))
        func event(_ subject: [UInt8], _ granted: Bool) -> StoredConsent {
            StoredConsent(dataset: "calls", subject: subject, purpose: "research", granted: granted, record: Array("{}".utf8))
        }
        try world.storage.transaction { transaction in
            try transaction.appendConsent(event(subject, true), now: Self.now)
            try transaction.appendConsent(event(other, true), now: Self.now)
        }
        #expect(try world.storage.consentStates(dataset: "calls", purpose: "research") == [SubjectDigest(subject): true, SubjectDigest(other): true])
        try world.storage.transaction { try $0.appendConsent(event(subject, false), now: Self.now) }
        #expect(try world.storage.consentStates(dataset: "calls", purpose: "research") == [SubjectDigest(subject): false, SubjectDigest(other): true])
        #expect(try world.storage.consentStates(dataset: "calls", purpose: "other").isEmpty)
        // Within one transaction too, events keep their order: the last one is the state.
        try world.storage.transaction { transaction in
            for granted in [true, false, true, false] { try transaction.appendConsent(event(other, granted), now: Self.now) }
        }
        #expect(try world.storage.consentStates(dataset: "calls", purpose: "research")[try #require(SubjectDigest(other))] == false)
    }

    @Test("Consent states read in two halves: events of the later half decide, other purposes stay out", arguments: Implementation.allCases)
    func consentInHalves(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let subjects = (0..<12_000).map { SHA256Hasher.hash(Array("person \($0)".utf8)) }
        var expected: [SubjectDigest: Bool] = [:]
        try world.storage.transaction { transaction in
            // Every subject grants, then every subject answers again in the order given: the later
            // answers fall in the later half of the ids; another purpose's events come in between.
            for (index, subject) in subjects.enumerated() {
                try transaction.appendConsent(StoredConsent(dataset: "calls", subject: subject, purpose: "research", granted: true, record: []), now: Self.now)
                if index % 100 == 0 {
                    try transaction.appendConsent(StoredConsent(dataset: "calls", subject: subject, purpose: "other", granted: false, record: []), now: Self.now)
                }
            }
            for (index, subject) in subjects.enumerated() {
                let granted = index % 3 != 0
                try transaction.appendConsent(StoredConsent(dataset: "calls", subject: subject, purpose: "research", granted: granted, record: []), now: Self.now)
                expected[try #require(SubjectDigest(subject))] = granted
            }
        }
        let states = try world.storage.consentStates(dataset: "calls", purpose: "research")
        #expect(states.count == expected.count)
        #expect(states == expected)
        #expect(expected.values.contains(false) && 2 * subjects.count >= 20_000, "some later answers must withdraw, over enough events to be read in halves")
    }

    @Test("Refusals are counted per agreement and reason, with the time of the last", arguments: Implementation.allCases)
    func refusalCounts(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let later = UTCTime(secondsSince1970: Self.now.secondsSince1970 + 60)
        try world.storage.transaction { try $0.countRefusal(agreement: "ag-1", code: "budget_exhausted", at: Self.now) }
        try world.storage.transaction { try $0.countRefusal(agreement: "ag-1", code: "budget_exhausted", at: later) }
        try world.storage.transaction { try $0.countRefusal(agreement: "ag-1", code: "k_unreachable", at: Self.now) }
        try world.storage.transaction { try $0.countRefusal(agreement: "ag-2", code: "k_unreachable", at: Self.now) }
        #expect(try world.storage.refusals(agreement: "ag-1") == [RefusalCount(code: "budget_exhausted", count: 2, last: later),
                                                                   RefusalCount(code: "k_unreachable", count: 1, last: Self.now)])
        #expect(try world.storage.refusals(agreement: "ag-3").isEmpty)
    }

    @Test("A dataset's quality counts read back as last saved, inside and outside a transaction", arguments: Implementation.allCases)
    func datasetQuality(_ implementation: Implementation) throws {
        let world = try World(implementation)
        #expect(try world.storage.datasetQuality("calls") == nil)
        try world.storage.transaction { try $0.saveDatasetQuality("calls", counts: Array("first".utf8)) }
        try world.storage.transaction { transaction in
            #expect(try transaction.datasetQuality("calls") == Array("first".utf8))
            try transaction.saveDatasetQuality("calls", counts: Array("second".utf8))
        }
        #expect(try world.storage.datasetQuality("calls") == Array("second".utf8))
        // A transaction that fails leaves the counts as they were.
        #expect(throws: StoreError.self) {
            try world.storage.transaction { transaction in
                try transaction.saveDatasetQuality("calls", counts: Array("lost".utf8))
                throw StoreError(.notFound, "abandoned")
            }
        }
        #expect(try world.storage.datasetQuality("calls") == Array("second".utf8))
        // Counts move with a batch, in its transaction: given the stored ones, never for a replay,
        // and not at all when the batch fails.
        func append(_ key: String, fail: Bool = false) throws -> Batch {
            try world.storage.appendBatch(dataset: "calls", idempotencyKey: key, bodySHA256: nil, now: Self.now, produce: { emit in
                try emit(["person"], [["p-1"]])
                if fail { throw StoreError(.notFound, "abandoned") }
            }, quality: { stored in (stored ?? []) + Array("+".utf8) })
        }
        _ = try append("q-1")
        #expect(try world.storage.datasetQuality("calls") == Array("second+".utf8))
        #expect(try append("q-1").replayed)
        #expect(throws: StoreError.self) { try append("q-2", fail: true) }
        #expect(try world.storage.datasetQuality("calls") == Array("second+".utf8))
    }

    @Test("A web token is stored by its hash and ends once", arguments: Implementation.allCases)
    func webTokens(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let token = WebToken(sha256: SHA256Hasher.hash([7]), kind: .login, participant: world.partner.keyID, created: Self.now, expires: Self.now)
        #expect(try world.storage.webToken(sha256: token.sha256) == nil)
        try world.storage.transaction { try $0.insertWebToken(token) }
        #expect(try world.storage.webToken(sha256: token.sha256) == token)
        // Two uses race: exactly one ends it.
        #expect(try world.storage.transaction { try $0.endWebToken(sha256: token.sha256, at: Self.now) })
        #expect(try !world.storage.transaction { try $0.endWebToken(sha256: token.sha256, at: Self.now) })
        #expect(try world.storage.webToken(sha256: token.sha256)?.ended == Self.now)
        #expect(try !world.storage.transaction { try $0.endWebToken(sha256: SHA256Hasher.hash([8]), at: Self.now) })
        // Expired tokens are removed; those still valid at the time given stay.
        let later = WebToken(sha256: SHA256Hasher.hash([9]), kind: .session, participant: world.partner.keyID, created: Self.now,
                             expires: UTCTime(secondsSince1970: Self.now.secondsSince1970 + 3600))
        try world.storage.transaction { try $0.insertWebToken(later) }
        try world.storage.transaction { try $0.deleteWebTokens(expiredBefore: UTCTime(secondsSince1970: Self.now.secondsSince1970 + 1)) }
        #expect(try world.storage.webToken(sha256: token.sha256) == nil)
        #expect(try world.storage.webToken(sha256: later.sha256) == later)
    }

    @Test("Consent events read back by the entry their request made, in order; a consent key is stored once", arguments: Implementation.allCases)
    func consentByEntry(_ implementation: Implementation) throws {
        let world = try World(implementation)
        let recorder = try SecretKeys.generate(name: "recorder").keyID
        func event(_ number: Int, entry: UInt64?) -> StoredConsent {
            StoredConsent(dataset: "calls", subject: SHA256Hasher.hash([UInt8(number)]), purpose: "research", granted: number % 2 == 0,
                          record: Array("{\"n\":\(number)}".utf8), logIndex: entry)
        }
        // Two requests in one transaction and one without an entry: each entry's events, in order, and only those.
        try world.storage.transaction { transaction in
            for number in 0..<5 { try transaction.appendConsent(event(number, entry: 7), now: Self.now) }
            for number in 5..<7 { try transaction.appendConsent(event(number, entry: 8), now: Self.now) }
            try transaction.appendConsent(event(9, entry: nil), now: Self.now)
            try transaction.insertConsentKey(ConsentKey(recorder: recorder, key: "k-1", requestSHA256: [1, 2], logIndex: 7, created: Self.now))
        }
        #expect(try world.storage.consentRecords(logIndex: 7) == (0..<5).map { Array("{\"n\":\($0)}".utf8) })
        #expect(try world.storage.consentRecords(logIndex: 8) == (5..<7).map { Array("{\"n\":\($0)}".utf8) })
        #expect(try world.storage.consentRecords(logIndex: 9).isEmpty)
        // Records of one entry that are alike, equal, longer, shorter, empty or wholly different read back exactly.
        let base = Array(#"{"pii_principal_id":"00aa","record_id":"cr-01","state":"active"}"#.utf8)
        let records = [base, Array(#"{"pii_principal_id":"11bb","record_id":"cr-02","state":"active"}"#.utf8), base,
                       base + [0x20], [], Array(base.dropLast()), base.map { $0 ^ 0xFF },
                       Array(#"{"pii_principal_id":"00aa","record_id":"cr-01","state":"withdr"}"#.utf8)]
        try world.storage.transaction { transaction in
            for (number, record) in records.enumerated() {
                try transaction.appendConsent(StoredConsent(dataset: "calls", subject: SHA256Hasher.hash([UInt8(number)]), purpose: "research",
                                                            granted: true, record: record, logIndex: 10), now: Self.now)
            }
        }
        #expect(try world.storage.consentRecords(logIndex: 10) == records)
        #expect(try world.storage.consentKey(recorder: recorder, key: "k-1")
                == ConsentKey(recorder: recorder, key: "k-1", requestSHA256: [1, 2], logIndex: 7, created: Self.now))
        #expect(try world.storage.consentKey(recorder: recorder, key: "k-2") == nil)
        #expect(throws: StoreError(.duplicate, "")) {
            try world.storage.transaction { try $0.insertConsentKey(ConsentKey(recorder: recorder, key: "k-1", requestSHA256: [3], logIndex: 8, created: Self.now)) }
        }
    }

    @Test("A transaction commits whole or not at all; a batch is drawn once per partner", arguments: Implementation.allCases)
    func transactions(_ implementation: Implementation) throws {
        let world = try World(implementation)
        try world.storage.transaction { try $0.insertAgreement(world.agreement("ag-1")) }
        let size = world.storage.logSize
        struct Refused: Error {}
        func deliver(_ id: String, batches: [Int64], envelope: [UInt8] = [9], fail: Bool = false) throws {
            try world.storage.transaction { transaction in
                var agreement = try transaction.agreement("ag-1")
                agreement.spentMicro += 10
                try transaction.updateAgreement(agreement)
                let index = try transaction.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": "ag-1"])
                try transaction.insertDelivery(Delivery(id: id, agreement: "ag-1", partner: world.partner.keyID, kind: .release, feed: nil,
                                                        feedSequence: nil, logIndex: index, records: 0, envelope: envelope, created: Self.now))
                try transaction.recordDrawnBatches(batches, dataset: "calls", partner: world.partner.keyID, delivery: id)
                if fail { throw Refused() }
            }
        }
        #expect(throws: Refused.self) { try deliver("rel-0", batches: [1], fail: true) }
        #expect(try world.storage.delivery("rel-0") == nil)
        // As with an envelope of several MiB (which a store may keep apart from its rows).
        #expect(throws: Refused.self) { try deliver("rel-0", batches: [1], envelope: [UInt8](repeating: 7, count: 3 << 20), fail: true) }
        #expect(try world.storage.delivery("rel-0") == nil)
        #expect(try world.storage.deliveryEnvelope("rel-0") == nil)
        #expect(world.storage.logSize == size)
        #expect(try world.storage.agreement("ag-1")?.spentMicro == 0)
        try deliver("rel-1", batches: [1, 2])
        #expect(try world.storage.drawnBatches(partner: world.partner.keyID, dataset: "calls") == [1, 2])
        #expect(try world.storage.agreement("ag-1")?.spentMicro == 10)
        #expect(world.storage.logSize == size + 1)
        #expect(throws: StoreError(.superseded, "")) { try deliver("rel-2", batches: [3, 2], envelope: [UInt8](repeating: 8, count: 3 << 20)) }
        #expect(try world.storage.delivery("rel-2") == nil)
        #expect(world.storage.logSize == size + 1)
        #expect(try world.storage.delivery("rel-1")?.envelope == [9])
        #expect(try world.storage.deliveryCounts() == [.release: 1])
        #expect(try world.storage.deliverySummaries(agreement: "ag-1", limit: 10).map(\.id) == ["rel-1"])
        #expect(try world.storage.deliverySummaries(agreement: "ag-other", limit: 10).isEmpty)

        // A request key is stored with its delivery, once per partner and key.
        let key = RequestKey(partner: world.partner.keyID, key: "retry-1", requestSHA256: [1, 2], delivery: "rel-1", figures: Array("{}".utf8),
                             created: Self.now)
        try world.storage.transaction { try $0.insertRequestKey(key) }
        #expect(try world.storage.requestKey(partner: world.partner.keyID, key: "retry-1") == key)
        #expect(try world.storage.requestKey(partner: world.agency.keyID, key: "retry-1") == nil)
        #expect(throws: StoreError(.duplicate, "")) { try world.storage.transaction { try $0.insertRequestKey(key) } }
    }

    @Test("A delivery's envelope is described without being read, and read back exactly in pieces of any size", arguments: Implementation.allCases)
    func envelopePieces(_ implementation: Implementation) throws {
        let world = try World(implementation)
        try world.storage.transaction { try $0.insertAgreement(world.agreement("ag-1")) }
        var generator = SystemRandomNumberGenerator()
        let envelope = (0..<(3 << 20) + 12_345).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try world.storage.transaction { transaction in
            let index = try transaction.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": "ag-1"])
            try transaction.insertDelivery(Delivery(id: "rel-1", agreement: "ag-1", partner: world.partner.keyID, kind: .release, feed: nil,
                                                    feedSequence: nil, logIndex: index, records: 3, envelope: envelope, created: Self.now))
        }
        let described = try #require(try world.storage.deliveryEnvelope("rel-1"))
        #expect(described.byteCount == envelope.count && described.partner == world.partner.keyID)
        #expect(try world.storage.delivery("rel-1")?.envelope == envelope)
        #expect(described.logIndex == (try world.storage.delivery("rel-1"))?.logIndex)
        #expect(try world.storage.deliveryEnvelope("rel-2") == nil)
        for pieceSize in [1 << 20, 65_536, 999_983, 8 << 20] {
            var read: [UInt8] = []
            var pieces = 0
            try world.storage.readEnvelope(of: "rel-1", pieceSize: pieceSize) { piece in
                #expect(piece.count <= pieceSize)
                read += piece
                pieces += 1
                return true
            }
            #expect(read == envelope)
            #expect(pieces == (envelope.count + pieceSize - 1) / pieceSize)
        }
        // The reader stops when told to.
        var pieces = 0
        try world.storage.readEnvelope(of: "rel-1", pieceSize: 1 << 20) { _ in
            pieces += 1
            return pieces < 2
        }
        #expect(pieces == 2)
        #expect(throws: StoreError(.notFound, "")) { try world.storage.readEnvelope(of: "rel-2", pieceSize: 1 << 20) { _ in true } }
        #expect(throws: StoreError(.invalidArgument, "")) { try world.storage.readEnvelope(of: "rel-1", pieceSize: 0) { _ in true } }
    }

    @Test("Feeds read back as written and as moved; duplicates are refused", arguments: Implementation.allCases)
    func feeds(_ implementation: Implementation) throws {
        let world = try World(implementation)
        try world.storage.transaction { try $0.insertAgreement(world.agreement("ag-1")) }
        let feed = Feed(id: "feed-1", agreement: "ag-1", purpose: "research", nextBatch: 1, delivered: 0, acknowledged: 0,
                        webhook: "https://hooks.example/x", pushed: 0, created: Self.now)
        try world.storage.transaction { try $0.insertFeed(feed) }
        #expect(throws: StoreError(.duplicate, "")) { try world.storage.transaction { try $0.insertFeed(feed) } }
        #expect(try world.storage.feed("feed-1") == feed)
        let moved = feed.with(nextBatch: 3, delivered: 2, acknowledged: 1, pushed: 2)
        try world.storage.transaction { transaction in
            #expect(try transaction.feed("feed-1") == feed)
            try transaction.updateFeed(moved)
        }
        #expect(try world.storage.feed("feed-1") == moved)
        #expect(try world.storage.feeds() == [moved])
        let missing = Feed(id: "feed-9", agreement: "ag-1", purpose: "research", nextBatch: 1, delivered: 0, acknowledged: 0,
                           webhook: nil, pushed: 0, created: Self.now)
        #expect(throws: StoreError(.notFound, "")) { try world.storage.transaction { try $0.updateFeed(missing) } }
        #expect(throws: StoreError(.notFound, "")) { try world.storage.transaction { _ = try $0.feed("feed-9") } }
    }

    @Test("The log's checkpoint is signed over what is stored, and its export and evidence verify", arguments: Implementation.allCases)
    func logReaders(_ implementation: Implementation) throws {
        let world = try World(implementation)
        try world.storage.transaction { transaction in
            try transaction.insertAgreement(world.agreement("ag-1"))
            _ = try transaction.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": "ag-1"])
        }
        let broker = try SecretKeys.generate(name: "broker")
        #expect(try world.storage.logStatus() == LogStatus(entries: world.storage.logSize, checkpointEntries: 0, checkpointSigned: nil))
        let note = try world.storage.checkpointLog(signer: broker)
        let key = try NoteKey(name: String(note.prefix { $0 != "\n" }), publicKey: broker.publicKeys.signingKey)
        #expect(try Checkpoint.verify(note: note, key: key).size == world.storage.logSize)
        let status = try world.storage.logStatus()
        #expect(status.entries == world.storage.logSize && status.checkpointEntries == world.storage.logSize)
        #expect(abs((status.checkpointSigned?.secondsSince1970 ?? 0) - Int64(Date().timeIntervalSince1970)) < 60)
        let exporter = try world.storage.logExporter(signer: broker, pageEntries: 2)
        var export: [UInt8] = []
        while let page = try exporter.nextPage() { export += page }
        let report = Auditor(broker: broker.publicKeys).audit(MemorySource(export))
        #expect(report.entries == world.storage.logSize, "\(report.findings)")
        let evidence = try world.storage.logInclusionEvidence(index: 0, signer: broker)
        #expect(evidence.index == 0)

        // A later checkpoint is consistent with an earlier one: the proof leads from each root to the other.
        let first = try Checkpoint.verify(note: note, key: key)
        for n in 0..<6 { _ = try world.storage.transaction { try $0.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": .string("ag-\(n)")]) } }
        let second = try Checkpoint.verify(note: try world.storage.checkpointLog(signer: broker), key: key)
        let proof = try world.storage.logConsistencyProof(from: first.size, to: second.size)
        try MerkleVerifier.verifyConsistency(size1: first.size, size2: second.size, root1: first.rootHash, root2: second.rootHash, proof: proof)
        #expect(try world.storage.logConsistencyProof(from: second.size, to: second.size).isEmpty)
        #expect(throws: StoreError(.invalidArgument, "")) { try world.storage.logConsistencyProof(from: 0, to: second.size) }
        #expect(throws: StoreError(.notFound, "")) { try world.storage.logConsistencyProof(from: second.size, to: first.size) }
        #expect(throws: StoreError(.notFound, "")) { try world.storage.logConsistencyProof(from: first.size, to: second.size + 1) }
    }

    @Test("Signature lines added to a kept checkpoint are kept with it, once each", arguments: Implementation.allCases)
    func checkpointSignatures(_ implementation: Implementation) throws {
        let world = try World(implementation)
        _ = try world.storage.transaction { try $0.appendLog(time: Self.now, type: .agreementExpired, members: ["agreement": "ag-1"]) }
        let broker = try SecretKeys.generate(name: "broker")
        let note = try world.storage.checkpointLog(signer: broker)
        let lines = ["\u{2014} witness.example/w1 AAAAAQ==", "\u{2014} witness.example/w2 AAAAAg=="]
        let signed = try world.storage.addSignatures(toCheckpointOfSize: world.storage.logSize, lines: lines)
        #expect(signed == note + lines.joined(separator: "\n") + "\n")
        #expect(try world.storage.addSignatures(toCheckpointOfSize: world.storage.logSize, lines: [lines[1]]) == signed)
        #expect(try world.storage.checkpointLog(signer: broker) == signed)
        #expect(throws: StoreError(.notFound, "")) { try world.storage.addSignatures(toCheckpointOfSize: world.storage.logSize + 1, lines: lines) }
    }
}
