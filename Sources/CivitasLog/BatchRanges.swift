/// Sets of dataset batch numbers as the log writes them: ascending runs, `1-3,5,8-9`.
public enum BatchRanges {
    /// Most runs accepted when parsing (a log entry is bounded anyway).
    public static let maximumRuns = 10_000

    /// The ascending runs of distinct `sequences`, as half-open ranges.
    public static func runs(_ sequences: [Int64]) -> [Range<Int64>] {
        var result: [Range<Int64>] = []
        for sequence in Set(sequences).sorted() {
            if let last = result.last, last.upperBound == sequence {
                result[result.count - 1] = last.lowerBound..<(sequence + 1)
            } else {
                result.append(sequence..<(sequence + 1))
            }
        }
        return result
    }

    /// `sequences` as text: `1-3,5`.
    public static func text(_ sequences: [Int64]) -> String {
        runs(sequences).map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound - 1)" }.joined(separator: ",")
    }

    /// The runs written in `text`, or nil if it is not ascending, non-overlapping runs of positive numbers.
    public static func parse(_ text: String) -> [Range<Int64>]? {
        var result: [Range<Int64>] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), bounds.allSatisfy({ !$0.isEmpty && $0.count <= 18 && $0.allSatisfy(\.isASCII) }),
                  let low = Int64(bounds[0]), let high = Int64(bounds[bounds.count - 1]), low >= 0, low <= high,
                  result.last.map({ $0.upperBound < low }) ?? true, result.count < maximumRuns else { return nil }
            result.append(low..<(high + 1))
        }
        return result
    }
}
