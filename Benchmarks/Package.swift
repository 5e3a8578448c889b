// swift-tools-version: 6.1
import PackageDescription

// The benchmarks are a package of their own, so that neither users of Troupe nor its CI build them.
let package = Package(
    name: "troupe-benchmarks",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "troupe-bench", targets: ["TroupeBench"])],
    dependencies: [
        .package(name: "troupe", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.25.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // A long run's journal, shared by `troupe-bench journal` and the micro-benchmarks.
        .target(
            name: "JournalFixture",
            dependencies: [.product(name: "Troupe", package: "troupe")],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        .executableTarget(
            name: "TroupeBench",
            dependencies: [
                "JournalFixture",
                .product(name: "Troupe", package: "troupe"),
                .product(name: "TroupeTesting", package: "troupe"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        // package-benchmark micro-benchmarks of the hot paths: `swift package benchmark`.
        .executableTarget(
            name: "HotPaths",
            dependencies: [
                "JournalFixture",
                .product(name: "Troupe", package: "troupe"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/HotPaths",
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
