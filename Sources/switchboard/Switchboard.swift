import ArgumentParser
import SwitchboardCore

/// The `switchboard` command: subcommands only.
@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A realtime messaging server: channels, presence, history and recovery over WebSocket.",
        discussion: """
            Start a node with `switchboard serve`; it serves a demo page at / and the WebSocket \
            endpoint at /ws. See docs/configuration.md for every option.
            """,
        version: SwitchboardVersion.current,
        subcommands: [Serve.self, Balance.self]
    )
}
