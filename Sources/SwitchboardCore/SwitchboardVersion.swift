/// The one place the release version is written.
///
/// Nodes report it in `connect` results and in the `switchboard_build_info`
/// metric; both executables print it for `--version`.
public enum SwitchboardVersion {
    /// The version of this build, e.g. `0.1.0`.
    public static let current = "0.1.0"
}
