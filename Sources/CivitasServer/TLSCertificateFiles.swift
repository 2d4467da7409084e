import Foundation
import NIOCore
import NIOSSL

/// The broker's TLS certificate chain and private key, read from PEM files and read again when
/// either file changes (looked at, at most once a second, when a connection's handshake starts),
/// so that a renewed certificate is served without a restart. Files that do not read keep the
/// last good pair in service.
public final class TLSCertificateFiles: @unchecked Sendable {
    let certificatePath: String
    let keyPath: String
    private let lock = NSLock()
    private var current: (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey, stamp: [TimeInterval])
    private var lastLook: TimeInterval = 0

    /// Reads both files; refuses a chain or key that does not read.
    public init(certificate certificatePath: String, key keyPath: String) throws {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        current = try Self.read(certificatePath, keyPath)
    }

    /// A server configuration that serves the current pair on every handshake.
    /// With `clientCAs`, every connection must present a client certificate those authorities issued.
    public func serverConfiguration(clientCAs: [NIOSSLCertificate]? = nil) -> TLSConfiguration {
        let (chain, key) = lock.withLock { (current.chain, current.key) }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        if let clientCAs {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(clientCAs)
            configuration.sendCANameList = true
            // Participants' keys are Ed25519 (RFC 8410): accepted for the client's signature, with the usual ones.
            configuration.verifySignatureAlgorithms = [.ed25519, .ecdsaSecp256R1Sha256, .ecdsaSecp384R1Sha384, .ecdsaSecp521R1Sha512,
                                                       .rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512,
                                                       .rsaPkcs1Sha256, .rsaPkcs1Sha384, .rsaPkcs1Sha512]
        }
        configuration.sslContextCallback = { [self] _, promise in
            let (chain, key) = self.pair()
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = chain.map { .certificate($0) }
            override.privateKey = .privateKey(key)
            promise.succeed(override)
        }
        return configuration
    }

    /// The pair to serve now, read again first if a file changed since it was read.
    func pair() -> ([NIOSSLCertificate], NIOSSLPrivateKey) {
        lock.withLock {
            let now = Date().timeIntervalSince1970
            if now - lastLook >= 1 {
                lastLook = now
                if Self.stamp(certificatePath, keyPath) != current.stamp, let renewed = try? Self.read(certificatePath, keyPath) {
                    current = renewed
                }
            }
            return (current.chain, current.key)
        }
    }

    private static func read(_ certificatePath: String, _ keyPath: String) throws -> (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey, stamp: [TimeInterval]) {
        let stamp = stamp(certificatePath, keyPath)
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificatePath) } catch {
            throw TLSFileError(message: "\(certificatePath) holds no PEM certificate chain: \(error)")
        }
        guard !chain.isEmpty else { throw TLSFileError(message: "\(certificatePath) holds no PEM certificate chain") }
        do {
            return (chain, try NIOSSLPrivateKey(file: keyPath, format: .pem), stamp)
        } catch {
            throw TLSFileError(message: "\(keyPath) holds no PEM private key: \(error)")
        }
    }

    /// When each file was last changed (and its size), to tell a renewal.
    private static func stamp(_ paths: String...) -> [TimeInterval] {
        paths.flatMap { path -> [TimeInterval] in
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            return [(attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0, Double((attributes?[.size] as? Int) ?? 0)]
        }
    }
}

/// A certificate or key file that does not read.
public struct TLSFileError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
