import Foundation

/// Groups weighted cells into equivalence classes for one generalization and
/// decides which classes meet k (and l), counting distinct subjects: the inner
/// loop of every search. Classes are numbered densely (in the order they are
/// found, or partition by partition when there are many); the tables that
/// number them are reused across evaluations.
final class ClassEvaluator {
    let table: EncodedTable
    let requirements: AnonymityRequirements
    /// The open-addressing table of groupings of few classes: a generalized tuple's key and its class number.
    private var keys: [UInt64] = []
    private var classOfKey: [Int32] = []
    /// Positions of `keys` filled by the last evaluation (to empty them again).
    private var filled: [Int32] = []
    /// Per class of the last evaluation: its size in subjects.
    private var sizes: [Int32] = []
    private var pairKeys: [UInt64]
    private var pairCounts: [Int32]
    private var pairUsed: [Int32] = []
    /// Per cell, its class in the last evaluation that started from the cells.
    private(set) var classOfCell: [Int32]
    /// Per class, whether it was kept (meets k and l) in the last evaluation (empty if it stopped early).
    private(set) var kept: [Bool] = []
    private static let empty = UInt64.max
    /// An empty slot of the grouping tables.
    static let emptyKey = empty

    init(table: EncodedTable, requirements: AnonymityRequirements) {
        self.table = table
        self.requirements = requirements
        var capacity = 1024
        while capacity < table.cellCount.count * 2 { capacity <<= 1 }
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
        /// Sum of the sizes (in subjects) of all classes: each subject counted once per class it
        /// has records in (0 when the evaluation stopped before counting them).
        var subjectsInClasses = 0
        /// False when the evaluation stopped early because more than its limit would certainly be
        /// suppressed: `suppressed` is then a lower bound above the limit, and the kept classes may not be counted.
        var complete = true
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
    /// The key of each class of the last evaluation, in class order.
    private var classKeys: [UInt64] = []

    /// Drops the stored classes (so that every search starts from the cells).
    func forgetSnapshots() {
        snapshots.removeAll()
        snapshotClasses = 0
    }

    /// Evaluations rolled up from stored classes rather than grouped from the cells.
    private(set) var rolledUp = 0

    /// Evaluates the full-domain generalization at `levels`. Unless `fromCells` is set (needed when
    /// the release must know each cell's class), it starts from the smallest stored set of classes
    /// that the new generalization coarsens. With `stopAbove`, an evaluation that finds more than
    /// that many subjects certainly suppressed stops there (an incomplete outcome).
    func evaluate(levels: [Int], fromCells: Bool = false, stopAbove limit: Int? = nil) throws -> Outcome {
        guard let multipliers = multipliers(levels) else {
            throw PrivacyError(.invalidParameter, "too many distinct quasi-identifier combinations for the optimal search; use --algorithm mondrian")
        }
        let q = levels.count
        // Distinct generalized tuples possible: a bound on the classes.
        let keySpace = (multipliers.last ?? 1) &* UInt64(max(table.domainSizes(levels).last ?? 1, 1))
        // Each label of a column whose records' subjects sum to fewer than k holds at least one
        // class that fails (its classes lie within the label): with more such labels in one column
        // than the limit, the generalization fails without grouping a record.
        if let limit, decidesByLabels, requirements.diversity == nil {
            let failing = levels.enumerated().map { failingLabels(column: $0.offset, level: $0.element) }.max() ?? 0
            if failing > limit {
                kept = []
                labelBoundStops += 1
                return Outcome(suppressed: failing, classes: Int(min(UInt64(table.cellCount.count), keySpace)), keptClasses: 0, complete: false)
            }
        }
        reset()
        // Where each spanning entry's class is found: the classes of the items grouped, and each entry's item.
        let entryClasses: (classOfItem: [Int32], itemOfEntry: [Int32])
        let canRollUp = !fromCells && requirements.diversity == nil
        let source = canRollUp ? snapshots.filter { snapshot in
            zip(snapshot.levels, levels).allSatisfy { $0 <= $1 }
        }.min { $0.sizes.count < $1.sizes.count } : nil
        if let source, source.sizes.count < table.cellCount.count {
            group(input: source.codes, tables: (0..<q).map { table.rollup[$0][source.levels[$0]][levels[$0]] },
                  multipliers: multipliers, keySpace: keySpace, weights: source.sizes, classOfItem: &classOfItem)
            // Each spanning entry's class follows from its class in the source: one look-up, no hashing.
            entryClasses = (classOfItem, source.entryClasses)
            rolledUp += 1
        } else {
            group(input: table.cellLeaves, tables: (0..<q).map { table.codes[$0][levels[$0]] },
                  multipliers: multipliers, keySpace: keySpace, weights: table.cellSubjects, classOfItem: &classOfCell)
            entryClasses = (classOfCell, table.spanningSubjects.items)
        }
        // Stored before the per-subject correction (sums of cell weights roll up, the correction
        // does not), and only when much smaller than the cells: all snapshots together hold at most
        // as many classes as there are cells. Each also keeps the class of every spanning entry
        // (4 bytes per record of a subject with several records), so at most `snapshotLimit` of those.
        let cells = table.cellCount.count
        let classes = sizes.count
        let storing = canRollUp && classes * Self.snapshotShare <= cells
        // A class whose records' subjects sum to fewer than k fails whatever the correction below,
        // and suppresses at least one subject: with more such classes than the limit, nothing
        // the rest finds can make the generalization acceptable.
        if let limit, !storing, requirements.diversity == nil {
            let k = Int32(requirements.k)
            let failing = sizes.withUnsafeBufferPointer { sizes in sizes.reduce(0) { $0 + ($1 < k ? 1 : 0) } }
            if failing > limit {
                kept = []
                return Outcome(suppressed: failing, classes: classes, keptClasses: 0, complete: false)
            }
        }
        let summedSizes = storing ? sizes : []
        countSpanningSubjectsOnce(classOfItem: entryClasses.classOfItem, itemOfEntry: entryClasses.itemOfEntry, writeClasses: storing)
        if storing {
            while snapshots.count == Self.snapshotLimit || (!snapshots.isEmpty && snapshotClasses + classes > cells) {
                snapshotClasses -= snapshots.removeFirst().sizes.count
            }
            snapshots.append(Snapshot(levels: levels, codes: codes(ofClassKeys: classKeys, levels: levels, multipliers: multipliers),
                                      sizes: summedSizes, entryClasses: classOfEntry))
            snapshotClasses += classes
        }
        var diversityOK: [Bool] = []
        if let diversity = requirements.diversity {
            diversityOK = classDiversity(diversity)
        }
        var outcome = Outcome(suppressed: 0, classes: classes, keptClasses: 0)
        let k = Int32(requirements.k)
        kept = [Bool](repeating: false, count: classes)
        var suppressed = 0, keptClasses = 0, subjectsInClasses = 0
        var squares = 0.0
        sizes.withUnsafeBufferPointer { sizes in
            kept.withUnsafeMutableBufferPointer { kept in
                for id in 0..<classes {
                    let size = sizes[id]
                    subjectsInClasses += Int(size)
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
        outcome.subjectsInClasses = subjectsInClasses
        if linksSubjects {
            let linked = linkedSubjectsBelowK(after: suppressed, stopAbove: limit)
            outcome.suppressed += linked.suppressed
            outcome.complete = linked.complete
        }
        return outcome
    }

    /// Whether an evaluation with a limit first asks ``failingLabels(column:level:)`` (turned off
    /// only to show that the search finds the same generalization without it).
    var decidesByLabels = true
    /// Evaluations decided by ``failingLabels(column:level:)`` alone.
    private(set) var labelBoundStops = 0

    /// Per column, per level: the labels whose records' subjects, summed cell by cell, are fewer
    /// than k (computed for a column when first asked).
    private var failingLabelCounts: [[Int]?] = []

    /// The labels of `column` at `level` whose cells' subject counts sum to fewer than k. Every
    /// class of a generalization at this level lies within one label and weighs at most the sum
    /// of its cells, so each of these labels holds at least one class below k.
    func failingLabels(column: Int, level: Int) -> Int {
        if failingLabelCounts.isEmpty { failingLabelCounts = Array(repeating: nil, count: table.quasiIdentifiers.count) }
        if let counts = failingLabelCounts[column] { return counts[level] }
        let q = table.quasiIdentifiers.count
        var leafWeights = [Int](repeating: 0, count: table.codes[column][0].count)
        table.cellLeaves.withUnsafeBufferPointer { leaves in
            table.cellSubjects.withUnsafeBufferPointer { subjects in
                for cell in 0..<subjects.count { leafWeights[Int(leaves[cell &* q &+ column])] &+= Int(subjects[cell]) }
            }
        }
        let k = requirements.k
        let counts = table.codes[column].enumerated().map { level, labelOfLeaf in
            var labelWeights = [Int](repeating: 0, count: table.labels[column][level].count)
            for (leaf, weight) in leafWeights.enumerated() { labelWeights[Int(labelOfLeaf[leaf])] &+= weight }
            return labelWeights.reduce(0) { $0 + ($1 < k ? 1 : 0) }
        }
        failingLabelCounts[column] = counts
        return counts[level]
    }

    /// Whether the released table carries the subject's pseudonym, which links a subject's records across classes.
    private var linksSubjects: Bool { requirements.subject.map { requirements.linking.contains($0) } ?? false }

    /// With the subject linked, the subjects whose records fall into exactly the same classes must
    /// number at least k (docs/privacy.md). Counts the subjects of kept classes that would be
    /// suppressed for it: those whose set of classes is shared by fewer than k subjects.
    /// Sets of classes are counted in an open-addressing table of representatives, found by the
    /// sets' hashes and compared element by element (exact, whatever the hash), with no
    /// allocation per subject. With `limit`, the count stops once `earlier` subjects suppressed
    /// plus those found exceed it (`complete` false: the count found so far is a lower bound).
    private func linkedSubjectsBelowK(after earlier: Int, stopAbove limit: Int?) -> (suppressed: Int, complete: Bool) {
        let subjects = table.spanningSubjects.count
        guard subjects > 0 else { return (0, true) }
        let classes = sizes.count
        let k = requirements.k
        var suppressed = 0
        sizes.withUnsafeBufferPointer { sizes in
            linkedInto.withUnsafeBufferPointer { linkedInto in
                kept.withUnsafeBufferPointer { kept in
                    for id in 0..<classes where linkedInto[id] > 0 && kept[id] {
                        let alone = Int(sizes[id]) - Int(linkedInto[id])
                        if alone > 0 && alone < k { suppressed += alone }
                    }
                }
            }
        }
        func over() -> Bool { limit.map { earlier + suppressed > $0 } ?? false }
        if over() { return (suppressed, false) }
        // Subjects are split into slices by their set's hash: equal sets have equal hashes, so a
        // slice holds whole groups and what it finds suppressed is final. Slices are counted two
        // at a time, one per core, each core in its own table sized for its slice (small enough
        // to stay in the cache), and the count stops after the slices that take it over the limit.
        let slices = subjects >= parallelFrom ? Self.linkedSlices : 1
        let parts = min(slices, 2)
        // Each core buckets half the subjects, in its own part of `sliceOrder` (from its first
        // subject on) with its own starts: a slice is the first half's bucket, then the second's.
        let width = slices + 1
        if sliceStarts.count != parts * width { sliceStarts = [Int](repeating: 0, count: parts * width) }
        if sliceOrder.count != subjects { sliceOrder = [Int32](repeating: 0, count: subjects) }
        let shift = UInt64(64 - slices.trailingZeroBitCount)
        distinctCount.withUnsafeBufferPointer { counts in
            setHashes.withUnsafeBufferPointer { hashes in
                sliceStarts.withUnsafeMutableBufferPointer { starts in
                    sliceOrder.withUnsafeMutableBufferPointer { order in
                        let buckets = SliceBuckets(counts: counts, hashes: hashes, starts: starts, order: order)
                        DispatchQueue.concurrentPerform(iterations: parts) { part in
                            buckets.fill(subjects: (subjects * part / parts)..<(subjects * (part + 1) / parts), part: part,
                                         slices: slices, shift: shift)
                        }
                    }
                }
            }
        }
        var largest = 0
        for slice in 0..<slices {
            largest = max(largest, (0..<parts).reduce(0) { $0 + sliceStarts[$1 * width + slice + 1] - sliceStarts[$1 * width + slice] })
        }
        var tableSize = 16
        while tableSize <= largest * 2 { tableSize <<= 1 }
        if signatureSlots.count < parts * tableSize {
            signatureSlots = [SignatureSlot](repeating: SignatureSlot(), count: parts * tableSize)
        }
        let found = UnsafeMutableBufferPointer<Int>.allocate(capacity: parts)
        defer { found.deallocate() }
        var complete = true
        table.spanningSubjects.starts.withUnsafeBufferPointer { starts in
            distinctClasses.withUnsafeMutableBufferPointer { distinct in
                distinctCount.withUnsafeBufferPointer { counts in
                    setHashes.withUnsafeBufferPointer { hashes in
                        signatureSlots.withUnsafeMutableBufferPointer { slots in
                            kept.withUnsafeBufferPointer { kept in
                                sliceOrder.withUnsafeBufferPointer { order in
                                    sliceStarts.withUnsafeBufferPointer { sliceStarts in
                                        let groups = SubjectGroups(starts: starts, distinct: distinct, counts: counts, hashes: hashes, kept: kept,
                                                                   slots: slots, found: found, sliceOrder: order, sliceStarts: sliceStarts,
                                                                   bucketParts: parts)
                                        let size = tableSize
                                        for first in stride(from: 0, to: slices, by: parts) {
                                            let round = min(parts, slices - first)
                                            DispatchQueue.concurrentPerform(iterations: round) { part in
                                                groups.suppressedBelow(k: k, slice: first + part, part: part, tableSize: size)
                                            }
                                            for part in 0..<round { suppressed += found[part] }
                                            if over() && first + round < slices {
                                                complete = false
                                                stoppedBeforeLastSlice += 1
                                                break
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (suppressed, complete)
    }

    /// Slices of the subjects of several classes counted in turn by ``linkedSubjectsBelowK(after:stopAbove:)``.
    static let linkedSlices = 32
    /// Evaluations whose count of linked subjects stopped at the limit before its last slice.
    private(set) var stoppedBeforeLastSlice = 0
    /// The subjects of several classes, slice by slice in each of two parts, and where each part's slice starts (scratch).
    private var sliceOrder: [Int32] = []
    private var sliceStarts: [Int] = []

    /// Scratch table of ``linkedSubjectsBelowK(after:stopAbove:)``, left empty between calls.
    private var signatureSlots: [SignatureSlot] = []

    /// Per entry of the spanning subjects' cell lists, its cell's class (last evaluation).
    private var classOfEntry: [Int32]
    /// Per spanning subject, its distinct classes in ascending order, written from the subject's
    /// first entry on (`distinctCount` of them), how many there are, and a hash of the set.
    private var distinctClasses: [Int32]
    private var distinctCount: [Int32]
    private var setHashes: [UInt64] = []
    /// Per class of the last evaluation: the subjects of several classes that have records in it
    /// (when the subject is linked).
    private var linkedInto: [Int32] = []
    /// Per item of the last roll-up (a class of the source snapshot), its class.
    private var classOfItem: [Int32] = []

    /// Groups items by their generalized codes, adding their weights, and writes each item's class
    /// to `classOfItem`. `input` holds one code per column per item; `tables[column]` maps it to
    /// the target level's code. Each item's codes become one 64-bit key (`multipliers`); when more
    /// than `partitionFrom` classes are possible, the keys are numbered in partitions on two cores
    /// (``PartitionedGrouping``), otherwise in one table sized for the classes possible, which
    /// keeps grouping a few classes within the cache.
    private func group(input: [UInt32], tables: [[UInt32]], multipliers: [UInt64], keySpace: UInt64, weights: [Int32], classOfItem: inout [Int32]) {
        let q = tables.count
        var offsets: [Int] = []
        var flat: [UInt32] = []
        for table in tables {
            offsets.append(flat.count)
            flat += table
        }
        let items = weights.count
        if classOfItem.count < items { classOfItem = [Int32](repeating: 0, count: items) }
        let bound = min(UInt64(items), keySpace)
        if bound >= UInt64(partitionFrom) {
            if itemKeys.count < items { itemKeys = [UInt64](repeating: 0, count: items) }
            flat.withUnsafeBufferPointer { flat in
                offsets.withUnsafeBufferPointer { offsets in
                    multipliers.withUnsafeBufferPointer { multipliers in
                        input.withUnsafeBufferPointer { input in
                            itemKeys.withUnsafeMutableBufferPointer { itemKeys in
                                let shared = KeyBuffers(keysOf: ItemKeys(flat: flat, offsets: offsets, multipliers: multipliers, input: input), keys: itemKeys)
                                DispatchQueue.concurrentPerform(iterations: 2) { half in
                                    shared.computeKeys(items: (items * half / 2)..<(items * (half + 1) / 2))
                                }
                            }
                        }
                    }
                }
            }
            let numbered = itemKeys.withUnsafeBufferPointer { keys in
                weights.withUnsafeBufferPointer { weights in
                    classOfItem.withUnsafeMutableBufferPointer { classOfItem in
                        grouping.number(keys: UnsafeBufferPointer(rebasing: keys[0..<items]), weights: weights,
                                        numberOfItem: UnsafeMutableBufferPointer(rebasing: classOfItem[0..<items]))
                    }
                }
            }
            classKeys = numbered.keys
            sizes = numbered.sizes
            filled = []
            return
        }
        // No more classes than items or than distinct keys: the table is at most half full.
        var tableSize = 1024
        while UInt64(tableSize) < bound * 2 { tableSize <<= 1 }
        let halves = items >= halvedGroupingFrom ? 2 : 1
        if keys.count < tableSize {
            keys = [UInt64](repeating: Self.empty, count: tableSize)
            classOfKey = [Int32](repeating: 0, count: tableSize)
        }
        if halves == 2 && secondKeys.count < tableSize {
            secondKeys = [UInt64](repeating: Self.empty, count: tableSize)
            secondClassOfKey = [Int32](repeating: 0, count: tableSize)
        }
        // Each half of the items numbered in its own table (the second half on the other core);
        // the second half's classes then take the first half's numbers, or the next ones in the
        // order found: the numbers of one pass over all the items.
        let numbered = (0..<halves).map { _ in NumberedHalf() }
        flat.withUnsafeBufferPointer { flat in
            offsets.withUnsafeBufferPointer { offsets in
                multipliers.withUnsafeBufferPointer { multipliers in
                    input.withUnsafeBufferPointer { input in
                        weights.withUnsafeBufferPointer { weights in
                            keys.withUnsafeMutableBufferPointer { keys in
                                classOfKey.withUnsafeMutableBufferPointer { classOfKey in
                                    secondKeys.withUnsafeMutableBufferPointer { secondKeys in
                                        secondClassOfKey.withUnsafeMutableBufferPointer { secondClassOfKey in
                                            classOfItem.withUnsafeMutableBufferPointer { classOfItem in
                                                let shared = GroupingBuffers(keysOf: ItemKeys(flat: flat, offsets: offsets, multipliers: multipliers, input: input), weights: weights,
                                                                             tables: [(keys, classOfKey), (secondKeys, secondClassOfKey)], classOfItem: classOfItem)
                                                let mask = tableSize - 1
                                                DispatchQueue.concurrentPerform(iterations: halves) { half in
                                                    numbered[half].value = shared.number(items: (items * half / halves)..<(items * (half + 1) / halves),
                                                                                         table: half, mask: mask, columns: q)
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        var newKeys = numbered[0].value.keys, sizes = numbered[0].value.sizes
        if halves == 2 {
            let second = numbered[1].value
            let mask = tableSize - 1
            var renumbered = [Int32](repeating: 0, count: second.keys.count)
            for (local, key) in second.keys.enumerated() {
                var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
                while keys[slot] != key && keys[slot] != Self.empty { slot = (slot &+ 1) & mask }
                if keys[slot] == key {
                    renumbered[local] = classOfKey[slot]
                    sizes[Int(classOfKey[slot])] &+= second.sizes[local]
                } else {
                    renumbered[local] = Int32(newKeys.count)
                    newKeys.append(key)
                    sizes.append(second.sizes[local])
                }
            }
            for item in (items / 2)..<items { classOfItem[item] = renumbered[Int(classOfItem[item])] }
            for slot in second.filled { secondKeys[Int(slot)] = Self.empty }
        }
        classKeys = newKeys
        self.sizes = sizes
        self.filled = numbered[0].value.filled
    }

    /// Items from which a grouping into few classes is done in two halves, one per core.
    var halvedGroupingFrom = 65_536
    /// The second half's table (empty between groupings).
    private var secondKeys: [UInt64] = []
    private var secondClassOfKey: [Int32] = []

    /// Classes possible from which grouping is partitioned and spread over two cores.
    var partitionFrom = 32_768
    private let grouping = PartitionedGrouping()
    /// Scratch of ``group(input:tables:multipliers:keySpace:weights:classOfItem:)``: each item's key.
    private var itemKeys: [UInt64] = []

    /// Each class's label codes (one per column, in class order), decoded from its key.
    private func codes(ofClassKeys keys: [UInt64], levels: [Int], multipliers: [UInt64]) -> [UInt32] {
        let domains = table.domainSizes(levels).map { UInt64(max($0, 1)) }
        var codes: [UInt32] = []
        codes.reserveCapacity(keys.count * levels.count)
        for key in keys {
            for column in levels.indices {
                codes.append(UInt32(truncatingIfNeeded: key / multipliers[column] % domains[column]))
            }
        }
        return codes
    }

    /// Size in subjects of a class of the last evaluation.
    func size(ofClass id: Int32) -> Int { Int(sizes[Int(id)]) }

    /// Number of classes of the last evaluation (numbered from 0).
    var classCount: Int { sizes.count }

    /// Class sizes are sums of per-cell subject counts; a subject with records in several cells of
    /// one class was counted once per cell, and is now counted once. Writes each spanning entry's
    /// class (`classOfItem` of its item) to `classOfEntry` when `writeClasses`, each spanning
    /// subject's distinct classes to `distinctClasses` with the hash of their set, and (when the
    /// subject is linked) counts per class the subjects of several classes in it, in `linkedInto`.
    private func countSpanningSubjectsOnce(classOfItem: [Int32], itemOfEntry: [Int32], writeClasses: Bool) {
        let subjects = table.spanningSubjects.count
        guard subjects > 0 else { return }
        // The subjects in two halves, one per core: each reads its subjects' classes, writes their
        // distinct classes (to its own entries) and counts per class in its own table; the counts
        // are applied afterwards, so the outcome is the same as in one pass.
        let parts = subjects >= parallelFrom ? 2 : 1
        let classes = sizes.count
        if setHashes.count != subjects { setHashes = [UInt64](repeating: 0, count: subjects) }
        while classTallies.count < parts { classTallies.append([]) }
        for part in 0..<parts where classTallies[part].count < classes * ClassTally.width {
            classTallies[part] = [Int32](repeating: 0, count: classes * ClassTally.width)
        }
        // Each part's tallies are reached through its own buffer (the arrays stay where they are while both parts run).
        var tallies: [UnsafeMutableBufferPointer<Int32>] = []
        for part in 0..<parts {
            classTallies[part].withUnsafeMutableBufferPointer { tallies.append($0) }
        }
        // The entries' classes are written only for a snapshot: otherwise the array (which the last
        // snapshot may share) is left untouched, not copied. Every entry is written, so a snapshot's
        // array is replaced by a new one rather than copied before it is overwritten.
        if writeClasses {
            let entries = classOfEntry.count
            classOfEntry = [Int32](unsafeUninitializedCapacity: entries) { _, initialized in initialized = entries }
        }
        var noClasses: [Int32] = []
        func entryClasses<T>(_ body: (UnsafeMutableBufferPointer<Int32>) -> T) -> T {
            writeClasses ? classOfEntry.withUnsafeMutableBufferPointer { body($0) } : noClasses.withUnsafeMutableBufferPointer { body($0) }
        }
        entryClasses { classesBuffer in
            classOfItem.withUnsafeBufferPointer { classOfItem in
                itemOfEntry.withUnsafeBufferPointer { itemOfEntry in
                    distinctClasses.withUnsafeMutableBufferPointer { distinctBuffer in
                        distinctCount.withUnsafeMutableBufferPointer { countBuffer in
                            table.spanningSubjects.starts.withUnsafeBufferPointer { startsBuffer in
                                setHashes.withUnsafeMutableBufferPointer { hashesBuffer in
                                    // Each part writes only its own subjects' entries, counts and hashes, and its own tallies.
                                    let shared = SpanningBuffers(classOfItem: classOfItem, itemOfEntry: itemOfEntry, classes: classesBuffer, starts: startsBuffer,
                                                                 distinct: distinctBuffer, counts: countBuffer, hashes: hashesBuffer, tallies: tallies)
                                    DispatchQueue.concurrentPerform(iterations: parts) { part in
                                        shared.countDistinct(subjects: (subjects * part / parts)..<(subjects * (part + 1) / parts),
                                                             part: part, classCount: classes, writeClasses: writeClasses)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let linking = linksSubjects
        if linking && linkedInto.count < classes { linkedInto = [Int32](repeating: 0, count: classes) }
        sizes.withUnsafeMutableBufferPointer { sizes in
            linkedInto.withUnsafeMutableBufferPointer { linkedInto in
                for id in 0..<classes {
                    var repeated: Int32 = 0, linked: Int32 = 0
                    for part in 0..<parts {
                        repeated &+= tallies[part][id * ClassTally.width + ClassTally.repeats]
                        linked &+= tallies[part][id * ClassTally.width + ClassTally.linked]
                    }
                    sizes[id] &-= repeated
                    if linking { linkedInto[id] = linked }
                }
            }
        }
    }

    /// Per part of the per-subject pass, per class: its ``ClassTally`` (scratch, reset by each pass).
    private var classTallies: [[Int32]] = []

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
        if filled.count > keys.count / 8 {
            keys.withUnsafeMutableBufferPointer { $0.update(repeating: Self.empty) }
        } else {
            for slot in filled { keys[Int(slot)] = Self.empty }
        }
        filled.removeAll(keepingCapacity: true)
        sizes.removeAll(keepingCapacity: true)
        classKeys.removeAll(keepingCapacity: true)
        for slot in pairUsed {
            pairKeys[Int(slot)] = Self.empty
            pairCounts[Int(slot)] = 0
        }
        pairUsed.removeAll(keepingCapacity: true)
    }
}

/// One half's classes: their keys and sizes in the order found, and the table slots it filled.
private final class NumberedHalf: @unchecked Sendable {
    var value: (keys: [UInt64], sizes: [Int32], filled: [Int32]) = ([], [], [])
}

/// What ``ClassEvaluator`` reads to group items into few classes on two cores, each half of the
/// items in its own table, and the classes it writes.
private struct GroupingBuffers: @unchecked Sendable {
    let keysOf: ItemKeys
    let weights: UnsafeBufferPointer<Int32>
    let tables: [(keys: UnsafeMutableBufferPointer<UInt64>, classes: UnsafeMutableBufferPointer<Int32>)]
    let classOfItem: UnsafeMutableBufferPointer<Int32>

    /// Numbers the classes of `items` in table `table` (0, 1, … in the order found), writing each item's class.
    func number(items: Range<Int>, table: Int, mask: Int, columns q: Int) -> (keys: [UInt64], sizes: [Int32], filled: [Int32]) {
        let keys = tables[table].keys, classOfKey = tables[table].classes
        var newKeys: [UInt64] = [], sizes: [Int32] = [], filled: [Int32] = []
        var base = items.lowerBound &* q
        for item in items {
            let key = keysOf.key(at: base, columns: q)
            var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
            while keys[slot] != key && keys[slot] != ClassEvaluator.emptyKey { slot = (slot &+ 1) & mask }
            let id: Int32
            if keys[slot] == ClassEvaluator.emptyKey {
                keys[slot] = key
                id = Int32(sizes.count)
                classOfKey[slot] = id
                filled.append(Int32(slot))
                sizes.append(weights[item])
                newKeys.append(key)
            } else {
                id = classOfKey[slot]
                sizes[Int(id)] &+= weights[item]
            }
            classOfItem[item] = id
            base &+= q
        }
        return (newKeys, sizes, filled)
    }
}

/// What an item's key is made from: each column's code per item (`q` per item), each column's
/// table of target-level codes (one after another, from `offsets`), and the mixed-radix multipliers.
private struct ItemKeys {
    let flat: UnsafeBufferPointer<UInt32>
    let offsets: UnsafeBufferPointer<Int>
    let multipliers: UnsafeBufferPointer<UInt64>
    let input: UnsafeBufferPointer<UInt32>

    /// The key of the item whose codes start at `base`: its codes at the target levels in mixed radix.
    @inline(__always)
    func key(at base: Int, columns q: Int) -> UInt64 {
        var key: UInt64 = 0
        for column in 0..<q {
            key &+= UInt64(flat[offsets[column] &+ Int(input[base &+ column])]) &* multipliers[column]
        }
        return key
    }
}

/// What ``ClassEvaluator`` reads to compute items' keys on two cores, and the keys it writes.
private struct KeyBuffers: @unchecked Sendable {
    let keysOf: ItemKeys
    let keys: UnsafeMutableBufferPointer<UInt64>

    /// Writes each item's key.
    func computeKeys(items: Range<Int>) {
        let q = keysOf.multipliers.count
        var base = items.lowerBound * q
        for item in items {
            keys[item] = keysOf.key(at: base, columns: q)
            base &+= q
        }
    }
}

/// What the per-subject pass keeps per class, in one record of `width` counters: the last subject
/// seen in the class, the repeated entries of subjects already counted in it, and the subjects of
/// several classes with records in it.
private enum ClassTally {
    static let width = 3
    static let lastSubject = 0
    static let repeats = 1
    static let linked = 2
}

/// What ``ClassEvaluator``'s per-subject pass reads and writes; workers take disjoint subjects.
private struct SpanningBuffers: @unchecked Sendable {
    let classOfItem: UnsafeBufferPointer<Int32>
    let itemOfEntry: UnsafeBufferPointer<Int32>
    let classes: UnsafeMutableBufferPointer<Int32>
    let starts: UnsafeBufferPointer<Int>
    let distinct: UnsafeMutableBufferPointer<Int32>
    let counts: UnsafeMutableBufferPointer<Int32>
    let hashes: UnsafeMutableBufferPointer<UInt64>
    /// Per part, per class: a ``ClassTally``.
    let tallies: [UnsafeMutableBufferPointer<Int32>]

    /// Writes each entry's class (when `writeClasses`), each subject's distinct classes in
    /// ascending order from its first entry on, their number and the hash of their set, and fills
    /// the part's tallies.
    func countDistinct(subjects: Range<Int>, part: Int, classCount: Int, writeClasses: Bool) {
        let tally = tallies[part]
        for id in 0..<classCount {
            tally[id * ClassTally.width + ClassTally.lastSubject] = -1
            tally[id * ClassTally.width + ClassTally.repeats] = 0
            tally[id * ClassTally.width + ClassTally.linked] = 0
        }
        for subject in subjects {
            let start = starts[subject], end = starts[subject + 1]
            let marker = Int32(truncatingIfNeeded: subject)
            var count = 0
            var hash: UInt64 = 0
            for entry in start..<end {
                let id = classOfItem[Int(itemOfEntry[entry])]
                if writeClasses { classes[entry] = id }
                let record = Int(id) &* ClassTally.width
                let isNew = tally[record] != marker
                tally[record] = marker
                // Without branches: the class is written either way and kept only when new; every
                // count is one record, in one cache line.
                distinct[start + count] = id
                count &+= isNew ? 1 : 0
                hash &+= isNew ? spreadClassNumber(id) : 0
                tally[record + ClassTally.repeats] &+= isNew ? 0 : 1
                tally[record + ClassTally.linked] &+= isNew ? 1 : 0
            }
            counts[subject] = Int32(count)
            hashes[subject] = hash
            sortAscending(distinct, start..<(start + count))
            // A subject whose records all fell into one class links nothing.
            if count == 1 { tally[Int(distinct[start]) &* ClassTally.width + ClassTally.linked] &-= 1 }
        }
    }

}

/// Where ``ClassEvaluator``'s count of linked subjects finds each slice's subjects; each core
/// buckets its own subjects into its own part.
private struct SliceBuckets: @unchecked Sendable {
    let counts: UnsafeBufferPointer<Int32>
    let hashes: UnsafeBufferPointer<UInt64>
    let starts: UnsafeMutableBufferPointer<Int>
    let order: UnsafeMutableBufferPointer<Int32>

    /// Buckets `subjects` of several classes by their set's hash into `slices` (a counting sort),
    /// written from the first of `subjects` on, with the part's starts.
    func fill(subjects: Range<Int>, part: Int, slices: Int, shift: UInt64) {
        let base = part * (slices + 1)
        for slice in 0...slices { starts[base + slice] = 0 }
        // Only subjects of several classes link records.
        for subject in subjects where counts[subject] > 1 {
            starts[base + (slices == 1 ? 1 : Int(hashes[subject] >> shift) + 1)] += 1
        }
        starts[base] = subjects.lowerBound
        for slice in 0..<slices { starts[base + slice + 1] += starts[base + slice] }
        var next = Array(starts[base..<(base + slices)])
        for subject in subjects where counts[subject] > 1 {
            let slice = slices == 1 ? 0 : Int(hashes[subject] >> shift)
            order[next[slice]] = Int32(subject)
            next[slice] += 1
        }
    }
}

/// A slot of the table that groups subjects by their set of classes: the set's hash, the group's
/// first subject (-1 when empty) and how many subjects share the set, read in one access.
private struct SignatureSlot {
    var hash: UInt64 = 0
    var representative: Int32 = -1
    var members: Int32 = 0
}

/// What the count of linked subjects reads and writes; each core takes one slice of the subjects
/// at a time, in its own part of the table.
private struct SubjectGroups: @unchecked Sendable {
    let starts: UnsafeBufferPointer<Int>
    /// Per subject, from its first entry on: its distinct classes in ascending order.
    let distinct: UnsafeMutableBufferPointer<Int32>
    let counts: UnsafeBufferPointer<Int32>
    let hashes: UnsafeBufferPointer<UInt64>
    let kept: UnsafeBufferPointer<Bool>
    let slots: UnsafeMutableBufferPointer<SignatureSlot>
    /// Per part: the subjects it found suppressed.
    let found: UnsafeMutableBufferPointer<Int>
    /// The subjects of several classes, slice by slice in each bucketing part, and where each
    /// part's slice starts (`slices + 1` starts per part).
    let sliceOrder: UnsafeBufferPointer<Int32>
    let sliceStarts: UnsafeBufferPointer<Int>
    let bucketParts: Int

    /// Groups the subjects of `slice` by their set of classes in the part's table, and writes to
    /// `found` how many are in groups of fewer than k whose classes are all kept; leaves the
    /// part's table empty.
    func suppressedBelow(k: Int, slice: Int, part: Int, tableSize: Int) {
        let base = part * tableSize
        let mask = tableSize - 1
        var used: [Int32] = []
        let width = sliceStarts.count / bucketParts
        // The slice's subjects in each bucketing part's order, the parts one after the other.
        let members = (0..<bucketParts).lazy.flatMap { bucket in self.sliceStarts[bucket * width + slice]..<self.sliceStarts[bucket * width + slice + 1] }
        for member in members {
            let subject = Int(sliceOrder[member])
            let count = Int(counts[subject])
            let hash = hashes[subject]
            var position = Int(truncatingIfNeeded: (hash &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
            while true {
                let slot = slots[base + position]
                if slot.representative < 0 {
                    slots[base + position] = SignatureSlot(hash: hash, representative: Int32(subject), members: 0)
                    used.append(Int32(position))
                    break
                }
                if slot.hash == hash && sameClasses(subject, Int(slot.representative), count: count) { break }
                position = (position &+ 1) & mask
            }
            slots[base + position].members &+= 1
        }
        var suppressed = 0
        for position in used {
            let slot = slots[base + Int(position)]
            slots[base + Int(position)] = SignatureSlot()
            guard Int(slot.members) < k else { continue }
            let start = starts[Int(slot.representative)]
            if (start..<(start + Int(counts[Int(slot.representative)]))).allSatisfy({ kept[Int(distinct[$0])] }) { suppressed += Int(slot.members) }
        }
        found[part] = suppressed
    }

    /// Whether two subjects' sets of classes are equal: the first has `count` classes, both lists are sorted.
    private func sameClasses(_ one: Int, _ other: Int, count: Int) -> Bool {
        guard Int(counts[other]) == count else { return false }
        let first = starts[one], second = starts[other]
        for i in 0..<count where distinct[first + i] != distinct[second + i] { return false }
        return true
    }
}

/// A class number spread over 64 bits (SplitMix64's finalizer): summed over a set of classes, the
/// set's hash, whatever the order the classes come in.
@inline(__always)
func spreadClassNumber(_ id: Int32) -> UInt64 {
    var z = UInt64(UInt32(bitPattern: id)) &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// Sorts `range` of `buffer` in ascending order: two or three values by compare-exchanges
/// without branches (most lists; their order is random, so branches would mispredict), longer
/// lists by insertion (they are short).
private func sortAscending(_ buffer: UnsafeMutableBufferPointer<Int32>, _ range: Range<Int>) {
    let first = range.lowerBound
    switch range.count {
    case 0, 1:
        return
    case 2:
        let a = buffer[first], b = buffer[first + 1]
        buffer[first] = min(a, b)
        buffer[first + 1] = max(a, b)
    case 3:
        let a = buffer[first], b = buffer[first + 1], c = buffer[first + 2]
        let low = min(a, b), high = max(a, b)
        let top = max(high, c), middle = min(high, c)
        buffer[first] = min(low, middle)
        buffer[first + 1] = max(low, middle)
        buffer[first + 2] = top
    default:
        for i in (first + 1)..<range.upperBound {
            let value = buffer[i]
            var position = i
            while position > first && buffer[position - 1] > value {
                buffer[position] = buffer[position - 1]
                position -= 1
            }
            buffer[position] = value
        }
    }
}
