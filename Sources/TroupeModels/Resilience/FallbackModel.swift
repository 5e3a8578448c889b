public import TroupeCore

/// Tries an ordered chain of models — a primary, then a cheaper one, then another provider —
/// moving on when one fails in a way another may not (``TroupeError/isRetryable``) or its circuit
/// breaker is open. A request the model refused (400, 401…) is not sent to the next one: it would
/// be refused there too, or hide a misconfiguration.
///
/// The answer's `model` names the model that answered (the entry's name if the server gave none).
/// A stream moves on only if it failed before any content was delivered. When every model fails,
/// the error is the last one's, with `details["triedModels"]` listing the chain. Each move to the
/// next model is reported to ``ModelAttempt/observer`` (with `details["fallbackTo"]`), so a run's
/// journal shows which model failed and which took over.
public struct FallbackModel: ChatModel {
    public struct Entry: Sendable {
        public var name: String
        public var model: any ChatModel

        public init(_ name: String, _ model: any ChatModel) {
            self.name = name
            self.model = model
        }
    }

    public let chain: [Entry]

    public init(_ chain: [Entry]) throws(TroupeError) {
        guard !chain.isEmpty else { throw TroupeError(.configuration, "A fallback chain needs at least one model.") }
        self.chain = chain
    }

    /// Whether the next model in the chain should be tried after `error`.
    public static func shouldFallBack(after error: TroupeError) -> Bool {
        error.isRetryable || error.code == .circuitOpen
    }

    public func complete(_ request: ChatRequest) async throws -> ChatResponse {
        var tried: [String] = []
        for (index, entry) in chain.enumerated() {
            tried.append(entry.name)
            do {
                var response = try await entry.model.complete(request)
                if response.model.isEmpty { response.model = entry.name }
                return response
            } catch {
                let failure = TroupeError.wrap(error, as: .modelAPI)
                guard index < chain.count - 1, Self.shouldFallBack(after: failure) else { throw annotated(failure, tried) }
                reportFallback(from: index, failure)
            }
        }
        throw TroupeError(.internal, "The fallback chain ended without an answer.")
    }

    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        .producing { continuation in
            var tried: [String] = []
            for (index, entry) in chain.enumerated() {
                tried.append(entry.name)
                var delivered = false
                do {
                    for try await event in entry.model.stream(request) {
                        if case .completed(var response) = event {
                            if response.model.isEmpty { response.model = entry.name }
                            continuation.yield(.completed(response))
                        } else {
                            delivered = true
                            continuation.yield(event)
                        }
                    }
                    return
                } catch {
                    let failure = TroupeError.wrap(error, as: .modelAPI)
                    if delivered || index == chain.count - 1 || !Self.shouldFallBack(after: failure) {
                        throw annotated(failure, tried)
                    }
                    reportFallback(from: index, failure)
                }
            }
        }
    }

    /// Tells ``ModelAttempt/observer`` (the run's journal) that the model at `index` failed and
    /// the next one is tried at once.
    private func reportFallback(from index: Int, _ failure: TroupeError) {
        var failure = failure
        failure.details["fallbackTo"] = chain[index + 1].name
        ModelAttempt.observer?.report(ModelAttempt(number: index + 1, error: failure, retryDelaySeconds: 0))
    }

    private func annotated(_ error: TroupeError, _ tried: [String]) -> TroupeError {
        guard tried.count > 1 else { return error }
        var error = error
        error.details["triedModels"] = tried.joined(separator: ", ")
        return error
    }
}
