@testable import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasPrivacy
import CivitasStore
import Foundation
import Testing

@Suite("Agreements")
struct AgreementTests {
    @Test("Equal policies hash equal however they are written (member order, number spelling)")
    func canonicalHash() throws {
        let one = try JSONParser.parse(Array(#"{"a":0.050,"b":[1,2],"c":{"y":1e1,"x":"é"}}"#.utf8))
        let two = try JSONParser.parse(Array(#"{"c":{"x":"\u00e9","y":10},"b":[1,2.0],"a":5e-2}"#.utf8))
        #expect(try CanonicalJSON.encode(one) == CanonicalJSON.encode(two))
        let fixture = try BrokerFixture()
        let policy = fixture.policy(id: "ag-1", partner: fixture.partnerAKeys)
        let reordered = try JSONParser.parse(Array(String(decoding: try CanonicalJSON.encode(policy), as: UTF8.self)
            .replacingOccurrences(of: #""suppression_limit":0.2"#, with: #""suppression_limit":2e-1"#).utf8))
        #expect(try AgreementPolicy.parse(policy).sha256 == AgreementPolicy.parse(reordered).sha256)
    }

    @Test("An offer, an acceptance and a revocation keep both signatures and are logged in order")
    func lifecycle() throws {
        let fixture = try BrokerFixture()
        let before = fixture.store.logSize
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys), partner: fixture.partnerAKeys)
        let stored = try #require(try fixture.store.agreement(id))
        #expect(stored.state == .accepted)
        #expect(fixture.clinic.keys.isValidSignature(stored.offerSignature, for: AgreementPolicy.offerMessage(policySHA256: stored.policySHA256)))
        #expect(fixture.partnerA.keys.isValidSignature(try #require(stored.acceptSignature), for: AgreementPolicy.acceptMessage(policySHA256: stored.policySHA256)))
        _ = try fixture.broker.revokeAgreement(id, by: fixture.partnerA, now: fixture.now)
        #expect(fixture.store.logSize == before + 3)
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export()))
        #expect(report.passed)
        #expect(report.agreements[id]?.budgetMicro == 1_000_000)
    }

    @Test("Bad offers are refused naming the problem, and change nothing")
    func refusedOffers() throws {
        let fixture = try BrokerFixture()
        let before = try fixture.stateFingerprint()
        func offer(_ policy: JSONValue, signer: SecretKeys? = nil, by: Participant? = nil) throws {
            let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
            _ = try fixture.broker.offerAgreement(policy: policy, signature: (signer ?? fixture.clinicKeys).sign(AgreementPolicy.offerMessage(policySHA256: hash)),
                                                  by: by ?? fixture.clinic, now: fixture.now)
        }
        let cases: [(JSONValue, BrokerError.Code, String)] = [
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, fields: ["person", "notes"]), .invalid, "notes"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, k: 1), .invalid, "treatment.k"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, extra: ["legal_basis": "because"]), .invalid, "legal_basis"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, extra: ["purposes": ["marketing"]]), .invalid, "marketing"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, extra: ["valid_until": "2026-10-01T00:00:00Z"]), .invalid, "valid_from"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, extra: ["surprise": true]), .invalid, "surprise"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, extra: ["treatment": ["k": 3, "supression_limit": 0.2]]), .invalid, "supression_limit"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, fields: ["person", "age"],
                            extra: ["treatment": ["k": 3, "measure_noise": ["epsilon": 0.5]]]), .invalid, "measure"),
            (fixture.policy(id: "ag-x", partner: fixture.partnerAKeys, budget: 0,
                            extra: ["treatment": ["k": 3, "measure_noise": ["epsilon": 0.5]]]), .invalid, "epsilon_budget"),
            (fixture.policy(id: "ag-x", partner: fixture.clinicKeys), .invalid, "partner"),
        ]
        for (policy, code, mention) in cases {
            let error = try #require(throws: BrokerError.self) { try offer(policy) }
            #expect(error.code == code)
            #expect(error.message.contains(mention), "\(error.message)")
        }
        let forged = try #require(throws: BrokerError.self) { try offer(fixture.policy(id: "ag-x", partner: fixture.partnerAKeys), signer: fixture.partnerAKeys) }
        #expect(forged.code == .badSignature)
        let stranger = try #require(throws: BrokerError.self) { try offer(fixture.policy(id: "ag-x", partner: fixture.partnerAKeys), by: fixture.partnerA) }
        #expect(stranger.code == .forbidden)
        #expect(try fixture.stateFingerprint() == before)
    }

    @Test("Only the named partner accepts, once, with a signature over the same hash")
    func acceptance() throws {
        let fixture = try BrokerFixture()
        let policy = fixture.policy(id: "ag-1", partner: fixture.partnerAKeys)
        let hash = SHA256Hasher.hash(try CanonicalJSON.encode(policy))
        _ = try fixture.broker.offerAgreement(policy: policy, signature: fixture.clinicKeys.sign(AgreementPolicy.offerMessage(policySHA256: hash)),
                                              by: fixture.clinic, now: fixture.now)
        let wrongPartner = try #require(throws: BrokerError.self) {
            try fixture.broker.acceptAgreement("ag-1", signature: fixture.partnerBKeys.sign(AgreementPolicy.acceptMessage(policySHA256: hash)), by: fixture.partnerB, now: fixture.now)
        }
        #expect(wrongPartner.code == .forbidden)
        let wrongMessage = try #require(throws: BrokerError.self) {
            try fixture.broker.acceptAgreement("ag-1", signature: fixture.partnerAKeys.sign(AgreementPolicy.offerMessage(policySHA256: hash)), by: fixture.partnerA, now: fixture.now)
        }
        #expect(wrongMessage.code == .badSignature)
        _ = try fixture.broker.acceptAgreement("ag-1", signature: fixture.partnerAKeys.sign(AgreementPolicy.acceptMessage(policySHA256: hash)), by: fixture.partnerA, now: fixture.now)
        let twice = try #require(throws: BrokerError.self) {
            try fixture.broker.acceptAgreement("ag-1", signature: fixture.partnerAKeys.sign(AgreementPolicy.acceptMessage(policySHA256: hash)), by: fixture.partnerA, now: fixture.now)
        }
        #expect(twice.code == .agreementNotActive)
    }

    @Test("The ODRL export declares its profile and states every term: the policy rebuilt from it hashes the same; a term outside the profile is refused")
    func odrl() throws {
        let fixture = try BrokerFixture()
        let plain = fixture.policy(id: "ag-1", partner: fixture.partnerAKeys)
        guard case .object(var treatment)? = plain["treatment"] else { Issue.record("no treatment"); return }
        treatment["l"] = 2
        treatment["algorithm"] = "mondrian"
        treatment["pseudonym_epoch"] = "2027"
        treatment["measure_noise"] = ["epsilon": 0.5, "fraction_digits": 1]
        treatment["max_records_per_subject"] = 3
        let rich = fixture.policy(id: "ag-2", partner: fixture.partnerBKeys, basis: "public-task", budget: 2.5, extra: [
            "treatment": .object(treatment),
            "aggregates": ["group_by": ["zip", "age"], "group_keys": ["zip": ["19101", "19102"]], "max_epsilon_per_query": 0.25, "max_rows_per_subject": 4],
            "feed": ["window_records": 50, "window_seconds": 600, "below_k": "suppress"],
        ])
        var synthetic = fixture.policy(id: "ag-3", partner: fixture.partnerAKeys, extra: [
            "rho_budget": 2,
            "synthetic": ["fields": ["age", "zip"], "bins": ["age": [0, 40, 121]], "domains": ["zip": ["19101", "19102"]],
                          "tree": [["age", "zip"]], "max_rho_per_release": 0.5, "max_records_per_subject": 2],
        ])
        if case .object(var object) = synthetic {
            object["epsilon_budget"] = nil
            synthetic = .object(object)
        }
        for document in [plain, rich, synthetic] {
            let policy = try AgreementPolicy.parse(document)
            let odrl = policy.odrl(agreed: "2026-11-20T10:00:00Z")
            #expect(odrl["profile"]?.stringValue == AgreementPolicy.odrlProfile)
            #expect(odrl["assignee"]?.stringValue == "urn:civitas:participant:\(policy.partner.hex)")
            #expect(odrl["dspace:timestamp"]?["@value"]?.stringValue == "2026-11-20T10:00:00Z")
            let rebuilt = try AgreementPolicy.parse(try AgreementPolicy.policyDocument(fromODRL: odrl))
            #expect(rebuilt.sha256 == policy.sha256)
            #expect(rebuilt == policy)
        }
        #expect(try AgreementPolicy.parse(rich).odrl()["dpv:hasLegalBasis"]?.stringValue == "eu-gdpr:A6-1-e")
        // Control: a changed value changes the rebuilt policy's hash; an unknown term is refused, not dropped.
        let policy = try AgreementPolicy.parse(rich)
        guard case .object(var odrl) = policy.odrl(), case .array(var permissions)? = odrl["permission"],
              case .object(var feed) = permissions[2], case .array(var constraints)? = feed["constraint"] else { Issue.record("no feed permission"); return }
        constraints[0] = ["leftOperand": "civitas:windowRecords", "operator": "eq", "rightOperand": 51]
        feed["constraint"] = .array(constraints)
        permissions[2] = .object(feed)
        odrl["permission"] = .array(permissions)
        #expect(try AgreementPolicy.parse(try AgreementPolicy.policyDocument(fromODRL: .object(odrl))).sha256 != policy.sha256)
        constraints.append(["leftOperand": "civitas:colour", "operator": "eq", "rightOperand": "blue"])
        feed["constraint"] = .array(constraints)
        permissions[2] = .object(feed)
        odrl["permission"] = .array(permissions)
        #expect(throws: BrokerError.self) { try AgreementPolicy.policyDocument(fromODRL: .object(odrl)) }
    }

    @Test("Expiry: agreements past their validity are marked expired, logged, and release nothing")
    func expiry() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 30))
        try fixture.consent(Array(0..<30), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys), partner: fixture.partnerAKeys)
        let late: UTCTime = "2027-01-01T00:00:00Z"
        let before = try fixture.stateFingerprint()
        let refused = try #require(throws: BrokerError.self) {
            try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: late)
        }
        #expect(refused.code == .agreementNotActive)
        #expect(try fixture.stateFingerprint() == before)
        #expect(try fixture.broker.expireAgreements(now: late) == [id])
        #expect(try fixture.store.agreement(id)?.state == .expired)
        #expect(try fixture.broker.expireAgreements(now: late) == [])
    }
}

