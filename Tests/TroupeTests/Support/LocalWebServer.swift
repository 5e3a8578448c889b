import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A small HTTP/1.1 server on 127.0.0.1 (or `host`) for tests: answers each request with `route(path)` and
/// records the paths it was asked for.
final class LocalWebServer: Sendable {
    struct Reply: Sendable {
        var status: Int = 200
        var headers: [String: String] = ["content-type": "text/html; charset=utf-8"]
        var body: String = ""
    }

    let port: Int
    private let channel: any Channel
    private let seen = Mutex<[String]>([])
    private let serving: Mutex<Task<Void, Never>?> = Mutex(nil)

    var paths: [String] { seen.withLock { $0 } }

    private init(channel: any Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    static func withServer<T: Sendable>(
        host: String = "127.0.0.1",
        _ route: @escaping @Sendable (String) -> Reply,
        _ body: (LocalWebServer) async throws -> T
    ) async throws -> T {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        let web = LocalWebServer(channel: server.channel, port: server.channel.localAddress?.port ?? 0)
        let task = Task<Void, Never> {
            try? await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await web.serve(connection, route) }
                    }
                }
            }
        }
        web.serving.withLock { $0 = task }
        do {
            let result = try await body(web)
            await web.shutdown()
            return result
        } catch {
            await web.shutdown()
            throw error
        }
    }

    private func shutdown() async {
        try? await channel.close()
        let task = serving.withLock { $0 }
        task?.cancel()
        await task?.value
    }

    private func serve(
        _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>,
        _ route: @Sendable (String) -> Reply
    ) async {
        try? await connection.executeThenClose { inbound, outbound in
            for try await part in inbound {
                guard case .head(let head) = part else { continue }
                seen.withLock { $0.append(head.uri) }
                let reply = route(head.uri)
                var headers = HTTPHeaders()
                for (name, value) in reply.headers { headers.add(name: name, value: value) }
                let body = ByteBuffer(string: reply.body)
                headers.replaceOrAdd(name: "content-length", value: "\(body.readableBytes)")
                try await outbound.write(
                    .head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: reply.status), headers: headers)))
                try await outbound.write(.body(.byteBuffer(body)))
                try await outbound.write(.end(nil))
            }
        }
    }
}
