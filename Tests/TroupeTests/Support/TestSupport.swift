import Foundation
import Testing
import Troupe
import TroupeTesting

/// A fresh temporary directory, removed afterwards.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-test-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// A tool that records its calls; `effect` decides how resume treats it.
final class CountingTool: Tool, @unchecked Sendable {
    // Safety: `count` is only touched under `lock`.
    let name: String
    let description = "Echo the text back."
    let effect: ToolEffect
    let parameters: JSONSchema = .object([.init("text", .string("What to echo."))])
    private let lock = NSLock()
    private var _count = 0

    init(name: String = "echo", effect: ToolEffect = .readOnly) {
        self.name = name
        self.effect = effect
    }

    var count: Int { lock.withLock { _count } }

    func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        lock.withLock { _count += 1 }
        return ToolOutput("echo: \(arguments["text"]?.stringValue ?? "")")
    }
}

/// A fixed clock for journal timestamps.
let fixedDate = Date(timeIntervalSince1970: 1_790_000_000)

func plan(_ steps: [(id: String, tools: [String], dependsOn: [String])]) -> Plan {
    Plan(
        steps: steps.map {
            PlanStep(id: $0.id, title: "Step \($0.id)", instruction: "Do \($0.id).", tools: $0.tools, dependsOn: $0.dependsOn)
        })
}

func makeDriver(store: any RunStore, model: any ChatModel, tools: [any Tool], owner: String = "test-driver") throws -> RunDriver {
    RunDriver(store: store, model: model, tools: try ToolRegistry(tools), owner: owner, now: { fixedDate })
}

/// A loopback TCP port that refuses connections for as long as it is open: bound, never listening.
struct RefusingPort {
    let descriptor: Int32
    let port: Int

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(descriptor, address, length) == 0 && getsockname(descriptor, address, &length) == 0
            }
        }
        guard descriptor >= 0, bound else { throw CLIError(message: "cannot bind a loopback port: errno \(errno)") }
        self.descriptor = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        _ = Glibc.close(descriptor)
    }
}

/// Runs CPU-heavy `work` on a thread of its own, off Swift's cooperative pool, so that the timing
/// tests running beside it keep their threads.
func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.start()
    }
}

/// What a crash leaves: the journal of a run of `replies` with `tool`, cut right after the
/// `activityStarted` of its last tool call of the first turn that calls tools.
func crashedJournal(
    replies: [ScriptedModel.Reply], tool: CountingTool, goal: String
) async throws -> (store: InMemoryRunStore, id: RunID) {
    let complete = InMemoryRunStore()
    let finished = try await makeDriver(store: complete, model: ScriptedModel(replies), tools: [tool])
        .run(goal: goal, configuration: RunConfiguration(model: "scripted"))
    let records = try await complete.events(of: finished.runID)
    // The starts of one turn's calls are journaled together: the last of that run of starts.
    guard let first = records.firstIndex(where: { if case .activityStarted(_, .tool) = $0.event { true } else { false } }) else {
        throw CLIError(message: "the run made no tool call")
    }
    let cut =
        records[first...].firstIndex { if case .activityStarted(_, .tool) = $0.event { false } else { true } }.map { $0 - 1 }
        ?? records.count - 1
    let crashed = InMemoryRunStore()
    guard case .runCreated(let goal, let configuration) = records[0].event else { throw CLIError(message: "no runCreated") }
    _ = try await crashed.createRun(id: finished.runID, goal: goal, configuration: configuration, at: fixedDate)
    _ = try await crashed.append(records[1...cut].map(\.event), to: finished.runID, expectedSequence: 1, at: fixedDate)
    return (crashed, finished.runID)
}
