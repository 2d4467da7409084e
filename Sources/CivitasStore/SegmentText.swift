/// Reads a segment's plaintext, the canonical JSON `{"columns":[…],"rows":[[…],…]}` of strings
/// that ``Segments/seal(dataset:sequence:key:produce:store:)`` writes, straight into rows of
/// strings, without building a JSON value for every cell.
enum SegmentText {
    /// The columns and rows of `text`; nil when `text` is not in the exact form the sealing
    /// writes (the caller then parses it as any JSON), including a `\u` escape or bytes that
    /// are not UTF-8.
    static func rows(_ text: [UInt8]) -> (columns: [String], rows: [[String]])? {
        text.withUnsafeBufferPointer { bytes in
            var reader = Reader(bytes: bytes)
            guard reader.skip(#"{"columns":"#), let columns = reader.stringArray(),
                  reader.skip(#","rows":["#) else { return nil }
            var rows: [[String]] = []
            rows.reserveCapacity(Segments.rows)
            if !reader.skip("]") {
                repeat {
                    guard let row = reader.stringArray() else { return nil }
                    rows.append(row)
                } while reader.skip(",")
                guard reader.skip("]") else { return nil }
            }
            guard reader.skip("}"), reader.atEnd else { return nil }
            return (columns, rows)
        }
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var position = 0
        /// Unescaped bytes of the string being read, when it has escapes.
        var scratch: [UInt8] = []

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        var atEnd: Bool { position == bytes.count }

        /// Steps over `literal` if the text continues with it.
        mutating func skip(_ literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard bytes.count - position >= count else { return false }
            for offset in 0..<count where bytes[position + offset] != literal.utf8Start[offset] { return false }
            position += count
            return true
        }

        /// `[` strings separated by `,` `]`.
        mutating func stringArray() -> [String]? {
            guard skip("[") else { return nil }
            var strings: [String] = []
            if skip("]") { return strings }
            repeat {
                guard let string = string() else { return nil }
                strings.append(string)
            } while skip(",")
            return skip("]") ? strings : nil
        }

        /// A string in quotes, with the escapes canonical JSON writes other than `\u`.
        mutating func string() -> String? {
            guard skip("\"") else { return nil }
            let start = position
            var bits: UInt8 = 0
            while position < bytes.count {
                let byte = bytes[position]
                if byte == 0x22 {
                    let text = Self.text(UnsafeBufferPointer(rebasing: bytes[start..<position]), ascii: bits < 0x80)
                    position += 1
                    return text
                }
                if byte == 0x5C { return escapedString(from: start) }
                if byte < 0x20 { return nil }
                bits |= byte
                position += 1
            }
            return nil
        }

        /// The string of `utf8`, or nil when it is not UTF-8 (`ascii`: every byte is below 0x80).
        private static func text(_ utf8: UnsafeBufferPointer<UInt8>, ascii: Bool) -> String? {
            let text = String(decoding: utf8, as: UTF8.self)
            // Decoding replaces ill-formed bytes, so a string that re-encodes to other bytes was not UTF-8.
            return ascii || text.utf8.elementsEqual(utf8) ? text : nil
        }

        /// The rest of a string that has an escape, its plain start at `start`.
        private mutating func escapedString(from start: Int) -> String? {
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<position]))
            while position < bytes.count {
                let byte = bytes[position]
                position += 1
                switch byte {
                case 0x22:
                    return scratch.withUnsafeBufferPointer { Self.text($0, ascii: false) }
                case 0x5C:
                    guard position < bytes.count else { return nil }
                    let escaped = bytes[position]
                    position += 1
                    switch escaped {
                    case 0x22, 0x5C, 0x2F: scratch.append(escaped)
                    case UInt8(ascii: "b"): scratch.append(0x08)
                    case UInt8(ascii: "f"): scratch.append(0x0C)
                    case UInt8(ascii: "n"): scratch.append(0x0A)
                    case UInt8(ascii: "r"): scratch.append(0x0D)
                    case UInt8(ascii: "t"): scratch.append(0x09)
                    default: return nil
                    }
                case ..<0x20:
                    return nil
                default:
                    scratch.append(byte)
                }
            }
            return nil
        }
    }
}
