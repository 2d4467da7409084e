import Foundation

/// Groups weighted cells into equivalence classes for one generalization and
/// decides which classes meet k (and l), counting distinct subjects: the inner
/// loop of every search. Classes are numbered densely in the order they are
/// found; an open-addressing table of their keys is reused across evaluations.
final class ClassEvaluator {
    let table: EncodedTable
    let requirements: AnonymityRequirements
    private let capacity: Int
    /// The open-addressing table: a generalized tuple's key and its class number.
    private var keys: [UInt64]
    private var classOfKey: [Int32]
    /// Positions of `keys` filled by the last evaluation (to empty them again).
    private var filled: [Int32] = []
    /// Per class of the last evaluation: its size in subjects.
    private var sizes: [Int32] = []
    private var pairKeys: [UInt64]
    private var pairCounts: [Int32]
    private var pairUsed: [Int32] = []
    /// Per cell, its class in the last evaluation that started from the cells.
    private(set) var classOfCell: [Int32]
    /// Per class, whether it was kept (meets k and l) in the last evaluation.
    private(set) var kept: [Bool] = []
    private static let empty = UInt64.max

    init(table: EncodedTable, requirements: AnonymityRequirements) {
        self.table = table
        self.requirements = requirements
        var capacity = 1024
        while capacity < table.cellCount.count * 2 { capacity <<= 1 }
        self.capacity = capacity
        keys = [UInt64](repeating: Self.empty, count: capacity)
        classOfKey = [Int32](repeating: 0, count: capacity)
        let pairCapacity = requirements.diversity == nil ? 1 : capacity * 2
        pairKeys = [UInt64](repeating: Self.empty, count: pairCapacity)
        pairCounts = [Int32](repeating: 0, count: pairCapacity)
        classOfCell = [Int32](repeating: 0, count: table.cellCount.count)
        let entries = table.spanningSubjects.items.count
        classOfEntry = [Int32](repeating: 0, count: entries)
        distinctClasses = [Int32](repeating: 0, count: entries)
        distinctCount = [Int32](repeating: 0, count: table.spanningSubjects.count)
    }

    struct Outcome: Equatable {
        /// Subjects in classes that fail k or l (a subject in two failing classes counts twice):
        /// these would be suppressed.
        var suppressed: Int
        var classes: Int
        var keptClasses: Int
        /// Sum of squared sizes (in subjects) of the kept classes.
        var keptSquares: Double = 0
    }

    /// Multipliers that turn a generalized tuple into a unique 64-bit key, or nil if they would overflow.
    func multipliers(_ levels: [Int]) -> [UInt64]? {
        var result = [UInt64](repeating: 0, count: levels.count)
        var product: UInt64 = 1
        for (q, size) in table.domainSizes(levels).enumerated() {
            result[q] = product
            let (next, overflow) = product.multipliedReportingOverflow(by: UInt64(max(size, 1)))
            if overflow { return nil }
            product = next
        }
        return result
    }

    /// The classes of an earlier evaluation, kept so later, coarser generalizations can be
    /// computed from them instead of from every cell (roll-up, as ARX's snapshots do).
    private struct Snapshot {
        let levels: [Int]
        let codes: [UInt32]
        let sizes: [Int32]
        /// Per entry of the table's spanning subjects' cell lists, its cell's class here.
        let entryClasses: [Int32]
    }
    private var snapshots: [Snapshot] = []
    private var snapshotClasses = 0
    private static let snapshotLimit = 24
    /// A snapshot is kept when it has at most 1/snapshotShare as many classes as there are cells.
    private static let snapshotShare = 5
    /// Label codes (one per column) of each class of the last evaluation, in class order.
    private var classCodes: [UInt32] = []

    /// Drops the stored classes (so that every search starts from the cells).
    func forgetSnapshots() {
        snapshots.removeAll()
        snapshotClasses = 0
    }

    /// Evaluations rolled up from stored classes rather than grouped from the cells.
    private(set) var rolledUp = 0

