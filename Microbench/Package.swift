// swift-tools-version:6.2
// The micro-benchmarks: a package of their own so that building the server never
// builds ordo-one/benchmark. Run them with scripts/microbench.sh (see README.md here).
import PackageDescription

let package = Package(
    name: "chatroom-microbench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "chatroom", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
    ],
    targets: [
        .executableTarget(
            name: "HotPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ChatServerBenchSupport", package: "chatroom"),
                .product(name: "Chat", package: "chatroom"),
                .product(name: "Redis", package: "chatroom"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/HotPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The fan-out without Swift concurrency, for valgrind's callgrind, which
        // crashes on programs that start the concurrency runtime.
        .executableTarget(
            name: "FanoutCount",
            dependencies: [
                .product(name: "ChatServerBenchSupport", package: "chatroom"),
                .product(name: "Chat", package: "chatroom"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ]
)
