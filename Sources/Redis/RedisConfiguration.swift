import Foundation

/// Where Redis is and how to log in, read from a Redis URL.
///
/// Accepted forms:
/// - `redis://[user:password@]host[:port][/db]` (port 6379, database 0 when left out)
/// - `unix:///path/to/redis.sock[?db=N&user=U&password=P]`
public struct RedisConfiguration: Sendable, Hashable, CustomStringConvertible {
    /// How to reach the server.
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    /// How to reach the server.
    public var endpoint: Endpoint
    /// The ACL user for `AUTH`, if any.
    public var username: String?
    /// The password for `AUTH`, if any.
    public var password: String?
    /// The database for `SELECT`.
    public var database: Int
    /// How long a command may wait for its reply before the connection is treated as dead.
    public var commandTimeout: Duration
    /// How long a connection attempt may take.
    public var connectTimeout: Duration

    /// Creates a configuration.
    public init(
        endpoint: Endpoint,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        commandTimeout: Duration = .seconds(2),
        connectTimeout: Duration = .seconds(2)
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.commandTimeout = commandTimeout
        self.connectTimeout = connectTimeout
    }

    /// Reads a Redis URL.
    /// - Throws: ``RedisError`` with code `.invalidURL` and a message naming what is wrong.
    public init(url: String) throws {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw RedisError(.invalidURL, "'\(url)' is not a URL; expected redis://host:port[/db] or unix:///path")
        }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") },
            uniquingKeysWith: { _, last in last }
        )
        var username = components.user.flatMap { $0.removingPercentEncoding }
        var password = components.password.flatMap { $0.removingPercentEncoding }
        if username?.isEmpty == true { username = nil }
        var database = 0
        switch scheme {
        case "redis":
            guard var host = components.host, !host.isEmpty else {
                throw RedisError(.invalidURL, "'\(url)' has no host")
            }
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let port = components.port ?? 6379
            guard (1...65535).contains(port) else { throw RedisError(.invalidURL, "'\(url)' has port \(port), outside 1–65535") }
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let number = Int(path), number >= 0 else {
                    throw RedisError(.invalidURL, "'\(url)': the path must be a database number, got '\(path)'")
                }
                database = number
            }
            self.init(endpoint: .tcp(host: host, port: port))
        case "unix":
            let path = components.path
            guard path.hasPrefix("/"), (components.host ?? "").isEmpty else { throw RedisError(.invalidURL, "'\(url)' needs an absolute socket path: unix:///path/to/redis.sock") }
            self.init(endpoint: .unix(path: path))
            if let user = query["user"], !user.isEmpty { username = user }
            if let secret = query["password"] { password = secret }
        default:
            throw RedisError(.invalidURL, "'\(url)' has scheme '\(scheme)'; expected redis://, unix:// or redis+cluster://")
        }
        if let db = query["db"] {
            guard let number = Int(db), number >= 0 else { throw RedisError(.invalidURL, "'\(url)': db must be a number, got '\(db)'") }
            database = number
        }
        self.username = username
        self.password = password
        self.database = database
    }

    /// The URL with the password masked, safe to log.
    public var description: String {
        var login = ""
        if username != nil || password != nil {
            login = (username ?? "") + (password == nil ? "" : ":***") + "@"
        }
        switch endpoint {
        case .tcp(let host, let port):
            let shownHost = host.contains(":") ? "[\(host)]" : host
            return "redis://\(login)\(shownHost):\(port)" + (database == 0 ? "" : "/\(database)")
        case .unix(let path):
            return "unix://\(path)" + (database == 0 ? "" : "?db=\(database)")
        }
    }

    /// The commands that log in and pick the database on a new connection.
    var handshake: [RedisCommand] {
        var commands: [RedisCommand] = []
        if let password {
            if let username {
                commands.append(RedisCommand("AUTH", .string(username), .string(password)))
            } else {
                commands.append(RedisCommand("AUTH", .string(password)))
            }
        }
        if database != 0 { commands.append(RedisCommand("SELECT", .integer(database))) }
        return commands
    }
}

