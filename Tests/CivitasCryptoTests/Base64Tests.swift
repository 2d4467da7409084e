import Testing
@testable import CivitasCrypto

@Suite("Base64")
struct Base64Tests {
    @Test("Public bytes encoded by table give libsodium's constant-time text, at every length and for every byte")
    func publicEncodingMatchesSodium() throws {
        var state: UInt64 = 17
        func next() -> UInt8 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        var inputs: [[UInt8]] = (0..<200).map { length in (0..<(length % 70)).map { _ in next() } }
        inputs.append(Array(0...255))
        inputs.append([UInt8](repeating: 0xff, count: 32))
        for input in inputs {
            var table: [UInt8] = [], sodium: [UInt8] = []
            input.withUnsafeBytes { Base64.appendPublic(raw: $0, to: &table) }
            input.withUnsafeBytes { Base64.append(raw: $0, to: &sodium) }
            #expect(table == sodium, "\(input.count) bytes")
            #expect(Base64.decode(String(decoding: table, as: UTF8.self)) == input)
        }
        // RFC 4648's vectors.
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            var out: [UInt8] = Array("x".utf8)
            Array(plain.utf8).withUnsafeBytes { Base64.appendPublic(raw: $0, to: &out) }
            #expect(String(decoding: out, as: UTF8.self) == "x" + encoded)
        }
    }
}
