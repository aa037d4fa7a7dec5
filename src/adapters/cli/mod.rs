//! Command-line definitions of the appliance commands that are grouped in
//! their own files, flattened into the top-level `pvo` command.
//!
//! The same definitions parse command lines that arrive over SSH (`crate::adapters::ssh`), inside
//! the node: there, [`with_remote`] marks the parsing thread so that nothing prompts on
//! or reads from the node's own terminal ([`stdin_is_terminal`] is false; confirmations
//! need `--yes`).

pub mod client;
pub mod cluster;
pub mod config;
pub mod diag;
pub mod enroll;
pub mod features;
pub mod pvo;
pub mod quarantine;
pub mod users;

use std::cell::Cell;

thread_local! {
    static REMOTE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread marked as parsing a remote (SSH) command line.
pub fn with_remote<T>(f: impl FnOnce() -> T) -> T {
    REMOTE.with(|r| r.set(true));
    let out = f();
    REMOTE.with(|r| r.set(false));
    out
}

/// True while parsing a command line that came over SSH.
pub fn remote() -> bool {
    REMOTE.with(Cell::get)
}

/// Whether the command may prompt: a terminal on stdin and not a remote command line.
pub fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    !remote() && std::io::stdin().is_terminal()
}

/// Asks a question when stdin is a terminal; `None` otherwise.
pub fn prompt(question: &str) -> anyhow::Result<Option<String>> {
    use std::io::{BufRead, Write};
    if !stdin_is_terminal() {
        return Ok(None);
    }
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Some(line.trim().to_string()))
}

/// Asks for confirmation of a destructive command unless --yes.
pub fn confirm(what: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    match prompt(&format!("{what} Are you sure? [N]> "))? {
        Some(a) if a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes") => Ok(()),
        Some(_) => anyhow::bail!("cancelled"),
        None => anyhow::bail!("{what} Confirm with --yes (no terminal to ask)."),
    }
}
