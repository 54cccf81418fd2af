import NIOCore
import Testing

@testable import SwitchboardBalancer

#if canImport(Glibc)
import Glibc
#endif

@Suite("The balancer's own shortages")
struct LocalResourceFailureTests {
    @Test("out of descriptors, buffers or memory is the balancer's own failure; a refused, reset or timed-out connect is the node's")
    func classification() {
        for code in [EMFILE, ENFILE, ENOBUFS, ENOMEM] {
            #expect(LocalResourceFailure.isLocal(IOError(errnoCode: code, reason: "socket")))
        }
        for code in [ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, EADDRNOTAVAIL] {
            #expect(!LocalResourceFailure.isLocal(IOError(errnoCode: code, reason: "connect")))
        }
        #expect(!LocalResourceFailure.isLocal(ChannelError.connectTimeout(.seconds(3))))
    }

    @Test("a warning when --max-connections tunnels (two descriptors each, 100 kept) do not fit in the open-files limit")
    func descriptorWarning() throws {
        #expect(BalancerServer.descriptorWarning(maxConnections: 9900, openFilesLimit: 20_000) == nil)
        #expect(BalancerServer.descriptorWarning(maxConnections: 9950, openFilesLimit: 20_000) == nil)
        let warning = try #require(BalancerServer.descriptorWarning(maxConnections: 9951, openFilesLimit: 20_000))
        #expect(warning.contains("at most about 9950 tunnels"))
        #expect(BalancerServer.descriptorWarning(maxConnections: 9900, openFilesLimit: 1024)?.contains("about 462 tunnels") == true)
        #expect(BalancerServer.descriptorWarning(maxConnections: 10, openFilesLimit: 50)?.contains("about 0 tunnels") == true)
        #expect(BalancerServer.descriptorWarning(maxConnections: 9900, openFilesLimit: nil) == nil)
    }
}
