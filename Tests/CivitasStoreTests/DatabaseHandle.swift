import GRDB

/// Direct SQL access for tests that tamper with the file as an attacker would.
struct DatabaseHandle {
    let queue: DatabaseQueue
    init(path: String) throws { queue = try DatabaseQueue(path: path) }
    func execute(_ sql: String) throws { try queue.write { try $0.execute(sql: sql) } }
}
