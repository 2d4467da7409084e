import Testing
@testable import CivitasCrypto

/// RFC 9421 Appendix B.1.4's test-key-ed25519 (a published test key that protects nothing).
private func rfcKey() throws -> SecretKeys {
    let seed = try #require(Base64.decode("n4Ni+HpISpVObnQMW0wOhCKROaIKqKtW/2ZYb2p9KcU="))
    var material = seed + [UInt8](repeating: 1, count: 32)
    return try SecretKeys(name: "test-key-ed25519", material: ProtectedBytes.taking(&material))
}

private let rfcRequest = SignedRequest(method: "POST", targetURI: "https://example.com/foo?param=Value&Pet=dog", headers: [
    ("Host", "example.com"),
    ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("Content-Type", "application/json"),
    ("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"),
    ("Content-Length", "18"),
])

private let b26Parameters = SignatureParameters(components: ["date", "@method", "@path", "@authority", "content-type", "content-length"],
                                                created: 1_618_884_473, keyID: "test-key-ed25519")

@Suite("HTTP Message Signatures (RFC 9421) and Content-Digest (RFC 9530)")
struct HTTPSignatureTests {
    @Test("B.2.6: the signature base and the Ed25519 signature are the RFC's, byte for byte")
    func rfcB26() throws {
        let key = try rfcKey()
        #expect(Base64.encode(key.publicKeys.signingKey) == "JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=")
        let base = try HTTPMessageSignature.signatureBase(rfcRequest, parameters: b26Parameters)
        let expectedBase = """
            "date": Tue, 20 Apr 2021 02:07:55 GMT
            "@method": POST
            "@path": /foo
            "@authority": example.com
            "content-type": application/json
            "content-length": 18
            "@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"
            """
        #expect(base == expectedBase)
        let (input, signature) = try HTTPMessageSignature.sign(rfcRequest, parameters: b26Parameters, label: "sig-b26", key: key)
        #expect(input == #"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#)
        #expect(signature == "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:")
    }

    @Test("B.2.6 verifies; every tampered part is refused")
    func verifyAndTamper() throws {
        let key = try rfcKey()
        var signed = rfcRequest
        signed.headers += [("Signature-Input", #"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#),
                           ("Signature", "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:")]
        let lookup: (String) -> [UInt8]? = { $0 == "test-key-ed25519" ? key.publicKeys.signingKey : nil }
        let verified = try HTTPMessageSignature.verify(signed, publicKey: lookup)
        #expect(verified.parameters.created == 1_618_884_473)

        var method = signed; method.method = "PUT"
        var path = signed; path.targetURI = "https://example.com/bar?param=Value&Pet=dog"
        var header = signed; header.headers[2] = ("Content-Type", "text/plain")
        var missing = signed; missing.headers.remove(at: 4)
        var params = signed; params.headers[5].value = params.headers[5].value.replacingOccurrences(of: "1618884473", with: "1618884474")
        var bits = signed; bits.headers[6].value = "sig-b26=:xqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
        for (name, request, code) in [("method", method, HTTPMessageSignature.Failure.Code.badSignature), ("path", path, .badSignature),
                                      ("header", header, .badSignature), ("missing header", missing, .notCovered),
                                      ("parameters", params, .badSignature), ("signature bits", bits, .badSignature)] {
            #expect(throws: HTTPMessageSignature.Failure(code, ""), "\(name)") { try HTTPMessageSignature.verify(request, publicKey: lookup) }
        }
        #expect(throws: HTTPMessageSignature.Failure(.unknownKey, "")) { try HTTPMessageSignature.verify(signed) { _ in nil } }
        #expect(throws: HTTPMessageSignature.Failure(.missing, "")) { try HTTPMessageSignature.verify(rfcRequest, publicKey: lookup) }
        var garbled = signed; garbled.headers[5].value = "sig-b26=(date);created=1"
        #expect(throws: HTTPMessageSignature.Failure(.malformed, "")) { try HTTPMessageSignature.verify(garbled, publicKey: lookup) }
    }

    @Test("The signer's parameter order is kept in the signature base (RFC 9421 §2.3)")
    func parameterOrder() throws {
        let key = try rfcKey()
        var parameters = SignatureParameters(components: ["@method", "@target-uri"], created: 1_700_000_000, nonce: "n1",
                                             keyID: "test-key-ed25519", algorithm: "ed25519")
        parameters.order = ["created", "keyid", "alg", "nonce"]
        let request = SignedRequest(method: "GET", targetURI: "http://127.0.0.1:8080/participants", headers: [])
        let (input, signature) = try HTTPMessageSignature.sign(request, parameters: parameters, key: key)
        #expect(input.hasSuffix(#";created=1700000000;keyid="test-key-ed25519";alg="ed25519";nonce="n1""#))
        var signed = request
        signed.headers = [("Signature-Input", input), ("Signature", signature)]
        let verified = try HTTPMessageSignature.verify(signed) { _ in key.publicKeys.signingKey }
        #expect(verified.parameters.order == ["created", "keyid", "alg", "nonce"])
        var duplicated = signed
        duplicated.headers[0].value = input + ";nonce=\"n2\""
        #expect(throws: HTTPMessageSignature.Failure(.malformed, "")) { try HTTPMessageSignature.verify(duplicated) { _ in key.publicKeys.signingKey } }
    }

    @Test("Field names match whatever their ASCII case; Signature-Input is read as RFC 8941 ASCII, anything else refused")
    func fieldsAndStructuredFields() throws {
        #expect(rfcRequest.field("content-TYPE") == "application/json" && rfcRequest.field("Content-Type") == "application/json")
        #expect(rfcRequest.field("content-type-x") == nil && rfcRequest.field("content-typ") == nil)
        #expect(SignedRequest.sameName("Content-Digest", "content-digest") && !SignedRequest.sameName("content-digest", "content-digesu"))
        let parsed = try StructuredFields.signatureInputs(#"sig1=("@method" "content-digest");created=1618884473;keyid="k";nonce="n\"1""#)
        #expect(parsed.count == 1 && parsed[0].label == "sig1" && parsed[0].parameters.components == ["@method", "content-digest"])
        #expect(parsed[0].parameters.created == 1_618_884_473 && parsed[0].parameters.keyID == "k" && parsed[0].parameters.nonce == #"n"1"#)
        for malformed in [#"sïg=("@method")"#, #"sig1=("@méthod")"#, #"Sig1=("@method")"#, #"sig1=("@method");created=12a"#, #"sig1=("@method""#] {
            #expect(throws: HTTPMessageSignature.Failure(.malformed, ""), "\(malformed)") { try StructuredFields.signatureInputs(malformed) }
        }
        #expect(try StructuredFields.signatures("sig1=:AAEC:, sig2=:AwQ=:") == ["sig1": [0, 1, 2], "sig2": [3, 4]])
    }

    @Test("Content-Digest matches RFC 9530's examples")
    func contentDigest() {
        #expect(ContentDigest.header(for: Array(#"{"hello": "world"}"#.utf8)) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")
        #expect(ContentDigest.header(for: Array("{\"hello\": \"world\"}\n".utf8)) == "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:")
        #expect(ContentDigest.matches("sha-512=:abc=:, sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", body: Array(#"{"hello": "world"}"#.utf8)))
        #expect(!ContentDigest.matches("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", body: Array(#"{"hello": "world!"}"#.utf8)))
        #expect(!ContentDigest.matches("sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:", body: []))
    }
}
