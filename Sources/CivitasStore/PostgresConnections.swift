import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL database is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]`.
/// Without `sslmode`, a loopback host is reached in the clear and any other over verified TLS;
/// `sslmode=disable` never uses TLS, `require` and `verify-full` always do, verifying the server's
/// certificate against the system's trusted authorities.
public struct PostgresLocation: Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int
    public let user: String
    let password: String?
    public let database: String
    public let usesTLS: Bool

    public init(url text: String) throws {
        guard let url = URLComponents(string: text), ["postgres", "postgresql"].contains(url.scheme ?? ""),
              let host = url.host, !host.isEmpty, let user = url.user, !user.isEmpty else {
            throw StoreError(.invalidArgument, "a PostgreSQL location is postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        }
        let database = String(url.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw StoreError(.invalidArgument, "a PostgreSQL location names one database after the host, as in postgres://USER@HOST/DATABASE")
        }
        let mode = url.queryItems?.first(where: { $0.name == "sslmode" })?.value
        switch mode {
        case nil: usesTLS = !["127.0.0.1", "::1", "localhost"].contains(host)
        case "disable": usesTLS = false
        case "require", "verify-full": usesTLS = true
        case let other?: throw StoreError(.invalidArgument, "sslmode \(other.prefix(20)) is not one of disable, require, verify-full")
        }
        self.host = host
        port = url.port ?? 5432
        self.user = user
        password = url.password
        self.database = database
    }

    /// The same server and user, another database.
    public func database(_ name: String) -> PostgresLocation {
        PostgresLocation(host: host, port: port, user: user, password: password, database: name, usesTLS: usesTLS)
    }

    private init(host: String, port: Int, user: String, password: String?, database: String, usesTLS: Bool) {
        (self.host, self.port, self.user, self.password, self.database, self.usesTLS) = (host, port, user, password, database, usesTLS)
    }

    /// The location without its password.
    public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    func configuration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        if usesTLS {
            do {
                tls = .require(try NIOSSLContext(configuration: TLSConfiguration.makeClientConfiguration()))
            } catch {
                throw StoreError(.database, "cannot set up TLS to PostgreSQL: \(error)")
            }
        } else {
            tls = .disable
        }
        return PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: tls)
    }
}

/// A value bound to a statement's `$n` parameter.
enum SQLValue {
    case text(String?)
    case integer(Int64?)
    case bytes([UInt8]?)
    case flag(Bool)
    /// Arrays, for many rows in one statement (`unnest`).
    case texts([String])
    case byteStrings([[UInt8]])
    case flags([Bool])

    static func time(_ time: UTCTime?) -> SQLValue { .text(time?.rfc3339) }
}

/// Connections to one PostgreSQL database for blocking callers (the broker's work runs on
/// threads that may wait): a call takes an idle connection, opening one while fewer than the
/// limit are open and waiting otherwise, and gives it back when done.
final class PostgresConnections: @unchecked Sendable {
    let location: PostgresLocation
    private let group: MultiThreadedEventLoopGroup
    private let logger = Logger(label: "civitas.postgres")
    private let condition = NSCondition()
    private var idle: [PostgresConnection] = []
    private var opened = 0
    private var nextID = 0
    private let limit: Int

    init(location: PostgresLocation, limit: Int) {
        self.location = location
        self.limit = max(1, limit)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    deinit {
        for connection in idle { Self.close(connection) }
        // The last reference may go on any thread, an event loop's included: nothing here waits.
        group.shutdownGracefully(queue: .global()) { _ in }
    }

    /// An event loop of these connections, for connections kept apart (a listener's).
    var eventLoop: any EventLoop { group.next() }

    /// Runs `body` with a connection of its own.
    func withConnection<T>(_ body: (PostgresSession) throws -> T) throws -> T {
        let connection = try take()
        var healthy = true
        defer { give(connection, healthy: healthy) }
        do {
            return try body(PostgresSession(connection: connection, logger: logger))
        } catch {
            healthy = !connection.isClosed
            throw error
        }
    }

    /// Longest a caller waits for a connection while all are in use.
    static let longestWait: TimeInterval = 30

    private func take() throws -> PostgresConnection {
        condition.lock()
        let deadline = Date(timeIntervalSinceNow: Self.longestWait)
        while idle.isEmpty && opened >= limit {
            guard condition.wait(until: deadline) || !idle.isEmpty || opened < limit else {
                condition.unlock()
                throw StoreError(.contended, "all \(limit) connections to PostgreSQL stayed in use for \(Int(Self.longestWait)) s")
            }
        }
        if let connection = idle.popLast() {
            condition.unlock()
            return connection
        }
        opened += 1
        nextID += 1
        let id = nextID
        condition.unlock()
        do {
            return try PostgresConnection.connect(on: group.next(), configuration: try location.configuration(), id: id, logger: logger).wait()
        } catch {
            condition.lock()
            opened -= 1
            condition.signal()
            condition.unlock()
            throw StoreError(.database, "cannot reach PostgreSQL at \(location): \(PostgresSession.describe(error))")
        }
    }

    /// Closes a connection, keeping it until it is closed, without waiting.
    static func close(_ connection: PostgresConnection) {
        let closing: EventLoopFuture<Void> = connection.close()
        closing.whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    private func give(_ connection: PostgresConnection, healthy: Bool) {
        condition.lock()
        if healthy && !connection.isClosed {
            idle.append(connection)
        } else {
            opened -= 1
            Self.close(connection)
        }
        condition.signal()
        condition.unlock()
    }
}

/// One connection held by one blocking caller.
struct PostgresSession {
    let connection: PostgresConnection
    let logger: Logger

    /// Runs a statement and returns its rows.
    @discardableResult
    func rows(_ sql: String, _ values: [SQLValue] = []) throws -> [PostgresRandomAccessRow] {
        try run(sql, values).rows.map { $0.makeRandomAccess() }
    }

    /// Runs a statement; returns how many rows it inserted, changed or deleted.
    @discardableResult
    func execute(_ sql: String, _ values: [SQLValue] = []) throws -> Int {
        try run(sql, values).metadata.rows ?? 0
    }

    /// Runs `body` between `begin` and COMMIT; whatever `body` throws rolls it all back.
    func inTransaction<T>(_ begin: String = "BEGIN", _ body: () throws -> T) throws -> T {
        try execute(begin)
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
    }

    /// Runs `body` in one read-only transaction that sees the database as it was when it began
    /// (what others commit meanwhile stays invisible).
    func inSnapshot<T>(_ body: () throws -> T) throws -> T {
        try inTransaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    /// The first row of a statement's answer, if any.
    func row(_ sql: String, _ values: [SQLValue] = []) throws -> PostgresRandomAccessRow? {
        try rows(sql, values).first
    }

    private func run(_ sql: String, _ values: [SQLValue]) throws -> PostgresQueryResult {
        var binds = PostgresBindings(capacity: values.count)
        for value in values {
            switch value {
            case .text(let text): binds.append(text)
            case .integer(let integer): binds.append(integer)
            case .bytes(let bytes): binds.append(bytes.map { ByteBuffer(bytes: $0) })
            case .flag(let flag): binds.append(flag)
            case .texts(let texts): binds.append(texts)
            case .byteStrings(let byteStrings): binds.append(byteStrings.map { ByteBuffer(bytes: $0) })
            case .flags(let flags): binds.append(flags)
            }
        }
        do {
            return try connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger).wait()
        } catch let error as PSQLError {
            throw PostgresSession.storeError(error)
        }
    }

    /// SQLSTATE classes the store answers by name.
    enum State {
        static let uniqueViolation = "23505"
        static let serializationFailure = "40001"
        static let deadlockDetected = "40P01"
    }

    /// A database failure as a store error: a unique violation is a duplicate, a lost race
    /// (serialization failure, deadlock) is `contended`, anything else names the server's message.
    static func storeError(_ error: PSQLError) -> StoreError {
        let state = error.serverInfo?[.sqlState]
        switch state {
        case State.uniqueViolation?:
            return StoreError(.duplicate, "already stored (\(error.serverInfo?[.constraintName] ?? "a unique key"))")
        case State.serializationFailure?, State.deadlockDetected?:
            return StoreError(.contended, "another broker node changed the same records at the same time")
        default:
            return StoreError(.database, "database: \(describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] { return "\(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))" }
        return "\(error.code)\(error.underlying.map { ": \($0)" } ?? "")"
    }
}

extension PostgresRandomAccessRow: StoredRow {
    func optionalText(_ column: String) throws -> String? { try cell(column).decode(String?.self) }
    func optionalInteger(_ column: String) throws -> Int64? { try cell(column).decode(Int64?.self) }
    func optionalBytes(_ column: String) throws -> [UInt8]? {
        try cell(column).decode(ByteBuffer?.self).map { Array($0.readableBytesView) }
    }
    func flag(_ column: String) throws -> Bool { try cell(column).decode(Bool.self) }

    private func cell(_ column: String) throws -> PostgresCell {
        guard contains(column) else { throw Self.missing(column) }
        return self[column]
    }
}
