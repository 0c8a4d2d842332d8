import Hummingbird

/// Reads cookies from `Cookie` header values.
enum CookieHeader {
    /// The value of cookie `name` in the given `Cookie` header values, if present: found
    /// by Hummingbird's `Cookies`, then read as the page wrote it (``Swift/Substring/cookieValue``).
    static func value(_ name: String, in headers: [String]) -> String? {
        Cookies(from: headers)[name]?.value[...].cookieValue
    }
}
