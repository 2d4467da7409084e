import CivitasBroker
import CivitasCrypto
import CivitasModel
import Foundation

/// IRIs of the vocabularies the catalog speaks.
enum Vocabulary {
    static let rdf = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
    static let rdfType = rdf + "type"
    static let dcat = "http://www.w3.org/ns/dcat#"
    static let dct = "http://purl.org/dc/terms/"
    static let dcatap = "http://data.europa.eu/r5r/"
    static let foaf = "http://xmlns.com/foaf/0.1/"
    static let vcard = "http://www.w3.org/2006/vcard/ns#"
    static let skos = "http://www.w3.org/2004/02/skos/core#"
    static let spdx = "http://spdx.org/rdf/terms#"
    static let odrl = "http://www.w3.org/ns/odrl/2/"
    static let dpv = "https://w3id.org/dpv#"
    static let xsd = "http://www.w3.org/2001/XMLSchema#"
    static let euThemes = "http://publications.europa.eu/resource/authority/data-theme"
    static let euFileType = "http://publications.europa.eu/resource/authority/file-type/"
    static let euLanguage = "http://publications.europa.eu/resource/authority/language/"
    static let euAccessRight = "http://publications.europa.eu/resource/authority/access-right/"
    static let publisherType = "http://purl.org/adms/publishertype/"
    static let euFrequency = "http://publications.europa.eu/resource/authority/frequency/"
    static let dqv = "http://www.w3.org/ns/dqv#"
    static let rdfs = "http://www.w3.org/2000/01/rdf-schema#"

    /// The prefixes the catalog is written with, most specific first.
    static let prefixes: [(prefix: String, namespace: String)] = [
        ("dcat", dcat), ("dct", dct), ("dcatap", dcatap), ("foaf", foaf), ("vcard", vcard), ("skos", skos), ("spdx", spdx),
        ("odrl", odrl), ("dpv", dpv), ("dqv", dqv), ("xsd", xsd), ("rdfs", rdfs), ("rdf", rdf),
    ]
}

/// What the operator says about the catalog as a whole (`civitas serve --catalog FILE`), and
/// where the broker is reached (`--public-url`), which names every resource of the catalog.
public struct CatalogSettings: Sendable {
    public var publicURL: String
    public var title = "Civitas data space catalog"
    public var description = "Datasets offered through this Civitas broker. Records are released only to partners under agreements signed by both parties, after consent filtering, pseudonymization and k-anonymity, sealed to the partner and recorded in the broker's append-only log."
    public var homepage: String?
    /// The licence of the catalog's own metadata (an http(s) IRI).
    public var license: String?
    public var spatial: [String] = []
    public var contact: DatasetDescription.Contact?
    /// The ADMS publisher type of the organisation running the broker.
    public var publisherType: String?

    public init(publicURL: String = "http://localhost") {
        self.publicURL = publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL
    }

    /// Reads `{"title", "description", "homepage", "license", "spatial": [...], "contact": {"name", "email"}, "publisher_type"}`
    /// (every field optional), checking IRIs and the email as dataset descriptions are checked.
    public static func parse(_ value: JSONValue, publicURL: String) throws -> CatalogSettings {
        var settings = CatalogSettings(publicURL: publicURL)
        // The same rules as a dataset's description: a title and description, x-dcat for the rest.
        var dcat: [String: JSONValue] = [:]
        for field in ["license", "spatial", "contact", "publisher_type"] { dcat[field] = value[field] }
        let described = try DatasetDescription.parse(schema: .object(["title": value["title"] ?? .string(settings.title),
                                                                      "description": value["description"] ?? .string(settings.description),
                                                                      "x-dcat": .object(dcat)]))
        settings.title = described.title
        settings.description = described.description
        settings.license = described.license
        settings.spatial = described.spatial
        settings.contact = described.contact
        settings.publisherType = described.publisherType
        let known: Set<String> = ["title", "description", "homepage", "license", "spatial", "contact", "publisher_type"]
        if case .object(let fields) = value, let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw BrokerError(.invalid, "\(unknown.prefix(40)) is not a catalog setting (\(known.sorted().joined(separator: ", ")))")
        }
        if let homepage = value["homepage"] {
            guard let iri = homepage.stringValue, DatasetDescription.isWebIRI(iri) else {
                throw BrokerError(.invalid, "homepage must be an http(s) IRI")
            }
            settings.homepage = iri
        }
        return settings
    }
}

