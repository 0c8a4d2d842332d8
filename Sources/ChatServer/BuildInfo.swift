import ChatAssets

/// The release and the git commit this binary is (`chatroom --version`).
public enum BuildInfo {
    public static let version = "1.0.0"
    /// Set by scripts/release.sh; "unknown" in a build made otherwise.
    public static var commit: String { String(cString: chatroom_build_commit()) }
    /// `1.0.0 (commit 1a2b3c4)`.
    public static var description: String { "\(version) (commit \(commit))" }
}
