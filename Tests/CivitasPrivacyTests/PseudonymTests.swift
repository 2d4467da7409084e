import CivitasTime
@testable import CivitasCrypto
import Foundation
import CSodium
import Testing
@testable import CivitasPrivacy

@Suite("Pseudonyms and date shifting")
struct PseudonymTests {
    let master: PseudonymMasterKey
    init() throws { master = try PseudonymMasterKey.generate() }

    func domain(_ partner: String) -> PseudonymDomain {
        PseudonymDomain(agreement: "ag-1", partner: partner, purpose: "research", epoch: "2026")
    }

    @Test("Same input and domain give the same pseudonym; other domains and keys give unrelated ones")
    func deterministicAndUnlinkable() throws {
        let health = try Pseudonymizer(master: master, domain: domain("health"))
        let transport = try Pseudonymizer(master: master, domain: domain("transport"))
        let otherKey = try Pseudonymizer(master: try PseudonymMasterKey.generate(), domain: domain("health"))
        let people = (0..<2000).map { "person-\($0)" }
        let a = people.map(health.pseudonym), b = people.map(transport.pseudonym), c = people.map(otherKey.pseudonym)
        #expect(a == people.map(health.pseudonym))
        #expect(Set(a).count == people.count)
        #expect(Set(a).isDisjoint(with: b) && Set(a).isDisjoint(with: c))
        #expect(a.allSatisfy { $0.count == 32 && Hex.decode($0) != nil })
        // No join through equality of any prefix either: the first 8 hex characters collide only by chance.
        let prefixesA = Set(a.map { $0.prefix(8) }), prefixesB = Set(b.map { $0.prefix(8) })
        #expect(prefixesA.intersection(prefixesB).count <= 1)
    }

    @Test("HMAC-SHA-256 matches RFC 4231 test case 2")
    func hmacVector() throws {
        var key = Array("Jefe".utf8)
        let prf = try DomainPRF(key: try ProtectedBytes.taking(&key))
        #expect(Hex.encode(prf.mac("what do ya want for nothing?")) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test("HMAC-SHA-256 matches RFC 4231 with keys of 20, 131 bytes and libsodium's HMAC for keys and inputs of every length")
    func hmacAgainstVectorsAndSodium() throws {
        // RFC 4231 test case 1 (20-byte key) and case 6 (a 131-byte key, hashed first).
        var key1 = [UInt8](repeating: 0x0b, count: 20)
        #expect(Hex.encode(try DomainPRF(key: try ProtectedBytes.taking(&key1)).mac("Hi There"))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        var key6 = [UInt8](repeating: 0xaa, count: 131)
        #expect(Hex.encode(try DomainPRF(key: try ProtectedBytes.taking(&key6)).mac("Test Using Larger Than Block-Size Key - Hash Key First"))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        var numbers = SeededNumbers(seed: 23)
        var compared = 0
        for keyLength in [1, 31, 32, 33, 63, 64, 65, 100] {
            let key = (0..<keyLength).map { _ in UInt8(numbers.next(256)) }
            var copy = key
            let prf = try DomainPRF(key: try ProtectedBytes.taking(&copy))
            for length in [0, 1, 40, 55, 56, 63, 64, 65, 200] {
                let input = (0..<length).map { _ in UInt8(numbers.next(256)) }
                var expected = [UInt8](repeating: 0, count: 32)
                var sodiumState = crypto_auth_hmacsha256_state()
                _ = crypto_auth_hmacsha256_init(&sodiumState, key, key.count)
                _ = crypto_auth_hmacsha256_update(&sodiumState, input, UInt64(input.count))
                _ = crypto_auth_hmacsha256_final(&sodiumState, &expected)
                #expect(prf.mac(input) == expected, "key \(keyLength) bytes, input \(length) bytes")
                compared += 1
            }
        }
        #expect(compared == 72)
    }

    @Test("Reversible pseudonyms keep the format and reverse only with the domain")
    func reversible() throws {
        let health = try Pseudonymizer(master: master, domain: domain("health"))
        let transport = try Pseudonymizer(master: master, domain: domain("transport"))
        let id = "4400123456789"
        let pseudonym = try health.reversible(id)
        #expect(pseudonym.count == id.count && pseudonym.allSatisfy(\.isNumber) && pseudonym != id)
        #expect(try health.reverse(pseudonym) == id)
        #expect(try transport.reverse(pseudonym) != id)
        #expect(throws: CryptoError.self) { try health.reversible("12345") }
    }

    @Test("Date shifts are per subject, within range, and keep intervals within a subject")
    func dateShifting() throws {
        let shifter = try Pseudonymizer(master: master, domain: domain("health"))
        var offsets = Set<Int>()
        for subject in (0..<500).map({ "s\($0)" }) {
            let offset = shifter.dateOffset(subject: subject, maximumDays: 30)
            #expect((-30...30).contains(offset))
            offsets.insert(offset)
            let first = try shifter.shiftDate("2024-02-27 08:15:00", subject: subject, maximumDays: 30)
            let second = try shifter.shiftDate("2024-03-02 09:00:00", subject: subject, maximumDays: 30)
            // 2024 is a leap year: four days apart before and after.
            let d1 = CivilDate.days(year: Int(first.prefix(4)) ?? 0, month: Int(first.dropFirst(5).prefix(2)) ?? 0, day: Int(first.dropFirst(8).prefix(2)) ?? 0)
            let d2 = CivilDate.days(year: Int(second.prefix(4)) ?? 0, month: Int(second.dropFirst(5).prefix(2)) ?? 0, day: Int(second.dropFirst(8).prefix(2)) ?? 0)
            #expect(d2 - d1 == 4, "\(first) → \(second)")
            #expect(first.hasSuffix(" 08:15:00"))
        }
        #expect(offsets.count > 40, "offsets should spread over the range")
        #expect(throws: PrivacyError(.invalidValue, "")) { try shifter.shiftDate("2024-02-30", subject: "x", maximumDays: 3) }
        #expect(CivilDate.days(year: 1970, month: 1, day: 1) == 0)
        #expect(CivilDate.fromDays(CivilDate.days(year: 2000, month: 2, day: 29)) == (2000, 2, 29))
    }
}
