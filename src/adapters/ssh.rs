//! SSH on every node: the appliance command set for people (an interactive shell with the
//! `HOSTNAME> ` prompt) and for programs (one-shot exec: `ssh admin@gw status` prints the
//! status and exits 0, or 1 when the command failed).
//!
//! `[ssh]` in the configuration turns it on (interface, default the first; port, default
//! 2222; 0 lets the system choose, which is what the tests do). The node prints
//! `SSH listening on IP:PORT` at start. A commit that changes `[ssh]` moves the server
//! (`crate::servers`): the new address is bound first, then the old one stops.
//!
//! Users log in with their password or with one of the public keys stored with them
//! (`userconfig sshkey add`). Every command line goes through the same clap definitions
//! as the CLI (`crate::parse_remote`, marked remote so that nothing prompts on the
//! node's terminal: confirmations need `--yes`) and then through
//! `commands::dispatch_as` with the user's [`Identity`], so the role checks and the
//! audit trail are the same as on the admin socket, with `from` = `ssh ADDRESS`.
//!
//! The host key is ed25519, generated at the first start into
//! `DATA_DIR/ssh/ssh_host_ed25519_key` (mode 0600, OpenSSH format, with the `.pub`
//! beside it for known_hosts).
//!
//! # Security
//!
//! A machine joining the cluster with a join token logs in as the reserved user
//! `pvojoin` with the token's secret as the password (`commands::login_join_token`: the
//! store must know it as a token that works; wrong secrets are throttled and audited like
//! wrong passwords); its identity may run only `clusterconfig joininfo`
//! (`users::RoleDef::Joiner`, in the permission table like every role).
//!
//! Only the `password` and `publickey` methods are offered; a refusal takes a constant
//! time (russh's `auth_rejection_time`) and is recorded in the audit trail (a password
//! failure each time, an unknown key once per connection). Passwords are throttled per
//! account and per address like on the web UI and `pvo --user` (`crate::core::login_throttle`):
//! a throttled attempt is refused unchecked and the connection is closed with the reason
//! ("Too many failed logins for this account; try again in N s"), which OpenSSH prints.
//! The identification string names no version (`SSH-2.0-PVO`). No port forwarding, agent,
//! X11 or subsystem is served: the handler's defaults refuse them. Input is read as
//! lines; a line editor in pty mode echoes printable characters and handles backspace,
//! Ctrl-C, Ctrl-U and Ctrl-D, and swallows escape sequences (arrow keys), so nothing a
//! client types reaches the terminal of another. Output is the commands' text, whose
//! sender-controlled parts are already escaped by the handlers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::mpsc;

use crate::commands::protocol::Request;
use crate::core::state::Handles;
use crate::core::users::{Identity, Origin, JOIN_USER};
use crate::net::host_key::host_key;

/// The SSH server's settings, with the host key (generated at the first start).
pub fn server_config(cfg: &crate::core::config::Config) -> Result<Arc<russh::server::Config>> {
    let key = host_key(&cfg.data_dir.join("ssh"))?;
    Ok(Arc::new(russh::server::Config {
        // No version in the banner: it only helps someone matching exploits to builds.
        server_id: russh::SshId::Standard(std::borrow::Cow::Borrowed("SSH-2.0-PVO")),
        methods: MethodSet::from(&[MethodKind::Password, MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(500),
        // OpenSSH asks with "none" first to learn the methods: no need to wait there.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(60)),
        max_auth_attempts: 6,
        nodelay: true,
        ..Default::default()
    }))
}

/// The accept loop of the SSH server on `listener` (bound by `crate::servers`). When
/// `stop` turns true, each session may go on for `shutdown::GRACE`, then it is
/// disconnected.
pub async fn serve(
    shared: Arc<Handles>,
    listener: tokio::net::TcpListener,
    config: Arc<russh::server::Config>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ssh accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handle_slot = Arc::new(std::sync::OnceLock::new());
        let handler = Conn {
            shared: shared.clone(),
            peer,
            id: None,
            method: "",
            channels: HashMap::new(),
            key_failure_recorded: false,
            handle: handle_slot.clone(),
        };
        let config = config.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut session = match russh::server::run_stream(config, stream, handler).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("ssh handshake with {peer} failed: {e}");
                    return;
                }
            };
            let handle = session.handle();
            let _ = handle_slot.set(handle.clone());
            let ended = tokio::select! {
                r = &mut session => Some(r),
                _ = crate::core::shutdown::closing(stop) => {
                    tokio::time::timeout(crate::core::shutdown::GRACE, &mut session).await.ok()
                }
            };
            match ended {
                Some(Err(e)) => tracing::debug!("ssh session from {peer} ended: {e}"),
                Some(Ok(())) => {}
                None => {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            "the SSH service moved (configuration committed)".to_string(),
                            "en".to_string(),
                        )
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), session).await;
                }
            }
        });
    }
}

