import CivitasCrypto
import GRDB
import GRDBSQLite

/// The prepared insert of a consent event, bound and stepped through SQLite's own calls: a
/// request writes ten thousand rows while holding the write lock, and binding through
/// `StatementArguments` cost more than SQLite's insert itself.
final class ConsentInsert {
    private let statement: Statement
    private let connection: SQLiteConnection?

    init(_ db: Database) throws {
        statement = try db.makeStatement(sql: """
            INSERT INTO consent_event (dataset, subject, purpose, granted, record, recorded, log_index, record_base) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        connection = db.sqliteConnection
    }

    /// Inserts one row; `record` is the stored form of the record (whole, or its differences from `base`).
    func insert(dataset: String, subject: [UInt8], purpose: String, granted: Bool, record: [UInt8], recorded: String,
                logIndex: UInt64?, base: Int64?) throws {
        let handle = statement.sqliteStatement
        defer {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
        }
        var bound = SQLITE_OK
        func check(_ code: CInt) { if bound == SQLITE_OK { bound = code } }
        check(Self.bind(text: dataset, at: 1, handle))
        check(Self.bind(blob: subject, at: 2, handle))
        check(Self.bind(text: purpose, at: 3, handle))
        check(sqlite3_bind_int64(handle, 4, granted ? 1 : 0))
        check(Self.bind(blob: record, at: 5, handle))
        check(Self.bind(text: recorded, at: 6, handle))
        check(logIndex.map { sqlite3_bind_int64(handle, 7, Int64(bitPattern: $0)) } ?? sqlite3_bind_null(handle, 7))
        check(base.map { sqlite3_bind_int64(handle, 8, $0) } ?? sqlite3_bind_null(handle, 8))
        guard bound == SQLITE_OK else { throw failure(bound) }
        let stepped = sqlite3_step(handle)
        guard stepped == SQLITE_DONE else { throw failure(stepped) }
    }

    private func failure(_ code: CInt) -> StoreError {
        let message = connection.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(code))
        return StoreError(.database, "database: storing a consent event failed: \(message)")
    }

    /// SQLite copies what it is given (`SQLITE_TRANSIENT`), so the bytes need not outlive the call.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    private static func bind(text: String, at index: CInt, _ handle: SQLiteStatement) -> CInt {
        var text = text
        return text.withUTF8 { bytes in
            bytes.isEmpty ? sqlite3_bind_text(handle, index, "", 0, nil)
                : sqlite3_bind_text(handle, index, bytes.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, CInt(bytes.count), transient)
        }
    }

    private static func bind(blob: [UInt8], at index: CInt, _ handle: SQLiteStatement) -> CInt {
        blob.isEmpty ? sqlite3_bind_zeroblob(handle, index, 0)
            : blob.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, CInt($0.count), transient) }
    }
}
