import SwitchboardCore
import Testing

@Suite("ChannelPermission")
struct ChannelPermissionTests {
    static let open = NamespaceOptions()
    static let closed = NamespaceOptions(presence: true, publish: true, anonymous: false)
    static let quiet = NamespaceOptions(historySize: 0, presence: false, publish: false, anonymous: true)

    @Test("anonymous clients are refused every action in a namespace closed to them", arguments: ChannelAction.allCases)
    func closedToAnonymous(_ action: ChannelAction) {
        #expect(ChannelPermission.check(action, options: Self.closed, isAnonymous: true)?.code == .permissionDenied)
        #expect(ChannelPermission.check(action, options: Self.closed, isAnonymous: false) == nil)
    }

    @Test("an open namespace allows everything to everyone", arguments: ChannelAction.allCases, [true, false])
    func open(_ action: ChannelAction, _ anonymous: Bool) {
        #expect(ChannelPermission.check(action, options: Self.open, isAnonymous: anonymous) == nil)
    }

    @Test("flags that switch a feature off answer 103 for publish and 108 for history and presence")
    func featuresOff() {
        #expect(ChannelPermission.check(.publish, options: Self.quiet, isAnonymous: false)?.code == .permissionDenied)
        #expect(ChannelPermission.check(.history, options: Self.quiet, isAnonymous: false)?.code == .notAvailable)
        #expect(ChannelPermission.check(.presence, options: Self.quiet, isAnonymous: false)?.code == .notAvailable)
        #expect(ChannelPermission.check(.presenceStats, options: Self.quiet, isAnonymous: false)?.code == .notAvailable)
        #expect(ChannelPermission.check(.subscribe, options: Self.quiet, isAnonymous: true) == nil)
    }
}
