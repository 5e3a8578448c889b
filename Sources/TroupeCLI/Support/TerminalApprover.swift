import Foundation
import Synchronization
import Troupe

/// Asks the person at the terminal about each call that needs approval, one at a time, while
/// `troupe run` or `troupe resume` drives the run: approve, deny (with a reason), edit the
/// arguments, or wait (decide later with `troupe approve`). Used only when stdin and stdout
/// are both terminals; otherwise calls wait in the journal.
final class TerminalApprover: ToolApprover, Sendable {
    let identity = ApproveCommand.decider
    /// One question at a time: the previous one's task.
    private let tail = Mutex<Task<Void, Never>?>(nil)

    /// Whether a person can be asked here.
    static var isAvailable: Bool { isatty(STDIN_FILENO) == 1 && isatty(STDOUT_FILENO) == 1 }

    func review(_ request: ApprovalRequest, context: ToolContext) async -> ToolApproval {
        let (turn, previous) = tail.withLock { tail -> (Task<ToolApproval, Never>, Task<Void, Never>?) in
            let previous = tail
            let turn = Task<ToolApproval, Never> {
                await previous?.value
                return await Self.ask(request, context: context)
            }
            tail = Task { _ = await turn.value }
            return (turn, previous)
        }
        _ = previous
        return await withTaskCancellationHandler {
            await turn.value
        } onCancel: {
            turn.cancel()
        }
    }

    private static func ask(_ request: ApprovalRequest, context: ToolContext) async -> ToolApproval {
        guard !Task.isCancelled else { return .deferred }
        let call = request.call
        say("\n⏸ \(call.name) needs your approval (step \(context.stepID)): \(call.arguments.clipped(to: 400))")
        while true {
            guard let answer = await line("  [a]pprove, [d]eny, [e]dit the arguments, or [w]ait (decide later with `troupe approve`)? ")
            else { return .deferred }
            switch answer.lowercased() {
            case "a", "approve", "y", "yes":
                return .approved
            case "d", "deny", "n", "no":
                let reason = await line("  reason (the model reads it): ") ?? ""
                return .denied(reason: reason.isEmpty ? "The person at the terminal denied it." : reason)
            case "e", "edit":
                guard let text = await line("  arguments (one line of JSON): ") else { return .deferred }
                do {
                    return .edited(arguments: try request.checkedArguments(text))
                } catch {
                    say("  \(error.message) Try again.")
                }
            case "w", "wait", "":
                return .deferred
            default:
                say("  answer a, d, e or w")
            }
        }
    }

    /// A line from stdin, read on a thread of its own (reading blocks); `nil` at end of input
    /// or when the asking task is cancelled (the thread's read is then left behind).
    private static func line(_ prompt: String) async -> String? {
        FileHandle.standardOutput.write(Data(TerminalText.safe(prompt).utf8))
        let reader = LineReader()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                reader.start(continuation)
            }
        } onCancel: {
            reader.finish(nil)
        }
    }

    /// Resumes its continuation once: with the line read, or with `nil` on cancellation.
    private final class LineReader: Sendable {
        private let continuation = Mutex<CheckedContinuation<String?, Never>?>(nil)
        private let finished = Atomic<Bool>(false)

        func start(_ continuation: CheckedContinuation<String?, Never>) {
            self.continuation.withLock { $0 = continuation }
            if finished.load(ordering: .acquiring) {
                finish(nil)
                return
            }
            Thread.detachNewThread { [self] in
                let text = readLine(strippingNewline: true)
                finish(text?.trimmingCharacters(in: .whitespaces))
            }
        }

        func finish(_ text: String?) {
            finished.store(true, ordering: .releasing)
            let waiting = continuation.withLock { value in
                defer { value = nil }
                return value
            }
            waiting?.resume(returning: text)
        }
    }
}
