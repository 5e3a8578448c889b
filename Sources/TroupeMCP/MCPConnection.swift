public import AsyncHTTPClient
import Foundation
public import Logging
import TroupeModels
internal import MCP
public import TroupeCore

/// One MCP server, supervised: started (or connected) on first use, restarted when it dies,
/// stopped by ``shutdown()``.
///
/// A call never hangs a run: it ends with the server's answer, or after the call timeout
/// (the server is told to cancel, and a server that then does not answer a ping within 5 s is
/// restarted), or as soon as the server process exits or the HTTP exchange fails — each as an
/// error the model reads. A server that keeps dying is given up on for a while
/// (``MCPServerConfiguration/maxRestarts`` within ``MCPServerConfiguration/restartWindow``).
public actor MCPConnection {
    public nonisolated let configuration: MCPServerConfiguration
    private let httpClient: HTTPClient
    private let logger: Logger

    private struct Session {
        let client: Client
        let transport: any SupervisedTransport
        let generation: Int
    }

    private var session: Session?
    private var starting: Task<Session, any Error>?
    private var generation = 0
    /// When each start after the first happened, for the restart budget.
    private var restarts: [ContinuousClock.Instant] = []
    /// Why the last session ended, for the message when restarts are used up.
    private var lastEnd: String?
    private var isShutDown = false

    /// - Parameter httpClient: for servers reached over HTTP (owned by the caller); by default the
    ///   process-wide client of model calls, which fails at once when nothing listens.
    public init(_ configuration: MCPServerConfiguration, httpClient: HTTPClient = OpenAIChatModel.sharedHTTPClient, logger: Logger) {
        self.configuration = configuration
        self.httpClient = httpClient
        self.logger = logger
    }

    /// The most tools one server may list (its tools go into the planner's prompt).
    public static let maxListedTools = 1_000

    /// The server's tools, as it lists them (all pages), each name once (the first listing
    /// wins). A cursor the server already gave ends the listing (some servers repeat the last
    /// page's cursor); more than ``maxListedTools`` tools is refused.
    public func listTools() async throws(TroupeError) -> [MCPRemoteTool] {
        let session = try await liveSession()
        var tools: [MCPRemoteTool] = []
        var seenNames = Set<String>()
        var seenCursors = Set<String>()
        var cursor: String?
        for _ in 0..<100 {
            let page: ListTools.Result
            do {
                let parameters = cursor.map { ListTools.Parameters(cursor: $0) } ?? ListTools.Parameters()
                let context: RequestContext<ListTools.Result> = try await session.client.send(ListTools.request(parameters))
                guard let answer = try await answer(to: context, from: session.client, within: configuration.startupTimeout) else {
                    throw TroupeError(.toolFailed, "it did not list its tools within \(format(configuration.startupTimeout))")
                }
                page = answer
            } catch {
                throw await failure(error, in: session, doing: "listing its tools")
            }
            for tool in page.tools.map(MCPRemoteTool.init) where seenNames.insert(tool.name).inserted {
                tools.append(tool)
            }
            guard tools.count <= Self.maxListedTools else {
                throw TroupeError(
                    .toolFailed, "it lists more than \(Self.maxListedTools) tools; Troupe takes at most that many from one server")
            }
            guard let next = page.nextCursor, !next.isEmpty, seenCursors.insert(next).inserted else { break }
            cursor = next
        }
        return tools
    }

    /// Calls the server's tool `name` with `arguments` (a JSON object).
    public func call(_ name: String, arguments: JSONValue) async throws(TroupeError) -> ToolOutput {
        let session = try await liveSession()
        let result: CallTool.Result
        do {
            let parameters = CallTool.Parameters(name: name, arguments: arguments.mcpObject)
            let context: RequestContext<CallTool.Result> = try await session.client.send(CallTool.request(parameters))
            guard let answer = try await answer(to: context, from: session.client, within: configuration.callTimeout) else {
                await checkHealth(of: session)
                // A tool that may change something may have done so before the cancel arrived.
                let outcome =
                    configuration.effect(of: name) == .readOnly
                    ? "the call was cancelled"
                    : "the call was cancelled, but whether it took effect is unknown: check before calling it again"
                throw TroupeError(
                    .timeout,
                    "MCP server '\(configuration.name)' did not answer \(name) within \(format(configuration.callTimeout)); \(outcome)."
                )
            }
            result = answer
        } catch let error as TroupeError where error.code == .timeout {
            throw error
        } catch {
            throw await failure(error, in: session, doing: "calling \(name)")
        }
        return ToolOutput(MCPContent.text(of: result), isError: result.isError ?? false)
    }

    /// Stops the server (or ends the HTTP session). Later calls are refused.
    public func shutdown() async {
        isShutDown = true
        let current = session
        session = nil
        if let starting, let started = try? await starting.value { await stop(started) }
        if let current { await stop(current) }
    }

    // MARK: - Sessions

    private func liveSession() async throws(TroupeError) -> Session {
        guard !isShutDown else { throw TroupeError(.toolFailed, "MCP server '\(configuration.name)' has been shut down.") }
        if let session, await session.transport.endReason == nil { return session }
        if let session {
            self.session = nil
            lastEnd = await session.transport.endReason
            await stop(session)
        }
        if let starting {
            do { return try await starting.value } catch { throw Self.troupeError(error) }
        }
        if generation > 0 {
            let now = ContinuousClock.now
            restarts.removeAll { $0 < now - configuration.restartWindow }
            guard restarts.count < configuration.maxRestarts else {
                throw TroupeError(
                    .toolFailed,
                    "MCP server '\(configuration.name)' stopped \(restarts.count + 1) times within \(format(configuration.restartWindow)) "
                        + "and is not restarted for now\(lastEnd.map { "; last: \($0)" } ?? ""). Do without its tools.")
            }
            restarts.append(now)
        }
        generation += 1
        let task = Task { [generation] in try await self.start(generation: generation) }
        starting = task
        defer { starting = nil }
        do {
            let started = try await task.value
            guard !isShutDown else {
                await stop(started)
                throw TroupeError(.toolFailed, "MCP server '\(configuration.name)' has been shut down.")
            }
            session = started
            return started
        } catch {
            throw Self.troupeError(error)
        }
    }

    private func start(generation: Int) async throws -> Session {
        let transport = makeTransport()
        let client = Client(name: "troupe", version: "1.0")
        let name = configuration.name
        // When the server goes away — even while starting — requests waiting for it fail at once
        // (the client fails them when disconnected).
        Task { [weak self] in
            let reason = await transport.ended()
            await client.disconnect()
            await self?.sessionEnded(generation: generation, reason: reason)
        }
        // Connecting cannot be cancelled: past the limit, the watchdog disconnects, which fails it.
        let watchdog = Task { [limit = configuration.startupTimeout] in
            try await Task.sleep(for: limit)
            await client.disconnect()
            return true
        }
        do {
            try await client.connect(transport: transport)
            watchdog.cancel()
        } catch {
            watchdog.cancel()
            let timedOut = (try? await watchdog.value) == true
            // Why it ended (a process's exit and stderr), read before disconnecting overwrites it.
            // A process that exits at once can fail the first write before its exit is seen:
            // its exit (with its error output) is the better reason, so wait for it a moment.
            var ended = await transport.endReason
            if ended == nil, !timedOut, transport is StdioServerTransport {
                ended = (try? await withTimeLimit(.seconds(2)) { await transport.ended() }) ?? nil
            }
            await client.disconnect()
            if let error = error as? TroupeError, error.code == .configuration { throw error }
            let reason = timedOut ? "it did not finish starting within \(format(configuration.startupTimeout))" : ended
            throw TroupeError(.toolFailed, "MCP server '\(name)' did not start: \(reason ?? Self.troupeError(error).message)")
        }
        logger.info("MCP server connected", metadata: ["server": "\(name)", "generation": "\(generation)"])
        return Session(client: client, transport: transport, generation: generation)
    }

    private func sessionEnded(generation: Int, reason: String) {
        guard let session, session.generation == generation else { return }
        logger.warning("MCP server stopped", metadata: ["server": "\(configuration.name)", "reason": "\(reason)"])
        lastEnd = reason
        self.session = nil
    }

    private func makeTransport() -> any SupervisedTransport {
        switch configuration.transport {
        case .stdio(let command, let arguments, let environment, let workingDirectory):
            var base = MCPServerEnvironment.base()
            // A sandboxed server's home and temporary files are in its private /tmp.
            if configuration.sandbox != nil { (base["HOME"], base["TMPDIR"]) = ("/tmp", "/tmp") }
            return StdioServerTransport(
                serverName: configuration.name, command: command, arguments: arguments,
                environment: base.merging(environment) { $1 }, workingDirectory: workingDirectory,
                sandboxing: configuration.sandbox, logger: logger)
        case .http(let url, let headers):
            return StreamableHTTPTransport(
                serverName: configuration.name, url: url, headers: headers, httpClient: httpClient,
                requestTimeout: configuration.callTimeout + .seconds(10), logger: logger)
        }
    }

    private func stop(_ session: Session) async {
        await session.client.disconnect()
    }

    /// After a timed-out call: a server that does not answer a ping within 5 s is restarted.
    private func checkHealth(of session: Session) async {
        let alive: Bool
        do {
            let context: RequestContext<Ping.Result> = try await session.client.send(Ping.request())
            alive = try await answer(to: context, from: session.client, within: .seconds(5)) != nil
        } catch {
            alive = false
        }
        guard !alive else { return }
        logger.warning("MCP server hung; restarting it", metadata: ["server": "\(configuration.name)"])
        if self.session?.generation == session.generation { self.session = nil }
        lastEnd = "it stopped answering"
        await stop(session)
    }

    /// The answer to a request, or `nil` after `limit`; a request that is given up on (time out,
    /// or the caller cancelled) is cancelled at the server too.
    private func answer<Value: Sendable>(
        to context: RequestContext<Value>,
        from client: Client,
        within limit: Duration
    ) async throws -> Value? {
        let id = context.requestID
        return try await withTimeLimit(limit) {
            try await withTaskCancellationHandler {
                try await context.value
            } onCancel: {
                Task { try? await client.cancelRequest(id, reason: "The caller stopped waiting.") }
            }
        }
    }

    /// A failed exchange in words: the server's exit (with its stderr), or what went wrong.
    private func failure(_ error: any Error, in session: Session, doing what: String) async -> TroupeError {
        if error is CancellationError || Task.isCancelled {
            return TroupeError(.cancelled, "The call to MCP server '\(configuration.name)' was cancelled.")
        }
        if let reason = await session.transport.endReason {
            return TroupeError(
                .toolFailed,
                "MCP server '\(configuration.name)' stopped while \(what): \(reason). It is restarted for the next call.")
        }
        if let error = error as? MCPError {
            return TroupeError(.toolFailed, "MCP server '\(configuration.name)' failed while \(what): \(error.localizedDescription)")
        }
        return TroupeError(.toolFailed, "MCP server '\(configuration.name)' failed while \(what): \(Self.troupeError(error).message)")
    }

    private static func troupeError(_ error: any Error) -> TroupeError {
        (error as? TroupeError) ?? TroupeError(.toolFailed, "\(error)")
    }

    private func format(_ duration: Duration) -> String {
        String(format: "%g s", duration.seconds)
    }
}

/// The environment every stdio MCP server starts from, before its configured variables: enough
/// to find programs and caches, and nothing secret (`OPENAI_API_KEY` and the like stay in Troupe).
enum MCPServerEnvironment {
    static let inherited: Set<String> = ["PATH", "HOME", "LANG", "TZ", "TMPDIR", "TERM", "USER", "LOGNAME", "SHELL"]

    static func base(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        environment.filter { inherited.contains($0.key) || $0.key.hasPrefix("LC_") }
    }
}
