import CivitasCrypto
import CivitasTime
import Foundation

/// What a catalog says about a dataset, registered with it in its schema: `title` and
/// `description` (both required by DCAT-AP), and an optional `x-dcat` object:
///
///     "x-dcat": {"keywords": ["911", "dispatch"], "themes": ["JUST", "HEAL"],
///                "license": "http://publications.europa.eu/resource/authority/licence/CC_BY_4_0",
///                "contact": {"name": "Open data team", "email": "opendata@city.example"},
///                "spatial": ["http://sws.geonames.org/5203711/"],
///                "temporal": {"start": "2015-12-10", "end": "2016-12-31"},
///                "publisher_type": "LocalAuthority", "accrual_periodicity": "DAILY",
///                "record_time": "timeStamp"}
///
/// Themes are codes of the EU data-theme vocabulary, `publisher_type` a code of ADMS publisher
/// types; licence and places are http(s) IRIs, dates ISO 8601 calendar dates. The accrual
/// periodicity is a code of the EU frequency vocabulary, `record_time` the field holding each
/// record's time (for the catalog's timeliness figures).
public struct DatasetDescription: Sendable, Equatable {
    public struct Contact: Sendable, Equatable {
        public let name: String?
        public let email: String
    }

    public let title: String
    public let description: String
    public var keywords: [String] = []
    public var themes: [String] = []
    public var license: String?
    public var contact: Contact?
    public var spatial: [String] = []
    /// Calendar dates, YYYY-MM-DD.
    public var temporal: (start: String?, end: String?)?
    public var publisherType: String?
    /// How often batches are expected: an EU frequency code.
    public var accrualPeriodicity: String?
    /// The field holding each record's time (YYYY-MM-DD, with a time of day or not).
    public var recordTime: String?

    /// EU frequency codes (http://publications.europa.eu/resource/authority/frequency) the broker
    /// can check batches against, with their period in seconds (months and years as 30 and 365 days).
    public static let frequencies: [String: (label: String, seconds: Int)] = [
        "HOURLY": ("hourly", 3600), "DAILY": ("daily", 86400), "WEEKLY": ("weekly", 7 * 86400),
        "MONTHLY": ("monthly", 30 * 86400), "QUARTERLY": ("quarterly", 91 * 86400), "ANNUAL": ("annual", 365 * 86400),
    ]

    public static func == (lhs: DatasetDescription, rhs: DatasetDescription) -> Bool {
        lhs.title == rhs.title && lhs.description == rhs.description && lhs.keywords == rhs.keywords && lhs.themes == rhs.themes
            && lhs.license == rhs.license && lhs.contact == rhs.contact && lhs.spatial == rhs.spatial
            && lhs.temporal?.start == rhs.temporal?.start && lhs.temporal?.end == rhs.temporal?.end && lhs.publisherType == rhs.publisherType
            && lhs.accrualPeriodicity == rhs.accrualPeriodicity && lhs.recordTime == rhs.recordTime
    }

    /// The EU data-theme vocabulary's codes and English labels
    /// (http://publications.europa.eu/resource/authority/data-theme).
    public static let themeLabels: [String: String] = [
        "AGRI": "Agriculture, fisheries, forestry and food", "ECON": "Economy and finance", "EDUC": "Education, culture and sport",
        "ENER": "Energy", "ENVI": "Environment", "GOVE": "Government and public sector", "HEAL": "Health",
        "INTR": "International issues", "JUST": "Justice, legal system and public safety", "REGI": "Regions and cities",
        "SOCI": "Population and society", "TECH": "Science and technology", "TRAN": "Transport",
    ]
    /// ADMS publisher types (http://purl.org/adms/publishertype/).
    public static let publisherTypes: Set<String> = [
        "Academia-ScientificOrganisation", "Company", "IndustryConsortium", "LocalAuthority", "NationalAuthority",
        "NonGovernmentalOrganisation", "NonProfitOrganisation", "PrivateIndividual(s)", "RegionalAuthority",
        "StandardisationBody", "SupraNationalAuthority",
    ]
    public static let maximumKeywords = 32
    public static let maximumPlaces = 8
    public static let maximumText = 4096