@Suite("Consent")
struct ConsentTests {
    @Test("Subject ids are stored only as keyed hashes; receipts are signed by the broker")
    func hashedAndSigned() throws {
        let fixture = try BrokerFixture()
        let receipts = try fixture.broker.recordConsent([ConsentRequest(dataset: BrokerFixture.dataset, subject: "P-SECRET-4711",
                                                                        purpose: BrokerFixture.purpose, granted: true, notice: "n-1",
                                                                        collectionMethod: "web-form", jurisdiction: "EU")],
                                                        by: fixture.consentService, now: fixture.now)
        let receipt = try receipts.receiptJSON(0)
        let record = try #require(receipt["receipt"])
        let entry = try ConsentReceipts.verify(receipt: receipt, batch: try receipts.batchJSON(), broker: fixture.brokerKeys.publicKeys)
        #expect(entry.type == .consentRecorded && entry.count("receipts") == 1 && entry.count("granted") == 1)
        #expect(record["schema_version"]?.stringValue == "ISO/IEC TS 27560:2023")
        #expect(record["pii_principal_id"]?.stringValue == Hex.encode(fixture.broker.subjectHash(dataset: BrokerFixture.dataset, subject: "P-SECRET-4711")))
        for file in ["broker.sqlite", "broker.sqlite-wal"] {
            let bytes = (try? Data(contentsOf: URL(fileURLWithPath: "\(fixture.directory)/\(file)"))) ?? Data()
            #expect(bytes.range(of: Data("P-SECRET-4711".utf8)) == nil, "\(file) holds the subject id in clear")
        }
        let export = try fixture.export()
        #expect(Data(export).range(of: Data("P-SECRET-4711".utf8)) == nil)
        #expect(Data(export).range(of: Data(Hex.encode(fixture.broker.subjectHash(dataset: BrokerFixture.dataset, subject: "P-SECRET-4711")).utf8)) == nil,
                "the log names no subject, not even by its keyed hash")
    }

    @Test("Every receipt of a request proves itself against the one signed log entry; a changed receipt does not")
    func receiptsProveThemselves() throws {
        let fixture = try BrokerFixture()
        let requests = (0..<37).map {
            ConsentRequest(dataset: BrokerFixture.dataset, subject: "P\($0)", purpose: BrokerFixture.purpose, granted: $0 % 5 != 0,
                           notice: "n-1", collectionMethod: "web-form", jurisdiction: "EU")
        }
        let receipts = try fixture.broker.recordConsent(requests, by: fixture.consentService, now: fixture.now)
        let batch = try receipts.batchJSON()
        let broker = fixture.brokerKeys.publicKeys
        for index in 0..<receipts.count {
            let entry = try ConsentReceipts.verify(receipt: try receipts.receiptJSON(index), batch: batch, broker: broker)
            #expect(entry.index == receipts.logIndex && entry.count("granted") == 29 && entry.count("withdrawn") == 8)
        }
        // The JSON Lines answer carries the same batch and receipts.
        let lines = try receipts.jsonLines().split(separator: 0x0A).map { try JSONParser.parse(Array($0)) }
        let fifth = try receipts.receiptJSON(4)
        #expect(lines.count == 38 && lines[0]["batch"] == batch && lines[5] == fifth)
        // Positive controls: a changed record, a receipt moved to another index, another request's signature.
        var forged = try #require(try receipts.receiptJSON(3).objectValue)
        var record = try #require(forged["receipt"]?.objectValue)
        record["state"] = "withdrawn"
        forged["receipt"] = .object(record)
        #expect(throws: BrokerError.self) { try ConsentReceipts.verify(receipt: .object(forged), batch: batch, broker: broker) }
        var moved = try #require(try receipts.receiptJSON(3).objectValue)
        moved["receipt_index"] = 4
        #expect(throws: BrokerError.self) { try ConsentReceipts.verify(receipt: .object(moved), batch: batch, broker: broker) }
        let later = try fixture.broker.recordConsent(Array(requests.prefix(2)), by: fixture.consentService, now: fixture.now)
        #expect(throws: BrokerError.self) { try ConsentReceipts.verify(receipt: try receipts.receiptJSON(0), batch: try later.batchJSON(), broker: broker) }
    }

    @Test("A large request's records are built on every core, each its own subject's, in the order of the request")
    func largeRequestBuiltInOrder() throws {
        let fixture = try BrokerFixture()
        let count = ConsentRecords.parallelFrom * 2 + 7
        let requests = (0..<count).map {
            ConsentRequest(dataset: BrokerFixture.dataset, subject: "L\($0)", purpose: BrokerFixture.purpose, granted: $0 % 3 != 0,
                           notice: "n-\($0 % 4)", collectionMethod: "web-form", jurisdiction: "EU")
        }
        let receipts = try fixture.broker.recordConsent(requests, by: fixture.consentService, now: fixture.now)
        let batch = try receipts.batchJSON()
        var recordIDs = Set<String>()
        func principal(_ index: Int) throws -> String? { try receipts.receiptJSON(index)["receipt"]?["pii_principal_id"]?.stringValue }
        for index in 0..<count {
            let receipt = try receipts.receiptJSON(index)
            _ = try ConsentReceipts.verify(receipt: receipt, batch: batch, broker: fixture.brokerKeys.publicKeys)
            let record = try #require(receipt["receipt"])
            #expect(record["pii_principal_id"]?.stringValue == Hex.encode(fixture.broker.subjectHash(dataset: BrokerFixture.dataset, subject: "L\(index)")))
            #expect(record["state"]?.stringValue == (index % 3 != 0 ? "active" : "withdrawn"))
            #expect(record["notice"]?.stringValue == "n-\(index % 4)")
            recordIDs.insert(record["record_id"]?.stringValue ?? "")
        }
        #expect(recordIDs.count == count)
        // Control: a neighbour's subject is not this record's.
        #expect(try principal(count / 2) != Hex.encode(fixture.broker.subjectHash(dataset: BrokerFixture.dataset, subject: "L\(count / 2 + 1)")))
    }

    @Test("A record's canonical bytes are written directly, exactly as RFC 8785 encodes its JSON")
    func recordBytes() throws {
        let fixture = try BrokerFixture()
        for (notice, method, granted) in [("n-1", "web-form", true), ("https://x.example/ñ?a=\"b\"\\c", "line\nbreak\u{1}\t", false),
                                          ("日本語 😀", "\u{7f}\u{2028}", true)] {
            let record = ConsentRecord(recordID: "cr-0011", principal: Array(repeating: 0xAB, count: 32), controller: fixture.clinic.keys.keyID,
                                       dataset: "d", purpose: "p/q", notice: notice, collectionMethod: method, jurisdiction: "EU",
                                       granted: granted, time: "2026-12-04T00:00:00Z", recordedBy: fixture.consentService.keys.keyID)
            var bytes: [UInt8] = []
            record.appendCanonical(to: &bytes)
            #expect(bytes == (try CanonicalJSON.encode(record.jsonValue)))
        }
    }

    @Test("Only the publisher or a consent service records consent, for an offered purpose")
    func recorders() throws {
        let fixture = try BrokerFixture()
        let request = ConsentRequest(dataset: BrokerFixture.dataset, subject: "P1", purpose: BrokerFixture.purpose, granted: true,
                                     notice: "n", collectionMethod: "web-form", jurisdiction: "EU")
        let byPartner = try #require(throws: BrokerError.self) { try fixture.broker.recordConsent([request], by: fixture.partnerA, now: fixture.now) }
        #expect(byPartner.code == .forbidden)
        var other = request
        other.purpose = "marketing"
        let purpose = try #require(throws: BrokerError.self) { try fixture.broker.recordConsent([other], by: fixture.clinic, now: fixture.now) }
        #expect(purpose.code == .invalid)
        var empty = request
        empty.notice = ""
        #expect(throws: BrokerError.self) { try fixture.broker.recordConsent([empty], by: fixture.clinic, now: fixture.now) }
    }
}

