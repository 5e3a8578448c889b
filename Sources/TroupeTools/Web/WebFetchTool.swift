import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
public import TroupeCore

#if canImport(Glibc)
    import Glibc
#endif

/// Finds the addresses of a host name. Tests inject their own; the default asks the system.
public protocol HostResolver: Sendable {
    func addresses(of host: String) async throws -> [IPAddress]
}

/// The system resolver (`getaddrinfo`), off the cooperative threads.
public struct SystemResolver: HostResolver {
    public init() {}

    public func addresses(of host: String) async throws -> [IPAddress] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, nil, &hints, &list)
            guard status == 0, let first = list else {
                throw TroupeError(.toolFailed, "The host name '\(host)' could not be resolved: \(String(cString: gai_strerror(status))).")
            }
            defer { freeaddrinfo(list) }
            var addresses: [IPAddress] = []
            var node: UnsafeMutablePointer<addrinfo>? = first
            while let entry = node?.pointee {
                if entry.ai_family == AF_INET, let raw = entry.ai_addr {
                    let address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
                    addresses.append(.v4(UInt32(bigEndian: address)))
                } else if entry.ai_family == AF_INET6, let raw = entry.ai_addr {
                    let bytes = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                        withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
                    }
                    addresses.append(.v6(bytes))
                }
                node = entry.ai_next
            }
            return Array(Set(addresses)).sorted { $0.description < $1.description }
        }
    }
}

/// What `web_fetch` may reach and how much it takes.
public struct WebFetchPolicy: Sendable, Hashable {
    /// Hosts that may be fetched even though they resolve to private, loopback or other
    /// non-public addresses (an internal wiki, say). Compared case-insensitively, exactly.
    public var allowedPrivateHosts: Set<String>
    public var maxRedirects: Int
    /// The most bytes of a body read.
    public var maxBytes: Int
    /// The whole fetch, redirects included.
    public var timeout: Duration
    /// The most characters of text returned to the model.
    public var maxTextCharacters: Int

    public init(
        allowedPrivateHosts: Set<String> = [],
        maxRedirects: Int = 5,
        maxBytes: Int = 2 << 20,
        timeout: Duration = .seconds(30),
        maxTextCharacters: Int = 100_000
    ) {
        self.allowedPrivateHosts = Set(allowedPrivateHosts.map { $0.lowercased() })
        self.maxRedirects = maxRedirects
        self.maxBytes = maxBytes
        self.timeout = timeout
        self.maxTextCharacters = maxTextCharacters
    }
}

/// `web_fetch`: GETs an http(s) URL and returns its text — HTML as readable text (scripts and
/// styles dropped), JSON, XML and plain text as they are.
///
/// Every hop (redirects included, at most `maxRedirects`) is checked before it is requested: the
/// scheme is http or https, no credentials are in the URL, and every address the host resolves to
/// is public — loopback, private, link-local (cloud metadata), carrier-grade NAT, multicast and
/// reserved ranges are refused, in IPv4 and IPv6 and in the disguises a URL allows (`0x7f000001`,
/// `2130706433`, `[::ffff:127.0.0.1]`). The connection then goes to the address that was checked,
/// so a DNS answer that changes between the check and the connect cannot redirect it.
public struct WebFetchTool: Tool {
    public let policy: WebFetchPolicy
    public let resolver: any HostResolver
    public let name = "web_fetch"
    public let description =
        "Fetch a web page or document by http(s) URL and get its text (HTML is turned into readable text). Public addresses only."
    public let effect = ToolEffect.readOnly
    public let parameters: JSONSchema = .object(
        [.init("url", .string("The http or https URL.", minLength: 1))],
        required: ["url"]
    )

    public init(policy: WebFetchPolicy = WebFetchPolicy(), resolver: any HostResolver = SystemResolver()) {
        self.policy = policy
        self.resolver = resolver
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        var url = arguments["url"]?.stringValue ?? ""
        let deadline = ContinuousClock.now.advanced(by: policy.timeout)
        var hops: [String] = []
        for _ in 0...policy.maxRedirects {
            let target: Target
            switch try await check(url) {
            case .success(let checked): target = checked
            case .failure(let refusal): return .error(refusal.message + (hops.isEmpty ? "" : " (reached by a redirect from \(hops.last!))"))
            }
            let response = try await fetch(target, deadline: deadline)
            if let location = response.location {
                hops.append(url)
                guard let next = URL(string: location, relativeTo: target.url)?.absoluteString else {
                    return .error("\(url) redirects to '\(location)', which is not a URL.")
                }
                url = next
                continue
            }
            return response.output
        }
        return .error("\(hops.first ?? url) redirects more than \(policy.maxRedirects) times.")
    }

    /// A URL that passed the checks, and the address to connect to (checked, unless the host is
    /// on the allowlist).
    struct Target {
        var url: URL
        var host: String
        var address: IPAddress
    }

