import Benchmark
import Foundation
import JournalFixture
import Troupe

/// Micro-benchmarks of the paths every model call takes: `swift package benchmark` (from
/// `Benchmarks/`). Inputs are built once, outside the measured part.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        warmupIterations: 3,
        maxDuration: .seconds(2),
        maxIterations: 10_000
    )

    Benchmark("SSE parse: a streamed answer of 60 chunks, fed in 1 KiB pieces") { benchmark in
        let stream = Inputs.sseStream
        for _ in benchmark.scaledIterations {
            var parser = SSEParser()
            var events = 0
            var offset = 0
            while offset < stream.count {
                let end = min(offset + 1_024, stream.count)
                events += parser.feed(stream[offset..<end]).count
                offset = end
            }
            events += parser.finish().count
            blackHole(events)
        }
    }

    Benchmark("Tool-call deltas: two interleaved calls in 40 fragments") { benchmark in
        for _ in benchmark.scaledIterations {
            var assembler = ToolCallAssembler()
            for (index, id, name, fragment) in Inputs.toolCallDeltas {
                blackHole(assembler.add(index: index, id: id, name: name, arguments: fragment))
            }
            blackHole(assembler.toolCalls())
        }
    }

    Benchmark("JSON Schema: validate a tool's arguments") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Inputs.argumentsSchema.validate(Inputs.arguments))
        }
    }

    Benchmark("Plan: parse and validate a 10-step plan from model text") { benchmark in
        let validator = PlanValidator(availableTools: ["echo", "fs_read"], maxSteps: 20)
        for _ in benchmark.scaledIterations {
            blackHole(validator.validate(text: Inputs.planText))
        }
    }

    Benchmark("Journal fold: replay a run of about 1,000 events", configuration: .init(maxIterations: 500)) { benchmark in
        let journal = try await Inputs.journal()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try RunStateMachine(runID: journal.id, replaying: journal.records))
        }
    }

    Benchmark(
        "Journal append (SQLite): the driver's append after a model call",
        configuration: .init(maxIterations: 2_000)
    ) { benchmark in
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hotpaths-\(UUID().uuidString).db").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try await SQLiteRunStore.open(path: path)
        let id = RunID.make()
        var sequence = try await store.createRun(id: id, goal: "append", configuration: RunConfiguration(), at: Date()).lastSequence
        let batch = JournalFixture.batches(steps: 1)[2]
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            sequence = try await store.append(batch, to: id, expectedSequence: sequence, at: Date())
        }
        benchmark.stopMeasurement()
        try await store.close()
    }

    // What the sandbox costs a shell call: `shell_run ["true"]` bare, and in bubblewrap with its
    // limits (prlimit) and its pids cgroup (where this process may make one).
    for sandboxed in [false, true] {
        Benchmark(
            "shell_run true: \(sandboxed ? "in the bwrap sandbox" : "without a sandbox")",
            configuration: .init(metrics: [.wallClock, .cpuTotal], maxDuration: .seconds(3), maxIterations: 300)
        ) { benchmark in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hotpaths-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var policy = ShellPolicy(allowedExecutables: ["true"])
            policy.sandboxMode = sandboxed ? .bwrap : .none
            let shell = ShellTool(workspace: try Workspace(directory), policy: try await policy.withSandbox())
            let context = ToolContext(runID: RunID("run_bench"), stepID: "s1", idempotencyKey: "k", workspace: directory, logger: .init(label: "bench"))
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try await shell.call(["command": ["true"]], context: context))
            }
        }
    }
}

enum Inputs {
    static let sseStream: [UInt8] = {
        var text = ""
        for index in 0..<60 {
            text +=
                #"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"token \#(index) "},"finish_reason":null}]}"#
            text += "\n\n"
        }
        text += #"data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":60}}"# + "\n\ndata: [DONE]\n\n"
        return Array(text.utf8)
    }()

    static let toolCallDeltas: [(Int?, String?, String?, String?)] =
        (0..<20).flatMap { index -> [(Int?, String?, String?, String?)] in
            let first = index == 0
            return [
                (0, first ? "call_a" : nil, first ? "fs_read" : nil, index == 0 ? #"{"path": ""# : "part\(index)/"),
                (1, first ? "call_b" : nil, first ? "echo" : nil, index == 0 ? #"{"text": ""# : "word\(index) "),
            ]
        } + [(0, nil, nil, #"file.txt"}"#), (1, nil, nil, #"end"}"#)]

    static let argumentsSchema: JSONSchema = .object([
        .init("path", .string("A file path.")),
        .init("offset", .integer("First line.", minimum: 1)),
        .init("limit", .integer("Lines.", minimum: 1, maximum: 10_000)),
        .init("patterns", .array(of: .string(), "Patterns to look for.")),
    ])

    static let arguments: JSONValue = ["path": "src/main.swift", "offset": 10, "limit": 200, "patterns": ["TODO", "FIXME", "XXX"]]

    static let planText: String = {
        let steps = (1...10).map { index in
            #"{"id":"s\#(index)","title":"Step \#(index)","instruction":"Carry out part \#(index) of the goal.","tools":["echo"],"dependsOn":[\#(index > 1 ? "\"s\(index - 1)\"" : "")]}"#
        }
        return "Here is the plan:\n```json\n{\"steps\":[" + steps.joined(separator: ",") + "]}\n```"
    }()

    /// A run of about 1,000 events written to an in-memory store, and read back.
    static func journal() async throws -> (id: RunID, records: [RunEventRecord]) {
        let store = InMemoryRunStore()
        let id = try await JournalFixture.write(steps: JournalFixture.steps(forEvents: 1_000), to: store)
        return (id, try await store.events(of: id))
    }
}
