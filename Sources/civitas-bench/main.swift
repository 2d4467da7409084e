// Benchmarks. Run in release:
//   swift run -c release civitas-bench          (envelopes)
//   swift run -c release civitas-bench log      (the exchange log)
//   swift run -c release civitas-bench privacy  (the privacy engine)
//   swift run -c release civitas-bench stored-log [ENTRIES]  (verifying a stored log at start)
//   swift run -c release civitas-bench exchange [RECORDS...]  (consent, releases, aggregates, feed windows)
//   swift run -c release civitas-bench feed [ROUNDS]  (how soon a waiting partner holds a new feed window)
//   swift run -c release civitas-bench nodes POSTGRES_URL [RECORDS]  (SQLite, then 1 to 3 nodes on PostgreSQL; scripts/bench-nodes)
// Prints Civitas seal+sign and open+verify throughput for 1 MiB and 256 MiB
// payloads beside the raw libsodium primitives measured in the same run,
// and the peak RSS growth of each Civitas operation.
import CSodium
import CivitasBroker
import CivitasCrypto
import Foundation

guard sodium_init() >= 0 else { fatalError("libsodium did not initialise") }

/// A payload source that produces `length` bytes of a fixed pattern without holding them.
final class PatternSource: ByteSource {
    private var remaining: Int
    init(length: Int) { remaining = length }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = min(buffer.count, remaining)
        if count > 0, let base = buffer.baseAddress { memset(base, 0x5a, count) }
        remaining -= count
        return count
    }
}

/// Discards what is written (counts it).
final class NullSink: EnvelopeSink, ByteSink, @unchecked Sendable {
    var written = 0
    func write(_ bytes: UnsafeRawBufferPointer) throws { written += bytes.count }
    func overwrite(at offset: UInt64, with bytes: [UInt8]) throws {}
}

enum Memory {
    static func statusValue(_ key: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0").map { $0 * 1024 } ?? 0
        }
        return 0
    }
    /// Resets the peak-RSS mark (Linux 4.0+), returns the current RSS.
    static func resetPeak() -> Int {
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
        return statusValue("VmRSS")
    }
    static func peak() -> Int { statusValue("VmHWM") }
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Best of `repeats` runs, in bytes per second.
func throughput(bytes: Int, repeats: Int, _ body: () throws -> Void) rethrows -> Double {
    var best = Double.infinity
    for _ in 0..<repeats { best = min(best, try seconds(body)) }
    return Double(bytes) / best
}

func gb(_ rate: Double) -> String { String(format: "%.2f GB/s", rate / 1e9) }
func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }

ProcessMemory.returnLargeBlocksToTheSystem()  // as `civitas serve` does

if CommandLine.arguments.dropFirst().first == "privacy" {
    try runPrivacyBenchmark(shared: CommandLine.arguments.dropFirst(2).first ?? "../shared/data")
    exit(0)
}

if CommandLine.arguments.dropFirst().first == "exchange" {
    let sizes = CommandLine.arguments.dropFirst(2).compactMap { Int($0) }
    try runExchangeBenchmark(sizes: sizes.isEmpty ? [10_000, 100_000] : sizes)
    exit(0)
}

if CommandLine.arguments.dropFirst().first == "feed" {
    try runFeedBenchmark(rounds: CommandLine.arguments.dropFirst(2).first.flatMap { Int($0) } ?? 100)
    exit(0)
}

if CommandLine.arguments.dropFirst().first == "stored-log" {
    try runStoredLogBenchmark(entries: CommandLine.arguments.dropFirst(2).first.flatMap { Int($0) } ?? 1_000_000)
    exit(0)
}

if CommandLine.arguments.dropFirst().first == "nodes" {
    guard let url = CommandLine.arguments.dropFirst(2).first else { fatalError("usage: civitas-bench nodes POSTGRES_URL [RECORDS]") }
    try runNodesBenchmark(postgres: url, records: CommandLine.arguments.dropFirst(3).first.flatMap { Int($0) } ?? 20_000)
    exit(0)
}

if CommandLine.arguments.dropFirst().first == "log" {
    try runLogBenchmark()
    exit(0)
}

let issuer = try SecretKeys.generate(name: "bench-issuer")
let recipient = try SecretKeys.generate(name: "bench-recipient")
let scratchDirectory = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"

/// Child mode: seal N bytes to a file, then open it, in a fresh process, and
/// print the peak RSS growth over the baseline after sealing and after both.
if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "--rss-child", let size = Int(CommandLine.arguments[2]) {
    let path = "\(scratchDirectory)/civitas-bench-rss-\(getpid()).envelope"
    let descriptor = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    defer { close(descriptor); unlink(path) }
    let baseline = Memory.resetPeak()
    try EnvelopeSealer(issuer: issuer, recipient: recipient.publicKeys)
        .seal(from: PatternSource(length: size), payloadLength: UInt64(size), to: FileDescriptorSink(descriptor: descriptor, name: path))
    let sealPeak = Memory.peak() - baseline
    lseek(descriptor, 0, SEEK_SET)
    try EnvelopeOpener(recipient: recipient, issuer: issuer.publicKeys)
        .open(FileDescriptorSource(descriptor: descriptor, name: path), to: NullSink())
    print(sealPeak, Memory.peak() - baseline)
    exit(0)
}

