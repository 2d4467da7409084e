import Foundation

/// The last step of every anonymization, run on the records of a chosen generalization: drops
/// records until every released class holds records of at least k distinct subjects (and l), and
/// until records linked by a released column (a pseudonym, an identifier) cannot narrow anyone
/// down. An attacker who knows all of a person's records finds the classes they fall into and
/// looks for the linking values present in every one of them; so the subjects whose linked
/// records fall into exactly the same set of classes must number at least k. Suppressing such a
/// group whole keeps every other group intact, so the loop ends when nothing changes.
struct SubjectProtection {
    let requirements: AnonymityRequirements
    /// Values of a linking column from which their sets are collected on both cores.
    var concurrentValuesFrom = 50_000

    /// What the step released and suppressed, counted in records and in subjects.
    struct Summary {
        var records = 0
        var recordsReleased = 0
        var subjects = 0
        var subjectsReleased = 0
        /// Subjects with at least one suppressed record.
        var subjectsSuppressed = 0
        /// Distinct subjects of each released class.
        var classSubjects: [Int] = []
    }

    /// `classOfRow` names each record's class (equal labels, equal class; classes numbered from 0);
    /// `keep` says which records the generalization keeps, and is narrowed. Throws when the
    /// subjects suppressed exceed the limit.
    func enforce(table: ColumnarTable, encoded: EncodedTable, classOfRow: [Int32], keep: inout [Bool]) throws -> Summary {
        let classCount = Int(classOfRow.max() ?? -1) + 1
        let bySubject = recordsGroupedByCode(encoded.subjectOfRow, codeCount: encoded.subjectCount)
        let linking = try requirements.linking.map { name in
            let column = try table.index(of: name)
            // The subject's own column (a pseudonym of it): each value is one subject, under the same code.
            return (values: table.codes[column], grouped: recordsGroupedByCode(table.codes[column], codeCount: table.values[column].count),
                    valuesAreSubjects: name == requirements.subject)
        }
        if !linking.isEmpty {
            var changed = true
            while changed {
                changed = dropClassesBelowRequirements(bySubject: bySubject, classOfRow: classOfRow, classCount: classCount, encoded: encoded, keep: &keep)
                for column in linking {
                    changed = dropLinkedGroupsBelowK(values: column.values, byValue: column.grouped, valuesAreSubjects: column.valuesAreSubjects,
                                                     classOfRow: classOfRow, classCount: classCount, subjectOfRow: encoded.subjectOfRow,
                                                     subjectCount: encoded.subjectCount, keep: &keep) || changed
                }
            }
        }
        var summary = Summary()
        summary.records = table.rowCount
        summary.subjects = encoded.subjectCount
        var subjectsOfClass = [Int](repeating: 0, count: classCount)
        var lastSubject = [Int32](repeating: -1, count: classCount)
        for subject in 0..<encoded.subjectCount {
            var released = false, suppressed = false
            for position in bySubject.starts[subject]..<bySubject.starts[subject + 1] {
                let r = Int(bySubject.ordered[position])
                guard keep[r] else {
                    suppressed = true
                    continue
                }
                released = true
                summary.recordsReleased += 1
                let id = Int(classOfRow[r])
                if lastSubject[id] != Int32(subject) {
                    lastSubject[id] = Int32(subject)
                    subjectsOfClass[id] += 1
                }
            }
            if released { summary.subjectsReleased += 1 }
            if suppressed { summary.subjectsSuppressed += 1 }
        }
        summary.classSubjects = subjectsOfClass.filter { $0 > 0 }
        let limit = Int((requirements.maxSuppression * Double(encoded.subjectCount)).rounded(.down))
        guard summary.subjectsSuppressed <= limit else {
            throw PrivacyError(.invalidParameter, "records linked by \(requirements.linking.map { "'\($0)'" }.joined(separator: ", ")) would single out subjects across classes; protecting them suppresses \(summary.subjectsSuppressed) of \(encoded.subjectCount) subjects, above the limit of \(limit): release without the linking column or allow more suppression")
        }
        return summary
    }