/// Input for a running shell.
enum Input {
    Data(Vec<u8>),
    Eof,
}

struct ChannelState {
    pty: bool,
    input: Option<mpsc::UnboundedSender<Input>>,
}

/// One SSH connection.
struct Conn {
    shared: Arc<Handles>,
    peer: SocketAddr,
    id: Option<Identity>,
    /// How the user logged in, for the audit trail.
    method: &'static str,
    channels: HashMap<ChannelId, ChannelState>,
    key_failure_recorded: bool,
    /// The session's handle (set once the handshake is done), to close the connection
    /// with a reason when a login is throttled.
    handle: Arc<std::sync::OnceLock<russh::server::Handle>>,
}

impl Conn {
    fn origin(&self) -> Origin {
        Origin::Ssh(self.peer)
    }

    async fn key_refused(&mut self, user: &str) {
        if !self.key_failure_recorded {
            self.key_failure_recorded = true;
            crate::commands::audit_login_failure(
                &self.shared,
                user,
                &self.origin(),
                "ssh publickey",
                "key not authorized for this user",
            )
            .await;
        }
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        // A joining machine: the password is a join token's secret, checked against the
        // cluster's store; no stored user has this name (`users::check_name`).
        let login = if user == JOIN_USER {
            self.method = "ssh join token";
            crate::commands::login_join_token(&self.shared, password, self.peer).await
        } else {
            self.method = "ssh password";
            crate::commands::login(&self.shared, user, password, self.origin(), "ssh password")
                .await
        };
        match login {
            Ok(id) => {
                self.id = Some(id);
                Ok(Auth::Accept)
            }
            Err(refused) => {
                let reason = refused.throttled.map(|t| t.to_string()).or(refused.tell);
                let (Some(t), Some(h)) = (reason, self.handle.get()) else {
                    return Ok(Auth::reject());
                };
                // SSH has no message for a refused password: the reason of a
                // disconnect is what the client shows. It is queued from a task (the
                // session loop waits for this handler) and goes out right after the
                // failure; the failure still offers a password, so a client with a
                // prompt left reads on instead of giving up before the reason arrives.
                let h = h.clone();
                tokio::spawn(async move {
                    let _ = h
                        .disconnect(
                            russh::Disconnect::NoMoreAuthMethodsAvailable,
                            t,
                            "en".to_string(),
                        )
                        .await;
                });
                Ok(Auth::Reject {
                    proceed_with_methods: Some(MethodSet::from(&[MethodKind::Password][..])),
                    partial_success: false,
                })
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.access.users.key_allowed(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            self.key_refused(user).await;
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.access.users.key_allowed(user, key.public_key) {
            if let Some(id) = self.shared.access.users.identity(user, self.origin()) {
                self.id = Some(id);
                self.method = "ssh publickey";
                return Ok(Auth::Accept);
            }
        }
        self.key_refused(user).await;
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(id) = &self.id {
            crate::commands::audit_login_success(&self.shared, id, self.method).await;
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(
            channel.id(),
            ChannelState {
                pty: false,
                input: None,
            },
        );
        // The channel's own message queue is not read (the handler's callbacks are):
        // dropping it makes russh skip it instead of filling it.
        drop(channel);
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.pty = true;
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(id), Some(state)) = (self.id.clone(), self.channels.get_mut(&channel)) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let (tx, rx) = mpsc::unbounded_channel();
        state.input = Some(tx);
        let pty = state.pty;
        session.channel_success(channel)?;
        let handle = session.handle();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let out = Output {
                handle,
                channel,
                pty,
            };
            shell(shared, id, out, rx).await;
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(id), Some(state)) = (self.id.clone(), self.channels.get(&channel)) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let pty = state.pty;
        session.channel_success(channel)?;
        let line = String::from_utf8_lossy(data).into_owned();
        let handle = session.handle();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let out = Output {
                handle,
                channel,
                pty,
            };
            let status = match run_line(&shared, &id, &line).await {
                Ran::Output { text, ok, code } => {
                    if ok {
                        out.stdout(&text).await;
                    } else {
                        out.stderr(&text).await;
                    }
                    code
                }
                Ran::Exit | Ran::Nothing => 0,
            };
            out.finish(status).await;
        });
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.channels.get(&channel).and_then(|c| c.input.as_ref()) {
            let _ = tx.send(Input::Data(data.to_vec()));
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.channels.get(&channel).and_then(|c| c.input.as_ref()) {
            let _ = tx.send(Input::Eof);
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

/// Writes to one channel; in pty mode line ends are CRLF.
struct Output {
    handle: russh::server::Handle,
    channel: ChannelId,
    pty: bool,
}

impl Output {
    fn encode(&self, text: &str) -> Vec<u8> {
        if self.pty {
            text.replace("\r\n", "\n")
                .replace('\n', "\r\n")
                .into_bytes()
        } else {
            text.as_bytes().to_vec()
        }
    }

    async fn stdout(&self, text: &str) {
        let _ = self.handle.data(self.channel, self.encode(text)).await;
    }

    async fn stderr(&self, text: &str) {
        if self.pty {
            // A pty has one stream.
            self.stdout(text).await;
        } else {
            let _ = self
                .handle
                .extended_data(self.channel, 1, self.encode(text))
                .await;
        }
    }

    async fn finish(&self, status: u32) {
        let _ = self.handle.exit_status_request(self.channel, status).await;
        let _ = self.handle.eof(self.channel).await;
        let _ = self.handle.close(self.channel).await;
    }
}

/// What one command line did.
enum Ran {
    Output { text: String, ok: bool, code: u32 },
    Exit,
    Nothing,
}

/// Runs one command line as `id`.
async fn run_line(shared: &Arc<Handles>, id: &Identity, line: &str) -> Ran {
    let words = match split_words(line) {
        Ok(w) => w,
        Err(e) => {
            return Ran::Output {
                text: format!("{e}\n"),
                ok: false,
                code: 2,
            }
        }
    };
    let Some(first) = words.first() else {
        return Ran::Nothing;
    };
    match first.as_str() {
        "exit" | "quit" | "logout" => return Ran::Exit,
        "help" | "?" if words.len() == 1 => {
            return Ran::Output {
                text: crate::appliance_help(),
                ok: true,
                code: 0,
            }
        }
        _ => {}
    }
    let words = if first == "help" {
        // `help COMMAND` is `COMMAND --help`.
        let mut w: Vec<String> = words[1..].to_vec();
        w.push("--help".into());
        w
    } else {
        words
    };
    let parsed = tokio::task::spawn_blocking(move || crate::parse_remote(words)).await;
    let (command, json, level) = match parsed {
        Ok(Ok(p)) => p,
        Ok(Err((text, code))) => {
            return Ran::Output {
                text: with_newline(text),
                ok: code == 0,
                code,
            }
        }
        Err(e) => {
            return Ran::Output {
                text: format!("the command failed inside the node: {e}\n"),
                ok: false,
                code: 1,
            }
        }
    };
    // The user as it is now: a user disabled or deleted, or given another role, during
    // the session is treated accordingly from the next command on. A joining machine is
    // no stored user: its identity (the token) stays what its login made it.
    let current = match &id.from {
        Origin::JoinToken { .. } => Some(id.clone()),
        _ => shared.access.users.identity(&id.user, id.from.clone()),
    };
    let Some(id) = current else {
        return Ran::Output {
            text: format!(
                "User \"{}\" is disabled or deleted; its commands are refused.\n",
                id.user
            ),
            ok: false,
            code: 1,
        };
    };
    let req = Request {
        command,
        user: id.user.clone(),
        auth: None,
        level,
    };
    let resp = crate::commands::dispatch_as(shared, req, &id).await;
    let text = if json {
        serde_json::to_string_pretty(
            &serde_json::json!({ "ok": resp.ok, "data": resp.data, "text": resp.text }),
        )
        .unwrap_or_default()
    } else {
        resp.text.trim_end().to_string()
    };
    Ran::Output {
        text: with_newline(text),
        ok: resp.ok,
        code: if resp.ok { 0 } else { 1 },
    }
}

fn with_newline(mut text: String) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The interactive shell: a prompt, a line editor in pty mode, one command per line.
async fn shell(
    shared: Arc<Handles>,
    id: Identity,
    out: Output,
    mut rx: mpsc::UnboundedReceiver<Input>,
) {
    let hostname = shared.config.current().hostname.clone();
    let prompt = format!("{hostname}> ");
    out.stdout(&format!(
        "PVO {} on {hostname}. Logged in as {} ({}). Type `help` for the commands, `exit` to leave.\n",
        env!("CARGO_PKG_VERSION"),
        id.user,
        id.role
    ))
    .await;
    out.stdout(&prompt).await;
    let mut editor = LineEditor::default();
    'session: while let Some(input) = rx.recv().await {
        let bytes = match input {
            Input::Data(b) => b,
            Input::Eof => break,
        };
        let (echo, events) = editor.feed(&bytes, out.pty);
        if !echo.is_empty() {
            let _ = out.handle.data(out.channel, echo).await;
        }
        for ev in events {
            match ev {
                Edit::Line(line) => match run_line(&shared, &id, &line).await {
                    Ran::Exit => break 'session,
                    Ran::Output { text, .. } => {
                        out.stdout(&text).await;
                        out.stdout(&prompt).await;
                    }
                    Ran::Nothing => out.stdout(&prompt).await,
                },
                Edit::Cancel => out.stdout(&prompt).await,
                Edit::End => break 'session,
            }
        }
    }
    out.finish(0).await;
}

/// What the line editor made of some input.
#[derive(Debug, PartialEq, Eq)]
enum Edit {
    Line(String),
    /// Ctrl-C: the line is dropped.
    Cancel,
    /// Ctrl-D on an empty line.
    End,
}

/// A minimal line editor: in pty mode it echoes, handles backspace, Ctrl-C, Ctrl-U,
/// Ctrl-D and swallows escape sequences; without a pty it only splits lines.
#[derive(Default)]
struct LineEditor {
    line: Vec<u8>,
    after_cr: bool,
    /// 0: normal; 1: after ESC; 2: inside a CSI sequence.
    escape: u8,
}

impl LineEditor {
    fn feed(&mut self, bytes: &[u8], pty: bool) -> (Vec<u8>, Vec<Edit>) {
        let mut echo = Vec::new();
        let mut events = Vec::new();
        for &b in bytes {
            match self.escape {
                1 => {
                    self.escape = if b == b'[' || b == b'O' { 2 } else { 0 };
                    continue;
                }
                2 => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = 0;
                    }
                    continue;
                }
                _ => {}
            }
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    if pty {
                        echo.extend_from_slice(b"\r\n");
                    }
                    let line = String::from_utf8_lossy(&std::mem::take(&mut self.line))
                        .trim()
                        .to_string();
                    events.push(Edit::Line(line));
                }
                0x7f | 0x08 => {
                    if self.line.pop().is_some() && pty {
                        // Drop a whole UTF-8 character.
                        while self.line.last().is_some_and(|c| (c & 0xc0) == 0x80) {
                            self.line.pop();
                        }
                        if let Some(&c) = self.line.last() {
                            if c >= 0xc0 {
                                self.line.pop();
                            }
                        }
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x03 => {
                    self.line.clear();
                    if pty {
                        echo.extend_from_slice(b"^C\r\n");
                    }
                    events.push(Edit::Cancel);
                }
                0x04 => {
                    if self.line.is_empty() {
                        events.push(Edit::End);
                    }
                }
                0x15 => {
                    if pty {
                        for _ in 0..String::from_utf8_lossy(&self.line).chars().count() {
                            echo.extend_from_slice(b"\x08 \x08");
                        }
                    }
                    self.line.clear();
                }
                0x1b => self.escape = 1,
                b'\t' => {
                    self.line.push(b' ');
                    if pty {
                        echo.push(b' ');
                    }
                }
                b if b < 0x20 => {}
                b => {
                    if self.line.len() < 8192 {
                        self.line.push(b);
                        if pty {
                            echo.push(b);
                        }
                    }
                }
            }
        }
        (echo, events)
    }
}

/// Splits a command line into words like a shell: spaces separate, '…' and "…" quote,
/// a backslash escapes the next character (inside "…" only `"` and `\`).
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unbalanced ' in the command line".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unbalanced \" in the command line".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unbalanced \" in the command line".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"quarantine search --subject "hello world" --sender 'a b'"#).unwrap(),
            [
                "quarantine",
                "search",
                "--subject",
                "hello world",
                "--sender",
                "a b"
            ]
        );
        assert_eq!(split_words(r"a\ b c").unwrap(), ["a b", "c"]);
        assert_eq!(
            split_words(r#""say \"hi\"" ''"#).unwrap(),
            ["say \"hi\"", ""]
        );
        assert!(split_words("'open").is_err());
        assert!(split_words("   ").unwrap().is_empty());
    }

    #[test]
    fn line_editor() {
        let mut e = LineEditor::default();
        let (echo, ev) = e.feed(b"stat", true);
        assert_eq!(echo, b"stat");
        assert!(ev.is_empty());
        let (echo, ev) = e.feed(b"x\x7fus\r", true);
        assert_eq!(echo, b"x\x08 \x08us\r\n");
        assert_eq!(ev, vec![Edit::Line("status".into())]);
        // Arrow keys are swallowed; CRLF is one line end.
        let (_, ev) = e.feed(b"\x1b[Atophosts\r\n\x03\x04", true);
        assert_eq!(
            ev,
            vec![Edit::Line("tophosts".into()), Edit::Cancel, Edit::End]
        );
        // Without a pty: no echo, LF ends lines.
        let mut e = LineEditor::default();
        let (echo, ev) = e.feed(b"status\nhelp\n", false);
        assert!(echo.is_empty());
        assert_eq!(
            ev,
            vec![Edit::Line("status".into()), Edit::Line("help".into())]
        );
    }
}