/// Runs the child mode in a new process; returns the growth after sealing and after sealing and opening, in bytes.
func rssGrowth(size: Int) throws -> (Int, Int) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    process.arguments = ["--rss-child", String(size)]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let numbers = output.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int($0) }
    guard process.terminationStatus == 0, numbers.count == 2 else { return (-1, -1) }
    return (numbers[0], numbers[1])
}
struct Row {
    let size: String, rawSeal: Double, rawPush: Double, seal: Double, sealRSS: Int
    let rawPull: Double, open: Double, openRSS: Int
}
var rows: [Row] = []

for (label, size, repeats) in [("1 MiB", 1 << 20, 200), ("256 MiB", 256 << 20, 3)] {
    let chunk = EnvelopeFormat.automaticChunkSize(payloadLength: UInt64(size))
    // --- Civitas seal+sign: pattern source -> discarding sink (crypto and hashing only).
    let sealer = EnvelopeSealer(issuer: issuer, recipient: recipient.publicKeys, contentType: "text/csv")
    let seal = try throughput(bytes: size, repeats: repeats) {
        try sealer.seal(from: PatternSource(length: size), payloadLength: UInt64(size), to: NullSink())
    }

    // --- Civitas open+verify: envelope file (page cache) -> discarding sink.
    let path = "\(scratchDirectory)/civitas-bench-\(getpid()).envelope"
    let out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    defer { close(out); unlink(path) }
    try sealer.seal(from: PatternSource(length: size), payloadLength: UInt64(size),
                    to: FileDescriptorSink(descriptor: out, name: path))
    let opener = EnvelopeOpener(recipient: recipient, issuer: issuer.publicKeys)
    let openRate = try throughput(bytes: size, repeats: repeats) {
        lseek(out, 0, SEEK_SET)
        try opener.open(FileDescriptorSource(descriptor: out, name: path), to: NullSink())
    }
    let (sealGrowth, openGrowth) = try rssGrowth(size: size)

    // --- Raw libsodium, same run: one-shot crypto_box_seal of the whole buffer,
    // and secretstream push/pull in the same chunks the sealer used.
    let plain = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
    plain.initialize(repeating: 0x5a, count: size)
    let sealedBox = UnsafeMutablePointer<UInt8>.allocate(capacity: size + Int(crypto_box_sealbytes()))
    let rawSeal = throughput(bytes: size, repeats: repeats) {
        _ = crypto_box_seal(sealedBox, plain, UInt64(size), recipient.publicKeys.encryptionKey)
    }
    sealedBox.deallocate()
    let overhead = Int(crypto_secretstream_xchacha20poly1305_abytes())
    let chunks = (size + chunk - 1) / chunk
    let stream = UnsafeMutablePointer<UInt8>.allocate(capacity: size + chunks * overhead)
    var key = [UInt8](repeating: 0, count: Int(crypto_secretstream_xchacha20poly1305_keybytes()))
    crypto_secretstream_xchacha20poly1305_keygen(&key)
    var header = [UInt8](repeating: 0, count: Int(crypto_secretstream_xchacha20poly1305_headerbytes()))
    var state = crypto_secretstream_xchacha20poly1305_state()
    let finalTag = UInt8(crypto_secretstream_xchacha20poly1305_tag_final())
    let rawPush = throughput(bytes: size, repeats: repeats) {
        crypto_secretstream_xchacha20poly1305_init_push(&state, &header, key)
        for i in 0..<chunks {
            let length = min(chunk, size - i * chunk)
            crypto_secretstream_xchacha20poly1305_push(
                &state, stream + i * (chunk + overhead), nil, plain + i * chunk, UInt64(length),
                nil, 0, i == chunks - 1 ? finalTag : 0)
        }
    }
    var tag: UInt8 = 0
    let rawPull = throughput(bytes: size, repeats: repeats) {
        crypto_secretstream_xchacha20poly1305_init_pull(&state, header, key)
        for i in 0..<chunks {
            let length = min(chunk, size - i * chunk)
            crypto_secretstream_xchacha20poly1305_pull(
                &state, plain + i * chunk, nil, &tag, stream + i * (chunk + overhead), UInt64(length + overhead), nil, 0)
        }
    }
    stream.deallocate()
    plain.deallocate()
    rows.append(Row(size: "\(label) (\(chunk / 1024) KiB chunks)", rawSeal: rawSeal, rawPush: rawPush, seal: seal, sealRSS: sealGrowth,
                    rawPull: rawPull, open: openRate, openRSS: openGrowth))
    print("measured \(label)")
}

// Ed25519 on a manifest-sized message, for reference.
let message = [UInt8](repeating: 0x41, count: 400)
let signRate = Double(10_000) / (seconds { for _ in 0..<10_000 { _ = issuer.sign(message) } })
let signature = issuer.sign(message)
let verifyRate = Double(10_000) / seconds { for _ in 0..<10_000 { _ = issuer.publicKeys.isValidSignature(signature, for: message) } }

print("")
print("| payload | raw crypto_box_seal | raw secretstream push | Civitas seal+sign | seal / raw box_seal | seal RSS growth | raw secretstream pull | Civitas open+verify | open / raw pull | seal+open RSS growth |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows {
    print("| \(r.size) | \(gb(r.rawSeal)) | \(gb(r.rawPush)) | \(gb(r.seal)) | \(String(format: "%.2f", r.seal / r.rawSeal))× | \(mib(r.sealRSS)) | \(gb(r.rawPull)) | \(gb(r.open)) | \(String(format: "%.2f", r.open / r.rawPull))× | \(mib(r.openRSS)) |")
}
print("")
print(String(format: "Ed25519 on a 400-byte manifest: %.0f signatures/s, %.0f verifications/s", signRate, verifyRate))
