import Dispatch

/// Numbers the distinct 64-bit keys of many items densely and sums a weight per key, for item
/// counts whose one hash table would not fit in the cache: the items are first spread over
/// partitions by a hash of their key, then each partition is numbered with a small
/// open-addressing table; both passes run on two cores. Numbers follow the partitions in order,
/// and within a partition the order in which its keys first appear; the numbering is the same
/// whatever the number of cores.
final class PartitionedGrouping {
    /// The distinct keys in number order, and per number the sum of its items' weights.
    struct Numbered {
        var keys: [UInt64]
        var sizes: [Int32]
    }

    /// Items per partition aimed at: a partition's table then stays within a core's cache.
    static let itemsPerPartition = 4_096
    private static let empty = UInt64.max
    private static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// Scratch reused across calls: the items reordered by partition, and each one's number within its partition.
    private var sortedKeys: [UInt64] = []
    private var sortedItems: [Int32] = []
    private var sortedWeights: [Int32] = []
    private var localNumbers: [Int32] = []

    /// Numbers `keys` (one per item; `UInt64.max` is not a key), writes each item's number to
    /// `numberOfItem` and returns the distinct keys and their summed weights.
    func number(keys: UnsafeBufferPointer<UInt64>, weights: UnsafeBufferPointer<Int32>, numberOfItem: UnsafeMutableBufferPointer<Int32>) -> Numbered {
        let items = keys.count
        guard items > 0 else { return Numbered(keys: [], sizes: []) }
        var bits = 1
        while bits < 12 && items >> bits > Self.itemsPerPartition { bits += 1 }
        let partitions = 1 << bits
        let shift = UInt64(64 - bits)
        if sortedKeys.count < items {
            sortedKeys = [UInt64](repeating: 0, count: items)
            sortedItems = [Int32](repeating: 0, count: items)
            sortedWeights = [Int32](repeating: 0, count: items)
            localNumbers = [Int32](repeating: 0, count: items)
        }
        // Per half of the items, per partition: how many items, then where the next one goes.
        var cursors = [Int](repeating: 0, count: 2 * partitions)
        let halves = [0, items / 2, items]
        cursors.withUnsafeMutableBufferPointer { cursors in
            let counting = Shared(cursors)
            let source = Shared(keys)
            DispatchQueue.concurrentPerform(iterations: 2) { half in
                let counts = half * partitions
                for item in halves[half]..<halves[half + 1] {
                    counting.buffer[counts + Int(truncatingIfNeeded: (source.buffer[item] &* Self.golden) >> shift)] += 1
                }
            }
            // Partition by partition, the first half's items, then the second's: the items' order is kept.
            var position = 0
            for partition in 0..<partitions {
                for half in 0..<2 {
                    let count = cursors[half * partitions + partition]
                    cursors[half * partitions + partition] = position
                    position += count
                }
            }
        }
        // Where each partition starts (it ends where the next starts).
        var starts = (0..<partitions).map { cursors[$0] }
        starts.append(items)
        let numbered = sortedKeys.withUnsafeMutableBufferPointer { sortedKeys in
            sortedItems.withUnsafeMutableBufferPointer { sortedItems in
                sortedWeights.withUnsafeMutableBufferPointer { sortedWeights in
                    localNumbers.withUnsafeMutableBufferPointer { localNumbers in
                        cursors.withUnsafeMutableBufferPointer { cursors in
                            let scatter = Scatter(cursors: cursors, keys: sortedKeys, items: sortedItems, weights: sortedWeights, numbers: localNumbers)
                            let source = Source(keys: keys, weights: weights)
                            DispatchQueue.concurrentPerform(iterations: 2) { half in
                                let cursors = half * partitions
                                for item in halves[half]..<halves[half + 1] {
                                    let key = source.keys[item]
                                    let partition = cursors + Int(truncatingIfNeeded: (key &* Self.golden) >> shift)
                                    let position = scatter.cursors[partition]
                                    scatter.cursors[partition] = position + 1
                                    scatter.keys[position] = key
                                    scatter.items[position] = Int32(truncatingIfNeeded: item)
                                    scatter.weights[position] = source.weights[item]
                                }
                            }
                            return numberPartitions(scatter, starts: starts, numberOfItem: numberOfItem)
                        }
                    }
                }
            }
        }
        return numbered
    }

