import Foundation

/// The TCP sockets this process holds open to or from a loopback port (both ends of a connection
/// to an in-process node count; the listener does not), read from `/proc`: other tests running
/// alongside open files too, so a plain count of descriptors would not do.
enum OpenSockets {
    static func count(port: Int) -> Int {
        var inodes: Set<String> = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            // Read to the end: a /proc file reports size 0, and a read sized by it stops at one page.
            guard let handle = FileHandle(forReadingAtPath: table), let data = try? handle.readToEnd() else { continue }
            try? handle.close()
            let text = String(decoding: data, as: UTF8.self)
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 9 else { continue }
                let local = Self.port(of: fields[1])
                let remote = Self.port(of: fields[2])
                if remote != 0, local == port || remote == port { inodes.insert(String(fields[9])) }
            }
        }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return descriptors.filter { descriptor in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(descriptor)"),
                target.hasPrefix("socket:[")
            else { return false }
            return inodes.contains(String(target.dropFirst("socket:[".count).dropLast()))
        }.count
    }

    /// The port of `0100007F:1F90` (hexadecimal after the colon).
    private static func port(of address: Substring) -> Int {
        address.split(separator: ":").last.flatMap { Int($0, radix: 16) } ?? -1
    }
}
