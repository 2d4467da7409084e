import CivitasCrypto
import CivitasModel

/// The agreement policy as an ODRL 2.2 Agreement under the Civitas ODRL profile
/// (docs/odrl-profile.md): every member the policy document holds becomes an ODRL term, so the
/// document can be rebuilt from the ODRL alone and hashes to the same SHA-256
/// (``AgreementPolicy/policyDocument(fromODRL:)``). Purposes are typed `dpv:Purpose`, the legal
/// basis is the DPV GDPR IRI of its Article 6(1) point.
extension AgreementPolicy {
    /// The profile every exported agreement declares.
    public static let odrlProfile = "https://civitas.example/ns/odrl-profile/1"
    /// The namespace of the profile's terms.
    public static let odrlNamespace = "https://civitas.example/ns/odrl#"
    static let gdprNamespace = "https://w3id.org/dpv/legal/eu/gdpr#"
    static let purposePrefix = "urn:civitas:purpose:"
    static let datasetPrefix = "urn:civitas:dataset:"
    static let participantPrefix = "urn:civitas:participant:"
    static let agreementPrefix = "urn:civitas:agreement:"

    /// Legal bases and their DPV GDPR IRIs (Article 6(1) points a to f).
    static let legalBasisIRIs: [LegalBasis: String] = [
        .consent: "eu-gdpr:A6-1-a", .contract: "eu-gdpr:A6-1-b", .legalObligation: "eu-gdpr:A6-1-c",
        .vitalInterests: "eu-gdpr:A6-1-d", .publicTask: "eu-gdpr:A6-1-e", .legitimateInterests: "eu-gdpr:A6-1-f",
    ]

    /// The JSON-LD context of the profile's terms (served by the broker at /odrl/profile.jsonld),
    /// used beside the ODRL context.
    public static let odrlProfileContext: JSONValue = [
        "civitas": .string(odrlNamespace), "dpv": "https://w3id.org/dpv#", "eu-gdpr": .string(gdprNamespace),
        "dspace": "https://w3id.org/dspace/v0.8/", "xsd": "http://www.w3.org/2001/XMLSchema#",
        "dpv:hasLegalBasis": ["@type": "@id"],
    ]

    /// Profile terms: policy member (path in the document) ⇄ left operand.
    static let treatmentOperands: [(member: String, operand: String)] = [
        ("k", "civitas:k"), ("l", "civitas:l"), ("suppression_limit", "civitas:suppressionLimit"), ("algorithm", "civitas:algorithm"),
    ]
    static let pseudonymOperands: [(member: String, operand: String)] = [("pseudonym_epoch", "civitas:pseudonymEpoch"), ("linkage", "civitas:linkage")]
    static let noiseOperands: [(member: String, operand: String)] = [("epsilon", "civitas:epsilon"), ("fraction_digits", "civitas:fractionDigits")]
    static let aggregateOperands: [(member: String, operand: String)] = [
        ("group_by", "civitas:groupBy"), ("group_keys", "civitas:groupKeys"), ("max_epsilon_per_query", "civitas:epsilonPerQuery"),
        ("max_rows_per_subject", "civitas:rowsPerSubject"), ("max_groups_per_subject", "civitas:groupsPerSubject"),
    ]
    static let syntheticOperands: [(member: String, operand: String)] = [
        ("fields", "civitas:syntheticField"), ("domains", "civitas:domains"), ("bins", "civitas:bins"), ("tree", "civitas:tree"),
        ("max_rho_per_release", "civitas:rhoPerRelease"), ("max_records_per_subject", "civitas:recordsPerSubject"),
    ]
    static let budgetOperands: [(member: String, operand: String)] = [("epsilon_budget", "civitas:epsilon"), ("rho_budget", "civitas:rho")]
    static let feedOperands: [(member: String, operand: String)] = [
        ("window_records", "civitas:windowRecords"), ("window_seconds", "civitas:windowSeconds"), ("below_k", "civitas:belowK"),
    ]

