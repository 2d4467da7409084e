import ArgumentParser
import CivitasCrypto
import Foundation
import Hummingbird
import Logging

/// `civitas relay`: receives a context broker's subscription notifications (Orion-LD, or any
/// NGSI-LD or NGSI v2 broker) on a local address and publishes each one to a dataset as a batch
/// signed with the agency's key, so a subscription can feed a dataset without the context broker
/// holding a key or signing anything.
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Publish a context broker's subscription notifications to a dataset as signed batches (agency).",
        discussion: """
            Point the subscription's notification endpoint at http://HOST:PORT/ (any path). Each notification
            (NGSI-LD {"type": "Notification", "data": [...]} or NGSI v2 {"subscriptionId": ..., "data": [...]}) is
            sent to the broker as one batch, signed with --key, under an idempotency key made from its bytes, so a
            notification the context broker sends again is stored once. The relay answers 204 once the broker stored
            the batch, 422 with the broker's reason when it refused it (the context broker should not retry), and 503
            when the broker could not be reached. It listens on 127.0.0.1 unless told otherwise: it takes
            notifications without authentication, from whoever can reach it.
            """)

    @OptionGroup var options: BrokerOptions
    @Option(help: "The dataset the notifications are published to.") var dataset: String
    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(help: "Port (0 picks a free one and prints it).") var port: Int = 8090

    /// Largest notification accepted, in bytes.
    static let maximumNotification = 16 << 20

    func run() async throws {
        let client = try BrokerClient(options)
        let dataset = self.dataset
        let router = Router()
        let relay: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
            let body = Array(buffer: try await request.body.collect(upTo: Self.maximumNotification))
            let key = "relay-" + Hex.encode(SHA256Hasher.hash(body))
            do {
                let (_, json) = try await client.send("POST", "/datasets/\(dataset)/batches", body: body, contentType: "application/json", retryKey: key)
                Output.warn("relayed a notification to \(dataset): batch \(json["sequence"]?.exactUnsignedInteger.map(String.init) ?? "?"), \(json["records"]?.exactUnsignedInteger.map(String.init) ?? "?") records")
                return Response(status: .noContent)
            } catch let error as CLIError {
                Output.warn("the broker refused a notification for \(dataset): \(error.description)")
                return Response(status: .unprocessableContent, headers: [.contentType: "text/plain; charset=utf-8"],
                                body: .init(byteBuffer: ByteBuffer(string: error.description + "\n")))
            } catch let error as BrokerClient.TransportError {
                Output.warn(error.message)
                return Response(status: .serviceUnavailable, headers: [.retryAfter: "5"])
            }
        }
        router.post("/", use: relay)
        router.post("**", use: relay)
        var logger = Logger(label: "civitas-relay")
        logger.logLevel = .warning
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "civitas-relay"),
            onServerRunning: { channel in
                Output.line("civitas relay listening on http://\(channel.localAddress?.ipAddress ?? "?"):\(channel.localAddress?.port ?? 0) → \(client.baseURL) dataset \(dataset)")
            },
            logger: logger)
        try await app.runService()
    }
}
