import NIOCore
import Testing

@testable import SwitchboardServer

/// The default number of event loops: one per core the process may run on.
@Suite struct UsableCoresTests {
    @Test("Cpus_allowed_list is counted: single CPUs, ranges, both", arguments: [
        ("Name:\tswitchboard\nCpus_allowed:\t1\nCpus_allowed_list:\t0\nMems_allowed:\t1\n", 1),
        ("Cpus_allowed_list:\t0-1\n", 2),
        ("Cpus_allowed_list:\t0-3,8,10-11\n", 7),
        ("Cpus_allowed_list:  5\n", 1),
    ])
    func allowedListsAreCounted(status: String, expected: Int) {
        #expect(UsableCores.allowedCPUs(status: status) == expected)
    }

    @Test("a missing or malformed list gives nothing (NIO's count is used)", arguments: [
        "Name:\tx\n", "Cpus_allowed_list:\t\n", "Cpus_allowed_list:\t3-1\n", "Cpus_allowed_list:\t0-\n",
        "Cpus_allowed_list:\ta-b\n", "Cpus_allowed_list:\t0,,1\n", "Cpus_allowed_list:\t0-99999999999999999999\n",
        "Cpus_allowed_list:\t-1\n", "Cpus_allowed_list:\t0-1-2\n",
    ])
    func malformedListsGiveNothing(status: String) {
        #expect(UsableCores.allowedCPUs(status: status) == nil)
    }

    @Test("this process: at least one loop, never more than NIO's core count")
    func thisProcess() {
        let count = UsableCores.count()
        #expect(count >= 1 && count <= max(1, System.coreCount))
    }
}