    /// The policy as an ODRL 2.2 Agreement (JSON-LD), with the time it was agreed when it was.
    public func odrl(agreed: UTCTime? = nil) -> JSONValue {
        let document = (try? JSONParser.parse(canonical)) ?? .null
        /// A constraint on a value of the policy document (`typed`: a JSON-LD value object already).
        func constraint(_ operand: String, _ op: String, _ value: JSONValue, typed: Bool = false) -> JSONValue {
            if typed { return ["leftOperand": .string(operand), "operator": .string(op), "rightOperand": value] }
            var right = value
            // A map (group keys) is one JSON literal; a list keeps its order as an RDF list (the
            // order is part of the policy, and its hash); scalars are ODRL values as they are.
            // (A list of lists, the tree, is one JSON literal too.)
            if case .object = value { right = ["@value": value, "@type": "@json"] }
            if case .array(let items) = value, items.contains(where: { if case .array = $0 { return true } else { return false } }) {
                return ["leftOperand": .string(operand), "operator": .string(op), "rightOperand": ["@value": value, "@type": "@json"]]
            }
            if case .array = value { right = ["@list": value] }
            return ["leftOperand": .string(operand), "operator": .string(op), "rightOperand": right]
        }
        func constraints(_ object: JSONValue?, _ operands: [(member: String, operand: String)], _ op: (String) -> String) -> [JSONValue] {
            operands.compactMap { member, operand in object?[member].map { constraint(operand, op(member), $0) } }
        }
        let treatment = document["treatment"]
        var duties: [JSONValue] = [
            ["action": "anonymize", "constraint": .array(constraints(treatment, Self.treatmentOperands) { $0 == "suppression_limit" ? "lteq" : $0 == "k" || $0 == "l" ? "gteq" : "eq" })],
            ["action": "civitas:pseudonymize", "constraint": .array(constraints(treatment, Self.pseudonymOperands) { _ in "eq" })],
        ]
        if let noise = treatment?["measure_noise"] {
            duties.append(["action": "civitas:addNoise", "constraint": .array(constraints(noise, Self.noiseOperands) { $0 == "epsilon" ? "lteq" : "eq" })])
        }
        if document["epsilon_budget"] != nil || document["rho_budget"] != nil {
            duties.append(["action": "civitas:chargePrivacyBudget", "constraint": .array(constraints(document, Self.budgetOperands) { _ in "lteq" })])
        }
        var use: [JSONValue] = [
            constraint("purpose", "isAnyOf", .array(purposes.map { ["@id": .string(Self.purposePrefix + $0), "@type": "dpv:Purpose"] })),
            constraint("dateTime", "gteq", ["@value": .string(validFrom.rfc3339), "@type": "xsd:dateTime"], typed: true),
            constraint("dateTime", "lteq", ["@value": .string(validUntil.rfc3339), "@type": "xsd:dateTime"], typed: true),
            constraint("civitas:field", "isAnyOf", .array(fields.map(JSONValue.string))),
        ]
        if let cap = treatment?["max_records_per_subject"] { use.append(constraint("civitas:recordsPerSubject", "lteq", cap)) }
        let target = JSONValue.string(Self.datasetPrefix + dataset)
        let (assigner, assignee) = (JSONValue.string(Self.participantPrefix + publisher.hex), JSONValue.string(Self.participantPrefix + partner.hex))
        // Each rule names its parties and target itself (the atomic form the ODRL shapes check).
        func rule(_ action: String, _ rules: [JSONValue], duties: [JSONValue]? = nil) -> JSONValue {
            var rule: [String: JSONValue] = ["target": target, "assigner": assigner, "assignee": assignee, "action": .string(action), "constraint": .array(rules)]
            if let duties { rule["duty"] = .array(duties) }
            return .object(rule)
        }
        var permissions: [JSONValue] = [rule("use", use, duties: duties)]
        if let aggregates = document["aggregates"] {
            permissions.append(rule("civitas:aggregate", constraints(aggregates, Self.aggregateOperands) { $0 == "group_by" ? "isAnyOf" : $0 == "group_keys" ? "eq" : "lteq" }))
        }
        if let synthetic = document["synthetic"] {
            permissions.append(rule("civitas:synthesize", constraints(synthetic, Self.syntheticOperands) {
                $0 == "fields" ? "isAnyOf" : $0 == "max_rho_per_release" || $0 == "max_records_per_subject" ? "lteq" : "eq"
            }))
        }
        if let feed = document["feed"] {
            permissions.append(rule("civitas:subscribe", constraints(feed, Self.feedOperands) { _ in "eq" }))
        }
        var agreement: [String: JSONValue] = [
            "@context": ["http://www.w3.org/ns/odrl.jsonld", Self.odrlProfileContext],
            "@type": "Agreement",
            "uid": .string(Self.agreementPrefix + id),
            "profile": .string(Self.odrlProfile),
            "target": target,
            "assigner": assigner,
            "assignee": assignee,
            "dpv:hasLegalBasis": .string(Self.legalBasisIRIs[legalBasis] ?? legalBasis.rawValue),
            "civitas:policySHA256": .string(Hex.encode(sha256)),
            "permission": .array(permissions),
        ]
        if let register = document["register"] { agreement["civitas:register"] = register }
        if let agreed { agreement["dspace:timestamp"] = ["@value": .string(agreed.rfc3339), "@type": "xsd:dateTime"] }
        return .object(agreement)
    }

