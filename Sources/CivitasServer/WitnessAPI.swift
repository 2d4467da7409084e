import CivitasCrypto
import CivitasLog
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// A C2SP tlog-witness: `POST /add-checkpoint` cosigns a log's checkpoint when it is signed by
/// a key the witness trusts for that log and extends the last checkpoint it cosigned for it;
/// rollbacks and forks are refused with the protocol's status codes. `GET /` names the witness.
public struct WitnessAPI: Sendable {
    let name: String
    let signer: SecretKeys
    let rules: WitnessRules
    let state: WitnessState
    let logger: Logger
    let clock: @Sendable () -> UInt64

    /// A witness known as `name`, cosigning with `signer`, for the logs whose keys are `logs`.
    public init(name: String, signer: SecretKeys, logs: [NoteKey], state: WitnessState, logger: Logger,
                clock: @escaping @Sendable () -> UInt64 = { UInt64(max(0, Date().timeIntervalSince1970)) }) throws {
        self.name = name
        self.signer = signer
        self.rules = WitnessRules(logs: logs)
        self.state = state
        self.logger = logger
        self.clock = clock
        _ = try CosignerKey(name: name, publicKey: signer.publicKeys.signingKey)
    }

    /// The witness's verifier key, as logs and auditors configure it.
    public var verifierKey: String {
        (try? CosignerKey(name: name, publicKey: signer.publicKeys.signingKey).verifierKey) ?? name
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/") { _, _ in
            Self.text(.ok, "civitas witness \(verifierKey)\nlogs: \(rules.logs.keys.sorted().joined(separator: " "))\n")
        }
        router.post("add-checkpoint") { request, _ in
            if let length = request.headers[.contentLength].flatMap(Int.init), length > AddCheckpointRequest.maximumBytes {
                return Self.text(.contentTooLarge, "the request is larger than \(AddCheckpointRequest.maximumBytes) bytes\n")
            }
            let body: ByteBuffer
            do {
                body = try await request.body.collect(upTo: AddCheckpointRequest.maximumBytes)
            } catch {
                return Self.text(.contentTooLarge, "the request is larger than \(AddCheckpointRequest.maximumBytes) bytes\n")
            }
            return add(Array(buffer: body))
        }
        return router
    }

    /// Answers one add-checkpoint body: the cosignature line, or the refusal.
    func add(_ body: [UInt8]) -> Response {
        do {
            let request = try AddCheckpointRequest.parse(body)
            let origin = (try? Checkpoint.statement(of: request.note).origin) ?? ""
            let line: String = try state.update(origin: origin) { latest throws(WitnessRefusal) in
                let (checkpoint, _) = try rules.check(request, latest: latest)
                let line: String
                do { line = try Cosignature.line(for: checkpoint, signer: signer, name: name, time: clock()) } catch {
                    throw WitnessRefusal(.badRequest, "cannot cosign: \(error)")
                }
                return (WitnessedCheckpoint(size: checkpoint.size, rootHash: checkpoint.rootHash, note: request.note), line)
            }
            logger.info("cosigned", metadata: ["origin": "\(origin)", "size": "\((try? Checkpoint.statement(of: request.note).size) ?? 0)"])
            return Self.text(.ok, line)
        } catch let refusal as WitnessRefusal {
            logger.warning("refused a checkpoint", metadata: ["code": "\(refusal.code.rawValue)", "reason": "\(refusal.message)"])
            if refusal.code == .conflict, let size = refusal.latestSize {
                return Response(status: .conflict, headers: [.contentType: "text/x.tlog.size"], body: .init(byteBuffer: ByteBuffer(string: "\(size)\n")))
            }
            return Self.text(HTTPResponse.Status(code: refusal.status), refusal.message + "\n")
        } catch {
            logger.error("cannot keep the witness state", metadata: ["error": "\(error)"])
            return Self.text(.internalServerError, "the witness cannot keep its state\n")
        }
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
