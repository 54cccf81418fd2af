// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for the decoders that read bytes from the network
// (../shared/FUZZING.md has the recipe; scripts/fuzz.sh runs them).
let package = Package(
    name: "switchboard-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "switchboard", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        .executableTarget(
            name: "FuzzJSONCommand",
            dependencies: [.product(name: "SwitchboardCore", package: "switchboard")]
        ),
        .executableTarget(
            name: "FuzzRESP",
            dependencies: [
                .product(name: "RESP", package: "switchboard"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzWebSocketFrames",
            dependencies: [
                .product(name: "SwitchboardServerTesting", package: "switchboard"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzHTTPTransport",
            dependencies: [
                .product(name: "SwitchboardCore", package: "switchboard"),
                .product(name: "SwitchboardServer", package: "switchboard"),
            ]
        ),
        .executableTarget(
            name: "FuzzHTTPBodies",
            dependencies: [
                "FuzzRedisSupport",
                .product(name: "SwitchboardCore", package: "switchboard"),
                .product(name: "SwitchboardBroker", package: "switchboard"),
                .product(name: "SwitchboardServerTesting", package: "switchboard"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzTokens",
            dependencies: [
                .product(name: "SwitchboardAuth", package: "switchboard"),
                .product(name: "SwitchboardCore", package: "switchboard"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "FuzzBalancerHead",
            dependencies: [
                .product(name: "SwitchboardBalancer", package: "switchboard"),
                .product(name: "SwitchboardCore", package: "switchboard"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzNodeHandshake",
            dependencies: [
                .product(name: "SwitchboardServer", package: "switchboard"),
                .product(name: "SwitchboardServerTesting", package: "switchboard"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // RedisLikeBroker and the Redis arithmetic checks of FuzzHTTPBodies. A library, because a
        // fuzz target must be a single file: an executable of several files needs a `main`, and
        // libFuzzer brings its own (the link fails without one in a plain build).
        .target(
            name: "FuzzRedisSupport",
            dependencies: [
                .product(name: "SwitchboardCore", package: "switchboard"),
                .product(name: "SwitchboardBroker", package: "switchboard"),
                .product(name: "SwitchboardBrokerTesting", package: "switchboard"),
                .product(name: "SwitchboardRedis", package: "switchboard"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ]
)
