import CivitasCrypto
import Foundation

/// An RDF graph of IRIs and literals (every node is named: no blank nodes), in the order its
/// statements were added, written as JSON-LD (one node object per subject in `@graph`) or as
/// Turtle. Used for the DCAT-AP catalog.
struct RDFGraph {
    /// An object of a statement.
    enum Term: Equatable {
        case iri(String)
        /// A literal with its datatype IRI (nil: `xsd:string`).
        case literal(String, datatype: String?)
        case text(String, language: String)
    }

    private var subjects: [String] = []
    private var statements: [String: [(predicate: String, object: Term)]] = [:]

    mutating func add(_ subject: String, _ predicate: String, _ object: Term) {
        if statements[subject] == nil {
            subjects.append(subject)
            statements[subject] = []
        }
        statements[subject, default: []].append((predicate, object))
    }

    mutating func add(_ subject: String, type: String) {
        add(subject, Vocabulary.rdfType, .iri(type))
    }

    /// The objects of `subject`'s statements with `predicate`.
    func objects(_ subject: String, _ predicate: String) -> [Term] {
        (statements[subject] ?? []).filter { $0.predicate == predicate }.map(\.object)
    }

    /// JSON-LD: a context of the prefixes, and one node object per subject, properties named by
    /// compact IRIs, node references and datatypes by full IRIs.
    func jsonLD(prefixes: [(prefix: String, namespace: String)]) -> JSONValue {
        let compact = Self.compactor(prefixes)
        let nodes: [JSONValue] = subjects.map { subject in
            var node: [String: JSONValue] = ["@id": .string(subject)]
            var types: [JSONValue] = []
            var properties: [String: [JSONValue]] = [:]
            var order: [String] = []
            for (predicate, object) in statements[subject] ?? [] {
                if predicate == Vocabulary.rdfType, case .iri(let type) = object {
                    types.append(.string(compact(type)))
                    continue
                }
                let key = compact(predicate)
                if properties[key] == nil { order.append(key) }
                switch object {
                case .iri(let iri): properties[key, default: []].append(["@id": .string(iri)])
                case .literal(let value, nil): properties[key, default: []].append(["@value": .string(value)])
                case .literal(let value, let datatype?): properties[key, default: []].append(["@value": .string(value), "@type": .string(datatype)])
                case .text(let value, let language): properties[key, default: []].append(["@value": .string(value), "@language": .string(language)])
                }
            }
            if !types.isEmpty { node["@type"] = .array(types) }
            for key in order { node[key] = .array(properties[key] ?? []) }
            return .object(node)
        }
        var context: [String: JSONValue] = [:]
        for (prefix, namespace) in prefixes { context[prefix] = .string(namespace) }
        return .object(["@context": .object(context), "@graph": .array(nodes)])
    }

    /// Turtle (RDF 1.1): the prefixes, then each subject with its statements.
    func turtle(prefixes: [(prefix: String, namespace: String)]) -> String {
        let compact = Self.compactor(prefixes)
        func name(_ iri: String) -> String {
            let short = compact(iri)
            return short != iri && Self.isPrefixedName(short) ? short : "<\(Self.escapeIRI(iri))>"
        }
        var out = prefixes.map { "@prefix \($0.prefix): <\($0.namespace)> .\n" }.joined()
        for subject in subjects {
            out += "\n<\(Self.escapeIRI(subject))>"
            let lines = (statements[subject] ?? []).map { predicate, object -> String in
                let verb = predicate == Vocabulary.rdfType ? "a" : name(predicate)
                switch object {
                case .iri(let iri): return "\(verb) \(name(iri))"
                case .literal(let value, nil): return "\(verb) \"\(Self.escapeString(value))\""
                case .literal(let value, let datatype?): return "\(verb) \"\(Self.escapeString(value))\"^^\(name(datatype))"
                case .text(let value, let language): return "\(verb) \"\(Self.escapeString(value))\"@\(language)"
                }
            }
            out += "\n    " + lines.joined(separator: " ;\n    ") + " .\n"
        }
        return out
    }

    private static func compactor(_ prefixes: [(prefix: String, namespace: String)]) -> (String) -> String {
        { iri in
            for (prefix, namespace) in prefixes where iri.hasPrefix(namespace) && iri.count > namespace.count {
                return prefix + ":" + iri.dropFirst(namespace.count)
            }
            return iri
        }
    }

    /// Whether a compact name is a Turtle prefixed name as written (local part of letters,
    /// digits, `_` and `-`, not starting with `-`).
    private static func isPrefixedName(_ name: String) -> Bool {
        guard let colon = name.firstIndex(of: ":") else { return false }
        let local = name[name.index(after: colon)...]
        guard let first = local.first, first != "-" else { return false }
        return local.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
    }

    private static func escapeString(_ value: String) -> String {
        var out = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04X", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out
    }

    /// IRIs come from the broker's own settings and registered metadata, checked as http(s) or
    /// mailto IRIs without spaces; characters Turtle forbids inside `<>` are percent-encoded.
    private static func escapeIRI(_ iri: String) -> String {
        var out = ""
        for scalar in iri.unicodeScalars {
            if scalar.value <= 0x20 || "<>\"{}|^`\\".unicodeScalars.contains(scalar) {
                out += String(format: "%%%02X", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