/// The broker's catalog as a DCAT-AP 3 graph: the catalog, the broker's API as a
/// `dcat:DataService`, each dataset with its publisher, description, distribution (released
/// through the API under an agreement), schema (with its SHA-256) and the offer a connector can
/// negotiate (`odrl:hasPolicy`), and every vocabulary term it uses, typed and labelled so that
/// the DCAT-AP shapes hold without inference. Nothing personal: names of organisations, their
/// key ids, and what publishers registered for the catalog.
enum CatalogGraph {
    static func build(settings: CatalogSettings, brokerOperator: Participant?,
                      datasets: [(dataset: Dataset, publisher: Participant?)], quality: [String: DatasetQualityFigures] = [:]) throws -> RDFGraph {
        var graph = RDFGraph()
        let base = settings.publicURL
        let catalog = base + "/catalog"
        let service = base + "/catalog#api"
        let typed = TermTypes()
        func text(_ value: String) -> RDFGraph.Term { .text(value, language: "en") }
        func dateTime(_ time: UTCTime) -> RDFGraph.Term { .literal(time.rfc3339, datatype: Vocabulary.xsd + "dateTime") }
        func agent(_ participant: Participant, type: String?) -> String {
            let iri = base + "/participants/" + participant.keys.keyID.hex
            if graph.objects(iri, Vocabulary.rdfType).isEmpty {
                graph.add(iri, type: Vocabulary.foaf + "Agent")
                graph.add(iri, Vocabulary.foaf + "name", .literal(participant.keys.name, datatype: nil))
                graph.add(iri, Vocabulary.dct + "identifier", .literal(participant.keys.keyID.hex, datatype: nil))
            }
            if let type, graph.objects(iri, Vocabulary.dct + "type").isEmpty {
                graph.add(iri, Vocabulary.dct + "type", .iri(typed.concept(&graph, Vocabulary.publisherType + type, label: Self.words(type))))
            }
            return iri
        }
        func contact(_ iri: String, _ contact: DatasetDescription.Contact) -> String {
            graph.add(iri, type: Vocabulary.vcard + "Kind")
            graph.add(iri, Vocabulary.vcard + "fn", .literal(contact.name ?? contact.email, datatype: nil))
            graph.add(iri, Vocabulary.vcard + "hasEmail", .iri("mailto:" + contact.email))
            return iri
        }

        // The catalog.
        graph.add(catalog, type: Vocabulary.dcat + "Catalog")
        graph.add(catalog, Vocabulary.dct + "title", text(settings.title))
        graph.add(catalog, Vocabulary.dct + "description", text(settings.description))
        let operatorAgent = brokerOperator.map { agent($0, type: settings.publisherType) }
        if let operatorAgent { graph.add(catalog, Vocabulary.dct + "publisher", .iri(operatorAgent)) }
        graph.add(catalog, Vocabulary.foaf + "homepage", .iri(typed.document(&graph, settings.homepage ?? base + "/")))
        graph.add(catalog, Vocabulary.dct + "language", .iri(typed.language(&graph)))
        if let license = settings.license { graph.add(catalog, Vocabulary.dct + "license", .iri(typed.license(&graph, license))) }
        for place in settings.spatial { graph.add(catalog, Vocabulary.dct + "spatial", .iri(typed.location(&graph, place))) }
        graph.add(catalog, Vocabulary.dcat + "themeTaxonomy", .iri(typed.themeScheme(&graph)))
        if let brokerOperator { graph.add(catalog, Vocabulary.dct + "issued", dateTime(brokerOperator.registered)) }
        if let modified = datasets.map(\.dataset.registered).max() ?? brokerOperator?.registered {
            graph.add(catalog, Vocabulary.dct + "modified", dateTime(modified))
        }
        graph.add(catalog, Vocabulary.dcat + "service", .iri(service))

        // The broker's API.
        graph.add(service, type: Vocabulary.dcat + "DataService")
        graph.add(service, Vocabulary.dct + "title", text("Civitas broker API"))
        graph.add(service, Vocabulary.dct + "description", text("Signed HTTP API (RFC 9421 message signatures, Ed25519) through which partners agree to terms, request releases and aggregates and receive sealed envelopes."))
        graph.add(service, Vocabulary.dcat + "endpointURL", .iri(base + "/"))
        graph.add(service, Vocabulary.dcat + "endpointDescription", .iri(base + "/openapi.json"))
        if let operatorAgent { graph.add(service, Vocabulary.dct + "publisher", .iri(operatorAgent)) }
        if let operatorContact = settings.contact { graph.add(service, Vocabulary.dcat + "contactPoint", .iri(contact(service + "-contact", operatorContact))) }
        graph.add(service, Vocabulary.dct + "conformsTo", .iri(typed.standard(&graph, "https://spec.openapis.org/oas/v3.1.0", title: "OpenAPI Specification 3.1.0")))
        graph.add(service, Vocabulary.dct + "conformsTo", .iri(typed.standard(&graph, "https://www.rfc-editor.org/rfc/rfc9421", title: "HTTP Message Signatures (RFC 9421)")))
        for keyword in ["data sharing", "privacy", "k-anonymity", "pseudonymization", "data space"] {
            graph.add(service, Vocabulary.dcat + "keyword", text(keyword))
        }
        graph.add(service, Vocabulary.dct + "accessRights", .iri(typed.accessRights(&graph)))

        var serviceThemes: [String] = []
        for (dataset, publisher) in datasets {
            let schema = try JSONParser.parse(dataset.schema)
            let described = try DatasetDescription.parse(schema: schema)
            let iri = base + "/datasets/" + dataset.id
            graph.add(catalog, Vocabulary.dcat + "dataset", .iri(iri))
            graph.add(service, Vocabulary.dcat + "servesDataset", .iri(iri))
            graph.add(iri, type: Vocabulary.dcat + "Dataset")
            graph.add(iri, Vocabulary.dct + "identifier", .literal(dataset.id, datatype: nil))
            graph.add(iri, Vocabulary.dct + "title", text(described.title))
            graph.add(iri, Vocabulary.dct + "description", text(described.description))
            graph.add(iri, Vocabulary.dct + "issued", dateTime(dataset.registered))
            if let publisher { graph.add(iri, Vocabulary.dct + "publisher", .iri(agent(publisher, type: described.publisherType))) }
            if let owner = described.contact { graph.add(iri, Vocabulary.dcat + "contactPoint", .iri(contact(iri + "#contact", owner))) }
            for keyword in described.keywords { graph.add(iri, Vocabulary.dcat + "keyword", text(keyword)) }
            for theme in described.themes {
                let concept = typed.theme(&graph, theme)
                graph.add(iri, Vocabulary.dcat + "theme", .iri(concept))
                if !serviceThemes.contains(concept) { serviceThemes.append(concept) }
            }
            for place in described.spatial { graph.add(iri, Vocabulary.dct + "spatial", .iri(typed.location(&graph, place))) }
            if let period = described.temporal {
                let temporal = iri + "#temporal"
                graph.add(temporal, type: Vocabulary.dct + "PeriodOfTime")
                if let start = period.start { graph.add(temporal, Vocabulary.dcat + "startDate", .literal(start, datatype: Vocabulary.xsd + "date")) }
                if let end = period.end { graph.add(temporal, Vocabulary.dcat + "endDate", .literal(end, datatype: Vocabulary.xsd + "date")) }
                graph.add(iri, Vocabulary.dct + "temporal", .iri(temporal))
            }
            graph.add(iri, Vocabulary.dct + "accessRights", .iri(typed.accessRights(&graph)))
            if let code = described.accrualPeriodicity {
                graph.add(iri, Vocabulary.dct + "accrualPeriodicity",
                          .iri(typed.frequency(&graph, code, label: DatasetDescription.frequencies[code]?.label ?? code)))
            }
            if let figures = quality[dataset.id] { QualityGraph.add(figures, dataset: iri, catalog: catalog, to: &graph) }

            // The schema: the standard every record conforms to, with its SHA-256 as registered and logged.
            let standard = iri + "#schema"
            graph.add(standard, type: Vocabulary.dct + "Standard")
            graph.add(standard, Vocabulary.dct + "title", text("JSON Schema of \(dataset.id), with its privacy classes"))
            let checksum = iri + "#schema-sha256"
            graph.add(checksum, type: Vocabulary.spdx + "Checksum")
            graph.add(checksum, Vocabulary.spdx + "algorithm", .iri(Vocabulary.spdx + "checksumAlgorithm_sha256"))
            graph.add(checksum, Vocabulary.spdx + "checksumValue", .literal(Hex.encode(dataset.schemaSHA256), datatype: Vocabulary.xsd + "hexBinary"))
            graph.add(standard, Vocabulary.spdx + "checksum", .iri(checksum))
            if let id = schema["$id"]?.stringValue, DatasetDescription.isWebIRI(id) { graph.add(standard, Vocabulary.foaf + "page", .iri(typed.document(&graph, id))) }
            graph.add(iri, Vocabulary.dct + "conformsTo", .iri(standard))

            // How it is obtained: through the API, under an agreement, as CSV.
            let distribution = iri + "#distribution"
            graph.add(distribution, type: Vocabulary.dcat + "Distribution")
            graph.add(distribution, Vocabulary.dct + "title", text("\(described.title), released under an agreement"))
            graph.add(distribution, Vocabulary.dct + "description", text("Released only to a partner with an agreement signed by both parties, for a purpose it names: records without consent left out, subjects pseudonymized, quasi-identifiers generalized to k-anonymity, sealed to the partner's key and logged."))
            graph.add(distribution, Vocabulary.dcat + "accessURL", .iri(iri))
            graph.add(distribution, Vocabulary.dcat + "accessService", .iri(service))
            graph.add(distribution, Vocabulary.dct + "format", .iri(typed.csv(&graph)))
            graph.add(distribution, Vocabulary.dcatap + "availability", .iri(typed.availability(&graph)))
            if let license = described.license { graph.add(distribution, Vocabulary.dct + "license", .iri(typed.license(&graph, license))) }
            graph.add(iri, Vocabulary.dcat + "distribution", .iri(distribution))

            // What a connector can negotiate: use for one of the offered purposes.
            let offer = iri + "#offer"
            graph.add(offer, type: Vocabulary.odrl + "Offer")
            graph.add(offer, Vocabulary.odrl + "uid", .iri(offer))
            graph.add(offer, Vocabulary.odrl + "target", .iri(iri))
            if let publisher { graph.add(offer, Vocabulary.odrl + "assigner", .iri(agent(publisher, type: described.publisherType))) }
            let permission = iri + "#offer-permission"
            graph.add(offer, Vocabulary.odrl + "permission", .iri(permission))
            graph.add(permission, Vocabulary.odrl + "action", .iri(Vocabulary.odrl + "use"))
            graph.add(permission, Vocabulary.odrl + "target", .iri(iri))
            if !dataset.purposes.isEmpty {
                let constraint = iri + "#offer-purpose"
                graph.add(permission, Vocabulary.odrl + "constraint", .iri(constraint))
                graph.add(constraint, Vocabulary.odrl + "leftOperand", .iri(Vocabulary.odrl + "purpose"))
                graph.add(constraint, Vocabulary.odrl + "operator", .iri(Vocabulary.odrl + "isAnyOf"))
                for purpose in dataset.purposes {
                    let purposeIRI = base + "/purposes/" + purpose
                    if graph.objects(purposeIRI, Vocabulary.rdfType).isEmpty {
                        graph.add(purposeIRI, type: Vocabulary.dpv + "Purpose")
                        graph.add(purposeIRI, Vocabulary.skos + "prefLabel", .literal(purpose, datatype: nil))
                    }
                    graph.add(constraint, Vocabulary.odrl + "rightOperand", .iri(purposeIRI))
                    graph.add(iri, Vocabulary.dpv + "hasPurpose", .iri(purposeIRI))
                }
            }
            graph.add(iri, Vocabulary.odrl + "hasPolicy", .iri(offer))
        }
        for theme in serviceThemes { graph.add(service, Vocabulary.dcat + "theme", .iri(theme)) }
        return graph
    }

