import Foundation

/// Groups weighted cells into equivalence classes for one generalization and
/// decides which classes meet k (and l), counting distinct subjects: the inner
/// loop of every search. Uses an open-addressing table reused across evaluations.
final class ClassEvaluator {
    let table: EncodedTable
    let requirements: AnonymityRequirements
    private var capacity: Int
    private var keys: [UInt64]
    private var sizes: [Int32]
    private var used: [Int32] = []
    private var pairKeys: [UInt64]
    private var pairCounts: [Int32]
    private var pairUsed: [Int32] = []
    /// Per cell, the class slot of the last evaluation.
    private(set) var slotOfCell: [Int32]
    /// Per slot, whether the class was kept (meets k and l) in the last evaluation.
    private(set) var kept: [Bool]
    private static let empty = UInt64.max

    init(table: EncodedTable, requirements: AnonymityRequirements) {
        self.table = table
        self.requirements = requirements
        var capacity = 1024
        while capacity < table.cellCount.count * 2 { capacity <<= 1 }
        self.capacity = capacity
        keys = [UInt64](repeating: Self.empty, count: capacity)
        sizes = [Int32](repeating: 0, count: capacity)
        kept = [Bool](repeating: false, count: capacity)
        let pairCapacity = requirements.diversity == nil ? 1 : capacity * 2
        pairKeys = [UInt64](repeating: Self.empty, count: pairCapacity)
        pairCounts = [Int32](repeating: 0, count: pairCapacity)
        slotOfCell = [Int32](repeating: 0, count: table.cellCount.count)
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
    }
    private var snapshots: [Snapshot] = []
    private var snapshotClasses = 0
    private static let snapshotLimit = 24
    /// A snapshot is kept when it has at most 1/snapshotShare as many classes as there are cells.
    private static let snapshotShare = 5
    /// Label codes (one per column) of each class created by the last evaluation, in creation order.
    private var classCodes: [UInt32] = []

    /// Drops the stored classes (so that every search starts from the cells).
    func forgetSnapshots() {
        snapshots.removeAll()
        snapshotClasses = 0
    }

    /// Evaluates the full-domain generalization at `levels`. Unless `fromCells` is set (needed when
    /// the release must know each cell's class), it starts from the smallest stored set of classes
    /// that the new generalization coarsens.
    func evaluate(levels: [Int], fromCells: Bool = false) throws -> Outcome {
        guard let multipliers = multipliers(levels) else {
            throw PrivacyError(.invalidParameter, "too many distinct quasi-identifier combinations for the optimal search; use --algorithm mondrian")
        }
        let q = levels.count
        reset()
        let canRollUp = !fromCells && requirements.diversity == nil
        let source = canRollUp ? snapshots.filter { snapshot in
            zip(snapshot.levels, levels).allSatisfy { $0 <= $1 }
        }.min { $0.sizes.count < $1.sizes.count } : nil
        if let source, source.sizes.count < table.cellCount.count {
            group(input: source.codes, tables: (0..<q).map { table.rollup[$0][source.levels[$0]][levels[$0]] },
                  multipliers: multipliers, weights: source.sizes, recordCells: false)
        } else {
            group(input: table.cellLeaves, tables: (0..<q).map { table.codes[$0][levels[$0]] },
                  multipliers: multipliers, weights: table.cellSubjects, recordCells: true)
        }
        // Stored before the per-subject correction (sums of cell weights roll up, the correction
        // does not), and only when much smaller than the cells: all snapshots together hold at most
        // as many classes as there are cells, so they never outweigh the table.
        let cells = table.cellCount.count
        if canRollUp, used.count * Self.snapshotShare <= cells {
            let classSizes = used.map { sizes[Int($0)] }
            while snapshots.count == Self.snapshotLimit || (!snapshots.isEmpty && snapshotClasses + used.count > cells) {
                snapshotClasses -= snapshots.removeFirst().sizes.count
            }
            snapshots.append(Snapshot(levels: levels, codes: classCodes, sizes: classSizes))
            snapshotClasses += used.count
        }
        countSpanningSubjectsOnce(levels: levels, multipliers: multipliers)
        var diversityOK: [Int32: Bool] = [:]
        if let diversity = requirements.diversity {
            diversityOK = classDiversity(diversity)
        }
        var outcome = Outcome(suppressed: 0, classes: used.count, keptClasses: 0)
        let k = Int32(requirements.k)
        for slot in used {
            let ok = sizes[Int(slot)] >= k && (requirements.diversity == nil || diversityOK[slot] == true)
            kept[Int(slot)] = ok
            if ok {
                outcome.keptClasses += 1
                outcome.keptSquares += Double(sizes[Int(slot)]) * Double(sizes[Int(slot)])
            } else {
                outcome.suppressed += Int(sizes[Int(slot)])
            }
        }
        if linksSubjects { outcome.suppressed += linkedSubjectsBelowK() }
        return outcome
    }

