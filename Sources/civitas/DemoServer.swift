import CivitasBroker
import CivitasServer
import Foundation
import Hummingbird
import Logging

/// The broker's HTTP API on a free loopback port for the length of the demo.
struct DemoServer {
    let url: String
    private let task: Task<Void, Error>

    static func start(broker: Broker) async throws -> DemoServer {
        let (ports, announce) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "civitas-demo")
        logger.logLevel = .critical  // stopping the demo's server cancels its connections; that is not an error
        let application = Application(
            router: BrokerAPI(broker: broker).router(),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "civitas"),
            onServerRunning: { channel in
                announce.yield(channel.localAddress?.port ?? 0)
                announce.finish()
            },
            logger: logger)
        let task = Task { try await application.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            task.cancel()
            throw CLIError("the demo broker did not start")
        }
        return DemoServer(url: "http://127.0.0.1:\(port)", task: task)
    }

    func stop() { task.cancel() }
}
