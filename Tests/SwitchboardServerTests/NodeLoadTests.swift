@testable import SwitchboardServer
import Testing

@Suite("Node load figures")
struct NodeLoadTests {
    @Test("the CPU share is CPU time over wall time over cores, from the second reading on")
    func cpuShare() {
        var load = NodeLoad(cores: 2)
        let reading1 = load.cpuShare(cpuSeconds: 10, wallSeconds: 100)
        #expect(reading1 == nil, "the first reading has nothing to compare with")
        let quarter = load.cpuShare(cpuSeconds: 11, wallSeconds: 102)
        #expect(quarter == 0.25, "1 s of 4 core-seconds")
        let full = load.cpuShare(cpuSeconds: 15, wallSeconds: 104)
        #expect(full == 1, "4 of 4")
        let reading2 = load.cpuShare(cpuSeconds: 30, wallSeconds: 106)
        #expect(reading2 == 1, "more than the cores allow (a core count that changed) is full, not more")
        let reading3 = load.cpuShare(cpuSeconds: 30, wallSeconds: 108)
        #expect(reading3 == 0)
    }

    @Test("readings that cannot be right give no figure, and the next good pair does")
    func badReadings() {
        var load = NodeLoad(cores: 0)  // read as 1
        #expect(load.cores == 1)
        _ = load.cpuShare(cpuSeconds: 10, wallSeconds: 100)
        let reading4 = load.cpuShare(cpuSeconds: 9, wallSeconds: 102)
        #expect(reading4 == nil, "a counter that went backwards")
        let reading5 = load.cpuShare(cpuSeconds: 10, wallSeconds: 101)
        #expect(reading5 == nil, "a clock that went backwards")
        let reading6 = load.cpuShare(cpuSeconds: 10.01, wallSeconds: 101.05)
        #expect(reading6 == nil, "too short an interval to say anything")
        let reading7 = load.cpuShare(cpuSeconds: .nan, wallSeconds: 103)
        #expect(reading7 == nil)
        let reading8 = load.cpuShare(cpuSeconds: nil, wallSeconds: 104)
        #expect(reading8 == nil, "no /proc")
        let reading9 = load.cpuShare(cpuSeconds: 10.51, wallSeconds: 102.05)
        #expect(reading9 == 0.5)
    }

    @Test("the lag is the most late loop of a complete probe; a probe never answered reports how long it has waited")
    func loopLag() {
        var load = NodeLoad(cores: 2)
        #expect(load.lagToAnnounce(wallSeconds: 0) == nil)
        let reading10 = load.startProbe(loops: 2, wallSeconds: 10)
        #expect(reading10)
        let reading11 = load.startProbe(loops: 2, wallSeconds: 10.5)
        #expect(!reading11, "one probe at a time")
        load.recordLag(0.004)
        #expect(load.lagToAnnounce(wallSeconds: 10.5) == 0.5, "a loop yet to answer is at least as late as the wait so far")
        load.recordLag(0.030)
        #expect(load.lagToAnnounce(wallSeconds: 12) == 0.030)
        // A loop stuck for longer than the last figure: the wait itself is the figure.
        let reading12 = load.startProbe(loops: 2, wallSeconds: 12)
        #expect(reading12)
        load.recordLag(0.001)
        #expect(load.lagToAnnounce(wallSeconds: 12.02) == 0.030)
        #expect(load.lagToAnnounce(wallSeconds: 16) == 4)
        load.recordLag(.infinity)  // read as 0: a broken clock is not a lag
        #expect(load.lagToAnnounce(wallSeconds: 16) == 0.001)
        let reading13 = load.startProbe(loops: 0, wallSeconds: 17)
        #expect(!reading13)
        load.recordLag(5)  // no probe running: ignored
        #expect(load.lagToAnnounce(wallSeconds: 17) == 0.001)
    }
}
