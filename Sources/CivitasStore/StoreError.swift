/// The store's one error type: a stable code and a message naming the record at fault.
public struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// A record with this identity already exists.
        case duplicate
        /// The record does not exist.
        case notFound
        /// A request nonce was seen before within the window.
        case replayed
        /// Stored data failed authentication or does not parse.
        case corrupt
        /// A value is outside what the store accepts.
        case invalidArgument
        /// Another change got there first (a batch already drawn for the partner).
        case superseded
        /// Other broker nodes kept changing the same records at the same time; retrying later may succeed.
        case contended
        /// The database reported a failure.
        case database
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
    public static func == (lhs: StoreError, rhs: StoreError) -> Bool { lhs.code == rhs.code }
}
