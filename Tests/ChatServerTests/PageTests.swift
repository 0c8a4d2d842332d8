import Chat
import ChatClient
import NIOCore
import Foundation
import Testing

@testable import ChatServer

@Suite("The page")
struct PageTests {
    @Test func pageHasATabPerConfiguredChannel() async throws {
        try await withServer(broker: .memory, { $0.channels = [.init("general")!, .init("random")!] }) { server in
            let page = try await ChatHTTP.request("GET", port: server.port, path: "/")
            #expect(page.status == 200)
            #expect(page.header("Content-Type") == "text/html; charset=utf-8")
            #expect(page.body.contains(#"data-channel="general""#))
            #expect(page.body.contains(#"data-channel="random""#))
            #expect(page.body.contains(#"role="tablist""#))
            #expect(!page.body.contains("http://") && !page.body.contains("https://"), "the page loads nothing from another host")
        }
    }

    @Test func assetsCarryTypeETagAndCacheControl() async throws {
        try await withServer(broker: .memory) { server in
            for (path, type) in [("/app.js", "text/javascript"), ("/chat.css", "text/css"), ("/favicon.svg", "image/svg+xml")] {
                let response = try await ChatHTTP.request("GET", port: server.port, path: path)
                #expect(response.status == 200)
                #expect(response.header("Content-Type")?.hasPrefix(type) == true)
                #expect(response.header("Cache-Control") == "no-cache")
                let etag = try #require(response.header("ETag"))
                let again = try await ChatHTTP.request("GET", port: server.port, path: path, headers: [("If-None-Match", etag)])
                #expect(again.status == 304)
            }
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/nope.js").status == 404)
        }
    }

    @Test func contentTypesStayAsTheyWere() {
        let expected = [
            "/chat.css": "text/css; charset=utf-8", "/app.js": "text/javascript; charset=utf-8", "/m.mjs": "text/javascript; charset=utf-8",
            "/a.html": "text/html; charset=utf-8", "/favicon.svg": "image/svg+xml", "/a.png": "image/png", "/favicon.ico": "image/x-icon",
            "/a.json": "application/json", "/a.woff2": "font/woff2", "/a.txt": "text/plain; charset=utf-8",
            "/a.unknown": "application/octet-stream", "/LICENSE": "application/octet-stream",
        ]
        for (path, type) in expected { #expect(AssetCatalog.contentType(of: path) == type, "\(path)") }
    }

    @Test func everyFileOfPublicAndTemplatesIsEmbedded() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var onDisk: [String] = []
        for folder in ["Public", "Templates"] {
            let files = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(folder).path)
            onDisk += files.filter { !$0.hasPrefix(".") }.map { "\(folder)/\($0)" }
        }
        #expect(Set(AssetCatalog.embeddedPaths) == Set(onDisk), "add new files to Sources/ChatAssets/assets.c")
        for path in onDisk {
            let bytes = try Data(contentsOf: root.appendingPathComponent(path))
            let embedded = AssetCatalog.embedded()
            if path.hasPrefix("Public/") {
                #expect(embedded.publicFiles["/" + path.dropFirst("Public/".count)]?.bytes.readableBytes == bytes.count, "\(path) is stale in the build")
            } else {
                let template = path == "Templates/status.mustache" ? embedded.statusTemplate : embedded.pageTemplate
                #expect(template == String(decoding: bytes, as: UTF8.self), "\(path) is stale in the build")
            }
        }
    }

    @Test func publicDirServesFromDiskAndRefusesToLeaveIt() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("chatroom-public-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Data("console.log('dev')".utf8).write(to: folder.appendingPathComponent("app.js"))
        try await withServer(broker: .memory, { $0.publicDirectory = folder.path }) { server in
            let response = try await ChatHTTP.request("GET", port: server.port, path: "/app.js")
            #expect(response.body == "console.log('dev')")
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/../../etc/passwd").status == 404)
            #expect(try await ChatHTTP.request("GET", port: server.port, path: "/%2e%2e/etc/passwd").status == 404)
        }
    }
}
