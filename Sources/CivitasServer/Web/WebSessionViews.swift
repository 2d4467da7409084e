import CivitasBroker
import CivitasCrypto
import CivitasLog
import CivitasModel
import CivitasTime
import Foundation

/// What a signed-in participant's pages show: only what its role may read through the API.
extension WebViews {
    /// Deliveries shown per agreement.
    static let deliveriesShown = 20
    /// Entries read per page of the log browser.
    static let entriesPerPage = 50

    static func me(_ broker: Broker, participant: Participant, sessionExpires: UTCTime) throws -> [String: Any] {
        var values: [String: Any] = ["name": participant.keys.name, "role": participant.role.rawValue, "keyId": participant.keys.keyID.hex,
                                     "sessionExpires": sessionExpires.rfc3339, "download": participant.role == .partner || participant.role == .auditor]
        let names = Dictionary(uniqueKeysWithValues: try broker.store.participants().map { ($0.keys.keyID, $0.keys.name) })
        if participant.role == .agency {
            let mine = try broker.store.datasets().filter { $0.publisher == participant.keys.keyID }
            let rows = try mine.map { dataset -> [String: Any] in
                let batches = try broker.store.batches(of: dataset.id, from: 1)
                // Counts of people per purpose: never who.
                let consent = try dataset.purposes.map { purpose -> [String: Any] in
                    let states = try broker.store.consentStates(dataset: dataset.id, purpose: purpose)
                    return ["purpose": purpose, "granted": states.values.filter { $0 }.count, "withdrawn": states.values.filter { !$0 }.count]
                }
                return ["id": dataset.id, "batches": batches.count, "records": batches.reduce(0) { $0 + $1.records }, "consent": consent]
            }
            values["datasets"] = ["any": !rows.isEmpty, "rows": rows]
        }
        values["agreements"] = try broker.agreements(for: participant).map { agreement -> [String: Any] in
            let policy = try AgreementPolicy.parse(try JSONParser.parse(agreement.policy))
            var charges: [(time: String, micro: UInt64)] = []
            let deliveries = try broker.store.deliverySummaries(agreement: agreement.id, limit: deliveriesShown).map { delivery -> [String: Any] in
                let entry = try LogEntry.parse(try broker.store.logEntry(at: delivery.logIndex), position: delivery.logIndex)
                let epsilon = entry.count("epsilon_micro") ?? 0
                if epsilon > 0 { charges.append((delivery.created.rfc3339, epsilon)) }
                return ["id": delivery.id, "kind": delivery.kind.rawValue, "created": delivery.created.rfc3339, "records": delivery.records,
                        "withoutConsent": entry.members["transforms"]?["records_without_consent"]?.exactUnsignedInteger.map(String.init) ?? "–",
                        "suppressed": entry.count("records_suppressed") ?? 0, "k": entry.count("k_achieved") ?? 0,
                        "epsilon": MicroUnits.decimal(epsilon), "logIndex": delivery.logIndex]
            }
            return ["id": agreement.id, "state": agreement.state.rawValue, "dataset": agreement.dataset,
                    "publisher": names[agreement.publisher] ?? agreement.publisher.hex, "partner": names[agreement.partner] ?? agreement.partner.hex,
                    "purposes": policy.purposes, "budget": MicroUnits.decimal(agreement.budgetMicro), "spent": MicroUnits.decimal(agreement.spentMicro),
                    "left": MicroUnits.decimal(agreement.budgetMicro - min(agreement.spentMicro, agreement.budgetMicro)),
                    "validFrom": agreement.validFrom.rfc3339, "validUntil": agreement.validUntil.rfc3339, "deliveries": deliveries,
                    "chart": WebCharts.budget(charges: charges.reversed(), budgetMicro: agreement.budgetMicro)]
        }
        return values
    }

    /// A page of the log from entry `start`, filtered by entry type, agreement or dataset.
    static func entries(_ broker: Broker, start requested: UInt64?, type: String?, agreement: String?, dataset: String?) throws -> [String: Any] {
        let size = broker.store.logSize
        let start = min(requested ?? (size > UInt64(entriesPerPage) ? size - UInt64(entriesPerPage) : 0), size)
        let end = min(start + UInt64(entriesPerPage), size)
        var rows: [[String: Any]] = []
        for index in start..<end {
            let bytes = try broker.store.logEntry(at: index)
            let entry = try LogEntry.parse(bytes, position: index)
            if let type, entry.type.rawValue != type { continue }
            if let agreement, entry.string("agreement") != agreement { continue }
            if let dataset, entry.string("dataset") != dataset { continue }
            rows.append(["index": index, "time": entry.time, "type": entry.type.rawValue, "agreement": entry.string("agreement") ?? "",
                         "dataset": entry.string("dataset") ?? "", "json": String(decoding: bytes, as: UTF8.self)])
        }
        var query = ""
        for (name, value) in [("type", type), ("agreement", agreement), ("dataset", dataset)] {
            if let value { query += "&\(name)=\(value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }
        }
        return ["entries": rows, "size": size, "first": start, "last": end == 0 ? 0 : end - 1, "shown": rows.count,
                "filtered": type != nil || agreement != nil || dataset != nil, "start": start, "query": query,
                "previous": start > 0 ? [start > UInt64(entriesPerPage) ? start - UInt64(entriesPerPage) : 0] : [],
                "next": end < size ? [end] : [],
                "types": LogEntryType.allCases.map { ["name": $0.rawValue, "selected": $0.rawValue == type] },
                "agreement": agreement ?? "", "dataset": dataset ?? ""]
    }
}

/// Charts drawn on the server as inline SVG, from numbers only.
enum WebCharts {
    /// ε spent under an agreement over its deliveries: a step line rising to the budget line.
    static func budget(charges: [(time: String, micro: UInt64)], budgetMicro: UInt64) -> String {
        guard !charges.isEmpty, budgetMicro > 0 else { return "" }
        let width = 480.0, height = 160.0, left = 40.0, bottom = 24.0, top = 12.0
        let plotWidth = width - left - 12, plotHeight = height - bottom - top
        var spent: UInt64 = 0
        var points = ["\(left),\(top + plotHeight)"]
        for (number, charge) in charges.enumerated() {
            spent += charge.micro
            let x = left + plotWidth * Double(number + 1) / Double(charges.count)
            let y = top + plotHeight * (1 - min(1, Double(spent) / Double(budgetMicro)))
            points.append(String(format: "%.1f,%.1f", x, y))
        }
        let label = "ε spent over \(charges.count) charged deliveries: \(MicroUnits.decimal(spent)) of \(MicroUnits.decimal(budgetMicro))"
        return """
            <figure><svg class="chart" viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="\(label)" xmlns="http://www.w3.org/2000/svg">\
            <line x1="\(left)" y1="\(top)" x2="\(width - 12)" y2="\(top)" stroke="#a4161a" stroke-dasharray="4 3"/>\
            <text x="\(left - 4)" y="\(top + 4)" text-anchor="end">\(MicroUnits.decimal(budgetMicro))</text>\
            <text x="\(left - 4)" y="\(top + plotHeight + 4)" text-anchor="end">0</text>\
            <line x1="\(left)" y1="\(top + plotHeight)" x2="\(width - 12)" y2="\(top + plotHeight)" stroke="#4a5360"/>\
            <polyline fill="none" stroke="#0b5cad" stroke-width="2" points="\(points.joined(separator: " "))"/>\
            <text x="\(left)" y="\(height - 6)">deliveries, oldest to newest</text></svg>\
            <figcaption>\(label)</figcaption></figure>
            """
    }
}