    /// Reads the description from a dataset's schema; refuses (`invalidSchema`) what a catalog
    /// could not publish, naming the field.
    public static func parse(schema: JSONValue) throws -> DatasetDescription {
        func text(_ value: JSONValue?, _ field: String, required: Bool) throws -> String? {
            guard let value else {
                if required { throw BrokerError(.invalidSchema, "the schema needs a \(field): a catalog (DCAT-AP) publishes every dataset with a title and a description") }
                return nil
            }
            guard let string = value.stringValue, !string.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, string.utf8.count <= maximumText else {
                throw BrokerError(.invalidSchema, "\(field) must be a text of 1 to \(maximumText) bytes")
            }
            return string
        }
        var described = DatasetDescription(title: try text(schema["title"], "title", required: true) ?? "",
                                           description: try text(schema["description"], "description", required: true) ?? "")
        guard let dcat = schema["x-dcat"] else { return described }
        guard case .object(let fields) = dcat else { throw BrokerError(.invalidSchema, "x-dcat must be an object") }
        let known: Set<String> = ["keywords", "themes", "license", "contact", "spatial", "temporal", "publisher_type", "accrual_periodicity", "record_time"]
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw BrokerError(.invalidSchema, "x-dcat.\(unknown.prefix(40)) is not a catalog field (\(known.sorted().joined(separator: ", ")))")
        }
        func strings(_ field: String, limit: Int) throws -> [String] {
            guard let value = fields[field] else { return [] }
            guard case .array(let items) = value, items.count <= limit else { throw BrokerError(.invalidSchema, "x-dcat.\(field) must be a list of at most \(limit)") }
            return try items.map { item in
                guard let string = try text(item, "x-dcat.\(field)[]", required: true) else { return "" }
                return string
            }
        }
        described.keywords = try strings("keywords", limit: maximumKeywords)
        described.themes = try strings("themes", limit: themeLabels.count)
        if let theme = described.themes.first(where: { themeLabels[$0] == nil }) {
            throw BrokerError(.invalidSchema, "x-dcat.themes: \(theme.prefix(40)) is not an EU data theme (\(themeLabels.keys.sorted().joined(separator: ", ")))")
        }
        described.spatial = try strings("spatial", limit: maximumPlaces)
        for place in described.spatial where !isWebIRI(place) { throw BrokerError(.invalidSchema, "x-dcat.spatial: \(place.prefix(60)) is not an http(s) IRI") }
        if let license = fields["license"] {
            guard let iri = license.stringValue, isWebIRI(iri) else { throw BrokerError(.invalidSchema, "x-dcat.license must be the licence's http(s) IRI") }
            described.license = iri
        }
        if let contact = fields["contact"] {
            guard let email = contact["email"]?.stringValue, isEmail(email) else {
                throw BrokerError(.invalidSchema, "x-dcat.contact needs an email (name@host), and may have a name")
            }
            described.contact = Contact(name: try text(contact["name"], "x-dcat.contact.name", required: false), email: email)
        }
        if let temporal = fields["temporal"] {
            func date(_ field: String) throws -> String? {
                guard let value = temporal[field] else { return nil }
                guard let text = value.stringValue, isCalendarDate(text) else {
                    throw BrokerError(.invalidSchema, "x-dcat.temporal.\(field) must be a date (YYYY-MM-DD)")
                }
                return text
            }
            let (start, end) = (try date("start"), try date("end"))
            guard start != nil || end != nil else { throw BrokerError(.invalidSchema, "x-dcat.temporal needs a start or an end") }
            if let start, let end, end < start { throw BrokerError(.invalidSchema, "x-dcat.temporal ends before it starts") }
            described.temporal = (start, end)
        }
        if let type = fields["publisher_type"] {
            guard let code = type.stringValue, publisherTypes.contains(code) else {
                throw BrokerError(.invalidSchema, "x-dcat.publisher_type must be an ADMS publisher type (\(publisherTypes.sorted().joined(separator: ", ")))")
            }
            described.publisherType = code
        }
        if let frequency = fields["accrual_periodicity"] {
            guard let code = frequency.stringValue, frequencies[code] != nil else {
                throw BrokerError(.invalidSchema, "x-dcat.accrual_periodicity must be an EU frequency code (\(frequencies.keys.sorted().joined(separator: ", ")))")
            }
            described.accrualPeriodicity = code
        }
        if let field = fields["record_time"] {
            guard let name = field.stringValue, schema["properties"]?[name] != nil else {
                throw BrokerError(.invalidSchema, "x-dcat.record_time must name a field of the schema")
            }
            described.recordTime = name
        }
        return described
    }

    /// An absolute http(s) IRI without spaces or characters IRIs exclude.
    public static func isWebIRI(_ text: String) -> Bool {
        guard text.utf8.count <= 512, text.hasPrefix("https://") || text.hasPrefix("http://") else { return false }
        return !text.unicodeScalars.contains { $0.value <= 0x20 || "<>\"{}|^`\\".unicodeScalars.contains($0) }
    }

    /// A date written YYYY-MM-DD that exists in the Gregorian calendar.
    static func isCalendarDate(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 10, bytes[4] == 0x2D, bytes[7] == 0x2D,
              let year = Int(text.prefix(4)), let month = Int(text.dropFirst(5).prefix(2)), let day = Int(text.suffix(2)),
              bytes.enumerated().allSatisfy({ $0.offset == 4 || $0.offset == 7 || (48...57).contains($0.element) }) else { return false }
        return (1...12).contains(month) && (1...CivilDate.daysIn(month: month, year: year)).contains(day)
    }

    static func isEmail(_ text: String) -> Bool {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        return text.utf8.count <= 254 && parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".")
            && !text.unicodeScalars.contains { $0.value <= 0x20 || "<>\"{}|^`\\,;:()[]".unicodeScalars.contains($0) }
    }
}