    /// "LocalAuthority" → "Local authority".
    static func words(_ code: String) -> String {
        var out = ""
        for character in code {
            if character.isUppercase && !out.isEmpty && out.last != "-" { out += " " + character.lowercased() } else { out.append(character) }
        }
        return out
    }

    /// Vocabulary terms the catalog refers to, each typed (and labelled) once in the graph.
    struct TermTypes {
        func concept(_ graph: inout RDFGraph, _ iri: String, label: String, scheme: String? = nil) -> String {
            if graph.objects(iri, Vocabulary.rdfType).isEmpty {
                graph.add(iri, type: Vocabulary.skos + "Concept")
                graph.add(iri, Vocabulary.skos + "prefLabel", .text(label, language: "en"))
                if let scheme { graph.add(iri, Vocabulary.skos + "inScheme", .iri(scheme)) }
            }
            return iri
        }

        func themeScheme(_ graph: inout RDFGraph) -> String {
            let iri = Vocabulary.euThemes
            if graph.objects(iri, Vocabulary.rdfType).isEmpty {
                graph.add(iri, type: Vocabulary.skos + "ConceptScheme")
                graph.add(iri, Vocabulary.dct + "title", .text("Data theme", language: "en"))
            }
            return iri
        }

        func theme(_ graph: inout RDFGraph, _ code: String) -> String {
            let scheme = themeScheme(&graph)
            return concept(&graph, scheme + "/" + code, label: DatasetDescription.themeLabels[code] ?? code, scheme: scheme)
        }

