import CivitasBroker
import CivitasTime
import Foundation

/// A dataset's data-quality figures in the catalog, as W3C Data Quality Vocabulary (DQV)
/// measurements: each a `dqv:QualityMeasurement` of a `dqv:Metric` (defined once in the catalog,
/// in a `dqv:Dimension` of ISO/IEC 25012's), computed on the dataset or on one of its fields.
enum QualityGraph {
    struct Metric {
        let name: String
        let label: String
        let definition: String
        let dimension: String
        let datatype: String
    }

    static let rounding = "Rounded to two decimals, and published only for datasets of at least \(DatasetQualityFigures.minimumRecords) accepted records, since exact ratios on small datasets reveal facts about individual records."

    static let metrics: [String: Metric] = Dictionary(uniqueKeysWithValues: [
        Metric(name: "completeness", label: "Completeness of a field",
               definition: "Share of accepted records with a non-empty value of the field. " + rounding, dimension: "completeness", datatype: "decimal"),
        Metric(name: "validity", label: "Validity",
               definition: "Records accepted over records submitted, the records of refused batches included. " + rounding, dimension: "validity", datatype: "decimal"),
        Metric(name: "subject-uniqueness", label: "Uniqueness of the subject field",
               definition: "Distinct subjects over accepted records; the distinct subjects are estimated with a HyperLogLog sketch of keyed hashes (about 0.2% standard error, less for small counts). " + rounding,
               dimension: "uniqueness", datatype: "decimal"),
        Metric(name: "latest-record", label: "Latest record time",
               definition: "The latest value of the dataset's record-time field among accepted records.", dimension: "timeliness", datatype: "dateTime"),
        Metric(name: "latest-record-age-hours", label: "Age of the latest record, in hours",
               definition: "Whole hours from the latest record time to when the catalog was computed (it is recomputed every hour).", dimension: "timeliness", datatype: "integer"),
        Metric(name: "latest-batch-age-hours", label: "Age of the latest batch, in hours",
               definition: "Whole hours from the latest accepted batch to when the catalog was computed (it is recomputed every hour).", dimension: "timeliness", datatype: "integer"),
        Metric(name: "batches-in-last-period", label: "Batches received in the last accrual period",
               definition: "Accepted batches received within the last period of the dataset's declared accrual periodicity.", dimension: "timeliness", datatype: "integer"),
        Metric(name: "on-schedule", label: "On schedule",
               definition: "Whether the latest accepted batch arrived within the last period of the declared accrual periodicity.", dimension: "timeliness", datatype: "boolean"),
    ].map { ($0.name, $0) })

    /// RFC 3986's unreserved characters.
    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    static let dimensions: [String: String] = [
        "completeness": "Completeness", "validity": "Compliance with the dataset's schema", "uniqueness": "Uniqueness", "timeliness": "Currentness",
    ]

    /// Adds the figures of the dataset `dataset` (an IRI) to `graph`, defining the metrics used under `catalog`.
    static func add(_ figures: DatasetQualityFigures, dataset: String, catalog: String, to graph: inout RDFGraph) {
        func metric(_ name: String) -> String {
            let iri = catalog + "#metric-" + name
            if graph.objects(iri, Vocabulary.rdfType).isEmpty, let metric = metrics[name] {
                graph.add(iri, type: Vocabulary.dqv + "Metric")
                graph.add(iri, Vocabulary.skos + "prefLabel", .text(metric.label, language: "en"))
                graph.add(iri, Vocabulary.skos + "definition", .text(metric.definition, language: "en"))
                graph.add(iri, Vocabulary.dqv + "expectedDataType", .iri(Vocabulary.xsd + metric.datatype))
                let dimension = catalog + "#dimension-" + metric.dimension
                if graph.objects(dimension, Vocabulary.rdfType).isEmpty {
                    graph.add(dimension, type: Vocabulary.dqv + "Dimension")
                    graph.add(dimension, Vocabulary.skos + "prefLabel", .text(dimensions[metric.dimension] ?? metric.dimension, language: "en"))
                    let category = catalog + "#quality-category"
                    if graph.objects(category, Vocabulary.rdfType).isEmpty {
                        graph.add(category, type: Vocabulary.dqv + "Category")
                        graph.add(category, Vocabulary.skos + "prefLabel", .text("Inherent data quality (ISO/IEC 25012)", language: "en"))
                    }
                    graph.add(dimension, Vocabulary.dqv + "inCategory", .iri(category))
                }
                graph.add(iri, Vocabulary.dqv + "inDimension", .iri(dimension))
            }
            return iri
        }
        func measure(_ name: String, on target: String, suffix: String, _ value: RDFGraph.Term) {
            let iri = dataset + "#quality-" + suffix
            graph.add(iri, type: Vocabulary.dqv + "QualityMeasurement")
            graph.add(iri, Vocabulary.dqv + "isMeasurementOf", .iri(metric(name)))
            graph.add(iri, Vocabulary.dqv + "computedOn", .iri(target))
            graph.add(iri, Vocabulary.dqv + "value", value)
            graph.add(dataset, Vocabulary.dqv + "hasQualityMeasurement", .iri(iri))
        }
        func decimal(_ value: Double) -> RDFGraph.Term { .literal(String(format: "%.2f", value), datatype: Vocabulary.xsd + "decimal") }
        func integer(_ value: Int) -> RDFGraph.Term { .literal(String(value), datatype: Vocabulary.xsd + "integer") }
        for (field, value) in figures.completeness {
            // A field name in an IRI fragment: unreserved characters as they are, the rest percent-encoded.
            let fragment = field.addingPercentEncoding(withAllowedCharacters: unreserved) ?? field
            let column = dataset + "#field-" + fragment
            graph.add(column, Vocabulary.rdfs + "label", .literal(field, datatype: nil))
            measure("completeness", on: column, suffix: "completeness-" + fragment, decimal(value))
        }
        measure("validity", on: dataset, suffix: "validity", decimal(figures.validity))
        if let uniqueness = figures.subjectUniqueness { measure("subject-uniqueness", on: dataset, suffix: "subject-uniqueness", decimal(uniqueness)) }
        if let latest = figures.latestRecord {
            measure("latest-record", on: dataset, suffix: "latest-record", .literal(latest.rfc3339, datatype: Vocabulary.xsd + "dateTime"))
        }
        if let hours = figures.latestRecordAgeHours { measure("latest-record-age-hours", on: dataset, suffix: "latest-record-age-hours", integer(hours)) }
        if let hours = figures.latestBatchAgeHours { measure("latest-batch-age-hours", on: dataset, suffix: "latest-batch-age-hours", integer(hours)) }
        if let batches = figures.batchesInLastPeriod { measure("batches-in-last-period", on: dataset, suffix: "batches-in-last-period", integer(batches)) }
        if let onSchedule = figures.onSchedule {
            measure("on-schedule", on: dataset, suffix: "on-schedule", .literal(onSchedule ? "true" : "false", datatype: Vocabulary.xsd + "boolean"))
        }
    }
}
