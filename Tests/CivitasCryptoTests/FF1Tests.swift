import Testing
@testable import CivitasCrypto

/// NIST's published FF1 samples (SP 800-38G examples, "FF1samples.pdf"): AES-128,
/// -192 and -256, radix 10 and 36, with and without tweaks.
private let samples: [(key: String, tweak: String, radix: Int, plaintext: String, ciphertext: String)] = [
    ("2B7E151628AED2A6ABF7158809CF4F3C", "", 10, "0123456789", "2433477484"),
    ("2B7E151628AED2A6ABF7158809CF4F3C", "39383736353433323130", 10, "0123456789", "6124200773"),
    ("2B7E151628AED2A6ABF7158809CF4F3C", "3737373770717273373737", 36, "0123456789abcdefghi", "a9tv40mll9kdu509eum"),
    ("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F", "", 10, "0123456789", "2830668132"),
    ("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F", "39383736353433323130", 10, "0123456789", "2496655549"),
    ("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F", "3737373770717273373737", 36, "0123456789abcdefghi", "xbj3kv35jrawxv32ysr"),
    ("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94", "", 10, "0123456789", "6657667009"),
    ("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94", "39383736353433323130", 10, "0123456789", "1001623463"),
    ("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94", "3737373770717273373737", 36, "0123456789abcdefghi", "xs8a0azh2avyalyzuwd"),
]

@Suite("FF1 (NIST SP 800-38G)")
struct FF1Tests {
    @Test("NIST samples 1–9 encrypt and decrypt exactly", arguments: samples.indices)
    func nistSample(index: Int) throws {
        let sample = samples[index]
        let ff1 = try FF1(key: try #require(Hex.decode(sample.key)), radix: sample.radix)
        let tweak = try #require(Hex.decode(sample.tweak))
        #expect(try ff1.encrypt(sample.plaintext, tweak: tweak) == sample.ciphertext, "sample \(index + 1)")
        #expect(try ff1.decrypt(sample.ciphertext, tweak: tweak) == sample.plaintext, "sample \(index + 1)")
    }

    @Test("Round trips at every supported length; a wrong tweak or key does not decrypt")
    func roundTrips() throws {
        let key = Sodium.randomBytes(32)
        let ff1 = try FF1(key: key, radix: 10)
        let other = try FF1(key: Sodium.randomBytes(32), radix: 10)
        for length in 6...38 {
            let digits = String((0..<length).map { _ in "0123456789".randomElement() ?? "0" })
            let encrypted = try ff1.encrypt(digits, tweak: [1, 2, 3])
            #expect(encrypted.count == length && encrypted.allSatisfy(\.isNumber))
            #expect(try ff1.decrypt(encrypted, tweak: [1, 2, 3]) == digits)
            #expect(try ff1.decrypt(encrypted, tweak: [1, 2, 4]) != digits || length < 8)
            #expect(try other.decrypt(encrypted, tweak: [1, 2, 3]) != digits || length < 8)
        }
    }

    @Test("Domains smaller than 10^6, oversized inputs and foreign numerals are refused")
    func refusals() throws {
        let ff1 = try FF1(key: [UInt8](repeating: 7, count: 16), radix: 10)
        #expect(throws: CryptoError(.invalidArgument, "")) { try ff1.encrypt("12345", tweak: []) }     // 10^5
        #expect(throws: CryptoError(.invalidArgument, "")) { try ff1.encrypt(String(repeating: "1", count: 40), tweak: []) }
        #expect(throws: CryptoError(.invalidArgument, "")) { try ff1.encrypt("12345a7", tweak: []) }
        #expect(throws: CryptoError(.invalidArgument, "")) { try FF1(key: [1, 2, 3], radix: 10) }
        #expect(throws: CryptoError(.invalidArgument, "")) { try FF1(key: [UInt8](repeating: 7, count: 16), radix: 1) }
        _ = try ff1.encrypt("123456", tweak: [])   // exactly 10^6 is allowed
    }
}