        private func typedOnce(_ graph: inout RDFGraph, _ iri: String, _ type: String, label: String? = nil) -> String {
            if graph.objects(iri, Vocabulary.rdfType).isEmpty {
                graph.add(iri, type: type)
                if let label { graph.add(iri, Vocabulary.skos + "prefLabel", .text(label, language: "en")) }
            }
            return iri
        }

        func language(_ graph: inout RDFGraph) -> String {
            typedOnce(&graph, Vocabulary.euLanguage + "ENG", Vocabulary.dct + "LinguisticSystem", label: "English")
        }

        func document(_ graph: inout RDFGraph, _ iri: String) -> String { typedOnce(&graph, iri, Vocabulary.foaf + "Document") }
        func license(_ graph: inout RDFGraph, _ iri: String) -> String { typedOnce(&graph, iri, Vocabulary.dct + "LicenseDocument") }
        func location(_ graph: inout RDFGraph, _ iri: String) -> String { typedOnce(&graph, iri, Vocabulary.dct + "Location") }
        func frequency(_ graph: inout RDFGraph, _ code: String, label: String) -> String {
            typedOnce(&graph, Vocabulary.euFrequency + code, Vocabulary.dct + "Frequency", label: label)
        }
        func csv(_ graph: inout RDFGraph) -> String { typedOnce(&graph, Vocabulary.euFileType + "CSV", Vocabulary.dct + "MediaTypeOrExtent", label: "CSV") }

        func standard(_ graph: inout RDFGraph, _ iri: String, title: String) -> String {
            if graph.objects(iri, Vocabulary.rdfType).isEmpty {
                graph.add(iri, type: Vocabulary.dct + "Standard")
                graph.add(iri, Vocabulary.dct + "title", .text(title, language: "en"))
            }
            return iri
        }

        func accessRights(_ graph: inout RDFGraph) -> String {
            typedOnce(&graph, Vocabulary.euAccessRight + "RESTRICTED", Vocabulary.dct + "RightsStatement", label: "restricted")
        }

        func availability(_ graph: inout RDFGraph) -> String {
            concept(&graph, Vocabulary.dcatap + "availability/stable", label: "stable")
        }
    }
}
