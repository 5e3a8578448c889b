import Foundation
import OpenAPIRuntime
import TroupeAPI
import TroupeAgents
import TroupeCore
import TroupeStore
import TroupeTools

/// The API's operations over the store contract: the same ``RunStore`` calls the CLI makes; no
/// run logic of its own. Refusals throw ``APIFailure`` or ``TroupeError``, which the
/// ``ErrorMiddleware`` answers.
struct RunsAPI: APIProtocol {
    let server: APIServer

    /// The store as this request's caller reaches it: its tenant's runs only (every tenant's
    /// for an admin). Routes never touch ``APIServer/store`` itself.
    private var store: any RunStore {
        get throws { ScopedRunStore(server.store, scope: try caller.scope) }
    }

    /// The caller of this request (set by ``CallerMiddleware`` before any handler runs).
    private var caller: Caller {
        get throws {
            guard let caller = Caller.current else { throw APIFailure.unauthorized(keySent: false) }
            return caller
        }
    }

    // MARK: Runs

    func createRun(_ input: Operations.CreateRun.Input) async throws -> Operations.CreateRun.Output {
        try refuseWhileDraining()
        guard case .json(let body) = input.body else { throw APIFailure(status: 415, code: "invalidInput", "Send a JSON body.") }
        let goal = try RunDriver.validatedGoal(body.goal)
        var configuration = try configuration(for: body)
        let id: RunID
        if let key = input.headers.idempotencyKey {
            guard !key.isEmpty, key.utf8.count <= 200, key.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else {
                throw TroupeError(
                    .invalidInput, "Idempotency-Key must be 1 to 200 visible ASCII characters.", details: ["field": "Idempotency-Key"])
            }
            // The key names the run: a retry finds it, and two racing requests create it once.
            // Keys are the tenant's own: another tenant's same key names another run.
            let tenant = try caller.tenant
            let scoped = tenant == RunConfiguration.defaultTenant ? key : tenant + "\u{0}" + key
            id = RunID("run-" + TextDigest.sha256Hex("troupe idempotency key\u{0}" + scoped).prefix(32))
            configuration.requestDigest = TextDigest.sha256Hex(String(decoding: try JSONCoding.encoder().encode(body), as: UTF8.self))
            if let replay = try await replay(id, digest: configuration.requestDigest) { return replay }
        } else {
            id = RunID.make()
        }
        configuration.workspace = (server.workspaceRoot as NSString).appendingPathComponent(id.rawValue)
        // The caller's tenant's (an admin's too: its store handle reaches every tenant).
        configuration.tenant = try caller.tenant
        try server.finishConfiguration(&configuration)
        configuration = try configuration.validated()
        try Self.createWorkspace(configuration.workspace)
        do {
            let summary = try await store.createRun(id: id, goal: goal, configuration: configuration, at: server.now())
            return .created(.init(body: .json(try await document(summary.id, summary: summary))))
        } catch {
            // Another request with the same key created it first: answer as a retry would be
            // (a 409 if its body was another). The workspace is then that run's: it stays.
            if configuration.requestDigest != nil, let replay = try await replay(id, digest: configuration.requestDigest) { return replay }
            // The workspace goes only when no run of any tenant has this ID.
            if (try? await server.store.run(id)) == .some(nil) { try? FileManager.default.removeItem(atPath: configuration.workspace) }
            throw error
        }
    }

    /// The run an earlier request with the same Idempotency-Key created (200), or a 409 if that
    /// request's body was another; `nil` if there is none.
    private func replay(_ id: RunID, digest: String?) async throws -> Operations.CreateRun.Output? {
        guard let existing = try await store.run(id) else { return nil }
        guard existing.configuration.requestDigest == digest else {
            throw APIFailure(
                status: 409, code: TroupeError.Code.journalConflict.rawValue,
                "This Idempotency-Key was used for another request body (run \(id)); use a new key for a new run.",
                details: ["run": id.rawValue])
        }
        return .ok(.init(body: .json(try await document(id, summary: existing))))
    }

