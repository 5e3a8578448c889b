extension Duration {
    /// The duration in seconds, as a `Double`.
    package var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

extension String {
    /// The text if it has at most `limit` characters, else its first `limit - 1` and "…".
    package func clipped(to limit: Int) -> String {
        count <= limit ? self : String(prefix(max(0, limit - 1))) + "…"
    }
}
