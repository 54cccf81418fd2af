import Testing

@testable import SwitchboardServer

@Suite("HAProxy agent-check reply")
struct HAProxyAgentTests {
    @Test func headroomDrainAndFull() {
        #expect(HAProxyAgent.reply(draining: false, connections: 0, maximum: 1000) == "up 100%\n")
        #expect(HAProxyAgent.reply(draining: false, connections: 250, maximum: 1000) == "up 75%\n")
        #expect(HAProxyAgent.reply(draining: false, connections: 999, maximum: 1000) == "up 1%\n")
        #expect(HAProxyAgent.reply(draining: false, connections: 1000, maximum: 1000) == "up 0%\n")
        #expect(HAProxyAgent.reply(draining: false, connections: 5000, maximum: 1000) == "up 0%\n")
        #expect(HAProxyAgent.reply(draining: false, connections: -3, maximum: 0) == "up 100%\n")
        #expect(HAProxyAgent.reply(draining: true, connections: 10, maximum: 1000) == "drain\n")
    }
}
