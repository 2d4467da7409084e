// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Civitas",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "civitas", targets: ["civitas"]),
        .library(name: "CivitasCrypto", targets: ["CivitasCrypto"]),
        .library(name: "CivitasLog", targets: ["CivitasLog"]),
        .library(name: "CivitasPrivacy", targets: ["CivitasPrivacy"]),
        .library(name: "CivitasTime", targets: ["CivitasTime"]),
        .library(name: "CivitasModel", targets: ["CivitasModel"]),
        .library(name: "CivitasStore", targets: ["CivitasStore"]),
        .library(name: "CivitasBroker", targets: ["CivitasBroker"]),
        .library(name: "CivitasServer", targets: ["CivitasServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // System libraries, reached only through the crypto target.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"]), .brew(["libsodium"])]
        ),
        // The C allocator's settings (glibc's malloc.h), used once at process start.
        .systemLibrary(name: "CMalloc"),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]
        ),

        // Keys, signatures, sealed encryption, canonical JSON, envelopes.
        .target(
            name: "CivitasCrypto",
            dependencies: ["CSodium", "COpenSSL"]
        ),

        // Merkle log: tree hashing, proofs, checkpoints, entries, the auditor's verifier.
        .target(
            name: "CivitasLog",
            dependencies: ["CivitasCrypto"]
        ),

        // Privacy transforms: pseudonyms, generalization, k-anonymity, differential privacy.
        // Pure: no I/O, no clock; randomness and keys are passed in.
        .target(
            name: "CivitasPrivacy",
            dependencies: ["CivitasCrypto", "CivitasModel", "CivitasTime"]
        ),

        // Persistence: the broker's state on embedded SQLite (GRDB, WAL) or on PostgreSQL shared by
        // several broker nodes, the exchange log included.
        .target(
            name: "CivitasStore",
            dependencies: [
                "CivitasCrypto", "CivitasLog", "CivitasModel",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),

        // The records the broker keeps and shows (participants, datasets, agreements, deliveries, feeds).
        // Time: UTC instants to the second and calendar arithmetic, read and written in one place.
        .target(name: "CivitasTime"),

        .target(
            name: "CivitasModel",
            dependencies: ["CivitasCrypto", "CivitasTime"]
        ),

        // The use cases: agreements, consent, releases, aggregates, feeds.
        .target(
            name: "CivitasBroker",
            dependencies: ["CivitasCrypto", "CivitasLog", "CivitasPrivacy", "CivitasModel", "CivitasStore", "CMalloc"]
        ),

        // The HTTP API (Hummingbird 2): signed requests, participants, datasets, catalog, metrics.
        .target(
            name: "CivitasServer",
            dependencies: [
                "CivitasCrypto", "CivitasModel", "CivitasPrivacy", "CivitasLog", "CivitasBroker",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            // The web view's templates, style sheet and in-browser audit, compiled into the binary.
            resources: [.embedInCode("Web/Assets")]
        ),

        // The command-line tool.
        .executableTarget(
            name: "civitas",
            dependencies: [
                "CivitasCrypto",
                "CivitasTime",
                "CivitasLog",
                "CivitasPrivacy",
                "CivitasStore",
                "CivitasBroker",
                "CivitasServer",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),

        // Throughput and memory benchmark (run in release; see BENCHMARKS.md).
        .executableTarget(
            name: "civitas-bench",
            dependencies: ["CivitasCrypto", "CivitasLog", "CivitasPrivacy", "CivitasStore", "CivitasBroker", "CSodium"]
        ),

        .testTarget(
            name: "CivitasCryptoTests",
            dependencies: ["CivitasCrypto"]
        ),
        .testTarget(
            name: "CivitasLogTests",
            dependencies: ["CivitasLog", "CivitasCrypto"]
        ),
        .testTarget(
            name: "CivitasStoreTests",
            dependencies: ["CivitasStore", "CivitasCrypto", "CivitasLog", "CivitasModel", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .testTarget(
            name: "CivitasServerTests",
            dependencies: [
                "CivitasServer", "CivitasStore", "CivitasCrypto", "CivitasBroker", "CivitasLog", "CivitasPrivacy",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "CivitasBrokerTests",
            dependencies: ["CivitasBroker", "CivitasStore", "CivitasLog", "CivitasPrivacy", "CivitasCrypto", "CivitasModel"]
        ),
        .testTarget(
            name: "CivitasPrivacyTests",
            dependencies: ["CivitasPrivacy", "CivitasCrypto", "CivitasModel"]
        ),
    ]
)
