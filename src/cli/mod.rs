//! Command-line definitions of the appliance commands that are grouped in
//! their own files, flattened into the top-level `pvo` command.
//!
//! The same definitions parse command lines that arrive over SSH (`crate::ssh`), inside
//! the node: there, [`with_remote`] marks the parsing thread so that nothing prompts on
//! or reads from the node's own terminal ([`stdin_is_terminal`] is false; confirmations
//! need `--yes`).

pub mod config;
pub mod diag;
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
