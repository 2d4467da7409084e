import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasModel
import CivitasPrivacy
import Foundation

/// What each page shows, read from the broker and shaped for its template: plain values only,
/// escaped by the template.
enum WebViews {
    static func home(_ broker: Broker) throws -> [String: Any] {
        ["datasets": try broker.catalog().datasets.count, "agreements": try broker.publicRegister().count, "logSize": broker.logSize]
    }

    /// What leaves the broker of a field of each privacy class.
    static func treatment(of privacy: DatasetSchema.PrivacyClass) -> String {
        switch privacy {
        case .subject: "a pseudonym in each agreement's own domain; only people who consented"
        case .identifier: "a pseudonym, or nothing"
        case .quasiIdentifier: "generalized until at least k people share each combination"
        case .sensitive: "as recorded, in groups of at least k people (l-diverse where asked)"
        case .measure: "as recorded, or noised; differentially private in aggregates"
        case .public: "as recorded"
        case .drop: "never"
        }
    }

    static func catalog(_ broker: Broker, now: UTCTime) throws -> [String: Any] {
        let datasets = try broker.catalog().datasets.map { dataset, publisher -> [String: Any] in
            let schema = try DatasetSchema.parse(dataset.schema)
            // The catalog's data-quality figures (ratios from 100 records, rounded), beside each field.
            let quality = try broker.qualityFigures(of: dataset, now: now)
            let completeness = Dictionary(uniqueKeysWithValues: (quality?.completeness ?? []).map { ($0.field, $0.value) })
            func percent(_ value: Double) -> String { "\(Int((value * 100).rounded()))%" }
            var values: [String: Any] = [
                "id": dataset.id, "title": schema.title.isEmpty ? dataset.id : schema.title,
                "publisher": publisher?.keys.name ?? dataset.publisher.hex, "purposes": dataset.purposes,
                "registered": dataset.registered.rfc3339,
                "fields": schema.fields.map { field -> [String: Any] in
                    ["name": field.name, "privacy": field.privacy.rawValue, "treatment": treatment(of: field.privacy),
                     "completeness": completeness[field.name].map(percent) ?? "–"]
                },
            ]
            if let quality {
                var summary = ["\(percent(quality.validity)) of submitted records valid"]
                if let uniqueness = quality.subjectUniqueness { summary.append("\(percent(uniqueness)) distinct subjects per record") }
                if let hours = quality.latestBatchAgeHours { summary.append("latest batch \(hours) h ago") }
                if let hours = quality.latestRecordAgeHours { summary.append("latest record \(hours) h old") }
                if let onSchedule = quality.onSchedule { summary.append(onSchedule ? "on schedule" : "behind schedule") }
                values["quality"] = summary.joined(separator: "; ")
            }
            return values
        }
        return ["datasets": datasets, "minimumRecords": DatasetQualityFigures.minimumRecords]
    }

    static func agreements(_ broker: Broker) throws -> [String: Any] {
        let entries = try broker.publicRegister().map { entry -> [String: Any] in
            var row: [String: Any] = ["agreement": entry.agreement, "purposes": entry.purposes, "legalBasis": entry.legalBasis]
            if let terms = entry.terms {
                var shown: [String: Any] = [
                    "dataset": terms.dataset, "publisher": terms.publisher, "partner": terms.partner, "fields": terms.fields, "k": terms.k,
                    "suppression": "\(Int((terms.suppressionLimit * 100).rounded()))%", "feed": terms.feed,
                    "budget": MicroUnits.decimal(terms.budgetMicro), "spent": MicroUnits.decimal(terms.spentMicro),
                    "unit": terms.accounting == .rho ? "ρ" : "ε",
                    "validFrom": terms.validFrom.rfc3339, "validUntil": terms.validUntil.rfc3339,
                    "validFromDay": String(terms.validFrom.rfc3339.prefix(10)), "validUntilDay": String(terms.validUntil.rfc3339.prefix(10)),
                    "state": terms.state.rawValue,
                ]
                if let groupBy = terms.aggregatesGroupBy { shown["aggregates"] = groupBy.joined(separator: ", ") }
                if let fields = terms.syntheticFields { shown["synthetic"] = fields.joined(separator: ", ") }
                if let ended = terms.ended { shown["ended"] = ended.rfc3339 }
                row["terms"] = shown
            }
            return row
        }
        return ["agreements": entries, "any": !entries.isEmpty, "count": entries.count]
    }

    /// The transparency page: the latest checkpoint and who signed it (the broker's key, and each
    /// witness's cosignature).
    static func log(_ broker: Broker, note: String) throws -> [String: Any] {
        let checkpoint = try Checkpoint.statement(of: note)
        let brokerKeyHash = try NoteKey(name: checkpoint.origin, publicKey: broker.keys.publicKeys.signingKey).keyHash
        var signatures: [[String: Any]] = []
        for line in note.split(separator: "\n") where line.hasPrefix("\u{2014} ") {
            let parts = line.dropFirst(2).split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let raw = Base64.decode(String(parts[1])), raw.count >= 4 else { continue }
            let keyHash = Array(raw.prefix(4))
            let kind = keyHash == brokerKeyHash ? "the broker's signature" : raw.count == 4 + 8 + 64 ? "a witness's cosignature" : "a signature"
            signatures.append(["name": String(parts[0]), "kind": kind, "keyHash": Hex.encode(keyHash)])
        }
        return ["origin": checkpoint.origin, "size": checkpoint.size, "root": Hex.encode(checkpoint.rootHash), "note": note,
                "signatures": signatures, "witnessed": signatures.contains { ($0["kind"] as? String) == "a witness's cosignature" }]
    }
}
