import Foundation
import Testing
import Troupe

/// `web_fetch` and its SSRF guard, against a local server and a test resolver.
@Suite struct WebFetchToolTests {
    struct MapResolver: HostResolver {
        var map: [String: [IPAddress]]

        func addresses(of host: String) async throws -> [IPAddress] {
            guard let addresses = map[host] else { throw TroupeError(.toolFailed, "The host name '\(host)' could not be resolved.") }
            return addresses
        }
    }

    static let loopback = IPAddress(literal: "127.0.0.1")!
    static let resolver = MapResolver(map: [
        "allowed.test": [loopback], "internal.test": [loopback], "loopback.test": [loopback],
        "mixed.test": [IPAddress(literal: "93.184.216.34")!, loopback], "metadata.test": [IPAddress(literal: "169.254.169.254")!],
    ])

    func context() -> ToolContext {
        ToolContext(runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: "/tmp", logger: .init(label: "t"))
    }

    private func tool(allowing hosts: Set<String> = ["allowed.test"], maxBytes: Int = 2 << 20) -> WebFetchTool {
        WebFetchTool(policy: WebFetchPolicy(allowedPrivateHosts: hosts, maxBytes: maxBytes), resolver: Self.resolver)
    }

    @Test(arguments: [
        "127.0.0.1", "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "[::1]", "::ffff:127.0.0.1",
        "::ffff:7f00:1", "fc00::1", "fd00:ec2::254", "fe80::1", "ff02::1", "64:ff9b::a00:1", "2002:7f00:1::", "::127.0.0.1",
        "64:ff9b:1::808:808", "64:ff9b:1:ffff::1",
    ])
    func nonPublicAddressesAreRecognizedInEveryDisguise(literal: String) throws {
        let address = try #require(IPAddress(literal: literal), "\(literal) is an address")
        #expect(address.blockReason != nil, "\(literal) → \(address) must be blocked")
    }

