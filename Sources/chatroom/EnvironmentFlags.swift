import ArgumentParser
import Foundation

/// Every flag of the server from the environment: `CHATROOM_` and the flag's name in
/// upper snake case (`--max-message-size` → `CHATROOM_MAX_MESSAGE_SIZE`), as containers,
/// systemd's `EnvironmentFile=` and platforms-as-a-service configure servers.
///
/// A flag on the command line beats the environment, which beats the default. The
/// environment's values become arguments placed before the command line's; a value the
/// server refuses fails at start naming its variable, as a bad flag names the flag.
enum EnvironmentFlags {
    /// A flag of the server: its name (without `--`) and whether it takes a value.
    struct Flag: Equatable {
        var name: String
        var takesValue: Bool

        var variable: String { "CHATROOM_" + name.uppercased().replacingOccurrences(of: "-", with: "_") }
    }

    /// Options that may be given several times: their variable holds a comma-separated list.
    static let repeatable: Set<String> = ["jwt-public-key"]

    /// The flags `--help` lists (hidden ones, `--help` and `--version` aside).
    static func flags(inHelp help: String) -> [Flag] {
        var flags: [Flag] = []
        for line in help.split(separator: "\n") where line.hasPrefix("  --") {
            let words = line.dropFirst(2).split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            guard let first = words.first else { continue }
            let name = String(first.dropFirst(2))
            guard !["help", "version"].contains(name), !flags.contains(where: { $0.name == name }) else { continue }
            flags.append(Flag(name: name, takesValue: words.count > 1 && words[1].hasPrefix("<")))
        }
        return flags
    }

    /// A value of the environment the server cannot use.
    struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    /// The arguments the environment gives, for flags the command line does not name.
    static func arguments(for flags: [Flag], environment: [String: String], commandLine: [String]) throws(Problem) -> [(flag: Flag, arguments: [String])] {
        var given: [(Flag, [String])] = []
        for flag in flags {
            guard let value = environment[flag.variable] else { continue }
            let spelled = "--" + flag.name
            if commandLine.contains(where: { $0 == spelled || $0.hasPrefix(spelled + "=") }) { continue }
            if flag.takesValue {
                let values = repeatable.contains(flag.name)
                    ? value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                    : [value]
                // `--flag=value`: a value that starts with a dash stays a value.
                given.append((flag, values.map { spelled + "=" + $0 }))
            } else {
                switch value.lowercased() {
                case "1", "true", "yes", "on": given.append((flag, [spelled]))
                case "0", "false", "no", "off", "": continue
                default: throw Problem(description: "$\(flag.variable) must be true or false (1/0, yes/no, on/off), got '\(value.prefix(40))'.")
                }
            }
        }
        return given
    }
}

extension Chatroom {
    /// Parses the environment's flags before the command line's, so that a bad value
    /// names its variable; and shows each flag's variable in `--help`.
    static func main() async {
        let commandLine = Array(CommandLine.arguments.dropFirst())
        // The subcommands share flags with the server (`export` --archive-url, `token`
        // --channels), which would take them and judge them by its own rules (a `pub*`
        // prefix is no channel of the server's): each is parsed on its own.
        switch commandLine.first {
        case "export":
            await Export.main(Array(commandLine.dropFirst()))
            return
        case "token":
            Token.main(Array(commandLine.dropFirst()))
            return
        default:
            break
        }
        if commandLine.contains(where: { ["--help", "-h"].contains($0) }) {
            print(helpWithVariables())
            return
        }
        let given: [(flag: EnvironmentFlags.Flag, arguments: [String])]
        do {
            given = try EnvironmentFlags.arguments(
                for: EnvironmentFlags.flags(inHelp: helpMessage(columns: 400)), environment: ProcessInfo.processInfo.environment, commandLine: commandLine
            )
        } catch {
            fail(error.description)
        }
        let arguments = given.flatMap(\.arguments) + commandLine
        let command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            // Whose fault: a variable whose value is refused on its own is named.
            for (flag, values) in given {
                do {
                    _ = try parseAsRoot(values)
                } catch {
                    fail("$\(flag.variable): " + message(for: error))
                }
            }
            exit(withError: error)
        }
        do {
            var command = command
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    private static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("chatroom: \(message)\n".utf8))
        Foundation.exit(2)
    }

    /// `--help`, each flag followed by the variable that also sets it.
    static func helpWithVariables() -> String {
        let help = helpMessage()
        let flags = Set(EnvironmentFlags.flags(inHelp: helpMessage(columns: 400)).map(\.name))
        var lines: [String] = []
        var pending: String?
        for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
            let isFlag = line.hasPrefix("  --")
            if let variable = pending, isFlag || !line.hasPrefix("   ") {
                lines.append(String(repeating: " ", count: 26) + "[env: \(variable)]")
                pending = nil
            }
            lines.append(String(line))
            if isFlag, let name = line.dropFirst(4).split(separator: " ").first.map(String.init), flags.contains(name) {
                pending = EnvironmentFlags.Flag(name: name, takesValue: true).variable
            }
        }
        return lines.joined(separator: "\n")
    }
}
