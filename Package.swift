// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Civitas",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "civitas", targets: ["civitas"]),
        .library(name: "CivitasCrypto", targets: ["CivitasCrypto"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // System libraries, reached only through the crypto target.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"]), .brew(["libsodium"])]
        ),
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

        // The command-line tool.
        .executableTarget(
            name: "civitas",
            dependencies: [
                "CivitasCrypto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Throughput and memory benchmark (run in release; see BENCHMARKS.md).
        .executableTarget(
            name: "civitas-bench",
            dependencies: ["CivitasCrypto", "CSodium"]
        ),

        .testTarget(
            name: "CivitasCryptoTests",
            dependencies: ["CivitasCrypto"]
        ),
    ]
)