    /// Numbers each partition on its own (the first half of the partitions on one core, the rest
    /// on the other), then writes every item's overall number.
    private func numberPartitions(_ scatter: Scatter, starts: [Int], numberOfItem: UnsafeMutableBufferPointer<Int32>) -> Numbered {
        let partitions = starts.count - 1
        let split = [0, partitions / 2, partitions]
        let results = [Numbered(keys: [], sizes: []), Numbered(keys: [], sizes: [])].map(Box.init)
        // Per partition, the numbers it gave out.
        let given = UnsafeMutableBufferPointer<Int>.allocate(capacity: partitions)
        defer { given.deallocate() }
        let counts = Shared(given)
        DispatchQueue.concurrentPerform(iterations: 2) { side in
            let result = results[side]
            let largest = (split[side]..<split[side + 1]).map { starts[$0 + 1] - starts[$0] }.max() ?? 0
            var tableSize = 16
            while tableSize < largest * 2 { tableSize <<= 1 }
            var slotKeys = [UInt64](repeating: Self.empty, count: tableSize)
            var slotNumbers = [Int32](repeating: 0, count: tableSize)
            var filled: [Int] = []
            // Kept in locals while numbering (a class's storage is checked for exclusive access on every use).
            var keys: [UInt64] = [], sizes: [Int32] = []
            slotKeys.withUnsafeMutableBufferPointer { slotKeys in
                slotNumbers.withUnsafeMutableBufferPointer { slotNumbers in
                    for partition in split[side]..<split[side + 1] {
                        let range = starts[partition]..<starts[partition + 1]
                        var size = 16
                        while size < range.count * 2 { size <<= 1 }
                        let mask = size - 1
                        let first = keys.count
                        for position in range {
                            let key = scatter.keys[position]
                            var slot = Int(truncatingIfNeeded: (key &* Self.golden) >> 32) & mask
                            while slotKeys[slot] != key && slotKeys[slot] != Self.empty { slot = (slot &+ 1) & mask }
                            let number: Int32
                            if slotKeys[slot] == Self.empty {
                                slotKeys[slot] = key
                                number = Int32(truncatingIfNeeded: keys.count - first)
                                slotNumbers[slot] = number
                                filled.append(slot)
                                keys.append(key)
                                sizes.append(scatter.weights[position])
                            } else {
                                number = slotNumbers[slot]
                                sizes[first + Int(number)] &+= scatter.weights[position]
                            }
                            scatter.numbers[position] = number
                        }
                        counts.buffer[partition] = keys.count - first
                        for slot in filled { slotKeys[slot] = Self.empty }
                        filled.removeAll(keepingCapacity: true)
                    }
                }
            }
            result.value = Numbered(keys: keys, sizes: sizes)
        }
        var total = 0
        let offsets = (0..<partitions).map { partition in
            defer { total += given[partition] }
            return total
        }
        let overall = Shared(numberOfItem)
        DispatchQueue.concurrentPerform(iterations: 2) { side in
            for partition in split[side]..<split[side + 1] {
                let offset = Int32(truncatingIfNeeded: offsets[partition])
                for position in starts[partition]..<starts[partition + 1] {
                    overall.buffer[Int(scatter.items[position])] = offset &+ scatter.numbers[position]
                }
            }
        }
        return Numbered(keys: results[0].value.keys + results[1].value.keys, sizes: results[0].value.sizes + results[1].value.sizes)
    }

    /// The reordered items, written by both cores at positions that never overlap.
    private struct Scatter: @unchecked Sendable {
        let cursors: UnsafeMutableBufferPointer<Int>
        let keys: UnsafeMutableBufferPointer<UInt64>
        let items: UnsafeMutableBufferPointer<Int32>
        let weights: UnsafeMutableBufferPointer<Int32>
        let numbers: UnsafeMutableBufferPointer<Int32>
    }

    /// The caller's items, read by both cores.
    private struct Source: @unchecked Sendable {
        let keys: UnsafeBufferPointer<UInt64>
        let weights: UnsafeBufferPointer<Int32>
    }

    /// A buffer both cores use, each writing only its own positions.
    private struct Shared<Buffer>: @unchecked Sendable {
        let buffer: Buffer
        init(_ buffer: Buffer) { self.buffer = buffer }
    }

    /// One core's numbers, handed back to the caller.
    private final class Box: @unchecked Sendable {
        var value: Numbered
        init(_ value: Numbered) { self.value = value }
    }
}
