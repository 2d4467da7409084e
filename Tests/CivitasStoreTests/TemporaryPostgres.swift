import CivitasCrypto
import Foundation
@testable import CivitasStore

/// A fresh database on the PostgreSQL server the test command starts (`scripts/postgres`), named
/// by `CIVITAS_TEST_POSTGRES_URL`. Without it the PostgreSQL tests fail: they are never skipped.
struct TemporaryPostgres {
    let location: PostgresLocation
    let key: SealedStorageKey

    init() throws {
        guard let url = ProcessInfo.processInfo.environment["CIVITAS_TEST_POSTGRES_URL"] else {
            throw StoreError(.invalidArgument, "CIVITAS_TEST_POSTGRES_URL names no PostgreSQL server: run the tests with scripts/test, which starts one")
        }
        let server = try PostgresLocation(url: url)
        let name = "civitas_test_" + Hex.encode(Sodium.randomBytes(8))
        try PostgresStore.createDatabase(name, at: server)
        location = server.database(name)
        key = try SealedStorageKey.generate()
    }

    /// A broker node on this database: each call opens another, as another process would.
    func node(connections: Int = 4) throws -> PostgresStore {
        try PostgresStore(location: location, storageKey: key, connections: connections)
    }
}
