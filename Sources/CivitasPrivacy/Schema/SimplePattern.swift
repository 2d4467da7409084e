/// A schema `pattern` that needs no regular-expression engine: anchored at the start (`^`), made
/// of ASCII literals, escaped punctuation, `\d`, character classes of ASCII characters and
/// ranges (not negated), groups with alternatives, and the quantifiers `?` `*` `+` `{n}` `{n,}`
/// `{n,m}`, optionally anchored at the end (`$`). It is compiled to a state machine over UTF-8
/// bytes and answers exactly what `NSRegularExpression.firstMatch` answers for such a pattern
/// (ICU's `$` also matches before one final line terminator); any other pattern is not compiled
/// (nil), and the caller uses the regular-expression engine.
struct SimplePattern: Sendable {
    /// A state: either a byte set to one next state, or up to two free moves.
    private struct State: Sendable {
        var bytes: (UInt64, UInt64) = (0, 0)  // ASCII only: bits for 0-63 and 64-127
        var next = -1
        var free: [Int] = []
    }

    private var states: [State] = []
    private var start = 0
    private var accept = 0
    private let anchoredEnd: Bool
    /// For machines of at most 64 states: each state's free-move closure as a bit mask.
    private var closures: [UInt64] = []

    /// Most states a compiled pattern may have (counted repetitions are unrolled).
    static let maximumStates = 4096

    init?(_ pattern: String) {
        var bytes = Array(pattern.utf8)
        guard bytes.first == 0x5E, bytes.allSatisfy({ $0 < 0x80 }) else { return nil }  // ^, ASCII
        bytes.removeFirst()
        // A trailing unescaped $ anchors the end.
        var end = false
        if bytes.last == 0x24 {
            var backslashes = 0
            for byte in bytes.dropLast().reversed() { if byte == 0x5C { backslashes += 1 } else { break } }
            if backslashes % 2 == 0 { bytes.removeLast(); end = true }
        }
        anchoredEnd = end
        var parser = Parser(bytes: bytes)
        guard let tree = parser.alternatives(), parser.position == bytes.count else { return nil }
        guard case .alternatives(let options) = tree, options.count == 1 else { return nil }  // top-level | is not anchored per branch
        accept = newState()
        guard let entry = build(tree, next: accept), states.count <= Self.maximumStates else { return nil }
        start = entry
        if states.count <= 64 {
            closures = states.indices.map { state in
                var mask: UInt64 = 0, stack = [state]
                while let s = stack.popLast() {
                    if mask & (1 << UInt64(s)) != 0 { continue }
                    mask |= 1 << UInt64(s)
                    stack += states[s].free
                }
                return mask
            }
        }
    }

    /// Whether `value` matches (anywhere from its start, to its end when the pattern is anchored there).
    func matches(_ value: String) -> Bool {
        var value = value
        return value.withUTF8 { matches(bytes: $0) }
    }

    func matches(bytes input: UnsafeBufferPointer<UInt8>) -> Bool {
        closures.isEmpty ? matchesBySets(input) : matchesByMasks(input)
    }

    /// The simulation with the states as bits of one word: no allocation per value.
    private func matchesByMasks(_ input: UnsafeBufferPointer<UInt8>) -> Bool {
        var current = closures[start]
        let acceptBit: UInt64 = 1 << UInt64(accept)
        let n = input.count
        for i in 0...n {
            if current & acceptBit != 0 {
                if !anchoredEnd { return true }
                if i == n || Self.isFinalTerminator(input, from: i) { return true }
            }
            if i == n { break }
            let byte = input[i]
            guard byte < 0x80 else { return false }
            var next: UInt64 = 0, pending = current
            while pending != 0 {
                let s = pending.trailingZeroBitCount
                pending &= pending - 1
                let state = states[s]
                guard state.next >= 0 else { continue }
                let member = byte < 64 ? (state.bytes.0 >> UInt64(byte)) & 1 == 1 : (state.bytes.1 >> UInt64(byte - 64)) & 1 == 1
                if member { next |= closures[state.next] }
            }
            guard next != 0 else { return false }
            current = next
        }
        return false
    }

