import CivitasCrypto

/// Names in an NGSI entity — its type, attribute names, attribute kinds — written as full or
/// compact IRIs, brought back to the short terms a schema uses. A name is first expanded with
/// the entity's own (inline) `@context`; an IRI in the NGSI-LD core namespaces
/// (`https://uri.etsi.org/ngsi-ld/` and its default context) or in Smart Data Models'
/// (`https://smartdatamodels.org/dataModel.Domain/term`) is then written as its term, as those
/// contexts define their terms; another full IRI that the inline context names with a term is
/// written as that term. Contexts given by URL are not fetched; anything else is kept as written.
struct NGSINames {
    /// Term (or prefix) → IRI, from the objects of the entity's `@context`.
    private var definitions: [String: String] = [:]
    /// IRI → term, the other way round.
    private var terms: [String: String] = [:]

    static let coreNamespaces = ["https://uri.etsi.org/ngsi-ld/default-context/", "https://uri.etsi.org/ngsi-ld/"]
    static let smartDataModels = "https://smartdatamodels.org/"

    init(context: JSONValue?) {
        var objects: [[String: JSONValue]] = []
        switch context {
        case .object(let object)?: objects = [object]
        case .array(let items)?: objects = items.compactMap(\.objectValue)
        default: break
        }
        for object in objects {
            for (term, value) in object where !term.hasPrefix("@") {
                guard let iri = value.stringValue ?? value["@id"]?.stringValue, iri.contains(":") else { continue }
                definitions[term] = iri
                terms[iri] = term
            }
        }
    }

    /// The short term for `name`.
    func term(_ name: String) -> String {
        let iri = expanded(name)
        if let known = Self.knownTerm(iri) { return known }
        // A full IRI the entity's context names with a term: that term. Anything else as written.
        if name.contains("://"), let term = terms[iri], !term.contains(":") { return term }
        return name
    }

    /// `name` as an IRI, when the inline context makes it one (a term, or prefix:suffix).
    private func expanded(_ name: String) -> String {
        if let iri = definitions[name] { return iri }
        if !name.contains("://"), let colon = name.firstIndex(of: ":"), let prefix = definitions[String(name[..<colon])] {
            return prefix + name[name.index(after: colon)...]
        }
        return name
    }

    /// The term of an IRI in a namespace whose context defines its terms as namespace + term.
    static func knownTerm(_ iri: String) -> String? {
        for namespace in coreNamespaces where iri.hasPrefix(namespace) && iri.count > namespace.count {
            return String(iri.dropFirst(namespace.count))
        }
        guard iri.hasPrefix(smartDataModels) else { return nil }
        let rest = iri.dropFirst(smartDataModels.count)
        if rest.hasPrefix("dataModel."), let slash = rest.firstIndex(of: "/") {
            let term = rest[rest.index(after: slash)...]
            return term.isEmpty || term.contains("/") ? nil : String(term)
        }
        return rest.isEmpty || rest.contains("/") ? nil : String(rest)
    }
}