    /// Drops every record of classes (among kept records) that hold fewer than k distinct subjects
    /// or fail l-diversity. Returns whether anything was dropped.
    private func dropClassesBelowRequirements(bySubject: (ordered: [Int32], starts: [Int]), classOfRow: [Int32], classCount: Int,
                                              encoded: EncodedTable, keep: inout [Bool]) -> Bool {
        var subjects = [Int](repeating: 0, count: classCount)
        var lastSubject = [Int32](repeating: -1, count: classCount)
        // With l-diversity: per (class, sensitive value), the subjects holding it, and the last one counted.
        var holders: [UInt64: (count: Int, last: Int32)] = [:]
        for subject in 0..<(bySubject.starts.count - 1) {
            let marker = Int32(subject)
            for position in bySubject.starts[subject]..<bySubject.starts[subject + 1] {
                let r = Int(bySubject.ordered[position])
                guard keep[r] else { continue }
                let id = Int(classOfRow[r])
                if lastSubject[id] != marker {
                    lastSubject[id] = marker
                    subjects[id] += 1
                }
                if requirements.diversity != nil {
                    let key = UInt64(UInt32(id)) << 32 | UInt64(encoded.sensitiveOfRow[r])
                    let known = holders[key] ?? (0, -1)
                    if known.last != marker { holders[key] = (known.count + 1, marker) }
                }
            }
        }
        var valueCounts: [Int32: [Int]] = [:]
        for (key, holder) in holders { valueCounts[Int32(truncatingIfNeeded: key >> 32), default: []].append(holder.count) }
        var failing = [Bool](repeating: false, count: classCount)
        var anyFailing = false
        for id in 0..<classCount where subjects[id] > 0 {
            if subjects[id] < requirements.k || !(requirements.diversity.map { $0.isMet(by: valueCounts[Int32(id)] ?? []) } ?? true) {
                failing[id] = true
                anyFailing = true
            }
        }
        guard anyFailing else { return false }
        for r in keep.indices where keep[r] && failing[Int(classOfRow[r])] { keep[r] = false }
        return true
    }

    /// Groups the kept records' linking values by the set of classes they appear in, and drops the
    /// records of groups that hold fewer than k distinct subjects (when `valuesAreSubjects`, each
    /// value is the subject of that code, and a group's subjects are its values). Returns whether
    /// anything was dropped.
    private func dropLinkedGroupsBelowK(values: [UInt32], byValue: (ordered: [Int32], starts: [Int]), valuesAreSubjects: Bool, classOfRow: [Int32],
                                        classCount: Int, subjectOfRow: [UInt32], subjectCount: Int, keep: inout [Bool]) -> Bool {
        let valueCount = byValue.starts.count - 1
        // Per value: its distinct classes (sorted) and its distinct subjects, among the kept records;
        // the values in two halves, one per core, joined in order.
        let parts = valueCount >= concurrentValuesFrom ? 2 : 1
        let collected = (0..<parts).map { _ in CollectedSets() }
        let kept = keep
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            collected[part].sets = ValueSets(values: (valueCount * part / parts)..<(valueCount * (part + 1) / parts), byValue: byValue,
                                             keep: kept, classOfRow: classOfRow, classCount: classCount, subjectOfRow: subjectOfRow,
                                             subjectCount: subjectCount, listingSubjects: !valuesAreSubjects)
        }
        var classStarts = [0], classList: [Int32] = [], subjectStarts = [0], subjectList: [Int32] = [], setHashes: [UInt64] = []
        classStarts.reserveCapacity(valueCount + 1)
        setHashes.reserveCapacity(valueCount)
        if !valuesAreSubjects { subjectStarts.reserveCapacity(valueCount + 1) }
        for part in collected {
            let (classBase, subjectBase) = (classList.count, subjectList.count)
            classStarts += part.sets.classEnds.map { $0 + classBase }
            classList += part.sets.classes
            setHashes += part.sets.hashes
            if !valuesAreSubjects {
                subjectStarts += part.sets.subjectEnds.map { $0 + subjectBase }
                subjectList += part.sets.subjects
            }
        }
        // Values with the same set of classes form one group, found by the set's hash and compared exactly.
        var tableSize = 16
        while tableSize < valueCount * 2 { tableSize <<= 1 }
        var representative = [Int32](repeating: -1, count: tableSize)
        var groupOfSlot = [Int32](repeating: -1, count: tableSize)
        var groupOfValue = [Int32](repeating: -1, count: valueCount)
        var groups = 0
        classList.withUnsafeBufferPointer { classList in
            for value in 0..<valueCount where classStarts[value + 1] > classStarts[value] {
                let first = classStarts[value], count = classStarts[value + 1] - first
                var slot = Int(truncatingIfNeeded: (setHashes[value] &* 0x9E37_79B9_7F4A_7C15) >> 32) & (tableSize - 1)
                while true {
                    let other = Int(representative[slot])
                    if other < 0 {
                        representative[slot] = Int32(value)
                        groupOfSlot[slot] = Int32(groups)
                        groups += 1
                        break
                    }
                    if setHashes[other] == setHashes[value] && classStarts[other + 1] - classStarts[other] == count
                        && (0..<count).allSatisfy({ classList[classStarts[other] + $0] == classList[first + $0] }) { break }
                    slot = (slot + 1) & (tableSize - 1)
                }
                groupOfValue[value] = groupOfSlot[slot]
            }
        }
        // Each group's distinct subjects: its values' subjects, each counted once per group (its
        // values, when each value is its own subject).
        var subjectsOfGroup = [Int](repeating: 0, count: groups)
        if valuesAreSubjects {
            for group in groupOfValue where group >= 0 { subjectsOfGroup[Int(group)] += 1 }
        } else {
            let byGroup = recordsGroupedByCode(groupOfValue.map { $0 < 0 ? UInt32(groups) : UInt32($0) }, codeCount: groups + 1)
            var lastGroupOfSubject = [Int32](repeating: -1, count: subjectCount)
            for group in 0..<groups {
                for position in byGroup.starts[group]..<byGroup.starts[group + 1] {
                    let value = Int(byGroup.ordered[position])
                    for subject in subjectList[subjectStarts[value]..<subjectStarts[value + 1]] where lastGroupOfSubject[Int(subject)] != Int32(group) {
                        lastGroupOfSubject[Int(subject)] = Int32(group)
                        subjectsOfGroup[group] += 1
                    }
                }
            }
        }
        var dropped = [Bool](repeating: false, count: valueCount)
        var anyDropped = false
        for value in 0..<valueCount where groupOfValue[value] >= 0 && subjectsOfGroup[Int(groupOfValue[value])] < requirements.k {
            dropped[value] = true
            anyDropped = true
        }
        guard anyDropped else { return false }
        for r in keep.indices where keep[r] && dropped[Int(values[r])] { keep[r] = false }
        return true
    }
}

