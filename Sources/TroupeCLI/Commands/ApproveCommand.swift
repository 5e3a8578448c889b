import ArgumentParser
import Foundation
import OpenAPIRuntime
import Troupe
import TroupeAPI

struct ApproveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Decide on a tool call that waits for a person's approval: approve it, edit its arguments, or deny it.",
        discussion: """
            A call of a tool that tools.requireApproval names waits in the journal until someone decides; no process \
            holds the run meanwhile. The decision is journaled with who made it. Afterwards the run continues on a \
            worker (troupe worker, troupe serve), or here with `troupe resume RUN_ID`. With --deny, the model reads the \
            reason as the call's result; with --edit, the call runs with the given arguments (a JSON object that must \
            satisfy the tool's parameters), and the model is told they were changed.

            Example: troupe approve run_0a1b… --call s1:1:2 --deny --reason "Not on a Friday"
            """
    )

    @Argument(help: "The run whose call to decide on.")
    var runID: String

    @Option(name: .long, help: "The call's key as `troupe approvals` lists it (s1:1:2); needed when several calls wait.")
    var call: String?

    @Flag(name: .long, help: "Deny the call instead of approving it.")
    var deny = false

    @Option(name: .long, help: "With --deny: why, as the model will read it.")
    var reason: String?

    @Option(name: .long, help: ArgumentHelp("Approve the call with these arguments instead (a JSON object).", valueName: "json"))
    var edit: String?

    @Flag(name: .long, help: "Print the run afterwards as one JSON document.")
    var json = false

    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: ServerOption

    func validate() throws {
        if deny && edit != nil { throw ValidationError("Choose one of --deny and --edit.") }
        if reason != nil && !deny { throw ValidationError("--reason goes with --deny.") }
        if let call, ActivityKey(parsing: call) == nil {
            throw ValidationError("'\(call)' is not a call key: use the key `troupe approvals` lists (such as s1:1:2).")
        }
    }

    private var verdict: ApprovalVerdict { deny ? .deny : edit != nil ? .edit : .approve }

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            let id = RunID(runID)
            let report: RunReport
            if let server = try remote.remote() {
                report = try await decide(through: server)
            } else {
                report = try await global.withStore { opened in
                    let decision = ApprovalDecision(verdict: verdict, arguments: edit, reason: reason, decidedBy: Self.decider)
                    let machine = try await opened.store.decideApproval(
                        id, key: call.flatMap(ActivityKey.init(parsing:)), decision: decision, owner: LeaseOwner.current().description)
                    return RunReport(summary: try await opened.store.requireRun(id), machine: machine, prices: opened.prices)
                }
            }
            if json {
                print(try report.json())
                return
            }
            let decided = report.approvals?.filter { $0.decidedBy != nil }.max {
                ($0.decidedAt ?? .distantPast) < ($1.decidedAt ?? .distantPast)
            }
            say("\(decided.map { "\($0.tool) (\($0.callKey))" } ?? "The call") of run \(id): \(decided?.status ?? verdict.rawValue).")
            let pending = report.approvals?.filter { $0.status == "pending" } ?? []
            if !pending.isEmpty {
                say("Still waiting: " + pending.map { "\($0.callKey) (\($0.tool))" }.joined(separator: ", ") + ".")
            } else if remote.server == nil && ProcessInfo.processInfo.environment["TROUPE_SERVER"] == nil {
                say("The run continues on a worker, or here with `troupe resume \(id)`.")
            }
        }
    }

    /// Through a server: the call named, or the run's only waiting call.
    private func decide(through server: RemoteServer) async throws -> RunReport {
        var key = call.flatMap(ActivityKey.init(parsing:))?.callKey
        if key == nil {
            let current = try RemoteServer.report(try await server.call { try await $0.getRun(path: .init(id: runID)).ok.body.json })
            let pending = current.approvals?.filter { $0.status == "pending" } ?? []
            key = pending[try RunStateMachine.onlyWaitingCall(of: pending.map { ($0.callKey, $0.tool) }, run: RunID(runID))].callKey
        }
        var arguments: Components.Schemas.ApprovalDecisionRequest.ArgumentsPayload?
        if let edit {
            do {
                arguments = .init(additionalProperties: try JSONDecoder().decode(OpenAPIObjectContainer.self, from: Data(edit.utf8)))
            } catch {
                throw TroupeError(.invalidInput, "--edit needs a JSON object: \(JSONCoding.describe(error)).")
            }
        }
        guard let decision = Components.Schemas.ApprovalDecisionRequest.DecisionPayload(rawValue: verdict.rawValue) else {
            throw TroupeError(.internal, "The API document has no decision '\(verdict.rawValue)'.")
        }
        let body = Components.Schemas.ApprovalDecisionRequest(decision: decision, arguments: arguments, reason: reason)
        return try RemoteServer.report(
            try await server.call {
                try await $0.decideApproval(path: .init(id: runID, callKey: key ?? ""), body: .json(body)).ok.body.json
            })
    }

    /// Who decides from this command line, as journaled.
    static var decider: String {
        "cli:\(ProcessInfo.processInfo.userName)@\(ProcessInfo.processInfo.hostName)"
    }
}

struct ApprovalsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approvals",
        abstract: "List the tool calls that wait for a person's decision, oldest first.",
        discussion: "Decide on one with `troupe approve RUN_ID --call KEY`. Example: troupe approvals --json"
    )

    @Option(name: .long, help: "The most waiting runs to look at (1-500).")
    var limit = 100

    @Option(name: .long, help: "Only this tenant's (an admin key's filter through a server).")
    var tenant: String?

    @Flag(name: .long, help: "Print the calls as one JSON array.")
    var json = false

    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: ServerOption

    func validate() throws {
        guard (1...500).contains(limit) else { throw ValidationError("--limit must be between 1 and 500.") }
    }

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            let approvals: [RunReport.ApprovalReport]
            if let server = try remote.remote() {
                let list = try await server.call { try await $0.listApprovals(query: .init(tenant: tenant, limit: limit)).ok.body.json }
                approvals = try RemoteServer.converted(list.approvals)
            } else {
                approvals = try await global.withStore { try await $0.store.waitingApprovals(tenant: tenant, limit: limit) }
            }
            if json {
                let encoder = JSONCoding.encoder()
                encoder.outputFormatting.insert(.prettyPrinted)
                print(String(decoding: try encoder.encode(approvals), as: UTF8.self))
                return
            }
            guard !approvals.isEmpty else {
                say("No call waits for approval.")
                return
            }
            for approval in approvals {
                let expiry = approval.expiresAt.map { " · until \(JSONCoding.formatDate($0)), then \(approval.onTimeout ?? "deny")" } ?? ""
                say("\(approval.runId)  \(approval.callKey)  \(approval.tool) \(approval.arguments.jsonString.clipped(to: 100))")
                say(
                    "    \(approval.effect) · requested \(JSONCoding.formatDate(approval.requestedAt))\(expiry) · \(approval.goal.clipped(to: 80))"
                )
            }
        }
    }
}
