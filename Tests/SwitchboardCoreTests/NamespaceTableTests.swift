import SwitchboardCore
import Testing

@Suite("NamespaceTable")
struct NamespaceTableTests {
    @Test("channels take their namespace's options, others the defaults")
    func lookup() {
        var secret = NamespaceOptions()
        secret.anonymous = false
        let table = NamespaceTable(defaults: NamespaceOptions(historySize: 5), namespaces: ["secret": secret])
        #expect(table.options(for: "secret:room").anonymous == false)
        #expect(table.options(for: "chat:room").historySize == 5)
        #expect(table.options(for: "plain").historySize == 5)
        #expect(table.options(for: "secretive:room").anonymous == true)
    }

    @Test("defaults keep history, presence and allow publishing")
    func defaults() {
        let options = NamespaceTable().options(for: "anything")
        #expect(options.historySize == 100 && options.historyTTL == 300)
        #expect(options.presence && options.publish && options.anonymous)
        #expect(!options.joinLeave)
        #expect(options.keepsHistory)
        #expect(!NamespaceOptions(historySize: 0).keepsHistory)
    }
}