/// The distinct classes (sorted) and distinct subjects of a range of a linking column's values,
/// among the kept records: each value's lists one after another, with where each ends, and a hash
/// of each value's set of classes.
private struct ValueSets {
    var classEnds: [Int] = [], classes: [Int32] = [], hashes: [UInt64] = []
    var subjectEnds: [Int] = [], subjects: [Int32] = []

    init() {}

    /// Without `listingSubjects`, the subjects' lists stay empty.
    init(values: Range<Int>, byValue: (ordered: [Int32], starts: [Int]), keep: [Bool], classOfRow: [Int32], classCount: Int,
         subjectOfRow: [UInt32], subjectCount: Int, listingSubjects: Bool) {
        var lastValueOfClass = [Int32](repeating: -1, count: classCount)
        var lastValueOfSubject = [Int32](repeating: -1, count: listingSubjects ? subjectCount : 0)
        classEnds.reserveCapacity(values.count)
        hashes.reserveCapacity(values.count)
        if listingSubjects { subjectEnds.reserveCapacity(values.count) }
        for value in values {
            let marker = Int32(value), first = classes.count
            var hash: UInt64 = 0
            for position in byValue.starts[value]..<byValue.starts[value + 1] {
                let r = Int(byValue.ordered[position])
                guard keep[r] else { continue }
                let id = Int(classOfRow[r])
                if lastValueOfClass[id] != marker {
                    lastValueOfClass[id] = marker
                    classes.append(Int32(id))
                    hash &+= spreadClassNumber(Int32(id))
                }
                if listingSubjects {
                    let subject = Int(subjectOfRow[r])
                    if lastValueOfSubject[subject] != marker {
                        lastValueOfSubject[subject] = marker
                        subjects.append(Int32(subject))
                    }
                }
            }
            if classes.count - first > 1 { classes[first...].sort() }
            classEnds.append(classes.count)
            hashes.append(hash)
            if listingSubjects { subjectEnds.append(subjects.count) }
        }
    }
}

/// One half's sets, handed back by the core that collected them.
private final class CollectedSets: @unchecked Sendable {
    var sets = ValueSets()
}

extension DiversityRequirement {
    /// Whether a class whose sensitive values are held by these numbers of distinct subjects meets l.
    func isMet(by holders: [Int]) -> Bool {
        switch self {
        case .distinct(let l):
            return holders.count >= l
        case .entropy(let l):
            let n = Double(holders.reduce(0, +))
            guard n > 0 else { return false }
            let entropy = -holders.reduce(0.0) { $0 + Double($1) / n * log(Double($1) / n) }
            return holders.count >= l && entropy >= log(Double(l)) + DiversityRequirement.entropyMargin
        }
    }
}
