//! The CLI side of the admin channel: send one request, print the answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::commands::command::Command;
use crate::commands::protocol::{socket_path, Credentials, Request, Response};

/// The node user of this command line (`pvo --user NAME`), set once by `main`.
static CREDENTIALS: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();

/// Runs the commands of this process as `user` (the node checks the password).
pub fn set_credentials(c: Credentials) {
    let _ = CREDENTIALS.set(c);
}

static LEVEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `--level`: the cluster level the commands of this process read or change.
pub fn set_level(level: String) {
    let _ = LEVEL.set(level);
}

/// The `--level` of this process's commands.
pub fn level() -> Option<String> {
    LEVEL.get().cloned()
}

/// The credentials to send with each request, if `--user` was given.
pub fn credentials() -> Result<Option<Credentials>> {
    Ok(CREDENTIALS.get().cloned())
}

/// The password for `pvo --user NAME`: from --password-file, from `PVO_PASSWORD`, or
/// asked for without echo in a terminal.
pub fn read_password(user: &str, file: Option<&Path>) -> Result<String> {
    use std::io::IsTerminal;
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the password file {}", f.display()))?;
        return Ok(text.lines().next().unwrap_or("").to_string());
    }
    if let Ok(p) = std::env::var("PVO_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("--user {user}: give the password in PVO_PASSWORD or with --password-file FILE (no terminal to ask)");
    }
    eprint!("Password for {user}: ");
    let _ = std::io::stderr().flush();
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let _ = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    let _ = stty("echo");
    eprintln!();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Sends `request` to the node whose data directory is `dir`.
pub fn call(dir: &Path, request: &Request) -> Result<Response> {
    let path = socket_path(dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            bail!(
                "no PVO node is running with data directory {} (cannot connect to {}: {}).\n\
                 Start one with `pvo quickstart --dir {}` or `pvo gateway run --config FILE`, \
                 or select another node with --dir.",
                shown.display(),
                path.display(),
                crate::net::net_error::describe(&e),
                dir.display()
            );
        }
    };
    // Long-running commands (telnet to a black hole, deleterecipients on a
    // huge queue) answer within minutes, not never.
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .context("sending the command to the node")?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .context("reading the node's answer")?;
    if answer.is_empty() {
        bail!("the node closed the admin connection without answering");
    }
    serde_json::from_str(&answer).context("the node's answer is not valid JSON")
}

/// Runs a command and prints it the way the user asked; exit code 1 on failure.
pub fn run(dir: &Path, command: Command, json: bool) -> Result<()> {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "admin".into());
    let resp = call(
        dir,
        &Request {
            command,
            user,
            auth: credentials()?,
            level: LEVEL.get().cloned(),
        },
    )?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "ok": resp.ok, "data": resp.data, "text": resp.text })
            )?
        );
    } else if !resp.text.is_empty() {
        if resp.ok {
            println!("{}", resp.text.trim_end());
        } else {
            eprintln!("{}", resp.text.trim_end());
        }
    }
    if !resp.ok {
        std::process::exit(1);
    }
    Ok(())
}
