import Testing

@testable import SwitchboardServer

@Suite("HeapTrimPolicy")
struct HeapTrimPolicyTests {
    @Test("no trim while the count grows or holds")
    func growingOrSteady() {
        var policy = HeapTrimPolicy(minimumDrop: 256)
        for n in stride(from: 0, through: 10_000, by: 500) {
            #expect(policy.observe(connections: n) == false)
        }
        #expect(policy.observe(connections: 10_000) == false)
        #expect(policy.peak == 10_000)
    }

    @Test("a small dip is not worth a trim; a fall of a quarter of the peak is, once")
    func fallFromPeak() {
        var policy = HeapTrimPolicy(minimumDrop: 256)
        _ = policy.observe(connections: 2_000)
        #expect(policy.observe(connections: 1_700) == false)  // 300: at least 256, but under a quarter
        #expect(policy.observe(connections: 1_500) == true)  // 500 = a quarter of 2,000
        #expect(policy.peak == 1_500)
        #expect(policy.observe(connections: 1_500) == false)  // measured from the new peak
        #expect(policy.observe(connections: 1_200) == false)
        #expect(policy.observe(connections: 1_000) == true)
    }

    @Test("few connections never trigger it, however large the share")
    func minimumDrop() {
        var policy = HeapTrimPolicy(minimumDrop: 256)
        _ = policy.observe(connections: 200)
        #expect(policy.observe(connections: 0) == false)
        _ = policy.observe(connections: 2_100)
        #expect(policy.observe(connections: 18) == true)  // the end of an attack: 2,100 to 18
    }
}
