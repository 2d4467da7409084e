import Foundation

/// What all requests may hold together at once, counted in units: the bytes of request bodies
/// (each read only after its signature verifies, and only while its share fits), the disk of
/// spooled uploads, the store's readers that envelope downloads hold.
final class SharedAllowance: @unchecked Sendable {
    /// Units all requests may hold together.
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