    @Test(arguments: ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
    func publicAddressesPass(literal: String) throws {
        #expect(try #require(IPAddress(literal: literal)).blockReason == nil)
    }

    /// A host whose address is IPv6 is fetched from that address (the connection is pinned to it).
    @Test func item7_aHostWithAnIPv6AddressIsFetched() async throws {
        try await LocalWebServer.withServer(host: "::1", { _ in LocalWebServer.Reply(body: "<p>over IPv6</p>") }) { server in
            let tool = WebFetchTool(
                policy: WebFetchPolicy(allowedPrivateHosts: ["v6.test"]),
                resolver: MapResolver(map: ["v6.test": [IPAddress(literal: "::1")!]]))
            let output = try await tool.call(["url": .string("http://v6.test:\(server.port)/")], context: context())
            #expect(!output.isError, "\(output.content)")
            #expect(output.content.contains("over IPv6"))
        }
    }

    @Test func hostileURLsAreRefusedBeforeAnythingIsSent() async throws {
        try await LocalWebServer.withServer({ _ in LocalWebServer.Reply(body: "secret") }) { server in
            let port = server.port
            let urls = [
                "http://127.0.0.1:\(port)/", "http://[::1]:\(port)/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
                "http://0x7f000001:\(port)/", "http://2130706433:\(port)/", "http://127.1:\(port)/", "http://[::ffff:127.0.0.1]:\(port)/",
                "http://loopback.test:\(port)/", "http://mixed.test:\(port)/", "http://metadata.test/", "ftp://example.com/",
                "file:///etc/passwd", "gopher://example.com/", "http://user:pass@allowed.test:\(port)/", "not a url", "http:///path",
            ]
            for url in urls {
                let output = try await tool().call(["url": .string(url)], context: context())
                #expect(output.isError, "\(url) must be refused")
                #expect(!output.content.contains("secret"))
            }
            #expect(server.paths.isEmpty, "nothing reached the server")
        }
    }

    @Test func anAllowedHostsPageComesBackAsReadableText() async throws {
        let page = """
            <!doctype html><html><head><title>Release &amp; notes</title><style>body { color: red }</style>
            <script>var secret = "<p>not text</p>";</script></head>
            <body><h1>Version 2</h1><p>Fixes &lt;three&gt; bugs&nbsp;and&#x2014;more.</p><!-- hidden -->
            <ul><li>one</li><li>two</li></ul></body></html>
            """
        try await LocalWebServer.withServer({ _ in LocalWebServer.Reply(body: page) }) { server in
            let output = try await tool().call(["url": .string("http://allowed.test:\(server.port)/notes")], context: context())
            #expect(!output.isError, "\(output.content)")
            #expect(output.content.contains("HTTP 200, text/html"))
            #expect(output.content.contains("Title: Release & notes"))
            #expect(output.content.hasSuffix("Title: Release & notes\n\nVersion 2\n\nFixes <three> bugs and—more.\n\n- one\n- two"))
            #expect(!output.content.contains("secret") && !output.content.contains("color") && !output.content.contains("hidden"))
            #expect(server.paths == ["/notes"])
        }
    }

    /// A redirect is checked like the first hop: from an allowed host to a blocked one, the
    /// blocked one is never asked.
    @Test func aRedirectToABlockedHostIsRefused() async throws {
        try await LocalWebServer.withServer({ path in
            switch path {
            case "/redirect": LocalWebServer.Reply(status: 302, headers: ["location": "http://internal.test/secret"])
            default: LocalWebServer.Reply(body: "secret")
            }
        }) { server in
            let output = try await tool().call(["url": .string("http://allowed.test:\(server.port)/redirect")], context: context())
            #expect(output.isError)
            #expect(output.content.contains("internal.test resolves to 127.0.0.1"))
            #expect(output.content.contains("reached by a redirect from http://allowed.test"))
            #expect(server.paths == ["/redirect"])
        }
    }

    @Test func redirectsAreFollowedUpToTheLimit() async throws {
        try await LocalWebServer.withServer({ path in
            switch path {
            case "/hop": LocalWebServer.Reply(status: 301, headers: ["location": "/page"])
            case "/loop": LocalWebServer.Reply(status: 302, headers: ["location": "/loop"])
            default: LocalWebServer.Reply(headers: ["content-type": "text/plain"], body: "arrived")
            }
        }) { server in
            let hop = try await tool().call(["url": .string("http://allowed.test:\(server.port)/hop")], context: context())
            #expect(hop.content.hasSuffix("arrived"))
            let loop = try await tool().call(["url": .string("http://allowed.test:\(server.port)/loop")], context: context())
            #expect(loop.isError && loop.content.contains("redirects more than 5 times"))
        }
    }

    @Test func bodiesAreCappedBinariesRefusedAndErrorsSaid() async throws {
        try await LocalWebServer.withServer({ path in
            switch path {
            case "/big": LocalWebServer.Reply(headers: ["content-type": "text/plain"], body: String(repeating: "x", count: 5_000))
            case "/image": LocalWebServer.Reply(headers: ["content-type": "image/png"], body: "\u{89}PNG")
            case "/json": LocalWebServer.Reply(headers: ["content-type": "application/json"], body: #"{"ok":true}"#)
            default: LocalWebServer.Reply(status: 404, headers: ["content-type": "text/plain"], body: "no such page")
            }
        }) { server in
            let base = "http://allowed.test:\(server.port)"
            let big = try await tool(maxBytes: 1_000).call(["url": .string(base + "/big")], context: context())
            #expect(big.content.contains("[the body was cut at 1000 bytes]"))
            let image = try await tool().call(["url": .string(base + "/image")], context: context())
            #expect(image.isError && image.content.contains("image/png") && image.content.contains("not text"))
            let json = try await tool().call(["url": .string(base + "/json")], context: context())
            #expect(json.content.hasSuffix(#"{"ok":true}"#))
            let missing = try await tool().call(["url": .string(base + "/missing")], context: context())
            #expect(missing.isError && missing.content.contains("HTTP 404") && missing.content.contains("no such page"))
        }
    }

    @Test func htmlTextSurvivesBrokenMarkup() {
        let unclosed = HTMLText.convert("<p>before</p><script>while(1){} <b>")
        #expect(unclosed.text == "before")
        let comment = HTMLText.convert("a<!-- never closed <p>b")
        #expect(comment.text == "a")
        let entities = HTMLText.convert("&#65;&#x42;&amp;&bogus;&lt")
        #expect(entities.text == "AB&&bogus;&lt")
        let noTags = HTMLText.convert("plain  text\n\n\n\nend")
        #expect(noTags.text == "plain text\n\nend")
    }
}
