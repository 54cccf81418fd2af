#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The names in a directory (`/proc/self/task`, `/proc/PID/fd`), without `.` and `..`.
enum DirectoryNames {
    /// At most `limit` names; empty when the directory cannot be opened.
    static func list(_ path: String, limit: Int = 1_000_000) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while names.count < limit, let entry = readdir(directory) {
            let name = Self.name(of: entry)
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    /// The entry's name, read in place. Not `entry.pointee.d_name`: that copies a whole `dirent`
    /// (280 bytes on Linux) while the C library packs entries by their real length, so for the last
    /// entries of its buffer the copy reads past the buffer's end (AddressSanitizer: heap-buffer-overflow;
    /// without it, a crash when the buffer ends at an unmapped page).
    static func name(of entry: UnsafeMutablePointer<dirent>) -> String {
        let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        return String(cString: UnsafeRawPointer(entry).advanced(by: offset).assumingMemoryBound(to: CChar.self))
    }
}
