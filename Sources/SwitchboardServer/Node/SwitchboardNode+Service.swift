public import ServiceLifecycle

/// The node as a swift-service-lifecycle service: run it in a `ServiceGroup`
/// whose graceful-shutdown signals drain it (SIGTERM, SIGINT) and whose
/// cancellation signals cut the drain short (the same signals, a second time).
extension SwitchboardNode: Service {
    /// Serves until graceful shutdown, then drains and stops. Binds first unless `start()` was
    /// called already (to learn the port before running).
    public func run() async throws {
        if !self.isStarted { _ = try await self.start() }
        // Throws when the task is cancelled instead: drain anyway (it returns at once when cancelled).
        try? await gracefulShutdown()
        await self.drain()
        await self.stop()
    }
}
