/// A record stored as the bytes where it differs from another record of the same length (its
/// base): the consent records of one request share most of their bytes, so each is kept in a
/// fifth of its size. Decoding gives back exactly the bytes encoded.
///
/// The encoding is a list of runs, each its distance from the end of the previous run and its
/// length (both LEB128), then its bytes.
enum RecordDifferences {
    /// Runs separated by fewer equal bytes than this are joined (a run costs two bytes or more).
    private static let joinBelow = 4

    /// The differences of `record` from `base`; nil when their lengths differ, or when the
    /// differences would not be smaller than the record.
    static func encode(_ record: [UInt8], from base: [UInt8]) -> [UInt8]? {
        guard record.count == base.count else { return nil }
        return record.withUnsafeBytes { record in base.withUnsafeBytes { base in encode(record, base) } }
    }

    private static func encode(_ record: UnsafeRawBufferPointer, _ base: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let recordStart = record.baseAddress, let baseStart = base.baseAddress else { return [] }
        var out: [UInt8] = []
        var previousEnd = 0
        var index = 0
        while index < record.count {
            // Equal bytes eight at a time.
            while index + 8 <= record.count,
                  recordStart.loadUnaligned(fromByteOffset: index, as: UInt64.self) == baseStart.loadUnaligned(fromByteOffset: index, as: UInt64.self) {
                index += 8
            }
            guard index < record.count else { break }
            guard record[index] != base[index] else {
                index += 1
                continue
            }
            let start = index
            var lastDifferent = index
            index += 1
            while index < record.count && index - lastDifferent < joinBelow {
                if record[index] != base[index] { lastDifferent = index }
                index += 1
            }
            let end = lastDifferent + 1
            appendNumber(start - previousEnd, to: &out)
            appendNumber(end - start, to: &out)
            out += record[start..<end]
            guard out.count < record.count else { return nil }
            previousEnd = end
            index = end
        }
        return out
    }

    /// The record whose differences from `base` are `differences`; nil when they do not fit it.
    static func decode(_ differences: [UInt8], onto base: [UInt8]) -> [UInt8]? {
        var record = base
        var position = 0
        var offset = 0
        while position < differences.count {
            guard let gap = readNumber(differences, &position), let length = readNumber(differences, &position),
                  length > 0, gap <= record.count - offset, length <= record.count - offset - gap,
                  length <= differences.count - position else { return nil }
            offset += gap
            record.replaceSubrange(offset..<(offset + length), with: differences[position..<(position + length)])
            position += length
            offset += length
        }
        return record
    }

    private static func appendNumber(_ value: Int, to out: inout [UInt8]) {
        var rest = UInt(value)
        while rest >= 0x80 {
            out.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(rest))
    }

    /// A LEB128 number of at most four bytes (records are far smaller than 2^28 bytes).
    private static func readNumber(_ bytes: [UInt8], _ position: inout Int) -> Int? {
        var value = 0
        for shift in stride(from: 0, to: 28, by: 7) {
            guard position < bytes.count else { return nil }
            let byte = bytes[position]
            position += 1
            value |= Int(byte & 0x7F) << shift
            if byte < 0x80 { return value }
        }
        return nil
    }
}