    /// The server's defaults with the request's choices, each checked against what the
    /// operator allows.
    private func configuration(for body: Components.Schemas.CreateRunRequest) throws -> RunConfiguration {
        var configuration = server.runDefaults
        if let model = body.model {
            guard server.models.contains(model) else {
                throw APIFailure(
                    status: 400, code: TroupeError.Code.invalidInput.rawValue,
                    "The model '\(model)' is not one this server offers: \(server.models.joined(separator: ", ")).",
                    details: ["field": "model"])
            }
            configuration.model = model
        }
        let allowed = server.allowedTools.compactMap { try? ToolSelection($0) }
        if let tools = body.tools {
            for tool in tools {
                let selection: ToolSelection
                do throws(TroupeError) {
                    selection = try ToolSelection(tool)
                } catch {
                    throw TroupeError(.invalidInput, error.message, details: ["field": "tools", "tool": tool])
                }
                guard selection.isAllowed(by: allowed) else {
                    throw APIFailure(
                        status: 403, code: TroupeError.Code.accessDenied.rawValue,
                        "The tool '\(tool)' is not allowed on this server (server.allowedTools: "
                            + "\(server.allowedTools.isEmpty ? "none" : server.allowedTools.joined(separator: ", "))).",
                        details: ["field": "tools"])
                }
            }
            configuration.tools = Array(NSOrderedSet(array: tools).array.compactMap { $0 as? String })
        } else {
            configuration.tools = configuration.tools.filter { ((try? ToolSelection($0))?.isAllowed(by: allowed)) ?? false }
        }
        func limit<T: Comparable>(_ value: T?, _ field: String, _ range: ClosedRange<T>, openBelow: Bool = false) throws -> T? {
            guard let value else { return nil }
            guard range.contains(value), !(openBelow && value == range.lowerBound) else {
                throw TroupeError(
                    .invalidInput,
                    "The field '\(field)' must be \(openBelow ? "above" : "at least") \(range.lowerBound) and at most "
                        + "\(range.upperBound) (got \(value)).", details: ["field": field])
            }
            return value
        }
        if let value = try limit(body.maxSteps, "maxSteps", 1...100) { configuration.maxSteps = value }
        if let value = try limit(body.maxConcurrency, "maxConcurrency", 1...64) { configuration.maxConcurrentSteps = value }
        if let value = try limit(body.maxIterations, "maxIterations", 1...100) { configuration.maxIterations = value }
        if let value = try limit(body.stepTimeout, "stepTimeout", 0...86_400, openBelow: true) { configuration.stepTimeoutSeconds = value }
        if let value = body.stream { configuration.stream = value }
        if body.readOnly == true { configuration.readOnly = true }
        if let metadata = body.metadata?.additionalProperties {
            let limits = APIServer.metadataLimits
            guard metadata.count <= limits.entries else {
                throw TroupeError(.invalidInput, "metadata has \(metadata.count) entries; at most \(limits.entries) are accepted.")
            }
            for (key, value) in metadata {
                guard !key.isEmpty, key.utf8.count <= limits.keyBytes, !key.contains("=") else {
                    throw TroupeError(
                        .invalidInput, "metadata keys must be 1 to \(limits.keyBytes) bytes without '=' (got '\(key.prefix(80))').")
                }
                guard value.utf8.count <= limits.valueBytes else {
                    throw TroupeError(.invalidInput, "metadata.\(key) has more than \(limits.valueBytes) bytes.")
                }
            }
            configuration.metadata = metadata.isEmpty ? nil : metadata
        }
        if let limits = server.tenantLimits[try caller.tenant] {
            if let most = limits.maxSteps {
                if let asked = body.maxSteps, asked > most {
                    throw TroupeError(
                        .invalidInput, "maxSteps may be at most \(most) for this tenant (got \(asked)).", details: ["field": "maxSteps"])
                }
                configuration.maxSteps = min(configuration.maxSteps, most)
            }
            if let most = limits.maxToolOutputCharacters {
                configuration.maxToolOutputCharacters = min(configuration.maxToolOutputCharacters ?? most, most)
            }
        }
        return configuration
    }

