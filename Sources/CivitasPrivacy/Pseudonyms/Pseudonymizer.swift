import CivitasTime
import CivitasCrypto

/// Pseudonyms for one domain (agreement, partner, purpose, epoch): the same
/// input gives the same pseudonym within the domain; pseudonyms of different
/// domains cannot be joined without the master key.
public struct PseudonymDomain: Sendable, Equatable, CustomStringConvertible {
    public let agreement: String
    public let partner: String
    public let purpose: String
    public let epoch: String

    public init(agreement: String, partner: String, purpose: String, epoch: String) {
        self.agreement = agreement
        self.partner = partner
        self.purpose = purpose
        self.epoch = epoch
    }

    /// The domain's canonical text, from which its key is derived.
    public var description: String {
        (try? CanonicalJSON.encode(["agreement": .string(agreement), "partner": .string(partner),
                                    "purpose": .string(purpose), "epoch": .string(epoch)]))
            .map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}

/// Keyed pseudonyms, reversible pseudonyms and date shifting for one domain.
public struct Pseudonymizer: Sendable {
    private let prf: DomainPRF
    private let master: PseudonymMasterKey
    public let domain: PseudonymDomain

    public init(master: PseudonymMasterKey, domain: PseudonymDomain) throws {
        self.master = master
        self.domain = domain
        self.prf = try master.prf(domain: domain.description)
    }

    /// A one-way pseudonym: HMAC-SHA-256 under the domain key, first 128 bits, 32 hex characters.
    public func pseudonym(_ value: String) -> String {
        Hex.encode(prf.mac(value).prefix(16))
    }

    /// A reversible pseudonym of a numeric identifier (FF1, radix 10, same length); only the
    /// holder of the master key can reverse it. Refuses identifiers shorter than 6 digits (domains below 10^6).
    public func reversible(_ digits: String) throws -> String {
        try master.ff1(domain: domain.description, radix: 10).encrypt(digits, tweak: [])
    }

    /// Reverses ``reversible(_:)``.
    public func reverse(_ digits: String) throws -> String {
        try master.ff1(domain: domain.description, radix: 10).decrypt(digits, tweak: [])
    }

    /// The subject's date offset, in days, within ±`maximumDays`: keyed, so the same
    /// subject always moves by the same amount and intervals within a subject survive.
    public func dateOffset(subject: String, maximumDays: Int) -> Int {
        precondition(maximumDays > 0, "a date shift needs a positive range")
        let span = UInt64(2 * maximumDays + 1)
        // Rejection keeps the offset uniform: draw again (from the next HMAC) past the last full span.
        var input = "date-shift:" + subject
        while true {
            let word = prf.mac(input).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            if word < UInt64.max - UInt64.max % span { return Int(word % span) - maximumDays }
            input += "+"
        }
    }

    /// Shifts a date `YYYY-MM-DD` or timestamp `YYYY-MM-DD[T ]HH:MM:SS…` by the subject's offset;
    /// the time of day is unchanged. Throws for anything else.
    public func shiftDate(_ text: String, subject: String, maximumDays: Int) throws -> String {
        let bytes = Array(text.utf8)
        guard bytes.count >= 10, bytes[4] == 45, bytes[7] == 45,
              let year = Int(String(decoding: bytes[0..<4], as: UTF8.self)),
              let month = Int(String(decoding: bytes[5..<7], as: UTF8.self)),
              let day = Int(String(decoding: bytes[8..<10], as: UTF8.self)),
              (1...12).contains(month), (1...CivilDate.daysIn(month: month, year: year)).contains(day) else {
            throw PrivacyError(.invalidValue, "'\(text.prefix(40))' is not a date like 2026-11-26")
        }
        let shifted = CivilDate.fromDays(CivilDate.days(year: year, month: month, day: day)
                                         + dateOffset(subject: subject, maximumDays: maximumDays))
        let date = String(format4(shifted.year)) + "-" + pad2(shifted.month) + "-" + pad2(shifted.day)
        return date + String(decoding: bytes[10...], as: UTF8.self)
    }

    private func pad2(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    private func format4(_ n: Int) -> String { String(repeating: "0", count: max(0, 4 - String(n).count)) + String(n) }
}

/// Reading dates in records: whether a text is a calendar date (the arithmetic is `CivilDate`'s).
extension CivilDate {
    /// Why `text` is not a calendar date `YYYY-MM-DD`, optionally followed by a time of day
    /// `[T ]HH:MM[:SS]` and anything after it (fractions, a zone); nil when it is one.
    static func problem(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= bytes.count, bytes[range].allSatisfy({ (48...57).contains($0) }) else { return nil }
            return Int(String(decoding: bytes[range], as: UTF8.self))
        }
        guard bytes.count >= 10, bytes[4] == 45, bytes[7] == 45, let year = number(0..<4), let month = number(5..<7),
              let day = number(8..<10) else { return "'\(text.prefix(40))' is not a date like 2016-03-01 09:00:00" }
        guard (1...12).contains(month) else { return "'\(text.prefix(40))' has no month \(month)" }
        guard (1...daysIn(month: month, year: year)).contains(day) else {
            return "'\(text.prefix(40))' has no day \(day) in month \(month) of \(year)"
        }
        guard bytes.count > 10 else { return nil }
        guard bytes[10] == 0x54 || bytes[10] == 0x20, bytes.count >= 16, bytes[13] == 58, let hour = number(11..<13),
              let minute = number(14..<16) else { return "'\(text.prefix(40))' has no time of day like 09:00" }
        guard hour <= 23, minute <= 59 else { return "'\(text.prefix(40))' has no time \(hour):\(minute)" }
        if bytes.count >= 19, bytes[16] == 58 {
            guard let second = number(17..<19), second <= 60 else { return "'\(text.prefix(40))' has an impossible second" }
        }
        return nil
    }
}

extension Pseudonymizer {
    /// Replaces identifier and subject fields by their pseudonyms (FF1 keeps non-digits in place).
    public func apply(to table: CSVTable, fields: [DatasetSchema.Field]) throws -> CSVTable {
        var result = table
        for field in fields {
            let column = try table.index(of: field.name)
            for r in result.rows.indices {
                result.rows[r][column] = try pseudonymize(result.rows[r][column], as: field)
            }
        }
        return result
    }

    /// The pseudonym of one value of an identifier or subject field; an empty value stays empty.
    public func pseudonymize(_ value: String, as field: DatasetSchema.Field) throws -> String {
        guard !value.isEmpty else { return value }
        switch field.pseudonym ?? .hmac {
        case .hmac:
            return pseudonym(value)
        case .ff1:
            let digits = value.filter(\.isNumber)
            let encrypted = Array(try reversible(String(digits)))
            var position = 0
            return String(value.map { character -> Character in
                guard character.isNumber else { return character }
                defer { position += 1 }
                return encrypted[position]
            })
        }
    }
}
