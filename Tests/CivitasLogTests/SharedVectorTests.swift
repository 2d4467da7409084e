import CivitasCrypto
import Foundation
import Testing
@testable import CivitasLog

/// The transparency-dev/merkle RFC 6962/9162 proof vectors in
/// ../shared/data/vectors/rfc9162-merkle: a happy path per folder plus
/// systematic mutations that must be refused. Skipped when the folder is absent.
@Suite("Published Merkle proof vectors")
struct SharedVectorTests {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("../shared/data/vectors/rfc9162-merkle").standardizedFileURL

    static var available: Bool { FileManager.default.fileExists(atPath: root.path) }

    struct Inclusion: Decodable {
        let leafIdx: UInt64
        let treeSize: UInt64
        let root: String?
        let leafHash: String?
        let proof: [String]?
        let desc: String
        let wantErr: Bool
    }

    struct Consistency: Decodable {
        let size1: UInt64
        let size2: UInt64
        let root1: String?
        let root2: String?
        let proof: [String]?
        let desc: String
        let wantErr: Bool
    }

    static func files(_ kind: String) -> [URL] {
        let base = root.appendingPathComponent(kind)
        guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else { return [] }
        return walker.compactMap { $0 as? URL }.filter { $0.pathExtension == "json" }.sorted { $0.path < $1.path }
    }

    static func bytes(_ base64: String?) -> [UInt8] { base64.flatMap { Base64.decode($0) } ?? [] }

    @Test("Inclusion vectors", .enabled(if: available, "../shared/data/vectors/rfc9162-merkle is absent"))
    func inclusion() throws {
        let files = Self.files("inclusion")
        #expect(files.count > 50)
        for file in files {
            let vector: Inclusion
            do {
                vector = try JSONDecoder().decode(Inclusion.self, from: Data(contentsOf: file))
            } catch {
                Issue.record("\(file.path): \(error)")
                continue
            }
            let outcome = Result {
                try MerkleVerifier.verifyInclusion(leafHash: Self.bytes(vector.leafHash), index: vector.leafIdx,
                                                   treeSize: vector.treeSize, proof: (vector.proof ?? []).map(Self.bytes),
                                                   root: Self.bytes(vector.root))
            }
            switch outcome {
            case .success: #expect(!vector.wantErr, "\(file.lastPathComponent) (\(vector.desc)) was accepted")
            case .failure(let error): #expect(vector.wantErr, "\(file.lastPathComponent) (\(vector.desc)) was refused: \(error)")
            }
        }
    }

    @Test("Consistency vectors", .enabled(if: available, "../shared/data/vectors/rfc9162-merkle is absent"))
    func consistency() throws {
        let files = Self.files("consistency")
        #expect(files.count > 50)
        for file in files {
            let vector: Consistency
            do {
                vector = try JSONDecoder().decode(Consistency.self, from: Data(contentsOf: file))
            } catch {
                Issue.record("\(file.path): \(error)")
                continue
            }
            let outcome = Result {
                try MerkleVerifier.verifyConsistency(size1: vector.size1, size2: vector.size2,
                                                     root1: Self.bytes(vector.root1), root2: Self.bytes(vector.root2),
                                                     proof: (vector.proof ?? []).map(Self.bytes))
            }
            switch outcome {
            case .success: #expect(!vector.wantErr, "\(file.lastPathComponent) (\(vector.desc)) was accepted")
            case .failure(let error): #expect(vector.wantErr, "\(file.lastPathComponent) (\(vector.desc)) was refused: \(error)")
            }
        }
    }
}
