import HTTPTypes
import Hummingbird

/// The API's routes, for answering a request no route takes: 405 with the methods the path
/// does accept, or 404.
final class RouteTable: @unchecked Sendable {
    private var routes: [(components: [Substring], method: HTTPRequest.Method)] = []

    /// Records the router's routes (called once, after every route is added).
    func load(_ descriptions: [Router<CivitasRequestContext>.RouteDescription]) {
        routes = descriptions.map { ($0.path.description.split(separator: "/"), $0.method) }
    }

    /// The methods some route accepts at `path`, sorted; empty when no route has that path.
    func methods(for path: String) -> [String] {
        let components = path.split(separator: "/")
        let methods = routes.filter { route in
            route.components.count == components.count
                && zip(route.components, components).allSatisfy { pattern, value in pattern.hasPrefix(":") || pattern == value }
        }.map(\.method.rawValue)
        return Array(Set(methods)).sorted()
    }
}