    /// Whether the released table carries the subject's pseudonym, which links a subject's records across classes.
    private var linksSubjects: Bool { requirements.subject.map { requirements.linking.contains($0) } ?? false }

    /// With the subject linked, the subjects whose records fall into exactly the same classes must
    /// number at least k (docs/privacy.md). Counts the subjects of kept classes that would be
    /// suppressed for it: those whose set of classes is shared by fewer than k subjects.
    /// Sets of classes are counted in an open-addressing table of representatives compared
    /// element by element (exact, whatever the hash), with no allocation per subject.
    private func linkedSubjectsBelowK() -> Int {
        let subjects = spanningSlots.count
        var tableSize = 16
        while tableSize < subjects * 2 { tableSize <<= 1 }
        if signatureSubject.count != tableSize {
            signatureSubject = [Int32](repeating: -1, count: tableSize)
            signatureCount = [Int32](repeating: 0, count: tableSize)
        }
        if linkedInto.count != capacity { linkedInto = [Int32](repeating: 0, count: capacity) }
        let mask = tableSize - 1
        var touched: [Int32] = []
        var signatures: [Int32] = []
        for subject in 0..<subjects {
            let slots = spanningSlots[subject]
            guard slots.count > 1 else { continue }
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for slot in slots {
                hash = (hash ^ UInt64(UInt32(bitPattern: slot))) &* 0x100_0000_01b3
                if linkedInto[Int(slot)] == 0 { touched.append(slot) }
                linkedInto[Int(slot)] += 1
            }
            var position = Int(truncatingIfNeeded: (hash &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
            while signatureSubject[position] >= 0 && !spanningSlots[Int(signatureSubject[position])].elementsEqual(slots) {
                position = (position + 1) & mask
            }
            if signatureSubject[position] < 0 {
                signatureSubject[position] = Int32(subject)
                signatures.append(Int32(position))
            }
            signatureCount[position] += 1
        }
        var suppressed = 0
        for slot in touched {
            let count = Int(linkedInto[Int(slot)])
            linkedInto[Int(slot)] = 0
            guard kept[Int(slot)] else { continue }
            let alone = Int(sizes[Int(slot)]) - count
            if alone > 0 && alone < requirements.k { suppressed += alone }
        }
        for position in signatures {
            let count = Int(signatureCount[Int(position)])
            let representative = Int(signatureSubject[Int(position)])
            signatureSubject[Int(position)] = -1
            signatureCount[Int(position)] = 0
            if count < requirements.k && spanningSlots[representative].allSatisfy({ kept[Int($0)] }) { suppressed += count }
        }
        return suppressed
    }

    /// Scratch tables of ``linkedSubjectsBelowK()``, left empty between calls.
    private var signatureSubject: [Int32] = []
    private var signatureCount: [Int32] = []
    private var linkedInto: [Int32] = []

    /// Hashes each item's generalized codes into the class table, adding its weight. `input`
    /// holds one code per column per item; `tables[column]` maps it to the target level's code.
    private func group(input: [UInt32], tables: [[UInt32]], multipliers: [UInt64], weights: [Int32], recordCells: Bool) {
        let q = tables.count
        var offsets: [Int] = []
        var flat: [UInt32] = []
        for table in tables {
            offsets.append(flat.count)
            flat += table
        }
        let mask = capacity - 1
        let items = weights.count
        var newClasses: [UInt32] = []
        flat.withUnsafeBufferPointer { flat in
            offsets.withUnsafeBufferPointer { offsets in
                multipliers.withUnsafeBufferPointer { multipliers in
                    input.withUnsafeBufferPointer { input in
                        weights.withUnsafeBufferPointer { weights in
                            keys.withUnsafeMutableBufferPointer { keys in
                                sizes.withUnsafeMutableBufferPointer { sizes in
                                    slotOfCell.withUnsafeMutableBufferPointer { slotOfCell in
                                        var base = 0
                                        for item in 0..<items {
                                            var key: UInt64 = 0
                                            for column in 0..<q {
                                                key &+= UInt64(flat[offsets[column] &+ Int(input[base &+ column])]) &* multipliers[column]
                                            }
                                            var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
                                            while keys[slot] != key && keys[slot] != Self.empty { slot = (slot &+ 1) & mask }
                                            if keys[slot] == Self.empty {
                                                keys[slot] = key
                                                used.append(Int32(slot))
                                                for column in 0..<q {
                                                    newClasses.append(flat[offsets[column] &+ Int(input[base &+ column])])
                                                }
                                            }
                                            sizes[slot] &+= weights[item]
                                            if recordCells { slotOfCell[item] = Int32(slot) }
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
    }

    /// Size of the class in `slot` after the last evaluation.
    func size(ofSlot slot: Int32) -> Int { Int(sizes[Int(slot)]) }

    /// Slots used by the last evaluation.
    var usedSlots: [Int32] { used }

    /// Class sizes are sums of per-cell subject counts; a subject with records in several cells of
    /// one class was counted once per cell, and is now counted once.
    /// Keeps, when the subject is linked, each spanning subject's distinct classes in `spanningSlots`.
    private func countSpanningSubjectsOnce(levels: [Int], multipliers: [UInt64]) {
        spanningSlots.removeAll()
        guard !table.spanningSubjects.isEmpty else { return }
        let q = levels.count
        var columnOffsets: [Int] = []
        var codes: [UInt32] = []
        for column in 0..<q {
            columnOffsets.append(codes.count)
            codes += table.codes[column][levels[column]]
        }
        let offsets = columnOffsets, flat = codes
        let mask = capacity - 1
        let linked = linksSubjects
        let subjects = table.spanningSubjects.count
        // The subjects in two halves, one per core: each finds its subjects' classes (reading the
        // class table only) and lists the class sizes to correct; the corrections and the lists
        // are then applied in subject order, so the outcome is the same as in one pass.
        let parts = subjects >= parallelFrom ? 2 : 1
        var decrements = [[Int32]](repeating: [], count: parts)
        var lists = [Lists](repeating: Lists(), count: parts)
        let keys = self.keys
        let spanning = table.spanningSubjects
        let leavesTable = table.cellLeaves
        decrements.withUnsafeMutableBufferPointer { decrementsBuffer in
            lists.withUnsafeMutableBufferPointer { listsBuffer in
                // Each part writes only its own element.
                let decrements = PartResults(base: decrementsBuffer), lists = PartResults(base: listsBuffer)
                DispatchQueue.concurrentPerform(iterations: parts) { part in
                    let range = (subjects * part / parts)..<(subjects * (part + 1) / parts)
                    var seen: [Int32] = []
                    var corrections: [Int32] = []
                    var found = Lists()
                    flat.withUnsafeBufferPointer { flat in
                        offsets.withUnsafeBufferPointer { offsets in
                            multipliers.withUnsafeBufferPointer { multipliers in
                                leavesTable.withUnsafeBufferPointer { leaves in
                                    keys.withUnsafeBufferPointer { keys in
                                        for subject in range {
                                            seen.removeAll(keepingCapacity: true)
                                            for cell in spanning[subject] {
                                                // The class exists: every cell was grouped in this evaluation.
                                                var key: UInt64 = 0
                                                let base = Int(cell) &* q
                                                for column in 0..<q {
                                                    key &+= UInt64(flat[offsets[column] &+ Int(leaves[base &+ column])]) &* multipliers[column]
                                                }
                                                var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
                                                while keys[slot] != key { slot = (slot &+ 1) & mask }
                                                if seen.contains(Int32(slot)) { corrections.append(Int32(slot)) } else { seen.append(Int32(slot)) }
                                            }
                                            if linked {
                                                seen.sort()
                                                found.append(seen)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    decrements.base[part] = corrections
                    lists.base[part] = found
                }
            }
        }
        for part in 0..<parts {
            for slot in decrements[part] { sizes[Int(slot)] &-= 1 }
            if linked { spanningSlots.append(contentsOf: lists[part]) }
        }
    }

    /// Spanning subjects from which their classes are found on two cores.
    var parallelFrom = 4_096

    /// Per spanning subject, the distinct classes of its records (last evaluation; kept only when the subject is linked).
    private var spanningSlots = Lists()

    /// l-diversity per class, each sensitive value weighted by the distinct subjects holding it.
    private func classDiversity(_ diversity: DiversityRequirement) -> [Int32: Bool] {
        let mask = pairKeys.count - 1
        func pairSlot(_ key: UInt64) -> Int {
            var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
            while pairKeys[slot] != key && pairKeys[slot] != Self.empty { slot = (slot + 1) & mask }
            return slot
        }
        for cell in 0..<table.cellCount.count {
            let key = UInt64(UInt32(bitPattern: slotOfCell[cell])) << 32 | UInt64(table.cellSensitive[cell])
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
                let key = UInt64(UInt32(bitPattern: slotOfCell[Int(cell)])) << 32 | UInt64(table.cellSensitive[Int(cell)])
                if seen.contains(key) { pairCounts[pairSlot(key)] -= 1 } else { seen.append(key) }
            }
        }
        var distinct: [Int32: Int] = [:]
        var plogp: [Int32: Double] = [:]
        var weight: [Int32: Double] = [:]
        for slot in pairUsed {
            let classSlot = Int32(truncatingIfNeeded: pairKeys[Int(slot)] >> 32)
            let count = Double(pairCounts[Int(slot)])
            distinct[classSlot, default: 0] += 1
            plogp[classSlot, default: 0] += count * log(count)
            weight[classSlot, default: 0] += count
        }
        var result: [Int32: Bool] = [:]
        for slot in used {
            let values = distinct[slot] ?? 0
            switch diversity {
            case .distinct(let l):
                result[slot] = values >= l
            case .entropy(let l):
                let n = weight[slot] ?? 0
                let entropy = n > 0 ? log(n) - (plogp[slot] ?? 0) / n : 0
                result[slot] = values >= l && entropy >= log(Double(l)) + DiversityRequirement.entropyMargin
            }
        }
        return result
    }

    private func reset() {
        for slot in used {
            keys[Int(slot)] = Self.empty
            sizes[Int(slot)] = 0
            kept[Int(slot)] = false
        }
        used.removeAll(keepingCapacity: true)
        classCodes.removeAll(keepingCapacity: true)
        for slot in pairUsed {
            pairKeys[Int(slot)] = Self.empty
            pairCounts[Int(slot)] = 0
        }
        pairUsed.removeAll(keepingCapacity: true)
    }
}

/// Per-part results written by concurrent workers, each to its own element only.
private struct PartResults<Element>: @unchecked Sendable {
    let base: UnsafeMutableBufferPointer<Element>
}
