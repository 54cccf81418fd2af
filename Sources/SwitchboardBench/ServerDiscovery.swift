#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Finds the server processes behind the URLs under test (`--server-pid
/// auto`): the processes holding a listening TCP socket on a URL's port,
/// found through `/proc/net/tcp{,6}` (socket inodes in LISTEN state) and
/// `/proc/PID/fd` (which process holds those inodes). Linux only; needs
/// permission to read the other processes' fd tables (same user or root).
public enum ServerDiscovery {
    /// PIDs listening on any of `ports`, ascending; empty when none is visible.
    public static func listeningPIDs(ports: Set<Int>) -> [Int32] {
        var inodes = Set<UInt64>()
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let text = ServerProcessWatch.readFile(table, maximumBytes: 16 << 20) {
                inodes.formUnion(Self.listeningInodes(table: text, ports: ports))
            }
        }
        guard !inodes.isEmpty else { return [] }
        var pids: [Int32] = []
        for pid in Self.directoryEntries("/proc").compactMap({ Int32($0) }) {
            for fd in Self.directoryEntries("/proc/\(pid)/fd") {
                guard let target = Self.readLink("/proc/\(pid)/fd/\(fd)"), let inode = Self.socketInode(target) else { continue }
                if inodes.contains(inode) {
                    pids.append(pid)
                    break
                }
            }
        }
        return pids.sorted()
    }

    /// Socket inodes in LISTEN state (`0A`) on one of `ports`, from the text
    /// of `/proc/net/tcp` or `/proc/net/tcp6` (local address `HEXADDR:HEXPORT`
    /// in field 2, state in field 4, inode in field 10).
    static func listeningInodes(table: String, ports: Set<Int>) -> Set<UInt64> {
        var inodes = Set<UInt64>()
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 10, fields[3] == "0A", let colon = fields[1].lastIndex(of: ":"),
                let port = Int(fields[1][fields[1].index(after: colon)...], radix: 16), ports.contains(port),
                let inode = UInt64(fields[9]), inode != 0
            else { continue }
            inodes.insert(inode)
        }
        return inodes
    }

    /// The inode of an fd link target `socket:[12345]`, nil for anything else.
    static func socketInode(_ target: String) -> UInt64? {
        guard target.hasPrefix("socket:["), target.hasSuffix("]") else { return nil }
        return UInt64(target.dropFirst(8).dropLast())
    }

    private static func directoryEntries(_ path: String) -> [String] {
        DirectoryNames.list(path)
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBufferPointer { pointer -> Int in
            guard let base = pointer.baseAddress else { return -1 }
            return readlink(path, base, pointer.count)
        }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