    /// Checks one hop: scheme, credentials, host, addresses.
    func check(_ text: String) async throws -> Result<Target, ToolRefusal> {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased() else {
            return .failure(ToolRefusal(message: "'\(text.prefix(200))' is not a URL."))
        }
        guard scheme == "http" || scheme == "https" else {
            return .failure(ToolRefusal(message: "Only http and https URLs can be fetched ('\(scheme):' is refused)."))
        }
        guard url.user == nil, url.password == nil else { return .failure(ToolRefusal(message: "URLs with credentials are refused.")) }
        guard var host = url.host, !host.isEmpty else { return .failure(ToolRefusal(message: "'\(text.prefix(200))' has no host.")) }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.contains("%"), !host.contains(where: \.isWhitespace) else {
            return .failure(ToolRefusal(message: "The host '\(host)' is malformed."))
        }
        let allowed = policy.allowedPrivateHosts.contains(host.lowercased())
        let addresses: [IPAddress]
        if let literal = IPAddress(literal: host) {
            addresses = [literal]
        } else {
            do {
                addresses = try await resolver.addresses(of: host)
            } catch {
                return .failure(ToolRefusal(message: (error as? TroupeError)?.message ?? "The host '\(host)' could not be resolved."))
            }
        }
        guard let first = addresses.first else { return .failure(ToolRefusal(message: "The host '\(host)' has no addresses.")) }
        if !allowed {
            for address in addresses {
                if let reason = address.blockReason {
                    return .failure(
                        ToolRefusal(
                            message: "\(text.prefix(200)) is refused: \(host) resolves to \(address), \(reason); only public addresses "
                                + "can be fetched."))
                }
            }
        }
        return .success(Target(url: url, host: host, address: first))
    }

    struct Response {
        var location: String?
        var output: ToolOutput
    }

    /// Requests one checked hop, connecting to its checked address.
    func fetch(_ target: Target, deadline: ContinuousClock.Instant) async throws -> Response {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(10), read: .seconds(20))
        configuration.decompression = .enabled(limit: .size(policy.maxBytes * 4))
        configuration.connectionPool.retryConnectionEstablishment = false
        // The address as text, without brackets for IPv6: the client parses it as an address
        // (a bracketed one would be taken for a host name, and fail).
        configuration.dnsOverride = [target.host: target.address.description]
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        defer { client.shutdown { _ in } }
        var request = HTTPClientRequest(url: target.url.absoluteString)
        request.headers.add(name: "User-Agent", value: "Troupe/1 (+https://github.com/troupe; web_fetch tool)")
        request.headers.add(name: "Accept", value: "text/html, text/plain, application/json, application/xml;q=0.9, */*;q=0.5")
        let remaining = ContinuousClock.now.duration(to: deadline)
        guard remaining > .zero else { throw TroupeError(.timeout, "Fetching \(target.url.absoluteString) took too long.") }
        let shown = target.url.absoluteString
        do {
            let response = try await client.execute(request, deadline: .now() + .nanoseconds(Int64(remaining.seconds * 1e9)))
            if (300..<400).contains(response.status.code), let location = response.headers.first(name: "location") {
                return Response(location: location, output: .error(""))
            }
            var body = ByteBuffer()
            var truncated = false
            for try await chunk in response.body {
                let room = policy.maxBytes - body.readableBytes
                if chunk.readableBytes > room {
                    body.writeImmutableBuffer(chunk.getSlice(at: chunk.readerIndex, length: room) ?? ByteBuffer())
                    truncated = true
                    break
                }
                body.writeImmutableBuffer(chunk)
            }
            let type = response.headers.first(name: "content-type")?.lowercased() ?? ""
            return Response(
                location: nil, output: render(body, type: type, status: Int(response.status.code), url: shown, truncated: truncated))
        } catch let error as TroupeError {
            throw error
        } catch {
            return Response(location: nil, output: .error("Fetching \(shown) failed: \(error)."))
        }
    }

    private func render(_ body: ByteBuffer, type: String, status: Int, url: String, truncated: Bool) -> ToolOutput {
        let textual =
            type.isEmpty || type.hasPrefix("text/") || type.contains("json") || type.contains("xml") || type.contains("javascript")
        guard textual else {
            return .error("\(url) answered with \(type) (\(body.readableBytes) bytes), which is not text; web_fetch returns text only.")
        }
        let raw = String(decoding: body.readableBytesView, as: UTF8.self)
        var header = "\(url) — HTTP \(status), \(type.isEmpty ? "no content type" : type)"
        var text = raw
        if type.contains("html") || (type.isEmpty && raw.prefix(512).lowercased().contains("<html")) {
            let page = HTMLText.convert(raw)
            if let title = page.title, !title.isEmpty { header += "\nTitle: \(title)" }
            text = page.text
        }
        var notes: [String] = []
        if truncated { notes.append("the body was cut at \(policy.maxBytes) bytes") }
        if text.count > policy.maxTextCharacters {
            text = String(text.prefix(policy.maxTextCharacters))
            notes.append("the text was cut at \(policy.maxTextCharacters) characters")
        }
        let note = notes.isEmpty ? "" : "\n[" + notes.joined(separator: "; ") + "]"
        return ToolOutput("\(header)\n\n\(text)\(note)", isError: status >= 400)
    }
}