    /// The policy document an ODRL Agreement of this profile states (as ``odrl(agreed:)``
    /// writes it); parse it with ``parse(_:)``. Refuses an agreement of another profile or one
    /// whose terms the profile does not define.
    public static func policyDocument(fromODRL odrl: JSONValue) throws -> JSONValue {
        guard odrl["@type"]?.stringValue == "Agreement", odrl["profile"]?.stringValue == odrlProfile else {
            throw invalid("not an ODRL Agreement of the Civitas profile \(odrlProfile)")
        }
        func stripped(_ key: String, _ prefix: String) throws -> String {
            guard let text = odrl[key]?.stringValue, text.hasPrefix(prefix) else { throw invalid("the agreement's \(key) is not a \(prefix) IRI") }
            return String(text.dropFirst(prefix.count))
        }
        var document: [String: JSONValue] = [
            "agreement": .string(try stripped("uid", agreementPrefix)),
            "dataset": .string(try stripped("target", datasetPrefix)),
            "publisher": .string(try stripped("assigner", participantPrefix)),
            "partner": .string(try stripped("assignee", participantPrefix)),
        ]
        guard let basisIRI = odrl["dpv:hasLegalBasis"]?.stringValue, let basis = legalBasisIRIs.first(where: { $0.value == basisIRI })?.key else {
            throw invalid("the agreement's dpv:hasLegalBasis is not a GDPR Article 6(1) basis")
        }
        document["legal_basis"] = .string(basis.rawValue)
        if let register = odrl["civitas:register"] { document["register"] = register }
        guard case .array(let permissions)? = odrl["permission"] else { throw invalid("the agreement has no permission") }
        func constraintList(_ rule: JSONValue) -> [JSONValue] {
            if case .array(let items)? = rule["constraint"] { return items }
            return []
        }
        func value(_ constraint: JSONValue) -> JSONValue? {
            guard let right = constraint["rightOperand"] else { return nil }
            if right["@type"]?.stringValue == "@json" { return right["@value"] }
            if let list = right["@list"] { return list }
            return right
        }
        /// The members `operands` name, read from a rule's constraints; an operand outside them is refused.
        func members(_ rule: JSONValue, _ operands: [(member: String, operand: String)], extra: Set<String> = []) throws -> [String: JSONValue] {
            var found: [String: JSONValue] = [:]
            for constraint in constraintList(rule) {
                guard let operand = constraint["leftOperand"]?.stringValue else { throw invalid("a constraint has no leftOperand") }
                if extra.contains(operand) { continue }
                guard let member = operands.first(where: { $0.operand == operand })?.member, let right = value(constraint) else {
                    throw invalid("the profile defines no constraint \(operand.prefix(60)) here")
                }
                found[member] = right
            }
            return found
        }
        var treatment: [String: JSONValue] = [:]
        for permission in permissions {
            switch permission["action"]?.stringValue {
            case "use":
                for constraint in constraintList(permission) {
                    let right = value(constraint)
                    switch (constraint["leftOperand"]?.stringValue, constraint["operator"]?.stringValue) {
                    case ("purpose", _):
                        guard case .array(let items)? = right else { throw invalid("purposes are a list") }
                        document["purposes"] = .array(try items.map { item in
                            guard let iri = item["@id"]?.stringValue, iri.hasPrefix(purposePrefix) else { throw invalid("a purpose is not a \(purposePrefix) IRI") }
                            return .string(String(iri.dropFirst(purposePrefix.count)))
                        })
                    case ("dateTime", "gteq"): document["valid_from"] = right?["@value"]
                    case ("dateTime", "lteq"): document["valid_until"] = right?["@value"]
                    case ("civitas:field", _): document["fields"] = right
                    case ("civitas:recordsPerSubject", _): treatment["max_records_per_subject"] = right
                    default: throw invalid("the profile defines no constraint \(constraint["leftOperand"]?.stringValue?.prefix(60) ?? "?") on use")
                    }
                }
                guard case .array(let duties)? = permission["duty"] else { throw invalid("use carries the treatment as duties") }
                for duty in duties {
                    switch duty["action"]?.stringValue {
                    case "anonymize": treatment.merge(try members(duty, treatmentOperands)) { _, new in new }
                    case "civitas:pseudonymize": treatment.merge(try members(duty, pseudonymOperands)) { _, new in new }
                    case "civitas:addNoise": treatment["measure_noise"] = .object(try members(duty, noiseOperands))
                    case "civitas:chargePrivacyBudget": document.merge(try members(duty, budgetOperands)) { _, new in new }
                    default: throw invalid("the profile defines no duty \(duty["action"]?.stringValue?.prefix(60) ?? "?")")
                    }
                }
            case "civitas:aggregate": document["aggregates"] = .object(try members(permission, aggregateOperands))
            case "civitas:subscribe": document["feed"] = .object(try members(permission, feedOperands))
            case "civitas:synthesize": document["synthetic"] = .object(try members(permission, syntheticOperands))
            default: throw invalid("the profile defines no permission \(permission["action"]?.stringValue?.prefix(60) ?? "?")")
            }
        }
        document["treatment"] = .object(treatment)
        return .object(document)
    }
}
