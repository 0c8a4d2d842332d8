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
            throw RedisError(.invalidURL, "'\(url)' has scheme '\(scheme)'; expected redis:// or unix://")
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