    private func matchesBySets(_ input: UnsafeBufferPointer<UInt8>) -> Bool {
        var current = [Bool](repeating: false, count: states.count)
        var next = current
        var stack: [Int] = []
        func add(_ state: Int, to set: inout [Bool]) {
            stack.append(state)
            while let s = stack.popLast() {
                if set[s] { continue }
                set[s] = true
                for f in states[s].free { stack.append(f) }
            }
        }
        add(start, to: &current)
        let n = input.count
        for i in 0...n {
            if current[accept] {
                if !anchoredEnd { return true }
                if i == n || Self.isFinalTerminator(input, from: i) { return true }
            }
            if i == n { break }
            let byte = input[i]
            guard byte < 0x80 else { return false }
            for k in next.indices { next[k] = false }
            var any = false
            for s in states.indices where current[s] && states[s].next >= 0 {
                let (low, high) = states[s].bytes
                let member = byte < 64 ? (low >> UInt64(byte)) & 1 == 1 : (high >> UInt64(byte - 64)) & 1 == 1
                if member { add(states[s].next, to: &next); any = true }
            }
            guard any else { return false }
            swap(&current, &next)
        }
        return false
    }

    /// ICU's `$`: the rest of the input is one line terminator (LF, CR, CR LF, NEL, LS or PS).
    private static func isFinalTerminator(_ input: UnsafeBufferPointer<UInt8>, from i: Int) -> Bool {
        let rest = input.count - i
        switch rest {
        case 1: return input[i] == 0x0A || input[i] == 0x0D
        case 2: return (input[i] == 0x0D && input[i + 1] == 0x0A) || (input[i] == 0xC2 && input[i + 1] == 0x85)
        case 3: return input[i] == 0xE2 && input[i + 1] == 0x80 && (input[i + 2] == 0xA8 || input[i + 2] == 0xA9)
        default: return false
        }
    }

    // MARK: Building the machine (Thompson's construction)

    private mutating func newState() -> Int {
        states.append(State())
        return states.count - 1
    }

    /// Builds `node` ending in `next`; returns its entry state, or nil past the state limit.
    private mutating func build(_ node: Node, next: Int) -> Int? {
        guard states.count <= Self.maximumStates else { return nil }
        switch node {
        case .bytes(let set):
            let s = newState()
            states[s].bytes = set
            states[s].next = next
            return s
        case .sequence(let items):
            var entry = next
            for item in items.reversed() {
                guard let e = build(item, next: entry) else { return nil }
                entry = e
            }
            return entry
        case .alternatives(let options):
            if options.count == 1 { return build(options[0], next: next) }
            let s = newState()
            for option in options {
                guard let e = build(option, next: next) else { return nil }
                states[s].free.append(e)
            }
            return s
        case .repeated(let item, let minimum, let maximum):
            var entry = next
            if let maximum {
                // Optional copies after the required ones: each may skip to the end.
                for _ in 0..<(maximum - minimum) {
                    let s = newState()
                    guard let e = build(item, next: entry) else { return nil }
                    states[s].free = [e, next]
                    entry = s
                }
            } else {
                // A loop: enter the item or leave; the item comes back to the loop.
                let loop = newState()
                guard let e = build(item, next: loop) else { return nil }
                states[loop].free = [e, next]
                entry = loop
            }
            for _ in 0..<minimum {
                guard let e = build(item, next: entry) else { return nil }
                entry = e
            }
            return entry
        }
    }

    // MARK: Parsing the pattern

    indirect enum Node {
        case bytes((UInt64, UInt64))
        case sequence([Node])
        case alternatives([Node])
        case repeated(Node, minimum: Int, maximum: Int?)
    }

    private struct Parser {
        let bytes: [UInt8]
        var position = 0

        static func set(_ values: [UInt8]) -> (UInt64, UInt64) {
            var low: UInt64 = 0, high: UInt64 = 0
            for v in values { if v < 64 { low |= 1 << UInt64(v) } else { high |= 1 << UInt64(v - 64) } }
            return (low, high)
        }
        static let digits = set(Array(48...57))
        /// Escaped characters that stand for themselves.
        static let escapable = Set(Array(".+*?()[]{}|\\^$-/".utf8))

        mutating func alternatives() -> Node? {
            var options: [Node] = []
            repeat {
                guard let option = sequence() else { return nil }
                options.append(option)
            } while take(0x7C)  // |
            return .alternatives(options)
        }

