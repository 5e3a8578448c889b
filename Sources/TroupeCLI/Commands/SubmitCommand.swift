import ArgumentParser
import Foundation
import Troupe
import TroupeAPI

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Create a run for a worker to drive, without waiting for it.",
        discussion: """
            The run is stored as pending with the same configuration `troupe run` would give it; a `troupe worker` \
            on the same store (or `troupe serve`) claims and drives it. Prints the run's ID; --follow prints its \
            progress until it ends and exits as `troupe run` would; --json prints the run as `show --json` does.

            Example: troupe submit "Summarize notes/ into SUMMARY.md" --workspace ./project --follow
            """
    )

    @Argument(help: "What the run should achieve.")
    var goal: String

    @OptionGroup var options: RunOptions
    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: ServerOption

    @Flag(name: .long, help: "Print the run's progress until it ends (exit code as `troupe run`).")
    var follow = false

    @Flag(name: .long, help: "Print the run as one JSON document (as `show --json`): when created, or when it ends with --follow.")
    var json = false

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            if let server = try remote.remote() {
                try await submit(to: server)
                return
            }
            try await global.withRuntime(workspace: { try options.newRunConfiguration($0).workspace }) { runtime in
                let configuration = try options.newRunConfiguration(runtime.settings)
                let goal = try RunDriver.validatedGoal(goal)
                let store = runtime.store
                let summary = try await store.createRun(id: .make(), goal: goal, configuration: configuration, at: Date())
                if !follow {
                    if json {
                        let machine = try RunStateMachine(runID: summary.id, replaying: try await store.events(of: summary.id))
                        print(try RunReport(summary: summary, machine: machine, prices: runtime.settings.prices).json())
                    } else {
                        print(summary.id.rawValue)
                        note("▸ run \(summary.id) is waiting for a worker: `troupe worker\(runtime.opened.flag)`", json: true)
                    }
                    return
                }
                if !json { say("▸ run \(summary.id) — \(goal) (waiting for a worker)") }
                let final = try await RunFollower(store: store).follow(summary.id, observer: ProgressPrinter(enabled: !json).observer)
                try await finish(final, store: runtime.opened, json: json)
            }
        }
    }
}

extension SubmitCommand {
    /// Creates the run through a server: the server's settings decide the endpoint, the
    /// workspace and which models and tools may be asked for.
    func submit(to server: RemoteServer) async throws {
        for (given, flag) in [(options.baseURL, "--base-url"), (options.workspace, "--workspace")] where given != nil {
            throw TroupeError(.invalidInput, "\(flag) cannot be chosen through a server: the server's settings decide it (docs/API.md).")
        }
        if options.maxTokens != nil { throw TroupeError(.invalidInput, "--max-tokens cannot be chosen through a server.") }
        let goal = try RunDriver.validatedGoal(goal)
        let request = Components.Schemas.CreateRunRequest(
            goal: goal, model: options.model, tools: try options.tools.map(RunOptions.toolGroups), maxSteps: options.maxSteps,
            maxConcurrency: options.maxConcurrency, maxIterations: options.maxIterations, stepTimeout: options.stepTimeout,
            stream: options.stream, readOnly: options.readOnly)
        let created = try RemoteServer.report(try await server.call { try await $0.createRun(body: .json(request)).created.body.json })
        let id = RunID(created.id)
        if !follow {
            if json {
                print(try created.json())
            } else {
                print(created.id)
                note("▸ run \(created.id) was created on \(server.url)", json: true)
            }
            return
        }
        if !json { say("▸ run \(id) — \(goal) (on \(server.url))") }
        let final = try await server.follow(id, observer: ProgressPrinter(enabled: !json).observer)
        try server.finish(final, json: json)
    }
}

/// Follows a run in a store as its driver journals it — a worker elsewhere — until it ends,
/// needs attention or waits for a person's approval, handing each event to `observer` as a driver's observer would get it.
struct RunFollower {
    let store: any RunStore
    /// How often the journal is read.
    var interval: Duration = .milliseconds(200)

    func follow(_ id: RunID, observer: @Sendable (RunEvent, RunStateMachine) -> Void) async throws -> RunStateMachine {
        var machine = RunStateMachine(runID: id)
        while true {
            for record in try await store.events(of: id, after: machine.sequence) {
                try machine.apply(record.event, at: record.recordedAt)
                observer(record.event, machine)
            }
            if machine.status.isTerminal || machine.status == .needsAttention || machine.isIdleWaitingForApproval { return machine }
            try await Task.sleep(for: interval)
        }
    }
}