@Suite("Releases")
struct ReleaseTests {
    @Test("Basis consent releases only subjects with an active grant; a withdrawal applies to every later release")
    func consentGates() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 60))
        try fixture.consent(Array(0..<50), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 2, suppression: 0.5), partner: fixture.partnerAKeys)
        let first = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        #expect(first.outcome?.recordsWithoutConsent == 20)
        let firstPeople = try Self.people(in: fixture.open(first.delivery, as: fixture.partnerAKeys))
        #expect(firstPeople.isSubset(of: Set(0..<50)))
        try fixture.consent(Array(0..<10), granted: false)
        try fixture.publish(BrokerFixture.records(people: 60))   // a release carries only records not yet delivered
        let second = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        let secondPeople = try Self.people(in: fixture.open(second.delivery, as: fixture.partnerAKeys))
        #expect(secondPeople.isDisjoint(with: Set(0..<10)))
        #expect(second.outcome?.recordsWithoutConsent == 40)
    }

    @Test("A policy caps the records one person contributes to a delivery, keeping their first ones")
    func recordsPerSubjectCap() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 30, visitsEach: 3))
        try fixture.consent(Array(0..<30), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 2, suppression: 0.5,
                                                  extra: ["treatment": ["k": 2, "suppression_limit": 0.5, "max_records_per_subject": 2]]),
                                   partner: fixture.partnerAKeys)
        let release = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        #expect(release.outcome?.recordsOverCap == 30)
        let table = try fixture.open(release.delivery, as: fixture.partnerAKeys)
        let refs = try table.rows.map { $0[try table.index(of: "ref")] }
        #expect(!refs.contains { $0.hasSuffix("-2") } && refs.count + (release.outcome?.recordsSuppressed ?? 0) == 60)
    }

    @Test("Other legal bases release everyone except subjects who objected")
    func objections() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 40))
        try fixture.consent([3, 4], granted: false)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, basis: "public-task", k: 2, suppression: 0.5), partner: fixture.partnerAKeys)
        let release = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        #expect(release.outcome?.recordsWithoutConsent == 4)
        #expect(try Self.people(in: fixture.open(release.delivery, as: fixture.partnerAKeys)).isDisjoint(with: [3, 4]))
    }

    @Test("Only allowed fields leave; subjects leave as pseudonyms that two partners cannot join")
    func projectionAndUnlinkability() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 40))
        try fixture.consent(Array(0..<40), granted: true)
        let fields = ["person", "ref", "age", "zip", "diagnosis"]
        let a = try fixture.agree(fixture.policy(id: "ag-a", partner: fixture.partnerAKeys, k: 2, suppression: 0.5, fields: fields), partner: fixture.partnerAKeys)
        let b = try fixture.agree(fixture.policy(id: "ag-b", partner: fixture.partnerBKeys, k: 2, suppression: 0.5, fields: fields), partner: fixture.partnerBKeys)
        let tableA = try fixture.open(try fixture.broker.release(agreement: a, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now).delivery,
                                      as: fixture.partnerAKeys)
        let tableB = try fixture.open(try fixture.broker.release(agreement: b, purpose: BrokerFixture.purpose, by: fixture.partnerB, now: fixture.now).delivery,
                                      as: fixture.partnerBKeys)
        #expect(Set(tableA.columns) == Set(fields))
        let pseudonymsA = Set(try tableA.rows.map { $0[try tableA.index(of: "person")] })
        let pseudonymsB = Set(try tableB.rows.map { $0[try tableB.index(of: "person")] })
        #expect(pseudonymsA.count == 40 && pseudonymsB.count == 40)
        #expect(pseudonymsA.isDisjoint(with: pseudonymsB))
        #expect(pseudonymsA.isDisjoint(with: Set((0..<40).map(BrokerFixture.person))))
        #expect(pseudonymsA.allSatisfy { $0.utf8.count == 32 && Hex.decode($0) != nil })
        // Pseudonyms are drawn per delivery: the partner's next release cannot be joined to this one.
        try fixture.publish(BrokerFixture.records(people: 40))
        let again = try fixture.open(try fixture.broker.release(agreement: a, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now).delivery,
                                     as: fixture.partnerAKeys)
        let pseudonymsAgain = Set(try again.rows.map { $0[try again.index(of: "person")] })
        #expect(pseudonymsAgain.count == 40 && pseudonymsAgain.isDisjoint(with: pseudonymsA))
    }

    @Test("Refused releases (revoked, wrong partner, wrong purpose, k unreachable, nothing consented) change nothing")
    func refusals() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 20))
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys), partner: fixture.partnerAKeys)
        let strict = try fixture.agree(fixture.policy(id: "ag-strict", partner: fixture.partnerAKeys, basis: "public-task", k: 500, suppression: 0),
                                       partner: fixture.partnerAKeys)
        let before = try fixture.stateFingerprint()
        let cases: [(() throws -> ReleaseResult, BrokerError.Code)] = [
            ({ try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now) }, .nothingToRelease),
            ({ try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerB, now: fixture.now) }, .forbidden),
            ({ try fixture.broker.release(agreement: id, purpose: "marketing", by: fixture.partnerA, now: fixture.now) }, .purposeNotAllowed),
            ({ try fixture.broker.release(agreement: strict, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now) }, .kUnreachable),
            ({ try fixture.broker.release(agreement: "ag-none", purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now) }, .notFound),
        ]
        for (attempt, code) in cases {
            let error = try #require(throws: BrokerError.self) { _ = try attempt() }
            #expect(error.code == code, "\(error)")
        }
        #expect(try fixture.stateFingerprint() == before)
        try fixture.consent(Array(0..<20), granted: true)
        _ = try fixture.broker.revokeAgreement(id, by: fixture.clinic, now: fixture.now)
        let revoked = try fixture.stateFingerprint()
        let error = try #require(throws: BrokerError.self) {
            _ = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        }
        #expect(error.code == .agreementNotActive)
        #expect(try fixture.stateFingerprint() == revoked)
    }

    @Test("DP aggregates are charged to the budget, which is never exceeded; a refusal charges nothing")
    func budget() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 40))
        try fixture.consent(Array(0..<40), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, budget: 1), partner: fixture.partnerAKeys)
        let query = AggregateRequest(purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: ["zip"], epsilonMicro: 300_000)
        var spent: UInt64 = 0
        var refusedCode: BrokerError.Code?
        for _ in 0..<5 {
            do {
                let result = try fixture.broker.aggregate(agreement: id, request: query, by: fixture.partnerA, now: fixture.now)
                spent += result.epsilonMicro
                let table = try fixture.open(result.delivery, as: fixture.partnerAKeys)
                #expect(table.columns == ["zip", "count"])
                #expect(table.rows.count == 10)
            } catch let error as BrokerError {
                refusedCode = error.code
                break
            }
        }
        #expect(spent == 900_000)
        #expect(refusedCode == .budgetExhausted)
        #expect(try fixture.store.agreement(id)?.spentMicro == 900_000)
        let sum = AggregateRequest(purpose: BrokerFixture.purpose, statistic: .sum, measure: "visits", groupBy: [], epsilonMicro: 100_000)
        _ = try fixture.broker.aggregate(agreement: id, request: sum, by: fixture.partnerA, now: fixture.now)
        #expect(try fixture.store.agreement(id)?.spentMicro == 1_000_000)
        let over = try #require(throws: BrokerError.self) {
            _ = try fixture.broker.aggregate(agreement: id, request: AggregateRequest(purpose: BrokerFixture.purpose, statistic: .count, measure: nil,
                                                                                    groupBy: [], epsilonMicro: 1), by: fixture.partnerA, now: fixture.now)
        }
        #expect(over.code == .budgetExhausted)
        let tooMuch = AggregateRequest(purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: [], epsilonMicro: 500_000)
        #expect(throws: BrokerError.self) { try fixture.broker.aggregate(agreement: id, request: tooMuch, by: fixture.partnerA, now: fixture.now) }
        let badGroup = AggregateRequest(purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: ["age"], epsilonMicro: 1)
        #expect(throws: BrokerError.self) { try fixture.broker.aggregate(agreement: id, request: badGroup, by: fixture.partnerA, now: fixture.now) }
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export()))
        #expect(report.passed)
        #expect(report.agreements[id]?.spentMicro == 1_000_000)
    }

    @Test("Noise and sampling draw from the randomness the broker is given: the same seed gives the same aggregate")
    func injectedRandomness() throws {
        func run(seed: UInt64) throws -> [[String]] {
            let fixture = try BrokerFixture(randomness: { AnyRandomWords(SeededRandomness(state: seed)) })
            try fixture.publish(BrokerFixture.records(people: 30))
            try fixture.consent(Array(0..<30), granted: true)
            let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys), partner: fixture.partnerAKeys)
            let result = try fixture.broker.aggregate(agreement: id, request: AggregateRequest(
                purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: ["zip"], epsilonMicro: 100_000), by: fixture.partnerA, now: fixture.now)
            return try fixture.open(result.delivery, as: fixture.partnerAKeys).rows
        }
        #expect(try run(seed: 7) == run(seed: 7))
        #expect(try run(seed: 7) != run(seed: 8))
    }

    @Test("Noise on bounded measures: every released measure is noised and the release charges ε × fields × records per subject")
    func measureNoise() throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 40, visitsEach: 2))
        try fixture.consent(Array(0..<40), granted: true)
        let policy = fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, k: 2, suppression: 0.5, budget: 1.5,
                                    extra: ["treatment": ["k": 2, "suppression_limit": 0.5, "measure_noise": ["epsilon": 0.5]]])
        let id = try fixture.agree(policy, partner: fixture.partnerAKeys)
        let release = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        #expect(release.epsilonMicro == 1_000_000, "ε 0.5 × 1 measure × 2 records per person")
        #expect(try fixture.store.agreement(id)?.spentMicro == 1_000_000)
        let table = try fixture.open(release.delivery, as: fixture.partnerAKeys)
        let visits = try table.rows.map { Int($0[try table.index(of: "visits")]) ?? 0 }
        // The originals are 0…11; with noise of scale 50/0.5 = 100 most values land outside that range.
        #expect(visits.filter { !(0...11).contains($0) }.count > visits.count / 2, "\(visits.prefix(20))")
        try fixture.publish(BrokerFixture.records(people: 40, visitsEach: 2))
        let refused = try #require(throws: BrokerError.self) {
            _ = try fixture.broker.release(agreement: id, purpose: BrokerFixture.purpose, by: fixture.partnerA, now: fixture.now)
        }
        #expect(refused.code == .budgetExhausted)
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export()))
        #expect(report.passed && report.agreements[id]?.spentMicro == 1_000_000)
    }

    @Test("Concurrent aggregates racing for the last of the budget never overspend it")
    func concurrentBudget() async throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 20))
        try fixture.consent(Array(0..<20), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, budget: 1), partner: fixture.partnerAKeys)
        let query = AggregateRequest(purpose: BrokerFixture.purpose, statistic: .count, measure: nil, groupBy: [], epsilonMicro: 300_000)
        let broker = fixture.broker, partner = fixture.partnerA, now = fixture.now
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask { (try? broker.aggregate(agreement: id, request: query, by: partner, now: now)) != nil }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 3)
        #expect(try fixture.store.agreement(id)?.spentMicro == 900_000)
    }

    @Test("Consent sent again under its idempotency key is answered with the first receipts and records nothing more")
    func retriedConsent() throws {
        let fixture = try BrokerFixture()
        func events(_ people: Range<Int>, granted: Bool = true) -> [ConsentRequest] {
            people.map { ConsentRequest(dataset: BrokerFixture.dataset, subject: BrokerFixture.person($0), purpose: BrokerFixture.purpose,
                                        granted: granted, notice: "notice-v1", collectionMethod: "web-form", jurisdiction: "EU") }
        }
        let broker = fixture.broker, clinic = fixture.clinic, now = fixture.now
        let first = try broker.recordConsent(events(0..<5), by: clinic, now: now, requestKey: "run-1-part-1")
        let logSize = fixture.store.logSize
        let states = try fixture.store.consentStates(dataset: BrokerFixture.dataset, purpose: BrokerFixture.purpose)
        let again = try broker.recordConsent(events(0..<5), by: clinic, now: now, requestKey: "run-1-part-1")
        #expect(!first.replayed && again.replayed)
        #expect(again.records == first.records && again.logIndex == first.logIndex && again.logEntry == first.logEntry)
        #expect(try again.jsonLines() == first.jsonLines())
        #expect(fixture.store.logSize == logSize)
        // Each replayed receipt still proves itself against the broker's key.
        for index in 0..<again.count {
            _ = try ConsentReceipts.verify(receipt: try again.receiptJSON(index), batch: try again.batchJSON(), broker: fixture.brokerKeys.publicKeys)
        }
        // The same key for other events is refused and records nothing.
        #expect(performing: { try broker.recordConsent(events(0..<5, granted: false), by: clinic, now: now, requestKey: "run-1-part-1") },
                throws: { ($0 as? BrokerError)?.code == .duplicate })
        #expect(try fixture.store.consentStates(dataset: BrokerFixture.dataset, purpose: BrokerFixture.purpose) == states)
        // Positive control: without the key, the same events are a new request with a new entry.
        let fresh = try broker.recordConsent(events(0..<5), by: clinic, now: now)
        #expect(!fresh.replayed && fresh.logIndex != first.logIndex && fixture.store.logSize == logSize + 1)
    }

    @Test("A retried upload of the same bytes under its key is answered from the key and digest without reading the body again")
    func retriedUploadNotReadAgain() throws {
        let fixture = try BrokerFixture()
        let csv = BrokerFixture.records(people: 50).csv()
        let digest = SHA256Hasher.hash(csv)
        var opened = 0
        let body = { () -> ByteSource in
            opened += 1
            return MemorySource(csv)
        }
        let dataset = BrokerFixture.dataset
        let first = try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: body, bodySHA256: digest, idempotencyKey: "upload-1",
                                                    by: fixture.clinic, now: fixture.now)
        #expect(!first.replayed && first.records == 100 && opened == 1)
        let again = try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: body, bodySHA256: digest, idempotencyKey: "upload-1",
                                                    by: fixture.clinic, now: fixture.now)
        #expect(again.replayed && again.sequence == first.sequence && again.records == 100 && again.contentSHA256 == first.contentSHA256)
        #expect(opened == 1)
        // Positive control: the same records in other bytes (CRLF line ends) are read to be recognized.
        let crlf = Array(String(decoding: csv, as: UTF8.self).replacingOccurrences(of: "\n", with: "\r\n").utf8)
        let other = try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: { opened += 1; return MemorySource(crlf) },
                                                    bodySHA256: SHA256Hasher.hash(crlf), idempotencyKey: "upload-1", by: fixture.clinic, now: fixture.now)
        #expect(other.replayed && other.sequence == first.sequence && opened == 2)
        // Another publisher cannot learn of a stored upload by its key and digest.
        #expect(throws: BrokerError.self) {
            try fixture.broker.publishBatch(dataset: dataset, format: .csv, body: body, bodySHA256: digest, idempotencyKey: "upload-1",
                                            by: fixture.partnerA, now: fixture.now)
        }
        #expect(try fixture.store.batches(of: dataset, from: 1).count == 1)
    }

    @Test("A retried release or aggregate with its request key answers the first delivery: no second release, no second charge")
    func retriedRequests() async throws {
        let fixture = try BrokerFixture()
        try fixture.publish(BrokerFixture.records(people: 30))
        try fixture.consent(Array(0..<30), granted: true)
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, budget: 1), partner: fixture.partnerAKeys)
        let purpose = BrokerFixture.purpose
        let first = try fixture.broker.release(agreement: id, purpose: purpose, by: fixture.partnerA, now: fixture.now, requestKey: "retry-1")
        let logSize = fixture.store.logSize
        let again = try fixture.broker.release(agreement: id, purpose: purpose, by: fixture.partnerA, now: fixture.now, requestKey: "retry-1")
        #expect(again.replayed && !first.replayed)
        #expect(again.delivery == first.delivery && again.figures == first.figures)
        #expect(fixture.store.logSize == logSize)
        // The same key for another request is refused; without a key the (positive control) second
        // release is a new delivery, refused here because every batch was delivered.
        #expect(throws: BrokerError.self) {
            try fixture.broker.release(agreement: id, purpose: "other-purpose", by: fixture.partnerA, now: fixture.now, requestKey: "retry-1")
        }
        #expect(performing: { try fixture.broker.release(agreement: id, purpose: purpose, by: fixture.partnerA, now: fixture.now) },
                throws: { ($0 as? BrokerError)?.code == .nothingToRelease })

        // Eight concurrent aggregates under one key: one charge, one delivery, the same answer to all.
        let query = AggregateRequest(purpose: purpose, statistic: .count, measure: nil, groupBy: ["zip"], epsilonMicro: 300_000)
        let broker = fixture.broker, partner = fixture.partnerA, now = fixture.now
        let deliveries = await withTaskGroup(of: String?.self) { group in
            for _ in 0..<8 {
                group.addTask { try? broker.aggregate(agreement: id, request: query, by: partner, now: now, requestKey: "agg-1").delivery.id }
            }
            return await group.reduce(into: [String?]()) { $0.append($1) }
        }
        #expect(deliveries.count == 8 && Set(deliveries).count == 1 && deliveries.first != nil, "\(deliveries)")
        #expect(try fixture.store.agreement(id)?.spentMicro == 300_000)
        #expect(try fixture.store.deliveryCounts() == [.release: 1, .aggregate: 1])
        // Another key is another aggregate, charged again.
        _ = try fixture.broker.aggregate(agreement: id, request: query, by: partner, now: now, requestKey: "agg-2")
        #expect(try fixture.store.agreement(id)?.spentMicro == 600_000)
        #expect(throws: BrokerError.self) { try fixture.broker.aggregate(agreement: id, request: query, by: partner, now: now, requestKey: "bad key") }
    }

    @Test("A change that fails inside its transaction leaves the log, in memory and on disk, as it was")
    func atomicity() throws {
        let fixture = try BrokerFixture()
        let store = try #require(fixture.sqlite)
        let size = fixture.store.logSize
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try store.writeLogged { db, log in
                try log.append(time: fixture.now, type: .agreementExpired, members: ["agreement": "ag-ghost"])
                throw Boom()
            }
        }
        #expect(fixture.store.logSize == size)
        let reopened = try BrokerStore(path: fixture.directory + "/broker.sqlite", storageKey: try SealedStorageKey.generate())
        #expect(reopened.logSize == size)
        #expect(Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export())).passed)
    }

    @Test("A delivery's transaction commits its charge, log entry, delivery and drawn batches together, or none of them")
    func deliveryTransactionIsAtomic() throws {
        let fixture = try BrokerFixture()
        let id = try fixture.agree(fixture.policy(id: "ag-1", partner: fixture.partnerAKeys, budget: 1), partner: fixture.partnerAKeys)
        let envelope = try EnvelopeSealer(issuer: fixture.brokerKeys, recipient: fixture.partnerAKeys.publicKeys).seal([1, 2, 3])
        let summary = try EnvelopeVerifier.verify(MemorySource(envelope), issuer: fixture.brokerKeys.publicKeys)
        let agreement = try #require(try fixture.store.agreement(id))
        let members = LogEvents.releaseDelivered(release: "rel-x", agreement: id, dataset: BrokerFixture.dataset, partner: agreement.partner,
                                                 purpose: BrokerFixture.purpose, policySHA256: agreement.policySHA256, envelope: summary,
                                                 recordsReleased: 0, recordsSuppressed: 0, kAchieved: 0, epsilonMicro: 1, transforms: [:])
        let before = try fixture.stateFingerprint()
        struct Refused: Error {}
        #expect(throws: Refused.self) {
            try fixture.store.transaction { transaction in
                var current = try transaction.agreement(id)
                current.spentMicro = 1
                try transaction.updateAgreement(current)
                let index = try transaction.appendLog(time: fixture.now, type: .releaseDelivered, members: members)
                try transaction.insertDelivery(Delivery(id: "rel-x", agreement: id, partner: agreement.partner, kind: .release, feed: nil,
                                                        feedSequence: nil, logIndex: index, records: 0, envelope: envelope, created: fixture.now))
                try transaction.recordDrawnBatches([1], dataset: BrokerFixture.dataset, partner: agreement.partner, delivery: "rel-x")
                throw Refused()
            }
        }
        #expect(try fixture.stateFingerprint() == before)
        #expect(try fixture.store.drawnBatches(partner: agreement.partner, dataset: BrokerFixture.dataset).isEmpty)
    }

    @Test("Log times never go back, even when the clock does")
    func monotonicTime() throws {
        let fixture = try BrokerFixture()
        try fixture.consent([1], granted: true)
        fixture.now = "2026-11-27T08:00:00Z"
        try fixture.consent([2], granted: true)
        let report = Auditor(broker: fixture.brokerKeys.publicKeys).audit(MemorySource(try fixture.export()))
        #expect(report.passed, "\(report.findings)")
    }

    static func people(in table: CSVTable) throws -> Set<Int> {
        let column = try table.index(of: "ref")
        return Set(table.rows.compactMap { row in
            row[column].dropFirst().split(separator: "-").first.flatMap { Int($0) }
        })
    }
}

@Suite("Policy vector")
struct PolicyVectorTests {
    static let vector = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Vectors/agreement-policy-example.json")

    @Test("The documented example policy parses and hashes to the SHA-256 of its RFC 8785 form computed by the rfc8785 package")
    func example() throws {
        let policy = try AgreementPolicy.parse(try JSONParser.parse(Array(try Data(contentsOf: Self.vector))))
        #expect(Hex.encode(policy.sha256) == "ca7decbf0bfa84014a366d9057313ada28bc84cab4deffb1909bf380df5bea20")
        #expect(policy.treatment.k == 5 && policy.treatment.suppressionLimit == 0.1 && policy.legalBasis == .consent)
        #expect(policy.feed?.belowK == .suppress && policy.epsilonBudgetMicro == 0)
    }
}
