import AsyncHTTPClient
import Foundation
import Logging
import Troupe

/// Builds what a run needs from its configuration: the model client, the tools, the driver.
struct Runtime {
    let store: SQLiteRunStore
    let logger: Logger
    /// The HTTP client for model calls, owned (and shut down) by the command.
    let httpClient: HTTPClient
    let owner = LeaseOwner.current()

    /// The model client for `configuration`: the OpenAI-compatible API, key from `OPENAI_API_KEY`,
    /// behind a ``RetryingModel`` with the default policy (3 attempts, backoff with jitter,
    /// `retry-after` honoured, 180 s per call); each retry is journaled with the call.
    func model(
        for configuration: RunConfiguration,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> any ChatModel {
        let settings = OpenAIChatModel.Configuration.fromEnvironment(
            model: configuration.model,
            baseURL: configuration.baseURL,
            environment: environment
        )
        if settings.apiKey == nil, settings.baseURL.contains("api.openai.com") {
            throw TroupeError(
                .configuration,
                "OPENAI_API_KEY is not set. Export it, or point --base-url at an OpenAI-compatible server "
                    + "(try `troupe demo` for an offline run)."
            )
        }
        return try RetryingModel(OpenAIChatModel(configuration: settings, httpClient: httpClient))
    }

    /// The tools of the groups the configuration enables, jailed to its workspace.
    func tools(for configuration: RunConfiguration) throws -> ToolRegistry {
        var tools: [any Tool] = []
        for group in configuration.tools {
            switch group {
            case "fs": tools += FileTools.all(workspace: try Workspace(configuration.workspace))
            default:
                throw TroupeError(.configuration, "Tool group '\(group)' is not available in this build.")
            }
        }
        return try ToolRegistry(tools)
    }

    func driver(
        model: any ChatModel,
        tools: ToolRegistry,
        observer: (@Sendable (RunEvent, RunStateMachine) -> Void)?
    ) -> RunDriver {
        RunDriver(
            store: store, model: model, tools: tools, owner: owner.description, logger: logger,
            observer: observer)
    }
}

/// Who drives a run from this process: `host/pid/nonce`. Lets `resume` tell a dead local owner
/// (take over at once) from a live one (refuse).
struct LeaseOwner: CustomStringConvertible {
    var host: String
    var pid: Int32
    var nonce: String

    static func current() -> LeaseOwner {
        LeaseOwner(
            host: ProcessInfo.processInfo.hostName, pid: ProcessInfo.processInfo.processIdentifier,
            nonce: String(UUID().uuidString.prefix(8)))
    }

    init(host: String, pid: Int32, nonce: String) {
        self.host = host
        self.pid = pid
        self.nonce = nonce
    }

    init?(parsing text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 3, let pid = Int32(parts[1]) else { return nil }
        self.init(host: String(parts[0]), pid: pid, nonce: String(parts[2]))
    }

    var description: String { "\(host)/\(pid)/\(nonce)" }

    /// Whether this owner is a process on this machine that no longer exists.
    var isDeadOnThisHost: Bool {
        guard host == ProcessInfo.processInfo.hostName, pid > 0 else { return false }
        if pid == ProcessInfo.processInfo.processIdentifier { return false }
        return kill(pid, 0) == -1 && errno == ESRCH
    }

    var isOnThisHost: Bool { host == ProcessInfo.processInfo.hostName }
}
