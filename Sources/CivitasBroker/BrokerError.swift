/// Why the broker refused a request: a stable code and a message naming the agreement,
/// field or figure at fault. Never carries a record value or a secret.
public struct BrokerError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// The agreement, dataset, feed or delivery does not exist.
        case notFound = "not_found"
        /// A login link or session that is not (or no longer) valid.
        case unauthorized
        /// The caller is not a party allowed to do this.
        case forbidden
        /// The request or policy is malformed or contradicts the dataset's schema.
        case invalid
        /// An agreement or feed with this id exists already.
        case duplicate
        /// The agreement is not accepted, was revoked or expired, or is outside its validity window.
        case agreementNotActive = "agreement_not_active"
        /// The purpose is not one the agreement allows.
        case purposeNotAllowed = "purpose_not_allowed"
        /// The release would take the agreement past its ε budget.
        case budgetExhausted = "budget_exhausted"
        /// k (and l) cannot be reached within the agreed suppression limit.
        case kUnreachable = "k_unreachable"
        /// No record may be released: no subject has consented, or nothing was selected.
        case nothingToRelease = "nothing_to_release"
        /// A signature over the policy does not verify.
        case badSignature = "bad_signature"
        /// Another request changed the same agreement or feed first; retry.
        case conflict
        /// Other broker nodes kept changing the same records at the same time; nothing was changed, retry shortly.
        case busy
        /// A signed request's nonce was used before by the same key.
        case replayed
        /// A batch that cannot be read or does not match its dataset's schema; nothing was stored.
        case invalidBatch = "invalid_batch"
        /// A dataset schema that is not a valid annotated schema.
        case invalidSchema = "invalid_schema"
        /// A batch uploaded to follow another that the dataset does not hold (yet); nothing was stored.
        case previousBatchMissing = "previous_batch_missing"
    }

    public let code: Code
    public let message: String
    /// Evidence, one item per problem (for a refused batch: row, field and reason of each).
    public let details: [String]

    public init(_ code: Code, _ message: String, details: [String] = []) {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { message }

    public static func == (lhs: BrokerError, rhs: BrokerError) -> Bool { lhs.code == rhs.code }
}
