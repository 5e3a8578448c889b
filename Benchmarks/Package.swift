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
    ],
    targets: [
        .executableTarget(
            name: "TroupeBench",
            dependencies: [
                .product(name: "Troupe", package: "troupe"),
                .product(name: "TroupeTesting", package: "troupe"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        )
    ]
)
