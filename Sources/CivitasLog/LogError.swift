/// Errors of the log module other than proof failures: a stable code and a
/// one-line message naming the entry, line or checkpoint at fault.
public struct LogError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// A checkpoint is not in the signed-note / tlog-checkpoint form.
        case malformedCheckpoint
        /// No signature by the expected key verifies on a checkpoint.
        case badCheckpointSignature
        /// An entry is not a valid, canonical log entry.
        case invalidEntry
        /// An export file is not in the documented form.
        case malformedExport
        /// A name or value is outside what is allowed.
        case invalidArgument
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Errors are equal when their codes are.
    public static func == (lhs: LogError, rhs: LogError) -> Bool { lhs.code == rhs.code }
}
