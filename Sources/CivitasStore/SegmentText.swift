import CivitasModel

/// Reads a segment's plaintext, the canonical JSON `{"columns":[…],"rows":[[…],…]}` of strings
/// that ``Segments/seal(dataset:sequence:key:produce:store:)`` writes, into a chunk whose values
/// stay in the text where they are written, without building a JSON value or a string per cell.
enum SegmentText {
    /// The columns and rows of `text`; nil when `text` is not in the exact form the sealing
    /// writes (the caller then parses it as any JSON), including a `\u` escape or bytes that
    /// are not UTF-8. Values with escapes are written unescaped after the text.
    static func chunk(_ text: consuming [UInt8]) -> RecordChunk? {
        var unescaped: [UInt8] = []
        var bounds: [Int] = [], starts = [0]
        let count = text.count
        let columns: [String]? = text.withUnsafeBufferPointer { bytes in
            var reader = Reader(bytes: bytes)
            guard reader.skip(#"{"columns":"#), let columns = reader.stringArray(),
                  reader.skip(#","rows":["#) else { return nil }
            bounds.reserveCapacity(2 * columns.count * Segments.rows)
            starts.reserveCapacity(Segments.rows + 1)
            if !reader.skip("]") {
                repeat {
                    guard reader.valueArray(bounds: &bounds, unescaped: &unescaped, unescapedFrom: count) else { return nil }
                    starts.append(bounds.count / 2)
                } while reader.skip(",")
                guard reader.skip("]") else { return nil }
            }
            guard reader.skip("}"), reader.atEnd else { return nil }
            return columns
        }
        guard let columns else { return nil }
        text.append(contentsOf: unescaped)
        return RecordChunk(columns: columns, bytes: text, valueBounds: bounds, rowStarts: starts)
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

        /// `[` strings separated by `,` `]`: appends each one's start and end to `bounds`, in the
        /// text or, when it has escapes, in `unescaped` (placed after the text's `offset` bytes).
        mutating func valueArray(bounds: inout [Int], unescaped: inout [UInt8], unescapedFrom offset: Int) -> Bool {
            guard skip("[") else { return false }
            if skip("]") { return true }
            repeat {
                switch quoted() {
                case .plain(let range)?:
                    bounds.append(range.lowerBound)
                    bounds.append(range.upperBound)
                case .escaped(let string)?:
                    bounds.append(offset + unescaped.count)
                    unescaped.append(contentsOf: string.utf8)
                    bounds.append(offset + unescaped.count)
                case nil:
                    return false
                }
            } while skip(",")
            return skip("]")
        }

        /// A string in quotes, with the escapes canonical JSON writes other than `\u`.
        mutating func string() -> String? {
            switch quoted() {
            case .plain(let range)?: String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            case .escaped(let string)?: string
            case nil: nil
            }
        }

        /// A string in quotes: where its bytes lie in the text, or its unescaped text when it has escapes.
        enum Quoted {
            case plain(Range<Int>)
            case escaped(String)
        }

        /// The next string in quotes, with the escapes canonical JSON writes other than `\u`; nil
        /// for anything else, a control character or bytes that are not UTF-8 included.
        mutating func quoted() -> Quoted? {
            guard skip("\"") else { return nil }
            let start = position
            var bits: UInt8 = 0
            while position < bytes.count {
                let byte = bytes[position]
                if byte == 0x22 {
                    let range = start..<position
                    // Bytes above 0x7F must be UTF-8, as a string made of them would keep them.
                    if bits >= 0x80 && Self.text(UnsafeBufferPointer(rebasing: bytes[range])) == nil { return nil }
                    position += 1
                    return .plain(range)
                }
                if byte == 0x5C { return escapedString(from: start).map(Quoted.escaped) }
                if byte < 0x20 { return nil }
                bits |= byte
                position += 1
            }
            return nil
        }

        /// The string of `utf8`, or nil when it is not UTF-8.
        private static func text(_ utf8: UnsafeBufferPointer<UInt8>) -> String? {
            let text = String(decoding: utf8, as: UTF8.self)
            // Decoding replaces ill-formed bytes, so a string that re-encodes to other bytes was not UTF-8.
            return text.utf8.elementsEqual(utf8) ? text : nil
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
                    return scratch.withUnsafeBufferPointer { Self.text($0) }
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
