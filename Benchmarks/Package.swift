// swift-tools-version:6.1
import PackageDescription

// Allocation and time benchmarks for Switchboard's hot path. A separate package so that
// the server's own build never depends on ordo-one/benchmark (or its malloc interposer).
//
//   cd Benchmarks && swift package --allow-writing-to-package-directory benchmark
//
// See README.md for the figures and how to read them.

// The root package is a path dependency; its identity is the name of the folder it is
// checked out in (`main` here, something else in a fresh clone), so derive it.
let rootIdentity = Context.packageDirectory.split(separator: "/").dropLast().last.map { $0.lowercased() } ?? "main"

let package = Package(
    name: "SwitchboardBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HotPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SwitchboardCore", package: rootIdentity),
                .product(name: "SwitchboardBroker", package: rootIdentity),
                .product(name: "SwitchboardBrokerTesting", package: rootIdentity),
                .product(name: "SwitchboardServer", package: rootIdentity),
                .product(name: "SwitchboardServerTesting", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Benchmarks/HotPath",
            swiftSettings: [
                .enableUpcomingFeature("ExistentialAny"),
                .enableUpcomingFeature("MemberImportVisibility"),
                .enableUpcomingFeature("InternalImportsByDefault"),
            ],
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]
        ),
    ]
)
