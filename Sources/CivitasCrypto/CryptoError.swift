/// The one error type of CivitasCrypto: a stable ``Code`` that callers and
/// tests match on, and a one-line human message that names the file, field or
/// part at fault. Messages never contain key material or payload bytes.
public struct CryptoError: Error, CustomStringConvertible, Sendable {
    /// Stable identifiers for every way a CivitasCrypto operation can fail.
    public enum Code: String, Sendable, CaseIterable {
        /// libsodium could not be initialised.
        case libraryUnavailable
        /// A key file is not in the form documented in Keys/README.md.
        case malformedKeyFile
        /// A key file of another kind was given (public for secret, or not a key at all).
        case wrongKeyKind
        /// The secret key file is protected and no passphrase was supplied.
        case passphraseRequired
        /// The passphrase does not open the secret key file.
        case wrongPassphrase
        /// A key file's stated key id does not match its keys.
        case keyIDMismatch
        /// A name, parameter or argument is outside what is allowed.
        case invalidArgument
        /// Text that should be JSON is not (RFC 8259 / I-JSON, RFC 7493).
        case invalidJSON
        /// A value cannot be written as canonical JSON (RFC 8785), e.g. NaN.
        case notCanonicalizable
        /// The bytes do not start like a Civitas envelope.
        case notAnEnvelope
        /// The envelope ends before its stated length.
        case truncated
        /// The envelope has bytes after its final chunk.
        case trailingData
        /// The manifest is not a valid, canonical envelope manifest.
        case invalidManifest
        /// The manifest signature does not verify with the issuer's key.
        case badSignature
        /// The envelope was signed by another issuer than the one given.
        case wrongIssuer
        /// The envelope is addressed to another recipient.
        case wrongRecipient
        /// The sealed key cannot be opened with the recipient's key.
        case sealedKeyRejected
        /// The key commitment in the manifest does not match the sealed key and stream header.
        case keyCommitmentMismatch
        /// The SHA-256 of the ciphertext does not match the manifest.
        case ciphertextHashMismatch
        /// A chunk failed authentication: tampered, reordered, dropped or moved from another envelope.
        case chunkRejected
        /// Reading or writing a file or stream failed.
        case io
    }

    /// The stable code of this failure.
    public let code: Code
    /// A one-line explanation for a person.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension CryptoError: Equatable {
    /// Two errors are equal when their codes are equal; messages may differ.
    public static func == (lhs: CryptoError, rhs: CryptoError) -> Bool { lhs.code == rhs.code }
}
