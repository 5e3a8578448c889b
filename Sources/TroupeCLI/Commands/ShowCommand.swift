import ArgumentParser
import Foundation
import Troupe

struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract:
            "Show a stored run: its plan, steps, tool calls with arguments and results, and usage.",
        discussion:
            "With --json, one JSON document: id, status, goal, createdAt, usage, answer, error, steps[].toolCalls[] …"
    )

    @Argument(help: "The run to show.")
    var runID: String

    @Flag(name: .long, help: "Print one JSON document.")
    var json = false

    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: ServerOption

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            let id = RunID(runID)
            let report: RunReport
            if let server = try remote.remote() {
                report = try RemoteServer.report(try await server.call { try await $0.getRun(path: .init(id: runID)).ok.body.json })
            } else {
                report = try await global.withStore { opened in
                    let store = opened.store
                    let summary = try await store.requireRun(id)
                    let machine = try RunStateMachine(runID: id, replaying: try await store.events(of: id))
                    return RunReport(summary: summary, machine: machine, prices: opened.prices)
                }
            }
            if json {
                print(try report.json())
            } else {
                say(Self.render(report))
            }
        }
    }

    /// `Cost: $0.0123 (gpt-4o-mini $0.0123 · llama-3 unpriced, 2 calls) — prices: …`.
    static func render(_ cost: RunReport.CostReport) -> String {
        let parts = cost.byModel.map { model in
            model.usd.map { "\(model.model) \(dollars($0))" }
                ?? "\(model.model) unpriced, \(model.modelCalls) call\(model.modelCalls == 1 ? "" : "s")"
        }
        let calls = cost.byModel.reduce(0) { $0 + $1.modelCalls }
        if calls > 0, cost.unpricedModelCalls == calls {
            return "Cost: not priced (\(parts.joined(separator: " · "))); add a price with the prices setting (MODEL=INPUT/CACHED/OUTPUT)"
        }
        return "Cost: \(dollars(cost.usd))\(cost.unpricedModelCalls > 0 ? " + unpriced calls" : "")"
            + (parts.isEmpty ? "" : " (\(parts.joined(separator: " · ")))") + " — prices: \(cost.prices)"
    }

    /// `$0.0123`: dollars to a hundredth of a cent (the document has them exact).
    static func dollars(_ text: String) -> String {
        var amount = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")) ?? 0
        var rounded = Decimal()
        NSDecimalRound(&rounded, &amount, 4, .plain)
        return "$" + String(format: "%.4f", NSDecimalNumber(decimal: rounded).doubleValue)
    }

    static func render(_ report: RunReport) -> String {
        var lines: [String] = []
        let formatter = ISO8601DateFormatter()
        lines.append("Run \(report.id) — \(report.status)")
        lines.append("Goal: \(report.goal)")
        lines.append(
            "Created \(formatter.string(from: report.createdAt)) · updated \(formatter.string(from: report.updatedAt))"
        )
        lines.append(
            "Model \(report.configuration.model)\(report.configuration.baseURL.map { " at \($0)" } ?? "") · "
                + "workspace \(report.configuration.workspace) · tools \(report.configuration.tools.joined(separator: ",").nonEmpty ?? "none")"
        )
        lines.append(
            "Usage: \(report.modelCalls) model calls, \(report.toolCalls) tool calls, "
                + "\(report.usage.inputTokens) input + \(report.usage.outputTokens) output tokens (\(report.usage.cachedTokens) cached)"
        )
        if let cost = report.cost { lines.append(Self.render(cost)) }
        for retry in report.planningRetries { lines.append("  \(Self.mark(retry)) planner \(retry)") }
        for error in report.planningErrors { lines.append("  ✗ planner \(error)") }
        if report.steps.isEmpty { lines.append("\nNo plan yet.") }
        for step in report.steps {
            let after = step.dependsOn.isEmpty ? "" : " (after \(step.dependsOn.joined(separator: ", ")))"
            lines.append("\n[\(step.status)] \(step.id) — \(step.title)\(after)")
            lines.append("  instruction: \(step.instruction)")
            for call in step.toolCalls {
                let mark = call.isError == true ? "✗" : call.status == "started" ? "…" : "↳"
                lines.append("  \(mark) \(call.name)(\(call.arguments.jsonString))  [\(call.key)]")
                if let result = call.result {
                    for line in result.clipped(to: 600).split(
                        separator: "\n", omittingEmptySubsequences: false
                    ).prefix(12) {
                        lines.append("      \(line)")
                    }
                }
            }
            for retry in step.modelRetries { lines.append("  \(Self.mark(retry)) model \(retry)") }
            for error in step.modelErrors { lines.append("  ✗ model \(error)") }
            if let output = step.output { lines.append("  output: \(output)") }
            if let error = step.error { lines.append("  error: \(error.code): \(error.message)") }
            if step.modelCalls > 0 {
                lines.append(
                    "  usage: \(step.modelCalls) model calls, \(step.usage.inputTokens) in / \(step.usage.outputTokens) out tokens"
                )
            }
        }
        if let approvals = report.approvals, !approvals.isEmpty {
            lines.append("\nApprovals:")
            for approval in approvals {
                var line = "  [\(approval.status)] \(approval.callKey) \(approval.tool)(\(approval.arguments.jsonString))"
                if let by = approval.decidedBy { line += " by \(by)" }
                if let edited = approval.editedArguments { line += " → \(edited.jsonString)" }
                if let reason = approval.reason { line += ": \(reason)" }
                if approval.status == "pending", let expiry = approval.expiresAt {
                    line += " · until \(JSONCoding.formatDate(expiry)), then \(approval.onTimeout ?? "deny")"
                }
                lines.append(line)
            }
        }
        if let answer = report.answer { lines.append("\nAnswer:\n\(answer)") }
        if let error = report.error {
            lines.append("\n\(report.status): \(error.code): \(error.message)")
        }
        return lines.joined(separator: "\n")
    }

    /// `↷` for a call that fell back to another model, `↻` for a retried attempt.
    private static func mark(_ retry: String) -> String {
        retry.contains(ModelAttempt.fellBackMarker) ? "↷" : "↻"
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}