    /// Evaluates the full-domain generalization at `levels`. Unless `fromCells` is set (needed when
    /// the release must know each cell's class), it starts from the smallest stored set of classes
    /// that the new generalization coarsens.
    func evaluate(levels: [Int], fromCells: Bool = false) throws -> Outcome {
        guard let multipliers = multipliers(levels) else {
            throw PrivacyError(.invalidParameter, "too many distinct quasi-identifier combinations for the optimal search; use --algorithm mondrian")
        }
        let q = levels.count
        // Distinct generalized tuples possible: a bound on the classes.
        let keySpace = (multipliers.last ?? 1) &* UInt64(max(table.domainSizes(levels).last ?? 1, 1))
        reset()
        let canRollUp = !fromCells && requirements.diversity == nil
        let source = canRollUp ? snapshots.filter { snapshot in
            zip(snapshot.levels, levels).allSatisfy { $0 <= $1 }
        }.min { $0.sizes.count < $1.sizes.count } : nil
        if let source, source.sizes.count < table.cellCount.count {
            group(input: source.codes, tables: (0..<q).map { table.rollup[$0][source.levels[$0]][levels[$0]] },
                  multipliers: multipliers, keySpace: keySpace, weights: source.sizes, classOfItem: &classOfItem)
            // Each spanning entry's class follows from its class in the source: one look-up, no hashing.
            gather(classOfItem, at: source.entryClasses, into: &classOfEntry)
            rolledUp += 1
        } else {
            group(input: table.cellLeaves, tables: (0..<q).map { table.codes[$0][levels[$0]] },
                  multipliers: multipliers, keySpace: keySpace, weights: table.cellSubjects, classOfItem: &classOfCell)
            gather(classOfCell, at: table.spanningSubjects.items, into: &classOfEntry)
        }
        // Stored before the per-subject correction (sums of cell weights roll up, the correction
        // does not), and only when much smaller than the cells: all snapshots together hold at most
        // as many classes as there are cells. Each also keeps the class of every spanning entry
        // (4 bytes per record of a subject with several records), so at most `snapshotLimit` of those.
        let cells = table.cellCount.count
        let classes = sizes.count
        if canRollUp, classes * Self.snapshotShare <= cells {
            while snapshots.count == Self.snapshotLimit || (!snapshots.isEmpty && snapshotClasses + classes > cells) {
                snapshotClasses -= snapshots.removeFirst().sizes.count
            }
            snapshots.append(Snapshot(levels: levels, codes: classCodes, sizes: sizes, entryClasses: classOfEntry))
            snapshotClasses += classes
        }
        countSpanningSubjectsOnce()
        var diversityOK: [Bool] = []
        if let diversity = requirements.diversity {
            diversityOK = classDiversity(diversity)
        }
        var outcome = Outcome(suppressed: 0, classes: classes, keptClasses: 0)
        let k = Int32(requirements.k)
        kept = [Bool](repeating: false, count: classes)
        var suppressed = 0, keptClasses = 0
        var squares = 0.0
        sizes.withUnsafeBufferPointer { sizes in
            kept.withUnsafeMutableBufferPointer { kept in
                for id in 0..<classes {
                    let size = sizes[id]
                    let ok = size >= k && (diversityOK.isEmpty || diversityOK[id])
                    kept[id] = ok
                    if ok {
                        keptClasses += 1
                        squares += Double(size) * Double(size)
                    } else {
                        suppressed += Int(size)
                    }
                }
            }
        }
        outcome.suppressed = suppressed
        outcome.keptClasses = keptClasses
        outcome.keptSquares = squares
        if linksSubjects { outcome.suppressed += linkedSubjectsBelowK() }
        return outcome
    }

    /// `output[i] = values[indexes[i]]` for every index, into a buffer reused across evaluations.
    private func gather<Index: BinaryInteger>(_ values: [Int32], at indexes: [Index], into output: inout [Int32]) {
        if output.count != indexes.count { output = [Int32](repeating: 0, count: indexes.count) }
        values.withUnsafeBufferPointer { values in
            indexes.withUnsafeBufferPointer { indexes in
                output.withUnsafeMutableBufferPointer { output in
                    for i in 0..<indexes.count { output[i] = values[Int(indexes[i])] }
                }
            }
        }
    }

    /// Whether the released table carries the subject's pseudonym, which links a subject's records across classes.
    private var linksSubjects: Bool { requirements.subject.map { requirements.linking.contains($0) } ?? false }

