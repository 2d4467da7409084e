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
        let overview = try broker.overview(for: participant, deliveries: deliveriesShown)
        var values: [String: Any] = ["name": participant.keys.name, "role": participant.role.rawValue, "keyId": participant.keys.keyID.hex,
                                     "sessionExpires": sessionExpires.rfc3339, "download": participant.role == .partner || participant.role == .auditor]
        let rows = overview.datasets.map { dataset -> [String: Any] in
            ["id": dataset.dataset, "batches": dataset.batches, "records": dataset.records,
             "consent": dataset.consent.map { ["purpose": $0.purpose, "granted": $0.granted, "withdrawn": $0.withdrawn] }]
        }
        values["datasets"] = ["any": !rows.isEmpty, "rows": rows]
        // At a glance, over the deliveries shown: how many a day, and the share of records suppressed in each.
        let shown = overview.agreements.flatMap(\.deliveries).sorted { $0.delivery.created < $1.delivery.created }
        if !shown.isEmpty {
            var perDay: [(label: String, value: Double)] = []
            for delivery in shown {
                let day = String(delivery.delivery.created.rfc3339.prefix(10))
                if perDay.last?.label == day { perDay[perDay.count - 1].value += 1 } else { perDay.append((day, 1)) }
            }
            let suppression = shown.filter { $0.delivery.kind == .release || $0.delivery.kind == .window }.map { delivery -> (label: String, value: Double) in
                let total = Double(delivery.delivery.records) + Double(delivery.recordsSuppressed)
                return (delivery.delivery.id, total == 0 ? 0 : 100 * Double(delivery.recordsSuppressed) / total)
            }
            values["glance"] = [WebCharts.bars(perDay, caption: "Deliveries per day", unit: ""),
                                WebCharts.bars(suppression, caption: "Records suppressed in each release and window, in per cent", unit: "%")]
                .filter { !$0.isEmpty }
            values["hasGlance"] = true
        }
        values["agreements"] = overview.agreements.map { figures -> [String: Any] in
            let agreement = figures.agreement
            let deliveries = figures.deliveries.map { delivery -> [String: Any] in
                ["id": delivery.delivery.id, "kind": delivery.delivery.kind.rawValue, "created": delivery.delivery.created.rfc3339,
                 "records": delivery.delivery.records, "withoutConsent": delivery.recordsWithoutConsent.map(String.init) ?? "–",
                 "suppressed": delivery.recordsSuppressed, "k": delivery.kAchieved, "charge": MicroUnits.decimal(delivery.chargeMicro),
                 "logIndex": delivery.delivery.logIndex]
            }
            let charges = figures.deliveries.reversed().filter { $0.chargeMicro > 0 }.map(\.chargeMicro)
            let unit = figures.accounting == .rho ? "ρ" : "ε"
            return ["id": agreement.id, "unit": unit, "state": agreement.state.rawValue, "dataset": agreement.dataset, "publisher": figures.publisher,
                    "partner": figures.partner, "purposes": figures.purposes, "budget": MicroUnits.decimal(agreement.budgetMicro),
                    "spent": MicroUnits.decimal(agreement.spentMicro),
                    "left": MicroUnits.decimal(agreement.budgetMicro - min(agreement.spentMicro, agreement.budgetMicro)),
                    "validFrom": agreement.validFrom.rfc3339, "validUntil": agreement.validUntil.rfc3339, "deliveries": deliveries,
                    "refusals": figures.refusals.map { ["code": $0.code, "count": $0.count, "last": $0.last.rfc3339] },
                    "chart": WebCharts.budget(charges: charges, budgetMicro: agreement.budgetMicro, unit: unit)]
        }
        return values
    }

    /// A page of the log from entry `start`, filtered by entry type, agreement or dataset.
    static func entries(_ broker: Broker, start: UInt64?, type: String?, agreement: String?, dataset: String?) throws -> [String: Any] {
        let page = try broker.logPage(from: start, count: entriesPerPage, type: type, agreement: agreement, dataset: dataset)
        let rows = page.entries.map { entry, bytes -> [String: Any] in
            ["index": entry.index, "time": entry.time, "type": entry.type.rawValue, "agreement": entry.string("agreement") ?? "",
             "dataset": entry.string("dataset") ?? "", "json": String(decoding: bytes, as: UTF8.self)]
        }
        var query = ""
        for (name, value) in [("type", type), ("agreement", agreement), ("dataset", dataset)] {
            if let value { query += "&\(name)=\(value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }
        }
        let perPage = UInt64(entriesPerPage)
        return ["entries": rows, "size": page.size, "first": page.start, "last": page.end == 0 ? 0 : page.end - 1, "shown": rows.count,
                "filtered": type != nil || agreement != nil || dataset != nil, "start": page.start, "query": query,
                "previous": page.start > 0 ? [page.start > perPage ? page.start - perPage : 0] : [],
                "next": page.end < page.size ? [page.end] : [],
                "types": LogEntryType.allCases.map { ["name": $0.rawValue, "selected": $0.rawValue == type] },
                "agreement": agreement ?? "", "dataset": dataset ?? ""]
    }
}

