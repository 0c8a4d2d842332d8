import Chat
import HTTPTypes
import Hummingbird
import Mustache
import NIOCore

/// `GET /`: the chat page; and the page's files (`/app.js`, `/chat.css`, …).
struct PageController: Sendable {
    let catalog: AssetCatalog
    let page: ByteBuffer
    let pageETag: String
    let identities: Identities
    /// Checks a `?token=` the page is opened with: a signed-in person's page says who they are.
    let logins: Logins
    private let template: MustacheTemplate
    private let values: [String: any Sendable]

    /// Renders the page shell once: it depends only on the configuration (and, for a
    /// signed-in person, on who they are: that page is rendered for them).
    init(catalog: AssetCatalog, configuration: ChatConfiguration, identities: Identities, logins: Logins = .none) throws {
        self.catalog = catalog
        self.identities = identities
        self.logins = logins
        let template = try MustacheTemplate(string: catalog.pageTemplate)
        let values: [String: any Sendable] = [
            "title": configuration.title,
            "channels": configuration.channels.map { ["name": $0.rawValue, "label": configuration.channelLabels[$0] ?? $0.rawValue] },
            "maximumMessageLength": configuration.maximumMessageSize,
            // Search and history past Redis' window come with an archive.
            "archive": configuration.archiveURL != nil,
        ]
        self.template = template
        self.values = values
        let html = template.render(values)
        self.page = ByteBuffer(string: html)
        self.pageETag = html.utf8.withContiguousStorageIfAvailable { AssetCatalog.etag(of: UnsafeRawBufferPointer($0)) } ?? "\"page\""
    }

    func addRoutes(to router: Router<ChatRequestContext>) {
        router.get("/") { request, _ in
            // Opened from the site's login (/?token=…): the page knows its person before
            // its socket says so, and shows their name, which they cannot change.
            let token = request.uri.queryParameters["token"].map(String.init)
            if logins.reads(token), let signIn = await logins.check(token).signIn {
                var values = self.values
                values["me"] = ["id": signIn.identity, "name": signIn.name ?? "", "moderator": signIn.isModerator] as [String: any Sendable]
                let html = ByteBuffer(string: template.render(values))
                return Response(
                    status: .ok,
                    headers: [.contentType: "text/html; charset=utf-8", .contentLength: String(html.readableBytes), .cacheControl: "private, no-store"],
                    body: .init(byteBuffer: html)
                )
            }
            var response = Self.respond(with: page, contentType: "text/html; charset=utf-8", etag: pageETag, to: request)
            // Never kept by a shared cache: it could hand one browser's identity to everyone.
            response.headers[.cacheControl] = "private, no-cache"
            response.headers[.vary] = "Cookie"
            // Every browser gets an identity (the uid cookie) with the page; a forged or
            // altered one is replaced. An answer that sets it is not stored at all.
            if identities.identity(cookies: request.headers[values: .cookie]) == nil {
                response.headers[.setCookie] = Identities.setCookie(identities.mint().cookie)
                response.headers[.cacheControl] = "private, no-store"
            }
            return response
        }
        for path in catalog.publicDirectory == nil ? Array(catalog.publicFiles.keys) : [] {
            router.get(RouterPath(path)) { request, _ in try serve(path, to: request) }
        }
        if catalog.publicDirectory != nil {
            router.get("/**") { request, _ in try serve(request.uri.path, to: request) }
        }
    }

    private func serve(_ path: String, to request: Request) throws -> Response {
        guard let asset = catalog.asset(at: path) else {
            throw Refusal(.notFound, "No such file: \(String(path.unicodeScalars.prefix(100)))")
        }
        return Self.respond(with: asset.bytes, contentType: asset.contentType, etag: asset.etag, to: request)
    }

    /// Answers with the bytes, or 304 when the client's copy is current. `no-cache`
    /// makes browsers revalidate: the names carry no version, so a new binary shows at once.
    private static func respond(with bytes: ByteBuffer, contentType: String, etag: String, to request: Request) -> Response {
        var headers: HTTPFields = [.eTag: etag, .cacheControl: "no-cache"]
        if let cached = request.headers[.ifNoneMatch], cached.split(separator: ",").contains(where: { $0.trimmingSpaces == etag[...] }) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = contentType
        headers[.contentLength] = String(bytes.readableBytes)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: bytes))
    }
}
