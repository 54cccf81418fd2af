import ArgumentParser
import SwitchboardBench
import SwitchboardCore

/// The `switchboard-bench` command: one subcommand per scenario.
@main
struct SwitchboardBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-bench",
        abstract: "Load generator for Switchboard nodes and clusters (loopback only).",
        discussion: """
            Each scenario prints a table on stdout, progress on stderr every second, and can write \
            --json FILE and --html FILE (a self-contained report with latency and time-series charts). \
            One process holds at most ~19.9k sockets here: use --procs auto for more connections \
            (one worker process per 15,000, each with its own source addresses from --src up). \
            --cpus LIST pins the generator and its workers to those CPUs (sched_setaffinity, as \
            taskset -c LIST would), so a run can leave the server's cores to the server.
            """,
        version: SwitchboardVersion.current,
        subcommands: [
            ConnectCommand.self, IdleCommand.self, FanoutCommand.self, LatencyCommand.self, CrossNodeCommand.self,
            PingPongCommand.self,
            WorkerSubcommand.self,
        ]
    )
}