    /// With the subject linked, the subjects whose records fall into exactly the same classes must
    /// number at least k (docs/privacy.md). Counts the subjects of kept classes that would be
    /// suppressed for it: those whose set of classes is shared by fewer than k subjects.
    /// Sets of classes are counted in an open-addressing table of representatives compared
    /// element by element (exact, whatever the hash), with no allocation per subject.
    private func linkedSubjectsBelowK() -> Int {
        let subjects = table.spanningSubjects.count
        var tableSize = 16
        while tableSize < subjects * 2 { tableSize <<= 1 }
        if signatureSubject.count != tableSize {
            signatureSubject = [Int32](repeating: -1, count: tableSize)
            signatureCount = [Int32](repeating: 0, count: tableSize)
        }
        let classes = sizes.count
        var linkedInto = [Int32](repeating: 0, count: classes)
        let mask = tableSize - 1
        var signatures: [Int32] = []
        let k = requirements.k
        var suppressed = 0
        table.spanningSubjects.starts.withUnsafeBufferPointer { starts in
            distinctClasses.withUnsafeBufferPointer { distinct in
                distinctCount.withUnsafeBufferPointer { counts in
                    signatureSubject.withUnsafeMutableBufferPointer { signatureSubject in
                        signatureCount.withUnsafeMutableBufferPointer { signatureCount in
                            linkedInto.withUnsafeMutableBufferPointer { linkedInto in
                                kept.withUnsafeBufferPointer { kept in
                                    for subject in 0..<subjects {
                                        let count = Int(counts[subject])
                                        guard count > 1 else { continue }
                                        let start = starts[subject]
                                        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
                                        for i in start..<(start + count) {
                                            let id = distinct[i]
                                            hash = (hash ^ UInt64(UInt32(bitPattern: id))) &* 0x100_0000_01b3
                                            linkedInto[Int(id)] &+= 1
                                        }
                                        var position = Int(truncatingIfNeeded: (hash &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
                                        while true {
                                            let other = signatureSubject[position]
                                            if other < 0 {
                                                signatureSubject[position] = Int32(subject)
                                                signatures.append(Int32(position))
                                                break
                                            }
                                            let otherStart = starts[Int(other)]
                                            if Int(counts[Int(other)]) == count
                                                && (0..<count).allSatisfy({ distinct[start + $0] == distinct[otherStart + $0] }) {
                                                break
                                            }
                                            position = (position &+ 1) & mask
                                        }
                                        signatureCount[position] &+= 1
                                    }
                                    for id in 0..<classes where linkedInto[id] > 0 && kept[id] {
                                        let alone = Int(sizes[id]) - Int(linkedInto[id])
                                        if alone > 0 && alone < k { suppressed += alone }
                                    }
                                    for position in signatures {
                                        let count = Int(signatureCount[Int(position)])
                                        let representative = Int(signatureSubject[Int(position)])
                                        signatureSubject[Int(position)] = -1
                                        signatureCount[Int(position)] = 0
                                        guard count < k else { continue }
                                        let start = starts[representative]
                                        if (start..<(start + Int(counts[representative]))).allSatisfy({ kept[Int(distinct[$0])] }) { suppressed += count }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return suppressed
    }

    /// Scratch tables of ``linkedSubjectsBelowK()``, left empty between calls.
    private var signatureSubject: [Int32] = []
    private var signatureCount: [Int32] = []

    /// Per entry of the spanning subjects' cell lists, its cell's class (last evaluation).
    private var classOfEntry: [Int32]
    /// Per spanning subject, its distinct classes in ascending order, written from the subject's
    /// first entry on (`distinctCount` of them), and how many there are.
    private var distinctClasses: [Int32]
    private var distinctCount: [Int32]
    /// Per item of the last roll-up (a class of the source snapshot), its class.
    private var classOfItem: [Int32] = []

    /// Hashes each item's generalized codes into the class table, adding its weight, and writes
    /// each item's class to `classOfItem`. `input` holds one code per column per item;
    /// `tables[column]` maps it to the target level's code.
    private func group(input: [UInt32], tables: [[UInt32]], multipliers: [UInt64], keySpace: UInt64, weights: [Int32], classOfItem: inout [Int32]) {
        let q = tables.count
        var offsets: [Int] = []
        var flat: [UInt32] = []
        for table in tables {
            offsets.append(flat.count)
            flat += table
        }
        let items = weights.count
        // No more classes than items or than distinct keys: the table is sized for that many, at
        // most half full, so that grouping a few classes stays within the cache.
        let bound = min(UInt64(items), keySpace)
        var tableSize = 1024
        while tableSize < capacity && UInt64(tableSize) < bound * 2 { tableSize <<= 1 }
        let mask = tableSize - 1
        var newClasses: [UInt32] = []
        var sizes: [Int32] = []
        var filled: [Int32] = []
        if classOfItem.count < items { classOfItem = [Int32](repeating: 0, count: items) }
        flat.withUnsafeBufferPointer { flat in
            offsets.withUnsafeBufferPointer { offsets in
                multipliers.withUnsafeBufferPointer { multipliers in
                    input.withUnsafeBufferPointer { input in
                        weights.withUnsafeBufferPointer { weights in
                            keys.withUnsafeMutableBufferPointer { keys in
                                classOfKey.withUnsafeMutableBufferPointer { classOfKey in
                                    classOfItem.withUnsafeMutableBufferPointer { classOfItem in
                                        var base = 0
                                        for item in 0..<items {
                                            var key: UInt64 = 0
                                            for column in 0..<q {
                                                key &+= UInt64(flat[offsets[column] &+ Int(input[base &+ column])]) &* multipliers[column]
                                            }
                                            var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
                                            while keys[slot] != key && keys[slot] != Self.empty { slot = (slot &+ 1) & mask }
                                            let id: Int32
                                            if keys[slot] == Self.empty {
                                                keys[slot] = key
                                                id = Int32(sizes.count)
                                                classOfKey[slot] = id
                                                filled.append(Int32(slot))
                                                sizes.append(weights[item])
                                                for column in 0..<q {
                                                    newClasses.append(flat[offsets[column] &+ Int(input[base &+ column])])
                                                }
                                            } else {
                                                id = classOfKey[slot]
                                                sizes[Int(id)] &+= weights[item]
                                            }
                                            classOfItem[item] = id
                                            base &+= q
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        classCodes = newClasses
        self.sizes = sizes
        self.filled = filled
    }

    /// Size in subjects of a class of the last evaluation.
    func size(ofClass id: Int32) -> Int { Int(sizes[Int(id)]) }

    /// Number of classes of the last evaluation (numbered from 0).
    var classCount: Int { sizes.count }

    /// Class sizes are sums of per-cell subject counts; a subject with records in several cells of
    /// one class was counted once per cell, and is now counted once. Writes each spanning
    /// subject's distinct classes, in ascending order, to `distinctClasses`.
    private func countSpanningSubjectsOnce() {
        let subjects = table.spanningSubjects.count
        guard subjects > 0 else { return }
        // The subjects in two halves, one per core: each reads its subjects' classes, writes their
        // distinct classes (to its own entries) and lists the class sizes to correct; the
        // corrections are applied afterwards, so the outcome is the same as in one pass.
        let parts = subjects >= parallelFrom ? 2 : 1
        let starts = table.spanningSubjects.starts
        // Per part, per class: how many of its subjects' repeated entries fell into the class.
        let classes = sizes.count
        if repeats.count < parts * classes { repeats = [Int32](repeating: 0, count: parts * classes) }
        classOfEntry.withUnsafeBufferPointer { classesBuffer in
            distinctClasses.withUnsafeMutableBufferPointer { distinctBuffer in
                distinctCount.withUnsafeMutableBufferPointer { countBuffer in
                    repeats.withUnsafeMutableBufferPointer { repeatsBuffer in
                        starts.withUnsafeBufferPointer { startsBuffer in
                            // Each part writes only its own subjects' entries and counts, and its own row of repeats.
                            let shared = SpanningBuffers(classes: classesBuffer, starts: startsBuffer, distinct: distinctBuffer, counts: countBuffer,
                                                         repeats: repeatsBuffer)
                            DispatchQueue.concurrentPerform(iterations: parts) { part in
                                shared.sortAndCount(subjects: (subjects * part / parts)..<(subjects * (part + 1) / parts),
                                                    repeats: part * classes)
                            }
                        }
                    }
                }
            }
        }
        sizes.withUnsafeMutableBufferPointer { sizes in
            repeats.withUnsafeMutableBufferPointer { repeats in
                for part in 0..<parts {
                    for id in 0..<classes where repeats[part * classes + id] != 0 {
                        sizes[id] &-= repeats[part * classes + id]
                        repeats[part * classes + id] = 0
                    }
                }
            }
        }
    }

    /// Scratch of ``countSpanningSubjectsOnce()``, left zero between calls.
    private var repeats: [Int32] = []

    /// Spanning subjects from which their classes are found on two cores.
    var parallelFrom = 4_096

    /// l-diversity per class, each sensitive value weighted by the distinct subjects holding it.
    private func classDiversity(_ diversity: DiversityRequirement) -> [Bool] {
        let mask = pairKeys.count - 1
        func pairSlot(_ key: UInt64) -> Int {
            var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
            while pairKeys[slot] != key && pairKeys[slot] != Self.empty { slot = (slot + 1) & mask }
            return slot
        }
        for cell in 0..<table.cellCount.count {
            let key = UInt64(UInt32(bitPattern: classOfCell[cell])) << 32 | UInt64(table.cellSensitive[cell])
            let slot = pairSlot(key)
            if pairKeys[slot] == Self.empty {
                pairKeys[slot] = key
                pairUsed.append(Int32(slot))
            }
            pairCounts[slot] += table.cellSubjects[cell]
        }
        // A subject holding one value in several cells of a class counts once for it.
        var seen: [UInt64] = []
        for subject in 0..<table.spanningSubjects.count {
            seen.removeAll(keepingCapacity: true)
            for cell in table.spanningSubjects[subject] {
                let key = UInt64(UInt32(bitPattern: classOfCell[Int(cell)])) << 32 | UInt64(table.cellSensitive[Int(cell)])
                if seen.contains(key) { pairCounts[pairSlot(key)] -= 1 } else { seen.append(key) }
            }
        }
        let classes = sizes.count
        var distinct = [Int](repeating: 0, count: classes)
        var plogp = [Double](repeating: 0, count: classes)
        var weight = [Double](repeating: 0, count: classes)
        for slot in pairUsed {
            let id = Int(Int32(truncatingIfNeeded: pairKeys[Int(slot)] >> 32))
            let count = Double(pairCounts[Int(slot)])
            distinct[id] += 1
            plogp[id] += count * log(count)
            weight[id] += count
        }
        return (0..<classes).map { id in
            switch diversity {
            case .distinct(let l):
                return distinct[id] >= l
            case .entropy(let l):
                let n = weight[id]
                let entropy = n > 0 ? log(n) - plogp[id] / n : 0
                return distinct[id] >= l && entropy >= log(Double(l)) + DiversityRequirement.entropyMargin
            }
        }
    }

    private func reset() {
        if filled.count > capacity / 8 {
            keys.withUnsafeMutableBufferPointer { $0.update(repeating: Self.empty) }
        } else {
            for slot in filled { keys[Int(slot)] = Self.empty }
        }
        filled.removeAll(keepingCapacity: true)
        sizes.removeAll(keepingCapacity: true)
        classCodes.removeAll(keepingCapacity: true)
        for slot in pairUsed {
            pairKeys[Int(slot)] = Self.empty
            pairCounts[Int(slot)] = 0
        }
        pairUsed.removeAll(keepingCapacity: true)
    }
}

/// What ``ClassEvaluator``'s per-subject pass reads and writes; workers take disjoint subjects.
private struct SpanningBuffers: @unchecked Sendable {
    let classes: UnsafeBufferPointer<Int32>
    let starts: UnsafeBufferPointer<Int>
    let distinct: UnsafeMutableBufferPointer<Int32>
    let counts: UnsafeMutableBufferPointer<Int32>
    let repeats: UnsafeMutableBufferPointer<Int32>

    /// Writes each subject's distinct classes in ascending order from its first entry on, and
    /// their number; counts every repeated class in `repeats` from `offset` on.
    func sortAndCount(subjects: Range<Int>, repeats offset: Int) {
        for subject in subjects {
            let start = starts[subject], end = starts[subject + 1]
            var count = 0
            for entry in start..<end {
                let id = classes[entry]
                // Insertion into the subject's short sorted list of classes.
                var position = start + count
                while position > start && distinct[position - 1] > id {
                    distinct[position] = distinct[position - 1]
                    position -= 1
                }
                if position > start && distinct[position - 1] == id {
                    // Already listed: undo the shift and count the repeat.
                    while position < start + count {
                        distinct[position] = distinct[position + 1]
                        position += 1
                    }
                    repeats[offset + Int(id)] &+= 1
                    continue
                }
                distinct[position] = id
                count += 1
            }
            counts[subject] = Int32(count)
        }
    }
}
