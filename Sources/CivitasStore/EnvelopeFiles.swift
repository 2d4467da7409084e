import CivitasCrypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The SQLite store's large envelopes, each an owner-only file in one owner-only folder beside
/// the database (`<database>-envelopes`) instead of a BLOB in its pages: a file is written once,
/// and is on disk before the transaction that names it commits. Envelopes are already sealed
/// to their partner, so the files hold nothing the database would protect further.
struct EnvelopeFiles: Sendable {
    /// Envelopes of at least this many bytes are kept as files; smaller ones stay in the database.
    static let threshold = 1 << 20
    /// The folder of the files.
    let folder: String
    /// Bytes written at a time (and flushed behind).
    private static let piece = 8 << 20

    init(database path: String) {
        folder = path + "-envelopes"
    }

    /// The file name of delivery `id`'s envelope: the id's bytes in hex, so that no id names a
    /// path outside the folder.
    static func name(of id: String) -> String {
        Hex.encode(Array(id.utf8)) + ".envelope"
    }

    /// Writes `bytes` as file `name` (replacing it) through a temporary file, and makes the file
    /// and its name durable before returning.
    func write(_ bytes: [UInt8], name: String) throws {
        if mkdir(folder, 0o700) != 0, errno != EEXIST { throw failure("cannot create the envelope folder") }
        let partial = path(name) + ".partial"
        unlink(partial)
        let descriptor = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw failure("cannot create envelope file \(name)") }
        var closed = false
        defer { if !closed { close(descriptor); unlink(partial) } }
        // Written a piece at a time, each flushed to disk on another thread while the next is
        // written, so that the final flush has little left to wait for.
        let sink = FileDescriptorSink(descriptor: descriptor, name: name, flushingBehind: true)
        do {
            try bytes.withUnsafeBytes { all in
                var offset = 0
                while offset < all.count {
                    let end = min(all.count, offset + Self.piece)
                    try sink.write(UnsafeRawBufferPointer(rebasing: all[offset..<end]))
                    offset = end
                }
            }
            try sink.finishFlushing()
        } catch let error as CryptoError {
            // The flush under way ends before the descriptor is closed.
            try? sink.finishFlushing()
            throw StoreError(.database, "cannot write envelope file \(name) in \(folder): \(error.message)")
        }
        guard fsync(descriptor) == 0 else { throw failure("cannot make envelope file \(name) durable") }
        closed = true
        guard close(descriptor) == 0 else { unlink(partial); throw failure("cannot close envelope file \(name)") }
        guard rename(partial, path(name)) == 0 else { unlink(partial); throw failure("cannot name envelope file \(name)") }
        try syncFolder()
    }

    /// Removes file `name`, if it is there.
    func remove(_ name: String) {
        unlink(path(name))
    }

    /// The size of file `name` in bytes.
    func size(of name: String) throws -> Int {
        var status = stat()
        guard stat(path(name), &status) == 0 else { throw missing(name) }
        return Int(status.st_size)
    }

    /// The whole of file `name`.
    func read(_ name: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        try read(name, pieceSize: 1 << 20) { piece in bytes.append(contentsOf: piece); return true }
        return bytes
    }

    /// Reads file `name` from its start in pieces of at most `pieceSize` bytes handed to `each`
    /// in order (each valid only during the call), until the end or until `each` returns false.
    func read(_ name: String, pieceSize: Int, _ each: (UnsafeRawBufferPointer) throws -> Bool) throws {
        let descriptor = open(path(name), O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw missing(name) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw missing(name) }
        let total = Int(status.st_size)
        let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: min(pieceSize, max(total, 1)), alignment: 16)
        defer { piece.deallocate() }
        var offset = 0
        while offset < total {
            let count = pread(descriptor, piece.baseAddress, min(piece.count, total - offset), off_t(offset))
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw failure("cannot read envelope file \(name) at byte \(offset)") }
            offset += count
            guard try each(UnsafeRawBufferPointer(rebasing: piece[..<count])) else { return }
        }
    }

    /// Removes every file of the folder not named in `kept` (envelopes of transactions that
    /// never committed, and unfinished temporary files). Call it only while holding the
    /// database's write lock, so that no transaction is between writing a file and committing.
    func sweep(keeping kept: Set<String>) throws -> Int {
        guard let directory = opendir(folder) else {
            if errno == ENOENT { return 0 }
            throw failure("cannot list the envelope folder")
        }
        defer { closedir(directory) }
        var removed = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name != ".", name != "..", !kept.contains(name) else { continue }
            if unlink(path(name)) == 0 { removed += 1 }
        }
        if removed > 0 { try syncFolder() }
        return removed
    }

    private func path(_ name: String) -> String { folder + "/" + name }

    private func syncFolder() throws {
        let descriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure("cannot open the envelope folder") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw failure("cannot make the envelope folder durable") }
    }

    private func failure(_ what: String) -> StoreError {
        StoreError(.database, "\(what) in \(folder): \(String(cString: strerror(errno)))")
    }

    private func missing(_ name: String) -> StoreError {
        StoreError(.corrupt, "envelope file \(name) is missing from \(folder)")
    }
}

