import CivitasModel
import GRDB

/// Times are stored as RFC 3339 text in the log's form; a stored value in any other form does not
/// decode (the store reports the row as damaged).
extension UTCTime: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { rfc3339.databaseValue }

    public static func fromDatabaseValue(_ value: DatabaseValue) -> UTCTime? {
        String.fromDatabaseValue(value).flatMap { UTCTime(rfc3339: $0) }
    }
}
