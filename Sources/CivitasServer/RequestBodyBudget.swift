import Foundation

/// The request-body bytes the broker holds at once, across all requests: a body is read only
/// after its signature verifies, and only while its share fits under the limit.
final class RequestBodyBudget: @unchecked Sendable {
    /// Bytes all bodies being read or handled may hold together.
    let limit: Int
    private let lock = NSLock()
    private var reserved = 0

    init(limit: Int) {
        self.limit = limit
    }

    /// Reserves `bytes`; false when they do not fit beside what is already in flight.
    func reserve(_ bytes: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard bytes <= limit - reserved else { return false }
        reserved += bytes
        return true
    }

    func release(_ bytes: Int) {
        lock.lock()
        defer { lock.unlock() }
        reserved -= bytes
    }

    /// Bytes reserved now.
    var inFlight: Int {
        lock.lock()
        defer { lock.unlock() }
        return reserved
    }
}
