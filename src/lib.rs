//! The `pvo` library: every module of the node (the domain, the commands, the network
//! and management adapters, start-up), so that the binary (`src/main.rs`) is only the
//! command line on top of it and tests can drive the pieces in-process
//! (`tests/in_process.rs`).
//!
//! One thing the library does not define is the appliance command-line grammar: its clap
//! definitions are still in the binary. The SSH shell parses its lines with that same
//! grammar, so the binary hands it over before anything runs ([`set_command_line`]); a
//! node started by other code without it answers every shell command with an error
//! saying so instead of guessing at a grammar of its own.

pub mod adapters;
pub mod commands;
pub mod core;
pub mod listeners;
pub mod net;
pub mod node;
pub mod quickstart;
pub mod servers;

use std::sync::OnceLock;

/// What a command line parses to: the typed command, whether `--json` was given and the
/// `--level` it names; or
/// the text to print instead with the exit code the CLI would have (0 for help, 2 for a
/// usage error, 1 for anything else).
pub type ParsedLine = Result<(commands::command::Command, bool, Option<String>), (String, u32)>;

/// The appliance command-line grammar, as the binary defines it.
#[derive(Clone, Copy)]
pub struct CommandLine {
    /// Parses the words after the program name, marked remote (nothing prompts).
    pub parse: fn(Vec<String>) -> ParsedLine,
    /// The appliance commands with their one-line descriptions (`help` in the shell).
    pub help: fn() -> String,
}

static COMMAND_LINE: OnceLock<CommandLine> = OnceLock::new();

/// Hands the library the command-line grammar; the first call wins (the binary makes it
/// once, before any node starts).
pub fn set_command_line(grammar: CommandLine) {
    let _ = COMMAND_LINE.set(grammar);
}

const NO_GRAMMAR: &str =
    "this node was started without the appliance command line (pvo::set_command_line)";

/// An appliance command line that arrived over SSH, parsed by the CLI's definitions.
pub fn parse_remote(words: Vec<String>) -> ParsedLine {
    match COMMAND_LINE.get() {
        Some(g) => (g.parse)(words),
        None => Err((NO_GRAMMAR.to_string(), 1)),
    }
}

/// The appliance commands with their one-line descriptions (`help` in the SSH shell).
pub fn appliance_help() -> String {
    match COMMAND_LINE.get() {
        Some(g) => (g.help)(),
        None => format!("{NO_GRAMMAR}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: Vec<String>) -> ParsedLine {
        let json = words.iter().any(|w| w == "--json");
        commands::command::Command::from_parts(&words[0], serde_json::json!({}))
            .map(|c| (c, json, None))
            .map_err(|e| (e.to_string(), 2))
    }

    fn help() -> String {
        "Commands: test\n".into()
    }

    #[test]
    fn the_shell_uses_the_grammar_it_was_given() {
        // Before the grammar is set (this test binary sets it only here), the shell says
        // what is missing rather than parsing anything.
        if COMMAND_LINE.get().is_none() {
            assert_eq!(parse_remote(vec!["status".into()]).unwrap_err().1, 1);
            assert!(appliance_help().contains("set_command_line"));
        }
        set_command_line(CommandLine { parse, help });
        let (command, json, _) = parse_remote(vec!["status".into(), "--json".into()]).unwrap();
        assert_eq!(
            (command, json),
            (
                commands::command::Command::from_parts("status", serde_json::json!({})).unwrap(),
                true
            )
        );
        assert_eq!(appliance_help(), "Commands: test\n");
    }
}
