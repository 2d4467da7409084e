#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

/// A source of bytes read front to back: a file, a pipe, or memory.
public protocol ByteSource: AnyObject {
    /// Fills `buffer` as far as the data allows; returns the number of bytes
    /// read, which is less than `buffer.count` only at the end of the data.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A destination for an envelope: bytes are appended, and the reserved
/// header is filled in once the ciphertext hash is known.
public protocol EnvelopeSink: AnyObject, Sendable {
    /// Appends bytes.
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Overwrites already-written bytes starting at `offset`.
    func overwrite(at offset: UInt64, with bytes: [UInt8]) throws
}

/// A destination for plain bytes written front to back.
public protocol ByteSink: AnyObject {
    /// Appends bytes.
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// Reads from an open file descriptor (a file, a pipe or standard input).
public final class FileDescriptorSource: ByteSource {
    private let descriptor: Int32
    private let name: String

    /// Reads from `descriptor`; `name` identifies it in errors. The descriptor is not closed.
    public init(descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.name = name
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let n = Glibc.read(descriptor, buffer.baseAddress.map { $0 + filled }, buffer.count - filled)
            if n < 0 {
                if errno == EINTR { continue }
                throw CryptoError(.io, "reading \(name) failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            filled += n
        }
        return filled
    }
}

/// Writes to an open file descriptor; positioned overwrites need a regular file.
public final class FileDescriptorSink: EnvelopeSink, ByteSink, @unchecked Sendable {
    private let descriptor: Int32
    private let name: String
    private let startOffset: UInt64
    private let flusher: BackgroundFlusher?
    private let flushStep: Int
    private var unflushed = 0

    /// Writes to `descriptor` from its current position; `name` identifies it in errors. The descriptor is not closed.
    /// With `flushingBehind`, what is written is flushed to disk on another thread every
    /// `flushStep` bytes (8 MiB unless given), so the caller's final flush has little left to
    /// wait for; call ``finishFlushing()`` before that final flush and before closing the descriptor.
    public init(descriptor: Int32, name: String, flushingBehind: Bool = false, flushStep: Int = 8 << 20) {
        self.descriptor = descriptor
        self.name = name
        self.flushStep = flushStep
        let position = lseek(descriptor, 0, SEEK_CUR)
        self.startOffset = position > 0 ? UInt64(position) : 0
        // Only a regular file is worth flushing (a pipe or a terminal refuses it).
        var info = stat()
        flusher = flushingBehind && fstat(descriptor, &info) == 0 && info.st_mode & S_IFMT == S_IFREG
            ? BackgroundFlusher(descriptor: descriptor, name: name) : nil
    }

    deinit { try? flusher?.finish() }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var written = 0
        while written < bytes.count {
            let n = Glibc.write(descriptor, bytes.baseAddress.map { $0 + written }, bytes.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw CryptoError(.io, "writing \(name) failed: \(String(cString: strerror(errno)))")
            }
            written += n
        }
        guard let flusher else { return }
        unflushed += bytes.count
        if unflushed >= flushStep {
            try flusher.request()
            unflushed = 0
        }
    }

    /// How many background flushes were started.
    var backgroundFlushes: Int { flusher.map { flusher in flusher.lock.withLock { flusher.started } } ?? 0 }

    /// Waits for the background flush under way, if any; throws the error a background flush met.
    public func finishFlushing() throws {
        try flusher?.finish()
    }

    public func overwrite(at offset: UInt64, with bytes: [UInt8]) throws {
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                pwrite(descriptor, raw.baseAddress.map { $0 + written }, raw.count - written,
                       off_t(startOffset + offset) + off_t(written))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw CryptoError(.io, "writing the envelope header to \(name) failed: \(String(cString: strerror(errno)))")
            }
            written += n
        }
    }
}

/// Reads from bytes in memory.
public final class MemorySource: ByteSource {
    private let bytes: [UInt8]
    private var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = min(buffer.count, bytes.count - position)
        guard count > 0 else { return 0 }
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress, let target = buffer.baseAddress {
                target.copyMemory(from: base + position, byteCount: count)
            }
        }
        position += count
        return count
    }
}

/// Collects written bytes in memory (for small payloads and tests).
public final class MemorySink: EnvelopeSink, ByteSink, @unchecked Sendable {
    private var storage: [UInt8] = []
    private let lock = Mutex()

    public init() {}

    /// A sink with room for `capacity` bytes, so that writing that much never copies what was written.
    public init(capacity: Int) { storage.reserveCapacity(capacity) }

    /// Everything written so far.
    public var bytes: [UInt8] { lock.withLock { storage } }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        lock.withLock { storage.append(contentsOf: bytes) }
    }

    public func overwrite(at offset: UInt64, with bytes: [UInt8]) throws {
        try lock.withLock {
            let start = Int(offset)
            guard start + bytes.count <= storage.count else {
                throw CryptoError(.io, "overwrite past the end of the written envelope")
            }
            storage.replaceSubrange(start..<start + bytes.count, with: bytes)
        }
    }
}

/// Flushes a file's written data to disk on a thread of its own, at most one flush at a time:
/// a request made while a flush runs is left to the next one (or to the owner's final flush).
final class BackgroundFlusher: @unchecked Sendable {
    private let descriptor: Int32
    private let name: String
    private let queue = DispatchQueue(label: "civitas.file.flush")
    private let group = DispatchGroup()
    let lock = Mutex()
    private var running = false
    private var failure: (any Error)?
    /// How many flushes were started.
    private(set) var started = 0

    init(descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.name = name
    }

    /// Starts a flush unless one is running; throws the error an earlier flush met (an error is
    /// reported once by the kernel, so the owner's final flush would not see it again).
    func request() throws {
        let start: Bool = try lock.withLock {
            if let failure { throw failure }
            if running { return false }
            running = true
            started += 1
            return true
        }
        guard start else { return }
        queue.async(group: group) { [self] in
            let result = fdatasync(descriptor)
            let error = result == 0 ? nil : CryptoError(.io, "flushing \(name) failed: \(String(cString: strerror(errno)))")
            lock.withLock {
                running = false
                if failure == nil, let error { failure = error }
            }
        }
    }

    /// Waits for the flush under way, then throws the error any flush met.
    func finish() throws {
        group.wait()
        if let failure = lock.withLock({ failure }) { throw failure }
    }
}

/// A minimal pthread mutex (usable from Swift 6 strict concurrency on Linux and macOS).
final class Mutex: @unchecked Sendable {
    let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
