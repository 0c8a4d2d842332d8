import ChatClient
import Foundation
import NIOConcurrencyHelpers
import Testing

/// The `chatroom` binary as an operator runs it: flags, the environment, `--help`, `--version`.
@Suite("The command line and the environment")
struct CommandLineTests {
    /// The binary `swift build` made beside the tests.
    static let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/chatroom").path

    /// A running `chatroom`, its output read as it comes.
    final class Run: @unchecked Sendable {
        let process = Process()
        private let output = NIOLockedValueBox("")
        /// The pipe reached its end: everything the process wrote is in `text`.
        private let ended = NIOLockedValueBox(false)

        init(_ arguments: [String], environment: [String: String]) throws {
            process.executableURL = URL(fileURLWithPath: CommandLineTests.binary)
            process.arguments = arguments
            // Only what the test gives, so that the machine's own CHATROOM_ variables do not count.
            process.environment = ["PATH": "/usr/bin:/bin"].merging(environment) { $1 }
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            // Read on a thread of its own, to the end: what the process wrote is all in `text`
            // once `ended` is set (a readability handler can miss a last chunk on Linux).
            let reading = pipe.fileHandleForReading
            let thread = Thread { [output, ended] in
                while true {
                    let data = reading.availableData
                    if data.isEmpty { break }
                    output.withLockedValue { $0 += String(decoding: data, as: UTF8.self) }
                }
                ended.withLockedValue { $0 = true }
            }
            thread.start()
            try process.run()
        }

        var text: String { output.withLockedValue { $0 } }

        /// Waits for the process to end (at most `timeout`); its status.
        func exit(within timeout: Duration = .seconds(20)) async -> Int32? {
            let deadline = ContinuousClock.now + timeout
            while process.isRunning || !ended.withLockedValue({ $0 }), ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            return process.isRunning ? nil : process.terminationStatus
        }

        /// The port once the server says it is serving.
        func port(within timeout: Duration = .seconds(20)) async -> Int? {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if let range = text.range(of: #"url=http://127\.0\.0\.1:(\d+)/"#, options: .regularExpression) {
                    return Int(text[range].dropFirst("url=http://127.0.0.1:".count).dropLast())
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }

        func stop() async {
            if process.isRunning { process.terminate() }
            _ = await exit()
        }
    }

    @Test func aBadValueInTheEnvironmentFailsAtStartNamingItsVariable() async throws {
        for (variable, value, words) in [
            ("CHATROOM_PORT", "eighty", "invalid"), ("CHATROOM_MAX_MESSAGE_SIZE", "-5", "must be positive"), ("CHATROOM_REQUIRE_LOGIN", "perhaps", "true or false"),
            ("CHATROOM_BROKER", "carrier-pigeon", "carrier-pigeon"),
        ] {
            let run = try Run([], environment: [variable: value])
            #expect(await run.exit() == 2, "\(variable)=\(value)")
            #expect(run.text.contains("$\(variable)") && run.text.contains(words), "\(run.text)")
        }
    }

    @Test func aFlagBeatsTheEnvironmentWhichBeatsTheDefault() async throws {
        let run = try Run(
            ["--max-message-size", "64"],
            environment: ["CHATROOM_BROKER": "memory", "CHATROOM_PORT": "0", "CHATROOM_MAX_MESSAGE_SIZE": "8", "CHATROOM_SEND_RATE": "0", "CHATROOM_TITLE_IGNORED": "x"]
        )
        let port = try #require(await run.port(), "\(run.text)")
        // 8 bytes from the environment lost to 64 from the flag; the broker came from the environment.
        #expect(try await ChatHTTP.send(port: port, data: String(repeating: "a", count: 40), channel: "c").status == 200)
        #expect(try await ChatHTTP.send(port: port, data: String(repeating: "a", count: 65), channel: "c").status == 413)
        await run.stop()
        let fromEnvironment = try Run([], environment: ["CHATROOM_BROKER": "memory", "CHATROOM_PORT": "0", "CHATROOM_MAX_MESSAGE_SIZE": "8"])
        let other = try #require(await fromEnvironment.port(), "\(fromEnvironment.text)")
        #expect(try await ChatHTTP.send(port: other, data: String(repeating: "a", count: 9), channel: "c").status == 413)
        await fromEnvironment.stop()
    }

    @Test func helpNamesEveryFlagsVariableAndVersionNamesTheCommit() async throws {
        let help = try Run(["--help"], environment: [:])
        #expect(await help.exit() == 0)
        let flags = help.text.split(separator: "\n").filter { $0.hasPrefix("  --") && !$0.hasPrefix("  --help") && !$0.hasPrefix("  --version") }
        #expect(flags.count > 40)
        for variable in ["CHATROOM_MAX_MESSAGE_SIZE", "CHATROOM_JWT_SECRET", "CHATROOM_REQUIRE_LOGIN", "CHATROOM_SEND_RATE"] {
            #expect(help.text.contains("[env: \(variable)]"), "\(variable)")
        }
        #expect(help.text.components(separatedBy: "[env: CHATROOM_").count - 1 == flags.count, "one variable a flag")
        let version = try Run(["--version"], environment: [:])
        #expect(await version.exit() == 0)
        #expect(version.text.hasPrefix("1.") && version.text.contains("(commit "))
    }

    @Test func aSignInTokenMayNameRoomsByPrefix() async throws {
        // --channels of `token` is the token's claim, not the server's list of rooms (where
        // `pub*` is no channel name): it used to be judged by the server's rules.
        let secret = String(repeating: "s", count: 32)
        let run = try Run(["token", "--sub", "ada", "--channels", "pub*,general", "--secret", secret], environment: [:])
        #expect(await run.exit() == 0, "\(run.text)")
        let parts = run.text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".")
        #expect(parts.count == 3, "\(run.text)")
        var payload = String(parts.count == 3 ? parts[1] : "").replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while payload.count % 4 != 0 { payload += "=" }
        let claims = Data(base64Encoded: payload).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        #expect(claims?["channels"] as? [String] == ["pub*", "general"])
        #expect(claims?["sub"] as? String == "ada")
        let unsigned = try Run(["token", "--channels", "general"], environment: [:])
        #expect(await unsigned.exit() != 0)
        #expect(unsigned.text.contains("give --sub too"))
    }
}
