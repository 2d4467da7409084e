import CivitasCrypto

/// A source of uniformly random 64-bit words. The samplers draw everything
/// from one; production code uses ``SystemRandomness`` (the operating system's
/// CSPRNG through libsodium). No production API takes a seed.
public protocol RandomWords {
    mutating func next() -> UInt64
}

/// libsodium's `randombytes_buf`, read 4 KiB at a time.
public struct SystemRandomness: RandomWords {
    private final class Pool {
        var words = [UInt64](repeating: 0, count: 512)
        var position = 512
    }
    private let pool = Pool()

    public init() {}

    public mutating func next() -> UInt64 {
        if pool.position == pool.words.count {
            pool.words.withUnsafeMutableBytes { Sodium.fillRandom($0) }
            pool.position = 0
        }
        defer { pool.position += 1 }
        return pool.words[pool.position]
    }
}

/// Any source of random words behind one type, so that a caller can inject the one it wants
/// (the CSPRNG in production, a seeded one in a test) into code that samples.
public struct AnyRandomWords: RandomWords {
    private var source: any RandomWords

    public init(_ source: any RandomWords) {
        self.source = source
    }

    public mutating func next() -> UInt64 { source.next() }
}

extension RandomWords {
    /// A uniform integer in 0..<bound (bound > 0), by rejection: no modulo bias.
    mutating func uniform(below bound: UInt128) -> UInt128 {
        precondition(bound > 0, "uniform(below:) needs a positive bound")
        if bound == 1 { return 0 }
        let bits = 128 - (bound - 1).leadingZeroBitCount
        let mask: UInt128 = bits == 128 ? ~0 : (1 << bits) - 1
        while true {
            let word: UInt128 = bits <= 64 ? UInt128(next()) : (UInt128(next()) << 64 | UInt128(next()))
            let candidate = word & mask
            if candidate < bound { return candidate }
        }
    }
}
