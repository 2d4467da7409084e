import CivitasCrypto
import CivitasLog
import CivitasModel
import Foundation

/// Each consent event's keyed subject hash, ISO/IEC TS 27560 record and Merkle leaf hash, built
/// on every core for a large request.
final class ConsentRecords: @unchecked Sendable {
    private(set) var subjects: [[UInt8]]
    private(set) var records: [[UInt8]]
    private(set) var leaves: [MerkleDigest]

    /// Requests of at least this many events are built on every core.
    static let parallelFrom = 2_048

    private init(count: Int) {
        subjects = Array(repeating: [], count: count)
        records = Array(repeating: [], count: count)
        leaves = Array(repeating: [], count: count)
    }

    /// The events of `requests` (already checked, their datasets in `datasets`), each with its
    /// 12 bytes of `recordIDs`.
    static func build(_ requests: [ConsentRequest], datasets: [String: Dataset], recorder: KeyID, time: String, recordIDs: [UInt8],
                      subjectHash: @Sendable (_ dataset: String, _ subject: String) -> [UInt8]) -> ConsentRecords {
        let built = ConsentRecords(count: requests.count)
        let parts = requests.count >= parallelFrom ? max(1, ProcessInfo.processInfo.activeProcessorCount) : 1
        built.subjects.withUnsafeMutableBufferPointer { subjects in
            built.records.withUnsafeMutableBufferPointer { records in
                built.leaves.withUnsafeMutableBufferPointer { leaves in
                    let output = Output(subjects: subjects, records: records, leaves: leaves)
                    DispatchQueue.concurrentPerform(iterations: parts) { part in
                        for number in (requests.count * part / parts)..<(requests.count * (part + 1) / parts) {
                            let request = requests[number]
                            guard let dataset = datasets[request.dataset] else { continue }
                            let subject = subjectHash(dataset.id, request.subject)
                            let record = ConsentRecord(recordID: "cr-" + Hex.encode(recordIDs[(12 * number)..<(12 * number + 12)]), principal: subject,
                                                       controller: dataset.publisher, dataset: dataset.id, purpose: request.purpose, notice: request.notice,
                                                       collectionMethod: request.collectionMethod, jurisdiction: request.jurisdiction,
                                                       granted: request.granted, time: time, recordedBy: recorder)
                            var bytes: [UInt8] = []
                            bytes.reserveCapacity(640)
                            record.appendCanonical(to: &bytes)
                            output.leaves[number] = MerkleHash.leaf(bytes)
                            output.subjects[number] = subject
                            output.records[number] = bytes
                        }
                    }
                }
            }
        }
        return built
    }

    /// The arrays the parts write, each part its own events.
    private struct Output: @unchecked Sendable {
        let subjects: UnsafeMutableBufferPointer<[UInt8]>
        let records: UnsafeMutableBufferPointer<[UInt8]>
        let leaves: UnsafeMutableBufferPointer<MerkleDigest>
    }
}
