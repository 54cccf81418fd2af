#if canImport(Glibc)
import Glibc
#endif

/// When to hand freed heap memory back to the operating system.
///
/// glibc's allocator keeps what a burst of connections freed (buffers, channels, sessions) for
/// reuse, so after a connection storm or a slow-handshake attack the node's resident memory stays
/// near its peak although the connections are gone. The node asks the allocator to return free
/// memory (`malloc_trim`) when its connection count has fallen well below the highest count seen
/// since the last trim: at least `minimumDrop` connections and a quarter of that peak. Steady
/// traffic never triggers it; each trim costs a walk of the heap on one event loop, a few
/// milliseconds at most.
struct HeapTrimPolicy: Sendable {
    /// The fewest connections that must have gone before a trim is worth its walk of the heap.
    var minimumDrop: Int = 256
    /// The highest connection count seen since the last trim.
    private(set) var peak = 0

    init(minimumDrop: Int = 256) {
        self.minimumDrop = minimumDrop
    }

    /// Records the current connection count; true when the node should trim now.
    mutating func observe(connections: Int) -> Bool {
        if connections >= self.peak {
            self.peak = connections
            return false
        }
        let drop = self.peak - connections
        guard drop >= max(self.minimumDrop, self.peak / 4) else { return false }
        self.peak = connections
        return true
    }

    /// Returns free heap memory to the operating system, where the allocator can (glibc's
    /// `malloc_trim`, looked up at run time since the Glibc module does not export it).
    static func releaseFreeMemory() {
        #if canImport(Glibc)
        typealias MallocTrim = @convention(c) (Int) -> Int32
        if let symbol = Self.mallocTrim {
            _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
        }
        #endif
    }

    #if canImport(Glibc)
    /// A function's address, looked up once and never written: safe to read from any thread.
    private nonisolated(unsafe) static let mallocTrim: UnsafeMutableRawPointer? = dlsym(nil, "malloc_trim")
    #endif
}