/// One Redis, or a Redis Cluster given by some of its nodes.
public enum RedisTarget: Sendable, Hashable, CustomStringConvertible {
    /// One server (or a proxy that looks like one).
    case single(RedisConfiguration)
    /// A Redis Cluster: any of its nodes, to learn the rest from. Every node shares the
    /// seeds' login; there is no database but 0.
    case cluster(seeds: [RedisConfiguration])

    /// Reads a Redis URL: the forms of ``RedisConfiguration/init(url:)``, or
    /// `redis+cluster://[user:password@]host:port[,host:port…]` for a cluster.
    /// - Throws: ``RedisError`` with code `.invalidURL` and a message naming what is wrong.
    public init(url: String) throws {
        let prefix = "redis+cluster://"
        guard url.lowercased().hasPrefix(prefix) else {
            self = .single(try RedisConfiguration(url: url))
            return
        }
        var rest = Substring(url.dropFirst(prefix.count))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/") && !rest.contains("?") else {
            throw RedisError(.invalidURL, "'\(url)': a cluster URL has no database or options; a cluster has database 0 only")
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let login = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = login.firstIndex(of: ":") {
                username = String(login[..<colon]).removingPercentEncoding
                password = String(login[login.index(after: colon)...]).removingPercentEncoding
            } else {
                username = String(login).removingPercentEncoding
            }
            if username?.isEmpty == true { username = nil }
        }
        var seeds: [RedisConfiguration] = []
        for node in rest.split(separator: ",", omittingEmptySubsequences: false) {
            let (host, port) = try Self.hostAndPort(node, in: url)
            seeds.append(RedisConfiguration(endpoint: .tcp(host: host, port: port), username: username, password: password))
        }
        guard !seeds.isEmpty else { throw RedisError(.invalidURL, "'\(url)' names no cluster node; expected redis+cluster://host:port,host:port") }
        self = .cluster(seeds: seeds)
    }

    /// `host:port` or `[v6]:port`; the port defaults to 6379.
    static func hostAndPort(_ text: Substring, in url: String) throws -> (String, Int) {
        var host = text
        var port = 6379
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw RedisError(.invalidURL, "'\(url)': unclosed [ in '\(text)'") }
            host = text[text.index(after: text.startIndex)..<close]
            let tail = text[text.index(after: close)...]
            if !tail.isEmpty {
                guard tail.hasPrefix(":"), let number = Int(tail.dropFirst()) else { throw RedisError(.invalidURL, "'\(url)': bad port in '\(text)'") }
                port = number
            }
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            guard let number = Int(text[text.index(after: colon)...]) else { throw RedisError(.invalidURL, "'\(url)': bad port in '\(text)'") }
            port = number
        }
        guard !host.isEmpty else { throw RedisError(.invalidURL, "'\(url)': a node has no host ('\(text)')") }
        guard (1...65535).contains(port) else { throw RedisError(.invalidURL, "'\(url)' has port \(port), outside 1–65535") }
        return (String(host), port)
    }

    /// The URL with the password masked, safe to log.
    public var description: String {
        switch self {
        case .single(let configuration):
            return configuration.description
        case .cluster(let seeds):
            let first = seeds.first
            var login = ""
            if first?.username != nil || first?.password != nil {
                login = (first?.username ?? "") + (first?.password == nil ? "" : ":***") + "@"
            }
            return "redis+cluster://" + login + seeds.map(\.address).joined(separator: ",")
        }
    }
}

extension RedisConfiguration {
    /// `host:port` (`[v6]:port`), or the socket path: how the node is named in logs and metrics.
    public var address: String {
        switch endpoint {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return path
        }
    }

    /// The same login at another node of a cluster.
    func at(host: String, port: Int) -> RedisConfiguration {
        var copy = self
        copy.endpoint = .tcp(host: host, port: port)
        return copy
    }
}
