/// libsodium declares its pointer parameters non-null, while Swift gives an
/// empty array no base address. These helpers supply a valid pointer to a
/// zeroed scratch area for empty inputs, so C calls never see nil.
nonisolated(unsafe) private let emptyScratch: UnsafeMutablePointer<UInt8> = {
    let pointer = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
    pointer.initialize(repeating: 0, count: 16)
    return pointer
}()

extension Array where Element == UInt8 {
    /// Calls `body` with a non-null pointer to the elements and their count.
    func withNonNullPointer<R>(_ body: (UnsafePointer<UInt8>, Int) throws -> R) rethrows -> R {
        try withUnsafeBufferPointer { buffer in
            try body(buffer.baseAddress ?? UnsafePointer(emptyScratch), buffer.count)
        }
    }

    /// Calls `body` with a non-null mutable pointer to the elements and their count.
    mutating func withNonNullMutablePointer<R>(_ body: (UnsafeMutablePointer<UInt8>, Int) throws -> R) rethrows -> R {
        try withUnsafeMutableBufferPointer { buffer in
            try body(buffer.baseAddress ?? emptyScratch, buffer.count)
        }
    }
}

extension UnsafeRawBufferPointer {
    /// A non-null typed pointer to the bytes.
    var nonNullBytes: UnsafePointer<UInt8> {
        baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) } ?? UnsafePointer(emptyScratch)
    }
}

extension UnsafeMutableRawBufferPointer {
    /// A non-null typed pointer to the bytes.
    var nonNullBytes: UnsafeMutablePointer<UInt8> {
        baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) } ?? emptyScratch
    }
}