    /// Each run's own folder, made only its owner's.
    private static func createWorkspace(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw TroupeError(.storage, "Cannot create the run's workspace \(path): \(error.localizedDescription)")
        }
    }

    func listRuns(_ input: Operations.ListRuns.Input) async throws -> Operations.ListRuns.Output {
        let query = input.query
        let limit = query.limit ?? 50
        guard (1...200).contains(limit) else {
            throw TroupeError(.invalidInput, "limit must be between 1 and 200 (got \(limit)).", details: ["field": "limit"])
        }
        var filters: [(String, String)] = []
        for pair in query.metadata ?? [] {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw TroupeError(
                    .invalidInput, "metadata filters are key=value (got '\(pair.prefix(80))').", details: ["field": "metadata"])
            }
            filters.append((String(pair[..<equals]), String(pair[pair.index(after: equals)...])))
        }
        var position = try query.cursor.map(Self.position(fromCursor:))
        let statuses = Set((query.status ?? []).compactMap { RunStatus(rawValue: $0.rawValue) })
        var page: [RunSummary] = []
        var exhausted = false
        // Metadata is matched here, not in the store: read on until the page is full, the runs
        // end, or 2,000 runs were read — then the page is shorter, and its cursor goes on from there.
        var scanned = 0
        while page.count <= limit && !exhausted && scanned < 2_000 {
            let wanted = filters.isEmpty ? limit + 1 - page.count : 200
            let batch = try await store.runs(
                RunQuery(
                    statuses: statuses, createdAfter: query.createdAfter, createdBefore: query.createdBefore, after: position,
                    limit: wanted, tenant: try Self.tenantFilter(query.tenant)))
            exhausted = batch.count < wanted
            scanned += batch.count
            page += batch.filter { summary in filters.allSatisfy { summary.configuration.metadata?[$0.0] == $0.1 } }
            if let last = batch.last { position = RunPosition(last) }
        }
        let shown = Array(page.prefix(limit))
        var runs: [Components.Schemas.Run] = []
        for summary in shown { runs.append(try Self.convert(RunReport.summary(summary))) }
        let cursor: String?
        if page.count > limit {
            cursor = shown.last.map { Self.cursor(for: RunPosition($0)) }
        } else if !exhausted, let position {
            cursor = Self.cursor(for: position)  // the scan stopped early: go on after the last run read
        } else {
            cursor = nil
        }
        return .ok(.init(body: .json(.init(runs: runs, nextCursor: cursor))))
    }

    func getRun(_ input: Operations.GetRun.Input) async throws -> Operations.GetRun.Output {
        .ok(.init(body: .json(try await document(RunID(input.path.id), summary: nil))))
    }

    func cancelRun(_ input: Operations.CancelRun.Input) async throws -> Operations.CancelRun.Output {
        try refuseWhileDraining()
        let id = RunID(input.path.id)
        var reason = "cancelled through the API"
        if case .json(let body)? = input.body, let given = body.reason, !given.isEmpty {
            guard given.count <= 1000 else {
                throw TroupeError(.invalidInput, "The field 'reason' has more than 1000 characters.", details: ["field": "reason"])
            }
            reason = given
        }
        _ = try await store.cancelRun(id, reason: reason, at: server.now)
        return .ok(.init(body: .json(try await document(id, summary: nil))))
    }

    func resumeRun(_ input: Operations.ResumeRun.Input) async throws -> Operations.ResumeRun.Output {
        try refuseWhileDraining()
        let id = RunID(input.path.id)
        var resolution: AttentionResolution?
        if case .json(let body)? = input.body, let decision = body.decision {
            resolution = decision == .retry ? .retry : .skip
        }
        let summary = try await store.queueForWorkers(id, resolution: resolution, owner: server.owner, at: server.now)
        return .ok(.init(body: .json(try await document(id, summary: summary))))
    }

    // MARK: Approvals

    func listApprovals(_ input: Operations.ListApprovals.Input) async throws -> Operations.ListApprovals.Output {
        let limit = input.query.limit ?? 100
        guard (1...500).contains(limit) else {
            throw TroupeError(.invalidInput, "limit must be between 1 and 500 (got \(limit)).", details: ["field": "limit"])
        }
        let approvals = try await store.waitingApprovals(tenant: try Self.tenantFilter(input.query.tenant), limit: limit)
        let list = try JSONCoding.decoder().decode(
            Components.Schemas.ApprovalList.self, from: JSONCoding.encoder().encode(["approvals": approvals]))
        return .ok(.init(body: .json(list)))
    }

    // MARK: Usage

    /// The span `GET /v1/usage` covers without `since`, the longest it may cover, and the most
    /// runs one request reads: the journals are read for each answer, so one request's work is
    /// bounded.
    static let usageDefaultSpan: TimeInterval = 31 * 86_400
    static let usageMaxSpan: TimeInterval = 366 * 86_400
    static let usageMaxRuns = 10_000

    func getUsage(_ input: Operations.GetUsage.Input) async throws -> Operations.GetUsage.Output {
        let grouping = UsageSummary.Grouping(rawValue: input.query.by?.rawValue ?? "model") ?? .model
        let until = input.query.until
        let end = until ?? server.now()
        let since = input.query.since ?? end.addingTimeInterval(-Self.usageDefaultSpan)
        guard end.timeIntervalSince(since) <= Self.usageMaxSpan else {
            throw TroupeError(.invalidInput, "The span from since to until may be at most 366 days.", details: ["field": "since"])
        }
        // A tenant's key sees its own tenant's usage, and says so.
        let caller = try caller
        var tenant = try Self.tenantFilter(input.query.tenant)
        if case .tenant(let own) = caller.scope { tenant = tenant ?? own }
        var summary = try await UsageSummary.collect(
            from: store, tenant: tenant, since: since, until: until, by: grouping, prices: server.prices, maxRuns: Self.usageMaxRuns)
        summary.tenant = tenant
        let usage = try JSONCoding.decoder().decode(Components.Schemas.UsageReport.self, from: JSONCoding.encoder().encode(summary))
        return .ok(.init(body: .json(usage)))
    }

    func decideApproval(_ input: Operations.DecideApproval.Input) async throws -> Operations.DecideApproval.Output {
        try refuseWhileDraining()
        let id = RunID(input.path.id)
        guard case .json(let body) = input.body else { throw APIFailure(status: 415, code: "invalidInput", "Send a JSON body.") }
        guard let key = ActivityKey(parsing: input.path.callKey) else {
            throw TroupeError(
                .invalidInput,
                "'\(input.path.callKey.prefix(100))' is not a call key: use the callKey an approval is listed with (s1:1:2).",
                details: ["field": "callKey"])
        }
        // The document's decisions are the journal's verdicts, by name.
        guard let verdict = ApprovalVerdict(rawValue: body.decision.rawValue) else {
            throw TroupeError(.invalidInput, "decision must be approve, edit or deny.", details: ["field": "decision"])
        }
        var arguments: String?
        if let given = body.arguments {
            guard verdict == .edit else {
                throw TroupeError(.invalidInput, "Only an edit takes arguments.", details: ["field": "arguments"])
            }
            arguments = String(decoding: try JSONCoding.encoder().encode(given), as: UTF8.self)
        }
        if body.reason != nil, verdict != .deny {
            throw TroupeError(.invalidInput, "Only a denial takes a reason.", details: ["field": "reason"])
        }
        let caller = try caller
        let decision = ApprovalDecision(verdict: verdict, arguments: arguments, reason: body.reason, decidedBy: caller.keyID ?? "api")
        let machine = try await store.decideApproval(id, key: key, decision: decision, owner: server.owner, at: server.now)
        return .ok(.init(body: .json(try await document(id, summary: nil, machine: machine))))
    }

    // MARK: Events

    func streamRunEvents(_ input: Operations.StreamRunEvents.Input) async throws -> Operations.StreamRunEvents.Output {
        try refuseWhileDraining()
        let id = RunID(input.path.id)
        _ = try await store.requireRun(id)
        var after = input.query.after ?? 0
        guard after >= 0 else {
            throw TroupeError(.invalidInput, "after must be 0 or more (got \(after)).", details: ["field": "after"])
        }
        if let last = input.headers.lastEventID {
            guard let sequence = Int(last.trimmingCharacters(in: .whitespaces)), sequence >= 0 else {
                throw TroupeError(.invalidInput, "Last-Event-ID must be an event's sequence number (got '\(last.prefix(40))').")
            }
            after = max(after, sequence)
        }
        let holder = "key:\(Caller.current?.keyID ?? "open")"
        guard let slot = server.streams.slot(for: holder, limit: server.maxStreamsPerKey) else {
            throw APIFailure.tooManyRequests(
                "This key has \(server.maxStreamsPerKey) event streams open, the most it may; close one first.", retryAfter: 5)
        }
        let stream = EventStream(
            server: server, store: try store, run: id, after: after, tokens: input.query.tokens ?? false, keyID: Caller.current?.keyID,
            slot: slot)
        return .ok(.init(body: .textEventStream(HTTPBody(stream.bytes(), length: .unknown, iterationBehavior: .single))))
    }

    // MARK: Keys

    func listKeys(_ input: Operations.ListKeys.Input) async throws -> Operations.ListKeys.Output {
        let records = try await keyStore().keys(tenant: try Self.tenantFilter(input.query.tenant))
        return .ok(.init(body: .json(.init(keys: records.map { Self.convert($0, at: server.now()) }))))
    }

    func createKey(_ input: Operations.CreateKey.Input) async throws -> Operations.CreateKey.Output {
        try refuseWhileDraining()
        guard case .json(let body) = input.body else { throw APIFailure(status: 415, code: "invalidInput", "Send a JSON body.") }
        let now = server.now()
        let expiresAt = try body.expiresIn.map { now.addingTimeInterval(try APIKeys.lifetime($0)) }
        let made = try APIKeys.make(
            tenant: body.tenant, role: Role(rawValue: body.role.rawValue) ?? .viewer, name: body.name, expiresAt: expiresAt, at: now)
        try await keyStore().createKey(made.record)
        server.logger.notice(
            "API key created",
            metadata: [
                "key": "\(made.record.id)", "tenant": "\(made.record.tenant)", "role": "\(made.record.role.rawValue)",
                "by": "\(Caller.current?.keyID ?? "-")",
            ])
        return .created(.init(body: .json(.init(key: made.key, apiKey: Self.convert(made.record, at: now)))))
    }

    func revokeKey(_ input: Operations.RevokeKey.Input) async throws -> Operations.RevokeKey.Output {
        try refuseWhileDraining()
        let now = server.now()
        guard let record = try await keyStore().revokeKey(id: input.path.keyId, tenant: nil, at: now) else {
            throw TroupeError(.notFound, "No key '\(input.path.keyId.prefix(80))'. List keys with GET /v1/keys.")
        }
        server.logger.notice("API key revoked", metadata: ["key": "\(record.id)", "by": "\(Caller.current?.keyID ?? "-")"])
        return .ok(.init(body: .json(Self.convert(record, at: now))))
    }

    /// The key store; a server without keys (`--insecure-no-auth`) has none to manage.
    private func keyStore() throws -> any KeyStore {
        guard case .keys(let store) = server.access else {
            throw APIFailure(
                status: 409, code: TroupeError.Code.invalidInput.rawValue,
                "This server runs without keys (--insecure-no-auth); make keys with `troupe keys create` and restart it without that flag.")
        }
        return store
    }

    static func convert(_ record: APIKeyRecord, at time: Date) -> Components.Schemas.ApiKey {
        .init(
            id: record.id, prefix: record.prefix, name: record.name, tenant: record.tenant,
            role: Components.Schemas.Role(rawValue: record.role.rawValue) ?? .viewer, createdAt: record.createdAt,
            expiresAt: record.expiresAt, lastUsedAt: record.lastUsedAt, revokedAt: record.revokedAt, active: record.isActive(at: time))
    }

    // MARK: Health

    func health(_ input: Operations.Health.Input) async throws -> Operations.Health.Output {
        .ok(.init(body: .json(.init(status: .ok))))
    }

    func readiness(_ input: Operations.Readiness.Input) async throws -> Operations.Readiness.Output {
        if server.drain.isDraining {
            return .serviceUnavailable(.init(body: .json(.init(status: .draining, detail: "The server is shutting down."))))
        }
        do {
            _ = try await server.store.runs(RunQuery(limit: 1))
            return .ok(.init(body: .json(.init(status: .ok))))
        } catch {
            // The reason goes to the log: callers are not told where the store is.
            server.logger.warning("not ready: the store cannot be reached", metadata: ["error": "\(TroupeError.wrap(error).message)"])
            return .serviceUnavailable(.init(body: .json(.init(status: .unavailable, detail: "The store cannot be reached."))))
        }
    }

    // MARK: Helpers

    private func refuseWhileDraining() throws {
        if server.drain.isDraining {
            throw APIFailure(status: 503, code: "unavailable", "The server is shutting down; send the request to another node.")
        }
    }

    /// The run document, as `troupe show --json` prints it.
    private func document(_ id: RunID, summary: RunSummary?, machine: RunStateMachine? = nil) async throws -> Components.Schemas.Run {
        let summary = try await { () async throws -> RunSummary in
            if let summary { return summary }
            return try await store.requireRun(id)
        }()
        let machine = try await { () async throws -> RunStateMachine in
            if let machine, machine.sequence >= summary.lastSequence { return machine }
            return try RunStateMachine(runID: id, replaying: try await store.events(of: id))
        }()
        return try Self.convert(RunReport(summary: summary, machine: machine, prices: server.prices))
    }

    /// A report as the generated type: through its JSON, which is the contract both describe.
    static func convert(_ report: RunReport) throws -> Components.Schemas.Run {
        try JSONCoding.decoder().decode(Components.Schemas.Run.self, from: JSONCoding.encoder().encode(report))
    }

    /// A `tenant` query parameter, checked as a tenant name (an empty or malformed one is a 400).
    static func tenantFilter(_ tenant: String?) throws -> String? {
        guard let tenant else { return nil }
        return try TenantName.validated(tenant)
    }

    /// Cursors are opaque to callers: the last run's position, base64url.
    static func cursor(for position: RunPosition) -> String {
        Data("\(position.createdAtMillis):\(position.id.rawValue)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func position(fromCursor cursor: String) throws -> RunPosition {
        var base64 = cursor.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8),
            let colon = text.firstIndex(of: ":"), let millis = Int(text[..<colon]), colon < text.index(before: text.endIndex),
            (0...253_402_300_799_999).contains(millis)
        else {
            throw TroupeError(
                .invalidInput, "The cursor is not one this server gave: pass nextCursor as it came.", details: ["field": "cursor"])
        }
        return RunPosition(createdAt: StoredForm.date(millis: millis), id: RunID(String(text[text.index(after: colon)...])))
    }
}
