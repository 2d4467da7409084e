/// The one error type of CivitasPrivacy: a stable code and a message naming
/// the parameter, column or row at fault. Never contains a record's values
/// beyond what the caller passed as a parameter.
public struct PrivacyError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// A mechanism or transform parameter is outside what it supports.
        case invalidParameter
        /// A charge would take an agreement past its privacy budget; nothing was charged.
        case budgetExceeded
        /// A value cannot be read as the number the transform needs.
        case invalidValue
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Errors are equal when their codes are.
    public static func == (lhs: PrivacyError, rhs: PrivacyError) -> Bool { lhs.code == rhs.code }
}
