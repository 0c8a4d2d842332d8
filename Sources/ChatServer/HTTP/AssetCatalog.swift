import ChatAssets
import Foundation
import Hummingbird
import NIOCore

/// The chat page's files: compiled into the binary, or read from a folder on disk
/// (`--public-dir`) while working on the front end.
struct AssetCatalog: Sendable {
    /// One file ready to serve.
    struct Asset: Sendable {
        var bytes: ByteBuffer
        var contentType: String
        var etag: String
    }

    /// Public/ files by URL path (`/app.js`).
    let publicFiles: [String: Asset]
    /// The page shell, Templates/index.mustache.
    let pageTemplate: String
    /// The operators' page, Templates/status.mustache.
    var statusTemplate = ""
    /// A folder to read Public/ files from instead, fresh on each request.
    let publicDirectory: String?

    /// The files compiled into the binary.
    static func embedded(publicDirectory: String? = nil) -> AssetCatalog {
        var count = 0
        let table = chatroom_assets(&count)!
        var files: [String: Asset] = [:]
        var template = ""
        var status = ""
        for index in 0..<count {
            let entry = table[index]
            let path = String(cString: entry.path)
            let bytes = UnsafeRawBufferPointer(start: entry.bytes, count: entry.length)
            if path == "Templates/index.mustache" {
                template = String(decoding: bytes, as: UTF8.self)
            } else if path == "Templates/status.mustache" {
                status = String(decoding: bytes, as: UTF8.self)
            } else if path.hasPrefix("Public/") {
                let urlPath = "/" + path.dropFirst("Public/".count)
                files[urlPath] = Asset(bytes: ByteBuffer(bytes: bytes), contentType: contentType(of: urlPath), etag: etag(of: bytes))
            }
        }
        return AssetCatalog(publicFiles: files, pageTemplate: template, statusTemplate: status, publicDirectory: publicDirectory)
    }

    /// Embedded file paths as they are in the repository, e.g. `Public/app.js`.
    static var embeddedPaths: [String] {
        var count = 0
        let table = chatroom_assets(&count)!
        return (0..<count).map { String(cString: table[$0].path) }
    }

    /// The file for a URL path, or `nil`.
    func asset(at urlPath: String) -> Asset? {
        guard let publicDirectory else { return publicFiles[urlPath] }
        // Development mode: read from disk, refusing anything that leaves the folder.
        let parts = urlPath.split(separator: "/")
        guard !parts.isEmpty, !parts.contains(where: { $0 == ".." || $0 == "." || $0.hasPrefix(".") }) else { return nil }
        let path = publicDirectory + "/" + parts.joined(separator: "/")
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return data.withUnsafeBytes { bytes in
            Asset(bytes: ByteBuffer(bytes: bytes), contentType: Self.contentType(of: urlPath), etag: Self.etag(of: bytes))
        }
    }

    /// The `Content-Type` of a file, from Hummingbird's table of file extensions. Text is
    /// UTF-8 and says so; `.ico` stays `image/x-icon` (Hummingbird: `image/vnd.microsoft.icon`).
    static func contentType(of path: String) -> String {
        let fileExtension = path.split(separator: ".").last ?? ""
        if fileExtension == "ico" { return "image/x-icon" }
        guard let mediaType = MediaType.getMediaType(forExtension: String(fileExtension)) else { return "application/octet-stream" }
        return mediaType.type == .text ? mediaType.withParameter(name: "charset", value: "utf-8").description : mediaType.description
    }

    /// A strong ETag from the bytes (FNV-1a, 64 bits).
    static func etag(of bytes: UnsafeRawBufferPointer) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return "\"\(String(hash, radix: 16))-\(bytes.count)\""
    }
}
