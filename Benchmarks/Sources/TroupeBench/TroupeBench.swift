import ArgumentParser

@main
struct TroupeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "troupe-bench",
        abstract: "Measure Troupe's overhead on the plan-and-execute workload of docs/PERFORMANCE.md.",
        discussion: """
            One run = 1 planner call + K steps × (a call to the tool echo(text) + a final answer) = 1 + 2K model calls. \
            Without --base-url, an in-process MockOpenAIServer answers on its own event loop thread. Each command \
            prints one JSON line: runs, model_calls, wall_s, runs_per_s, cpu_ms_per_model_call, peak_rss_mib, \
            p50_ms, p99_ms.
            """,
        subcommands: [OverheadCommand.self, BaselineCommand.self, JournalCommand.self, FleetCommand.self, APICommand.self]
    )
}
