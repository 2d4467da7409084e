import CivitasCrypto
import CivitasModel
import Hummingbird
import NIOCore

/// The per-request context: the authenticated participant (set by ``SignatureAuthenticator``)
/// and the request body it verified.
public struct CivitasRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The participant whose signature the request carries, once verified.
    public var participant: Participant?
    /// The key id the request was signed with (the participant's registered key, or one a rotation approved).
    public var signingKey: KeyID?
    /// The request body, collected and checked against Content-Digest (empty when it was spooled).
    public var body: [UInt8] = []
    /// A body streamed to a temporary file instead (CSV batch uploads), checked against Content-Digest.
    var spooled: SpooledBody?
    /// The SHA-256 of the body as received (what its Content-Digest states), once verified.
    var bodySHA256: [UInt8] = []

    /// The connection the request came on (its TLS handler holds the client's certificate).
    let channel: any Channel

    public init(source: Source) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// Bodies above this size are refused before they are read further.
    public var maxUploadSize: Int { BrokerAPI.maximumBodySize }
}
