import Foundation
import Logging
import Synchronization
import Testing
import Troupe
import TroupeSettings
import TroupeTesting

/// JSON log lines, their fields and redaction; the levels per logger; `log.*` settings; and the
/// CLI's `--log-format json`.
@Suite struct LoggingTests {
    /// Lines a handler wrote.
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { lines.withLock { $0 } }
        func add(_ line: String) { lines.withLock { $0.append(line) } }
    }

    static func logger(_ lines: Lines, level: Logger.Level = .info) -> Logger {
        let instant = Date(timeIntervalSince1970: 1_796_695_811.123_4)  // 2026-12-08T02:10:11.123Z
        return Logger(label: "troupe.worker") { label in
            JSONLogHandler(label: label, logLevel: level, metadataProvider: nil, now: { instant }, write: lines.add)
        }
    }

    @Test func aLineIsOneJSONObjectWithItsFieldsFirst() throws {
        let lines = Lines()
        var logger = Self.logger(lines)
        logger[metadataKey: "run"] = "run_abc"
        logger[metadataKey: "tenant"] = "acme"
        logger.info(
            "run claimed\nsecond line \"quoted\"",
            metadata: ["attempt": "2", "step": "s1", "level": "shadowed", "tools": ["fs", "shell"], "limits": ["max": "3"]])
        logger.debug("not at info")
        #expect(lines.all.count == 1)
        let line = try #require(lines.all.first)
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1, "one line: \(line)")
        #expect(
            line.hasPrefix(
                #"{"ts":"2026-12-08T02:10:11.123Z","level":"info","message":"run claimed\nsecond line \"quoted\"","logger":"troupe.worker","run_id":"run_abc","step":"s1","tenant":"acme""#
            ), "\(line)")
        let object = try JSONValue.parse(line)
        #expect(object["attempt"]?.stringValue == "2" && object["meta_level"]?.stringValue == "shadowed")
        #expect(object["tools"] == ["fs", "shell"] && object["limits"]?["max"]?.stringValue == "3")
    }

    @Test func secretsAreMaskedInMessagesAndMetadata() throws {
        let lines = Lines()
        let logger = Self.logger(lines)
        let key = "sk-proj-" + String(repeating: "a1B2", count: 12)
        logger.warning("calling with \(key)", metadata: ["header": "Bearer \(key)", "nested": ["\(key)"]])
        let line = try #require(lines.all.first)
        #expect(!line.contains(key) && line.contains("[REDACTED]"), "\(line)")
        #expect(try JSONValue.parse(line)["level"]?.stringValue == "warning")
    }

    /// Nothing a model or a server sent can end a line or steer a terminal: C1 controls, the
    /// Unicode separators and bidirectional controls are escaped.
    @Test func aMessageCannotSplitALineOrSteerATerminal() throws {
        let lines = Lines()
        let hostile = "a\u{2028}{\"level\":\"error\"}\u{85}\u{9b}31m\u{202e}b\u{7f}"
        Self.logger(lines).info("\(hostile)", metadata: ["from": "\(hostile)"])
        let line = try #require(lines.all.first)
        #expect(!line.unicodeScalars.contains { [0x2028, 0x85, 0x9B, 0x202E, 0x7F].contains($0.value) }, "\(line)")
        let object = try JSONValue.parse(line)
        #expect(object["message"]?.stringValue == hostile && object["from"]?.stringValue == hostile)
    }

    /// A level on the command line holds for every logger, over the settings' levels.
    @Test func aLevelOnTheCommandLineBeatsTheSettings() async throws {
        try await withTemporaryDirectory { directory in
            let run = try await CLIProcess.runApart(
                [
                    "runs", "--store", "sqlite:\(directory)/runs.db", "--log-format", "json", "--verbose", "--set",
                    "log.levels=troupe=error",
                ],
                directory: directory)
            #expect(run.errors.contains(#""level":"debug","message":"Opened the SQLite store","logger":"troupe.store""#), "\(run.errors)")
        }
    }

    /// A worker's stderr is JSON lines only, its drain notices and closing tally included; a
    /// fatal error of `serve` too.
    @Test func aWorkersStderrIsJSONLinesOnly() async throws {
        try await withTemporaryDirectory { directory in
            let worker = try CLIProcess(["worker", "--store", "sqlite:\(directory)/runs.db"], directory: directory, separateErrors: true)
            try await worker.waitUntil("the worker starts") { worker.errorOutput.contains("worker started") }
            worker.kill(SIGTERM)
            #expect(await worker.wait() == 0)
            let lines = worker.errorOutput.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            for line in lines { #expect((try? JSONValue.parse(String(line))) != nil, "not JSON: \(line)") }
            #expect(lines.contains { $0.contains("draining:") } && lines.contains { $0.contains("troupe worker stopped:") })
            let failed = try await CLIProcess.runApart(
                ["serve", "--store", "sqlite:\(directory)/runs.db", "--port", "1"], directory: directory)
            #expect(failed.status != 0)
            for line in failed.errors.split(separator: "\n") where !line.isEmpty {
                #expect((try? JSONValue.parse(String(line))) != nil, "not JSON: \(line)")
            }
        }
    }

    @Test func levelsAreSetPerLoggerAndItsChildren() {
        LogOutput.configure(format: .text, level: .warning, levels: ["troupe.mcp": .debug, "troupe.store": .error])
        defer { LogOutput.configure(format: .text, level: .warning) }
        #expect(LogOutput.level(for: "troupe.mcp") == .debug)
        #expect(LogOutput.level(for: "troupe.mcp.github") == .debug)
        #expect(LogOutput.level(for: "troupe.store") == .error)
        #expect(LogOutput.level(for: "troupe.worker") == .warning)
        #expect(LogOutput.level(for: "troupe") == .warning)
    }

    @Test func logSettingsAreReadAndBadOnesRefused() async throws {
        func load(_ overrides: [String]) async throws -> TroupeSettings {
            try await TroupeSettings.load(overrides: overrides, environment: [:], directory: "/", readingImplicitFile: false)
        }
        let log = try await load(["log.format=json", "log.level=notice", "log.levels=troupe.mcp=debug, troupe.store=error"]).log
        #expect(log.format == .json && log.level == .notice)
        #expect(log.levels == ["troupe.mcp": .debug, "troupe.store": .error])
        #expect(try await load([]).log == LogSettings())
        for (bad, message) in [
            ("log.format=xml", "json or text"), ("log.level=loud", "trace, debug"), ("log.levels=troupe.mcp", "LOGGER=LEVEL"),
        ] {
            await #expect {
                _ = try await load([bad])
            } throws: { error in
                (error as? TroupeError)?.message.contains(message) == true
            }
        }
    }

    /// `troupe run --log-format json` writes its log lines as JSON on standard error (its
    /// human output stays on standard output), each with the fields.
    @Test func theCLIWritesJSONLinesWhenAsked() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 1)) { mock in
            try await withTemporaryDirectory { directory in
                let run = try await CLIProcess.runApart(
                    [
                        "run", "Say hello", "--base-url", mock.baseURL, "--store", "sqlite:\(directory)/runs.db", "--log-format", "json",
                        "--log-level", "debug",
                    ], directory: directory, environment: ["OPENAI_API_KEY": "sk-test-" + String(repeating: "x", count: 40)])
                #expect(run.status == 0, "\(run.output)\n\(run.errors)")
                let lines = run.errors.split(separator: "\n").filter { $0.hasPrefix("{") }
                #expect(!lines.isEmpty, "debug lines were written: \(run.errors)")
                for line in lines {
                    let object = try JSONValue.parse(String(line))
                    #expect(object["ts"]?.stringValue?.hasSuffix("Z") == true && object["level"] != nil && object["logger"] != nil)
                    #expect(object["message"]?.stringValue != nil)
                }
                #expect(!run.errors.contains(String(repeating: "x", count: 40)), "the key is never logged")
                let activities = try lines.map { try JSONValue.parse(String($0)) }.filter { $0["message"] == "activity ended" }
                #expect(
                    activities.contains {
                        $0["run_id"]?.stringValue?.hasPrefix("run_") == true && $0["step"] == "s1" && $0["activity"] != nil
                    },
                    "each activity's line names its run, step and activity")
                #expect(run.output.contains("succeeded"), "\(run.output)")
            }
        }
    }
}
