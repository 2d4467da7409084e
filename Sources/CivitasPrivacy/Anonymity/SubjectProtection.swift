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

    /// `classOfRow` names each record's class (equal labels, equal class); `keep` says which records
    /// the generalization keeps, and is narrowed. Throws when the subjects suppressed exceed the limit.
    func enforce(table: ColumnarTable, encoded: EncodedTable, classOfRow: [Int32], keep: inout [Bool]) throws -> Summary {
        let subjectOfRow = encoded.subjectOfRow
        let linking = try requirements.linking.map { try table.codes[table.index(of: $0)] }
        if !linking.isEmpty {
            var changed = true
            while changed {
                changed = dropClassesBelowRequirements(classOfRow: classOfRow, subjectOfRow: subjectOfRow, encoded: encoded, keep: &keep)
                for values in linking {
                    changed = dropLinkedGroupsBelowK(values: values, classOfRow: classOfRow, subjectOfRow: subjectOfRow, keep: &keep) || changed
                }
            }
        }
        var summary = Summary()
        summary.records = table.rowCount
        summary.subjects = encoded.subjectCount
        var released = [Bool](repeating: false, count: encoded.subjectCount)
        var suppressed = [Bool](repeating: false, count: encoded.subjectCount)
        var pairs = Set<UInt64>()
        var subjectsOfClass: [Int32: Int] = [:]
        for r in 0..<table.rowCount {
            let person = Int(subjectOfRow[r])
            guard keep[r] else {
                suppressed[person] = true
                continue
            }
            summary.recordsReleased += 1
            released[person] = true
            if pairs.insert(UInt64(UInt32(bitPattern: classOfRow[r])) << 32 | UInt64(person)).inserted {
                subjectsOfClass[classOfRow[r], default: 0] += 1
            }
        }
        summary.subjectsReleased = released.lazy.filter { $0 }.count
        summary.subjectsSuppressed = suppressed.lazy.filter { $0 }.count
        summary.classSubjects = Array(subjectsOfClass.values)
        let limit = Int((requirements.maxSuppression * Double(encoded.subjectCount)).rounded(.down))
        guard summary.subjectsSuppressed <= limit else {
            throw PrivacyError(.invalidParameter, "records linked by \(requirements.linking.map { "'\($0)'" }.joined(separator: ", ")) would single out subjects across classes; protecting them suppresses \(summary.subjectsSuppressed) of \(encoded.subjectCount) subjects, above the limit of \(limit): release without the linking column or allow more suppression")
        }
        return summary
    }

    /// Drops every record of classes (among kept records) that hold fewer than k distinct subjects
    /// or fail l-diversity. Returns whether anything was dropped.
    private func dropClassesBelowRequirements(classOfRow: [Int32], subjectOfRow: [UInt32], encoded: EncodedTable, keep: inout [Bool]) -> Bool {
        var subjectPairs = Set<UInt64>()
        var subjects: [Int32: Int] = [:]
        var valuePairs = Set<ValueHolder>()
        var holders: [UInt64: Int] = [:]
        for r in keep.indices where keep[r] {
            let cls = classOfRow[r]
            if subjectPairs.insert(UInt64(UInt32(bitPattern: cls)) << 32 | UInt64(subjectOfRow[r])).inserted { subjects[cls, default: 0] += 1 }
            if requirements.diversity != nil {
                let value = encoded.sensitiveOfRow[r]
                if valuePairs.insert(ValueHolder(cls: cls, value: value, subject: subjectOfRow[r])).inserted {
                    holders[UInt64(UInt32(bitPattern: cls)) << 32 | UInt64(value), default: 0] += 1
                }
            }
        }
        var valueCounts: [Int32: [Int]] = [:]
        for (key, count) in holders { valueCounts[Int32(truncatingIfNeeded: key >> 32), default: []].append(count) }
        var failing = Set<Int32>()
        for (cls, count) in subjects {
            if count < requirements.k || !(requirements.diversity.map { $0.isMet(by: valueCounts[cls] ?? []) } ?? true) { failing.insert(cls) }
        }
        guard !failing.isEmpty else { return false }
        for r in keep.indices where keep[r] && failing.contains(classOfRow[r]) { keep[r] = false }
        return true
    }

    /// Groups the kept records' linking values by the set of classes they appear in, and drops the
    /// records of groups that hold fewer than k distinct subjects. Returns whether anything was dropped.
    private func dropLinkedGroupsBelowK(values: [UInt32], classOfRow: [Int32], subjectOfRow: [UInt32], keep: inout [Bool]) -> Bool {
        var classesOf: [UInt32: Set<Int32>] = [:]
        var subjectsOf: [UInt32: Set<UInt32>] = [:]
        for r in keep.indices where keep[r] {
            classesOf[values[r], default: []].insert(classOfRow[r])
            subjectsOf[values[r], default: []].insert(subjectOfRow[r])
        }
        var groups: [[Int32]: Set<UInt32>] = [:]
        var signatureOf: [UInt32: [Int32]] = [:]
        for (value, classes) in classesOf {
            let signature = classes.sorted()
            signatureOf[value] = signature
            groups[signature, default: []].formUnion(subjectsOf[value] ?? [])
        }
        let dropped = Set(signatureOf.compactMap { value, signature in (groups[signature]?.count ?? 0) < requirements.k ? value : nil })
        guard !dropped.isEmpty else { return false }
        for r in keep.indices where keep[r] && dropped.contains(values[r]) { keep[r] = false }
        return true
    }

    private struct ValueHolder: Hashable {
        let cls: Int32
        let value: UInt32
        let subject: UInt32
    }
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
