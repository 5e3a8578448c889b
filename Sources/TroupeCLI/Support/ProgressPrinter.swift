import Foundation
import Synchronization
import Troupe

/// Prints a run's progress as its events are journaled: the plan, each step, each tool call, tokens.
final class ProgressPrinter: Sendable {
    private let enabled: Bool
    private let started = Mutex<Date?>(nil)

    init(enabled: Bool) {
        self.enabled = enabled
    }

    /// The observer to hand to the driver.
    var observer: @Sendable (RunEvent, RunStateMachine) -> Void {
        { [self] event, machine in self.handle(event, machine) }
    }

    private func handle(_ event: RunEvent, _ machine: RunStateMachine) {
        guard enabled else { return }
        switch event {
        case .leaseAcquired:
            started.withLock { $0 = $0 ?? Date() }
            if machine.sequence > 2 {
                say("▸ resuming \(machine.runID) (\(machine.sequence) events in the journal)")
            }
        case .planProposed(_, let plan), .replanned(_, let plan, _):
            if case .replanned(_, _, let reason) = event { say("▸ replanning: \(reason)") }
            say("▸ plan: \(plan.steps.count) step\(plan.steps.count == 1 ? "" : "s")")
            for step in plan.steps {
                let tools = step.tools.isEmpty ? "all tools" : step.tools.joined(separator: ", ")
                let after =
                    step.dependsOn.isEmpty ? "" : " · after \(step.dependsOn.joined(separator: ", "))"
                say("   \(step.id)  \(step.title)  [\(tools)]\(after)")
            }
        case .planRejected(_, let attempt, let problems):
            say(
                "▸ plan rejected (attempt \(attempt)): \(problems.first ?? "")\(problems.count > 1 ? " (+\(problems.count - 1) more)" : "")"
            )
        case .stepStarted(let id, let attempt):
            let title = machine.step(id)?.step.title ?? ""
            say("▸ \(id) started\(attempt > 1 ? " (attempt \(attempt))" : "") — \(title)")
        case .activityCompleted(let key, .tool(let output)):
            let call = machine.step(key.step)?.transcript.lazy.compactMap { item -> ToolCall? in
                if case .toolResult(key, let call, _) = item { call } else { nil }
            }.first
            guard let call else { return }
            let mark = output.isError ? "✗" : "↳"
            say(
                "   \(mark) \(call.name) \(call.arguments.clipped(to: 80)) → \(Self.oneLine(output.content).clipped(to: 100))"
            )
        case .activityCompleted(let key, .model(let response)) where machine.activities[key]?.kind.isPlannerCall == false:
            let usage = response.usage
            say(
                "   · model turn \(key.callIndex) (\(usage.inputTokens) in / \(usage.outputTokens) out tokens)"
            )
        case .activityFailed(let key, let error):
            say("   ✗ \(key): \(error.message)")
        case .modelCallRetried(let key, let attempt, let error, let delay):
            let attempt = ModelAttempt(number: attempt, error: error, retryDelaySeconds: delay)
            say("   \(attempt.fallbackTo == nil ? "↻" : "↷") \(key): \(attempt.summary(messageLimit: 100))")
        case .stepCompleted(let id, let output):
            say("   ✓ \(id) done: \(Self.oneLine(output).clipped(to: 120))")
        case .stepFailed(let id, let error):
            say("   ✗ \(id) failed: \(error.message)")
        case .approvalRequested(let key, let request):
            let expiry =
                request.expiresAt.map { " (until \(JSONCoding.formatDate($0)), then \(request.onTimeout?.rawValue ?? "deny"))" } ?? ""
            say("   ⏸ \(request.call.name) \(request.call.arguments.clipped(to: 80)) waits for approval: call \(key.callKey)\(expiry)")
        case .approvalDecided(let key, let decision):
            let name = machine.approvals[key]?.request.call.name ?? key.callKey
            let verdict =
                ["approve": "approved", "edit": "approved with edited arguments", "deny": "denied"][decision.verdict.rawValue] ?? ""
            say("   ⏵ \(name) (\(key.callKey)) \(verdict) by \(decision.decidedBy)")
        case .runSucceeded, .runFailed, .runCancelled, .runNeedsAttention:
            let elapsed = started.withLock { $0.map { Date().timeIntervalSince($0) } } ?? 0
            let usage = machine.usage
            say(
                "▸ \(machine.status.rawValue) in \(String(format: "%.1f", elapsed)) s — "
                    + "\(usage.inputTokens) input + \(usage.outputTokens) output tokens"
            )
        default:
            break
        }
    }

    /// A progress line, masked as the journal is: the driver's events are the raw ones it keeps in memory.
    private func say(_ line: String) {
        TroupeCLI.say(Redactor.shared.redact(line))
    }

    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).joined(separator: " ⏎ ")
    }
}
