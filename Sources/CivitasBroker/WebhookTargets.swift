import Foundation

/// Which webhook URLs the broker may call. A partner names the URL, the broker makes the
/// request: so the URL must not lead inside the operator's network. A host whose addresses
/// (every one its name resolves to) include a loopback, private, link-local (cloud metadata
/// lives at 169.254.169.254), unique-local, carrier-grade NAT, unspecified or multicast
/// address is refused, unless the operator allow-listed that host name or address.
public struct WebhookTargets: Sendable {
    /// Host names and IP addresses the operator allows even though they are internal.
    public let allowed: Set<String>
    /// Resolves a host name to its addresses (IPv4 as 4 bytes, IPv6 as 16); injectable for tests.
    let resolve: @Sendable (String) -> [[UInt8]]

    public init(allowed: [String] = [], resolve: @escaping @Sendable (String) -> [[UInt8]] = WebhookTargets.systemResolve) {
        self.allowed = Set(allowed.map { $0.lowercased() })
        self.resolve = resolve
    }

    /// Refuses `url` unless it is http(s) of at most 2048 bytes and every address of its host is public or allow-listed.
    public func check(_ url: String) throws {
        guard url.utf8.count <= 2048, url.hasPrefix("http://") || url.hasPrefix("https://"), let host = URL(string: url)?.host, !host.isEmpty else {
            throw BrokerError(.invalid, "webhook must be an http(s) URL of at most 2048 bytes")
        }
        let name = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if allowed.contains(name) { return }
        let addresses = resolve(name)
        guard !addresses.isEmpty else { throw BrokerError(.invalid, "webhook host \(name.prefix(100)) does not resolve") }
        for address in addresses where !allowed.contains(Self.text(address)) {
            if let kind = Self.internalKind(address) {
                throw BrokerError(.invalid, "webhook host \(name.prefix(100)) resolves to \(Self.text(address)), a \(kind) address the broker does not call; the operator may allow it")
            }
        }
    }

    /// What makes an address internal, or nil for a public one.
    static func internalKind(_ address: [UInt8]) -> String? {
        if address.count == 16 {
            if address.prefix(10).allSatisfy({ $0 == 0 }) && address[10] == 0xFF && address[11] == 0xFF {
                return internalKind(Array(address.suffix(4)))  // IPv4-mapped
            }
            if address.allSatisfy({ $0 == 0 }) { return "unspecified" }
            if address.prefix(15).allSatisfy({ $0 == 0 }) && address[15] == 1 { return "loopback" }
            if address[0] == 0xFE && address[1] & 0xC0 == 0x80 { return "link-local" }
            if address[0] & 0xFE == 0xFC { return "unique-local" }
            if address[0] == 0xFF { return "multicast" }
            return nil
        }
        guard address.count == 4 else { return "malformed" }
        switch (address[0], address[1]) {
        case (0, _): return "unspecified"
        case (127, _): return "loopback"
        case (10, _), (172, 16...31), (192, 168): return "private"
        case (169, 254): return "link-local"
        case (100, 64...127): return "carrier-grade NAT"
        case (224...255, _): return "multicast or reserved"
        default: return nil
        }
    }

    static func text(_ address: [UInt8]) -> String {
        if address.count == 4 { return address.map(String.init).joined(separator: ".") }
        return stride(from: 0, to: address.count, by: 2).map { String(format: "%x", Int(address[$0]) << 8 | Int(address[$0 + 1])) }
            .joined(separator: ":")
    }

    /// The addresses the system resolver gives for `host` (getaddrinfo).
    public static let systemResolve: @Sendable (String) -> [[UInt8]] = { host in
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(first) }
        var result: [[UInt8]] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let current = node {
            if let address = current.pointee.ai_addr {
                if current.pointee.ai_family == AF_INET {
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        result.append(withUnsafeBytes(of: $0.pointee.sin_addr) { Array($0) })
                    }
                } else if current.pointee.ai_family == AF_INET6 {
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        result.append(withUnsafeBytes(of: $0.pointee.sin6_addr) { Array($0) })
                    }
                }
            }
            node = current.pointee.ai_next
        }
        return result
    }
}