        mutating func sequence() -> Node? {
            var items: [Node] = []
            while position < bytes.count, bytes[position] != 0x7C, bytes[position] != 0x29 {  // | )
                guard let atom = atom(), let item = quantified(atom) else { return nil }
                items.append(item)
            }
            return .sequence(items)
        }

        mutating func atom() -> Node? {
            let byte = bytes[position]
            position += 1
            switch byte {
            case 0x28:  // (
                if position < bytes.count, bytes[position] == 0x3F { return nil }  // (?…) groups are not simple
                guard let inner = alternatives(), take(0x29) else { return nil }
                return inner
            case 0x5B: return characterClass()  // [
            case 0x5C:  // \
                guard position < bytes.count else { return nil }
                let escaped = bytes[position]
                position += 1
                if escaped == 0x64 { return .bytes(Self.digits) }  // \d
                guard Self.escapable.contains(escaped) else { return nil }
                return .bytes(Self.set([escaped]))
            case 0x2E, 0x5E, 0x24, 0x3F, 0x2A, 0x2B, 0x7B, 0x7D, 0x5D, 0x29:  // . ^ $ ? * + { } ] )
                return nil
            default:
                guard byte >= 0x20 && byte < 0x7F else { return nil }
                return .bytes(Self.set([byte]))
            }
        }

        mutating func characterClass() -> Node? {
            guard position < bytes.count, bytes[position] != 0x5E else { return nil }  // no negation
            var members: [UInt8] = []
            var first = true
            while position < bytes.count {
                var byte = bytes[position]
                position += 1
                if byte == 0x5D && !first { return .bytes(Self.set(members)) }  // ]
                first = false
                if byte == 0x5B { return nil }  // nested or POSIX classes
                if byte == 0x5C {
                    guard position < bytes.count else { return nil }
                    let escaped = bytes[position]
                    position += 1
                    if escaped == 0x64 { members += Array(48...57); continue }
                    guard Self.escapable.contains(escaped) else { return nil }
                    byte = escaped
                } else if byte == 0x26 || byte == 0x7E {
                    return nil  // && and ~~ are set operations in ICU classes
                }
                guard byte >= 0x20 && byte < 0x7F else { return nil }
                // A range a-b (a hyphen first or last is itself).
                if position + 1 < bytes.count, bytes[position] == 0x2D, bytes[position + 1] != 0x5D {
                    let upper = bytes[position + 1]
                    position += 2
                    guard upper != 0x5C, upper != 0x5B, upper >= byte, upper < 0x7F else { return nil }
                    members += Array(byte...upper)
                    continue
                }
                members.append(byte)
            }
            return nil
        }

        mutating func quantified(_ atom: Node) -> Node? {
            guard position < bytes.count else { return atom }
            var node: Node
            switch bytes[position] {
            case 0x3F: position += 1; node = .repeated(atom, minimum: 0, maximum: 1)  // ?
            case 0x2A: position += 1; node = .repeated(atom, minimum: 0, maximum: nil)  // *
            case 0x2B: position += 1; node = .repeated(atom, minimum: 1, maximum: nil)  // +
            case 0x7B:  // {n}, {n,}, {n,m}
                position += 1
                guard let minimum = number() else { return nil }
                var maximum: Int? = minimum
                if take(0x2C) { maximum = position < bytes.count && bytes[position] == 0x7D ? nil : number() ?? -1 }
                guard take(0x7D), maximum.map({ $0 >= minimum }) ?? true, minimum <= 1000, (maximum ?? 0) <= 1000 else { return nil }
                node = .repeated(atom, minimum: minimum, maximum: maximum)
            default:
                return atom
            }
            // Lazy or possessive quantifiers, and a quantifier on a quantifier, are not simple.
            if position < bytes.count, [0x3F, 0x2B, 0x2A, 0x7B].contains(bytes[position]) { return nil }
            return node
        }

        mutating func number() -> Int? {
            var value = 0, digits = 0
            while position < bytes.count, (48...57).contains(bytes[position]), digits < 5 {
                value = value * 10 + Int(bytes[position] - 48)
                position += 1
                digits += 1
            }
            return digits > 0 ? value : nil
        }

        mutating func take(_ byte: UInt8) -> Bool {
            guard position < bytes.count, bytes[position] == byte else { return false }
            position += 1
            return true
        }
    }
}
