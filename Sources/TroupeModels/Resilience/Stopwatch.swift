import TroupeCore

/// Seconds passed on `clock` since this call, read as often as needed: how the resilience
/// wrappers measure time on an injected clock (a test clock in tests).
func stopwatch<C: Clock<Duration>>(_ clock: C) -> @Sendable () -> Double {
    let start = clock.now
    return { start.duration(to: clock.now).seconds }
}
