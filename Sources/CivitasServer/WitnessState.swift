import CivitasLog
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The witness's memory: for each log origin, the latest checkpoint it cosigned, in one JSON
/// file (mode 0600) replaced atomically and flushed before a cosignature leaves the witness.
/// The file is locked while the witness runs, so a second witness on the same file is refused.
public final class WitnessState: Sendable {
    /// Where the state is kept.
    public let path: String
    private let latest: Mutex<[String: WitnessedCheckpoint]>
    private let lockDescriptor: Int32

    /// Opens (or creates) the state at `path` and locks it for this process.
    public init(path: String) throws {
        self.path = path
        let lockPath = path + ".lock"
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw WitnessStateError("cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw WitnessStateError("another witness is running on \(path) (\(lockPath) is locked)")
        }
        lockDescriptor = descriptor
        var state: [String: WitnessedCheckpoint] = [:]
        if FileManager.default.fileExists(atPath: path) {
            do {
                state = try JSONDecoder().decode([String: WitnessedCheckpoint].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                close(descriptor)
                throw WitnessStateError("\(path) is not a witness state file: \(error)")
            }
        }
        latest = Mutex(state)
    }

    deinit { close(lockDescriptor) }

    /// The latest checkpoint cosigned for `origin`.
    public func latest(of origin: String) -> WitnessedCheckpoint? {
        latest.withLock { $0[origin] }
    }

    /// Reads the latest checkpoint of `origin`, lets `decide` return the next one, and persists
    /// it before returning: one caller at a time, so no two decisions see the same state.
    public func update<Result>(origin: String, _ decide: (WitnessedCheckpoint?) throws -> (WitnessedCheckpoint, Result)) throws -> Result {
        try latest.withLock { state in
            let (next, result) = try decide(state[origin])
            var updated = state
            updated[origin] = next
            try write(updated)
            state = updated
            return result
        }
    }

    /// Writes the whole state under a temporary name, flushes it and renames it into place.
    private func write(_ state: [String: WitnessedCheckpoint]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(state)
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw WitnessStateError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        let written = data.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(descriptor) == 0 else { throw WitnessStateError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        guard rename(temporary, path) == 0 else { throw WitnessStateError("cannot replace \(path): \(String(cString: strerror(errno)))") }
        let directory = open((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent, O_RDONLY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }
}

/// The witness state cannot be opened or written.
public struct WitnessStateError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