/// Charts drawn on the server as inline SVG, from numbers only.
enum WebCharts {
    /// A bar per value, labelled underneath (labels are escaped), with its value above it.
    static func bars(_ values: [(label: String, value: Double)], caption: String, unit: String) -> String {
        guard !values.isEmpty else { return "" }
        let shown = Array(values.suffix(24))
        let width = 480.0, height = 180.0, bottom = 44.0, top = 16.0
        let slot = (width - 20) / Double(shown.count), plotHeight = height - bottom - top
        let highest = max(shown.map(\.value).max() ?? 0, 1)
        var marks = ""
        for (number, item) in shown.enumerated() {
            let barHeight = plotHeight * item.value / highest
            let x = 10 + slot * Double(number)
            let value = unit == "%" ? String(format: "%.1f%%", item.value) : String(Int(item.value))
            marks += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#0b5cad\"/>", x + slot * 0.15, top + plotHeight - barHeight,
                            slot * 0.7, max(barHeight, 0.5))
            let middle = String(format: "%.1f", x + slot / 2)
            marks += "<text x=\"\(middle)\" y=\"\(String(format: "%.1f", top + plotHeight - barHeight - 3))\" text-anchor=\"middle\">\(value)</text>"
            marks += "<text x=\"\(middle)\" y=\"\(String(format: "%.1f", height - bottom + 14))\" text-anchor=\"middle\">"
                + "\(escaped(String(item.label.suffix(shown.count > 8 ? 5 : 10))))</text>"
        }
        let summary = shown.map { "\($0.label): \(unit == "%" ? String(format: "%.1f%%", $0.value) : String(Int($0.value)))" }.joined(separator: ", ")
        return "<figure><svg class=\"chart\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(escaped(caption)): \(escaped(summary))\" "
            + "xmlns=\"http://www.w3.org/2000/svg\">\(marks)<line x1=\"10\" y1=\"\(top + plotHeight)\" x2=\"\(width - 10)\" y2=\"\(top + plotHeight)\" stroke=\"#4a5360\"/></svg>"
            + "<figcaption>\(escaped(caption))</figcaption></figure>"
    }

    /// Text made safe inside SVG markup and attributes.
    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;").replacingOccurrences(of: "'", with: "&#39;")
    }

    /// The budget (ε or ρ) spent under an agreement over its deliveries: a step line rising to the budget line.
    static func budget(charges: [UInt64], budgetMicro: UInt64, unit: String) -> String {
        guard !charges.isEmpty, budgetMicro > 0 else { return "" }
        let width = 480.0, height = 160.0, left = 40.0, bottom = 24.0, top = 12.0
        let plotWidth = width - left - 12, plotHeight = height - bottom - top
        var spent: UInt64 = 0
        var points = ["\(left),\(top + plotHeight)"]
        for (number, charge) in charges.enumerated() {
            spent += charge
            let x = left + plotWidth * Double(number + 1) / Double(charges.count)
            let y = top + plotHeight * (1 - min(1, Double(spent) / Double(budgetMicro)))
            points.append(String(format: "%.1f,%.1f", x, y))
        }
        let label = "\(unit) spent over \(charges.count) charged deliveries: \(MicroUnits.decimal(spent)) of \(MicroUnits.decimal(budgetMicro))"
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
