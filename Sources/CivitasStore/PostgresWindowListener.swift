import Foundation
import Logging
import NIOCore
import PostgresNIO

/// Hears the window announcements of every node on a connection of its own (PostgreSQL's
/// LISTEN), and connects again a second after it is lost. Announcements made while it is
/// reconnecting are missed: waiters also look again every few seconds.
final class PostgresWindowListener: @unchecked Sendable {
    private let connections: PostgresConnections
    private let channel: String
    private let handler: @Sendable (String) -> Void
    private let logger = Logger(label: "civitas.postgres.listen")
    private let lock = NSLock()
    private var connection: PostgresConnection?
    private var stopped = false

    /// Listens from now on; throws when the first connection cannot be made.
    init(connections: PostgresConnections, channel: String, handler: @escaping @Sendable (String) -> Void) throws {
        self.connections = connections
        self.channel = channel
        self.handler = handler
        do {
            try connect().wait()
        } catch let error as PSQLError {
            throw PostgresSession.storeError(error)
        }
    }

    private func connect() -> EventLoopFuture<Void> {
        let eventLoop = connections.eventLoop
        let configuration: PostgresConnection.Configuration
        do { configuration = try connections.location.configuration() } catch { return eventLoop.makeFailedFuture(error) }
        let (channel, handler, logger) = (self.channel, self.handler, self.logger)
        // Callbacks hold the listener weakly: it goes when the store lets it go.
        return PostgresConnection.connect(on: eventLoop, configuration: configuration, id: 0, logger: logger).flatMap { [weak self] connection in
            connection.addListener(channel: channel) { _, notification in handler(notification.payload) }
            return connection.query(PostgresQuery(unsafeSQL: "LISTEN \(channel)"), logger: logger).map { [weak self] _ in
                guard let self, self.lock.withLock({ () -> Bool in
                    guard !self.stopped else { return false }
                    self.connection = connection
                    return true
                }) else {
                    PostgresConnections.close(connection)
                    return
                }
                connection.closeFuture.whenComplete { [weak self] _ in self?.reconnectLater() }
            }
        }
    }

    private func reconnectLater() {
        guard !lock.withLock({ stopped }) else { return }
        connections.eventLoop.scheduleTask(in: .seconds(1)) { [weak self] in
            self?.connect().whenFailure { [weak self] _ in self?.reconnectLater() }
        }
    }

    /// Stops listening and closes the connection.
    func stop() {
        let open = lock.withLock { () -> PostgresConnection? in
            stopped = true
            defer { connection = nil }
            return connection
        }
        if let open { PostgresConnections.close(open) }
    }
}
