//! One inbound SMTP session: the command loop, DATA, and the reply to each.
//!
//! Replies to pipelined commands are buffered and flushed when the input
//! holds no further complete command, before a 354, and before waiting for
//! the spool, as RFC 2920 allows. The `250` after DATA is sent only after the
//! spool has fsynced the message.
//!
//! # Security
//! Input is framed by `pvo_proto::line` (bounded line length) and DATA by
//! `pvo_proto::data::DataDecoder`: a bare CR or LF never ends a line of DATA
//! nor the DATA itself, so the 2023 SMTP smuggling sequences stay inside the
//! message, and the stored body holds CRLF line ends only. Bytes pipelined
//! after STARTTLS are discarded (the STARTTLS command injection of 2011).
//! Relaying is decided per recipient: only a RELAY policy may send to domains
//! the RAT does not accept, and from any other sender a local part with `%`,
//! `!` or `@` (sender-specified routing) is refused outright. `MAIL FROM` and
//! `RCPT TO` are parsed by `pvo_proto::path` from the raw bytes (never by
//! smtp-proto, which drops the quotes of a quoted local part), so the mailbox
//! stored is the one the client named; SMTPUTF8 is not offered, and non-ASCII
//! addresses and unannounced parameters are refused.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvo_proto::address::Mailbox;
use pvo_proto::data::{DataDecoder, DataStatus};
use pvo_proto::line::{next_line, Frame, Framer, Line};
use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Deps;
use crate::core::config::{Behavior, Config};
use crate::core::envelope::Envelope;
use crate::core::ids::Kind;
use crate::core::resolve::ReverseDns;
use crate::net::smtp_io::Io;

pub struct Session {
    shared: Deps,
    cfg: Arc<Config>,
    listener: usize,
    icid: u64,
    peer: SocketAddr,
    rdns: ReverseDns,
    policy: Option<usize>,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    tx: Option<Transaction>,
    messages: usize,
    commands: usize,
    bad_commands: usize,
    started: Instant,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Set on a `cpq_listener`.
    cpq: Option<CpqSession>,
    /// The load of this session's policy, for the command timeout under pressure.
    pressure: Option<super::Pressure>,
    /// Since when the session has been waiting for a command, and the command
    /// count then: trickled bytes of an unfinished command do not reset it.
    idle_since: Instant,
    idle_commands: usize,
}

/// The CPQ state of a session on a `cpq_listener`.
struct CpqSession {
    role: pvo_proto::cpq::Role,
    /// The verified peer's certificate CN, once TLS is up.
    peer: Option<String>,
    /// Its certificate (DER), checked again against the current peer policy before
    /// each CPQ command: a revocation or commit also ends a session kept open.
    cert: Option<Vec<u8>>,
    /// The accepted `XPVO-META` record for the next transaction.
    meta: Option<pvo_proto::cpq::MetaRecord>,
}

struct Transaction {
    mid: u64,
    sender: String,
    rcpts: Vec<String>,
}

enum Flow {
    Continue,
    Close,
    StartTls,
    Data,
}

impl Session {
    pub fn new(
        shared: Deps,
        cfg: Arc<Config>,
        listener: usize,
        icid: u64,
        peer: SocketAddr,
        rdns: ReverseDns,
        policy: Option<usize>,
    ) -> Session {
        Session {
            shared,
            listener,
            icid,
            peer,
            rdns,
            policy,
            helo: None,
            esmtp: false,
            tls: false,
            tx: None,
            messages: 0,
            commands: 0,
            bad_commands: 0,
            started: Instant::now(),
            pressure: None,
            idle_since: Instant::now(),
            idle_commands: 0,
            inbuf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
            cpq: (cfg.listeners[listener].kind == crate::core::config::ListenerType::Cpq).then(
                || CpqSession {
                    role: match cfg.role {
                        crate::core::config::Role::Manager => pvo_proto::cpq::Role::Manager,
                        crate::core::config::Role::Gateway => pvo_proto::cpq::Role::Gateway,
                    },
                    peer: None,
                    cert: None,
                    meta: None,
                },
            ),
            cfg,
        }
    }

    fn hostname(&self) -> &str {
        &self.cfg.interfaces[self.cfg.listeners[self.listener].interface].hostname
    }

    /// Counts a refusal on a cpq_listener (`cpq::gateways`; a gateway's too), under
    /// the peer's id when one is known (the certificate's, else on a manager the added
    /// gateway with the source address), else under the source address.
    fn cpq_refused(&self, reason: &'static str, text: &str) {
        let Some(c) = &self.cpq else {
            return;
        };
        let manager = c.role == pvo_proto::cpq::Role::Manager;
        let who = c
            .peer
            .clone()
            .or_else(|| {
                manager
                    .then(|| {
                        crate::core::cpq::gateways::gateway_at(
                            &(&self.shared).into(),
                            self.peer.ip(),
                        )
                    })
                    .flatten()
            })
            .unwrap_or_else(|| self.peer.ip().to_string());
        self.shared.cpq.state.stats.refused(
            &who,
            reason,
            format!("ICID {} from {}: {text}", self.icid, self.peer.ip()),
        );
    }

    fn policy(&self) -> &crate::core::config::Policy {
        &self.cfg.policies[self.policy.expect("an accepting session has a policy")]
    }

    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self, io: &mut Box<dyn Io>) -> std::io::Result<()> {
        if !self.out.is_empty() {
            io.write_all(&self.out).await?;
            io.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads more input; `Ok(false)` on EOF. Enforces the command and
    /// session timeouts.
    async fn fill(
        &mut self,
        io: &mut Box<dyn Io>,
        timeout: Duration,
    ) -> Result<bool, &'static str> {
        let session_left = Duration::from_secs(self.cfg.limits.session_timeout)
            .saturating_sub(self.started.elapsed());
        if session_left.is_zero() {
            return Err("session");
        }
        let wait = timeout.min(session_left);
        let mut chunk = [0u8; 16 * 1024];
        let mut disconnect = self.shared.disconnect.clone();
        if *disconnect.borrow_and_update() {
            return Err("shutdown");
        }
        tokio::select! {
            r = tokio::time::timeout(wait, io.read(&mut chunk)) => match r {
                Ok(Ok(0)) => Ok(false),
                Ok(Ok(n)) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    Ok(true)
                }
                Ok(Err(_)) => Ok(false),
                Err(_) => Err(if wait < timeout { "session" } else { "command" }),
            },
            _ = disconnect.wait_for(|d| *d) => Err("shutdown"),
        }
    }

    /// Lets the command timeout shorten while the session's policy is under pressure.
    pub fn set_pressure(&mut self, pressure: super::Pressure) {
        self.pressure = Some(pressure);
    }

    /// Waits for more of a command in the greeting/command phase. The time
    /// allowed runs from the end of the previous command, so a client that
    /// trickles bytes gets no longer than one that sends nothing:
    /// `command_timeout`, or `command_timeout_under_pressure` while the policy
    /// is above `pressure_percent` of its `max_concurrency`; a session that is
    /// already waiting when the pressure starts is cut as soon as it has waited
    /// the shorter time.
    async fn fill_command(
        &mut self,
        io: &mut Box<dyn Io>,
        timeout: Duration,
    ) -> Result<bool, &'static str> {
        if self.inbuf.is_empty() || self.commands != self.idle_commands {
            self.idle_since = Instant::now();
            self.idle_commands = self.commands;
        }
        let short =
            Duration::from_secs(self.cfg.limits.command_timeout_under_pressure).min(timeout);
        loop {
            let Some(mut pressure) = self.pressure.take() else {
                let left = timeout.saturating_sub(self.idle_since.elapsed());
                return self.fill(io, left.max(Duration::from_millis(1))).await;
            };
            let high = pressure.high();
            let allowed = if high { short } else { timeout };
            let left = allowed.saturating_sub(self.idle_since.elapsed());
            if left.is_zero() {
                if high {
                    self.shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::IdleUnderPressure {
                            icid: self.icid,
                            idle_secs: short.as_secs(),
                            policy: &pressure.policy,
                            open: pressure.open(),
                            max: pressure.max,
                        });
                }
                self.pressure = Some(pressure);
                return Err("command");
            }
            let r = tokio::select! {
                r = self.fill(io, left) => Some(r),
                _ = pressure.changed() => None,
            };
            self.pressure = Some(pressure);
            match r {
                // The wait ran out: loop once more to say why.
                Some(Err("command")) => {}
                Some(r) => return r,
                None => {}
            }
        }
    }

    /// A host whose policy is REJECT: a 554 banner, then only QUIT is honoured.
    pub async fn run_rejected(mut self, mut io: Box<dyn Io>) {
        self.cpq_refused(
            crate::core::cpq::refusal::ADDRESS,
            "the address is not an added gateway's (cpq_listener HAT: REJECT)",
        );
        let host = self.hostname().to_string();
        self.reply(&format!("554 5.7.1 {host} Access denied"));
        if self.flush(&mut io).await.is_err() {
            return;
        }
        for _ in 0..self.cfg.limits.max_bad_commands {
            loop {
                match next_line(&self.inbuf, self.cfg.limits.max_line_length) {
                    Line::Complete { len } => {
                        let quit = self.inbuf[..len].to_ascii_uppercase().starts_with(b"QUIT");
                        self.inbuf.drain(..len);
                        if quit {
                            self.reply(&format!("221 2.0.0 {host} closing connection"));
                            let _ = self.flush(&mut io).await;
                            return;
                        }
                        self.reply("503 5.5.1 Bad sequence of commands: access denied");
                        break;
                    }
                    Line::TooLong => return,
                    Line::Incomplete => match self.fill(&mut io, Duration::from_secs(30)).await {
                        Ok(true) => {}
                        _ => return,
                    },
                }
            }
            if self.flush(&mut io).await.is_err() {
                return;
            }
        }
    }

    pub async fn run_refused(mut self, mut io: Box<dyn Io>, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        let _ = self.flush(&mut io).await;
    }

    pub async fn run(mut self, mut io: Box<dyn Io>) {
        let host = self.hostname().to_string();
        self.reply(&format!("220 {host} ESMTP PVO"));
        if self.flush(&mut io).await.is_err() {
            return;
        }
        let command_timeout = Duration::from_secs(self.cfg.limits.command_timeout);
        // A CPQ record line is longer than any SMTP command.
        let max_line = if self.cpq.is_some() {
            self.cfg
                .limits
                .max_line_length
                .max(pvo_proto::cpq::MAX_LINE_LEN)
        } else {
            self.cfg.limits.max_line_length
        };
        // Remembers across reads that the rest of an over-long line is being skipped.
        let mut framer = Framer::new(max_line);
        loop {
            // Answer every complete command already received.
            let flow = loop {
                match framer.next(&self.inbuf) {
                    Frame::Line { len } => {
                        let line: Vec<u8> = self.inbuf.drain(..len).collect();
                        let flow = self.command(&line).await;
                        if !matches!(flow, Flow::Continue) {
                            break flow;
                        }
                    }
                    Frame::TooLong { len } => {
                        self.inbuf.drain(..len);
                        self.reply("500 5.5.2 Line too long");
                        if self.bad_command() {
                            break Flow::Close;
                        }
                    }
                    Frame::Discard { len } => {
                        self.inbuf.drain(..len);
                    }
                    Frame::Incomplete => break Flow::Continue,
                }
            };
            match flow {
                Flow::Close => {
                    let _ = self.flush(&mut io).await;
                    break;
                }
                Flow::StartTls => {
                    if self.flush(&mut io).await.is_err() {
                        break;
                    }
                    // Anything pipelined behind STARTTLS was sent in the clear
                    // and must not be executed inside the TLS session.
                    self.inbuf.clear();
                    let server = match (&self.cpq, self.shared.tls.cpq()) {
                        (None, _) => self.shared.tls.server(),
                        (Some(_), Some(t)) => t.server.clone(),
                        (Some(_), None) => return,
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(server);
                    match tokio::time::timeout(Duration::from_secs(60), acceptor.accept(io)).await {
                        Ok(Ok(tls)) => {
                            let (proto, cipher) = crate::net::tls::describe(tls.get_ref().1);
                            let peer = crate::net::trust::peer_common_name(tls.get_ref().1);
                            if let Some(c) = self.cpq.as_mut() {
                                c.peer = peer.clone();
                                c.cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|p| p.first())
                                    .map(|d| d.to_vec());
                                c.meta = None;
                            }
                            self.shared
                                .mail
                                .log
                                .emit(crate::core::events::Event::TlsSuccess {
                                    icid: self.icid,
                                    protocol: &proto,
                                    cipher: &cipher,
                                    peer: peer.as_deref().filter(|_| self.cpq.is_some()),
                                });
                            io = Box::new(tls);
                            self.tls = true;
                            self.helo = None;
                            self.tx = None;
                            continue;
                        }
                        Ok(Err(e)) => {
                            let why = if self.cpq.is_some() {
                                crate::net::trust::server_error_text(&e)
                            } else {
                                e.to_string()
                            };
                            // A certificate of the deployment that this node does not
                            // accept (revoked, another role, not its manager, not
                            // enrolled): counted under its own reason and peer.
                            let reason = match crate::net::trust::refusal_of(&e) {
                                Some(r) => {
                                    if let Some(c) = self.cpq.as_mut() {
                                        c.peer = r.peer.clone();
                                    }
                                    r.reason
                                }
                                None => crate::core::cpq::refusal::TLS,
                            };
                            self.cpq_refused(reason, &format!("TLS failed: {why}"));
                            self.shared
                                .mail
                                .log
                                .emit(crate::core::events::Event::TlsFailed {
                                    icid: self.icid,
                                    why: &why,
                                });
                            self.abort_transaction("TLS failed");
                            return;
                        }
                        Err(_) => {
                            self.shared
                                .mail
                                .log
                                .emit(crate::core::events::Event::TlsTimeout { icid: self.icid });
                            self.abort_transaction("TLS failed");
                            return;
                        }
                    }
                }
                Flow::Data => {
                    if self.flush(&mut io).await.is_err() {
                        break;
                    }
                    match self.data(&mut io).await {
                        Ok(true) => {}
                        _ => break,
                    }
                    continue;
                }
                Flow::Continue => {}
            }
            if self.flush(&mut io).await.is_err() {
                break;
            }
            match self.fill_command(&mut io, command_timeout).await {
                Ok(true) => {}
                Ok(false) => break,
                Err("shutdown") => {
                    self.reply(&format!(
                        "421 4.3.2 {host} Service shutting down, closing connection"
                    ));
                    let _ = self.flush(&mut io).await;
                    break;
                }
                Err(which) => {
                    self.reply(&format!("421 4.4.2 {host} Error: {which} timeout exceeded"));
                    let _ = self.flush(&mut io).await;
                    self.shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::Timeout {
                            icid: self.icid,
                            which,
                        });
                    break;
                }
            }
        }
        self.abort_transaction("Receiving aborted by sender");
        let _ = io.shutdown().await;
    }

    /// Counts a bad command; true when the limit is reached and the session
    /// must end (the reply has been queued).
    fn bad_command(&mut self) -> bool {
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.limits.max_bad_commands {
            self.reply("421 Exceeded bad SMTP command limit, disconnecting.");
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::BadCommandLimit { icid: self.icid });
            return true;
        }
        false
    }

    fn abort_transaction(&mut self, why: &str) {
        if let Some(tx) = self.tx.take() {
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::Aborted { mid: tx.mid, why });
        }
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        self.commands += 1;
        if self.commands > self.cfg.limits.max_commands_per_session {
            self.reply("421 4.7.0 Too many commands in this session, closing connection");
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::CommandLimit {
                    icid: self.icid,
                    limit: self.cfg.limits.max_commands_per_session as u64,
                });
            return Flow::Close;
        }
        if self.cpq.is_some() {
            match pvo_proto::cpq::parse_command(line) {
                Ok(None) => {}
                Ok(Some(cmd)) => return self.cpq_command(cmd).await,
                Err(e) => {
                    let reply = e.reply().to_string();
                    self.cpq_refused(
                        crate::core::cpq::refusal::BAD_RECORD,
                        &format!("bad CPQ command: {reply}"),
                    );
                    self.reply(&reply);
                    return if self.bad_command() {
                        Flow::Close
                    } else {
                        Flow::Continue
                    };
                }
            }
        }
        // MAIL and RCPT are never left to smtp-proto: it unquotes local parts
        // and replaces invalid UTF-8, so the address would no longer be the
        // mailbox the client named (and it does not take address literals).
        if let Some(path) = pvo_proto::path::parse(line) {
            return match path {
                Ok(pvo_proto::path::Command::Mail { sender, size }) => {
                    self.mail(sender, usize::try_from(size).unwrap_or(usize::MAX))
                }
                Ok(pvo_proto::path::Command::Rcpt { rcpt }) => self.rcpt(rcpt),
                Err(e) => {
                    if let (
                        pvo_proto::path::PathError::Address { mail: false, .. }
                        | pvo_proto::path::PathError::NonAscii { mail: false },
                        Some(tx),
                    ) = (&e, &self.tx)
                    {
                        self.shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::RcptRejected {
                                mid: tx.mid,
                                icid: self.icid,
                                rid: tx.rcpts.len(),
                                error: &e,
                            });
                    }
                    self.reply(&e.reply());
                    if self.bad_command() {
                        Flow::Close
                    } else {
                        Flow::Continue
                    }
                }
            };
        }
        let req = Request::parse(&mut line.iter());
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                use smtp_proto::Error as E;
                let text = match e {
                    E::UnknownCommand => "500 5.5.1 Command unrecognized".to_string(),
                    E::InvalidSenderAddress => "553 5.1.7 Bad sender address syntax".to_string(),
                    E::InvalidRecipientAddress => {
                        "553 5.1.3 Bad recipient address syntax".to_string()
                    }
                    E::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
                    E::InvalidParameter { param } => {
                        format!("501 5.5.4 Invalid parameter {param:?}")
                    }
                    E::UnsupportedParameter { param } => {
                        format!("504 5.5.4 Unsupported parameter {param:?}")
                    }
                    E::ResponseTooLong => "500 5.5.2 Line too long".to_string(),
                    E::NeedsMoreData { .. } => "500 5.5.2 Incomplete command".to_string(),
                    _ => "500 5.5.1 Command unrecognized".to_string(),
                };
                self.reply(&text);
                return if self.bad_command() {
                    Flow::Close
                } else {
                    Flow::Continue
                };
            }
        };
        match req {
            Request::Ehlo { host } => self.hello(host.as_ref(), true),
            Request::Helo { host } => self.hello(host.as_ref(), false),
            Request::Lhlo { .. } => {
                self.reply("500 5.5.1 Command unrecognized");
                if self.bad_command() {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
            Request::StartTls => {
                if self.tls {
                    self.reply("554 5.5.1 Error: TLS already active");
                } else if self.helo.is_none() {
                    self.reply("503 5.5.1 Error: send EHLO first");
                } else {
                    self.reply("220 2.0.0 Ready to start TLS");
                    return Flow::StartTls;
                }
                Flow::Continue
            }
            // Only a MAIL or RCPT that `pvo_proto::path` did not claim (a tab
            // after the verb) gets here: refused, never taken unquoted.
            Request::Mail { .. } | Request::Rcpt { .. } => {
                self.reply("501 5.5.4 Syntax error in command");
                if self.bad_command() {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
            Request::Data => {
                match &self.tx {
                    None => self.reply("503 5.5.1 Error: need MAIL command"),
                    Some(tx) if tx.rcpts.is_empty() => {
                        self.reply("554 5.5.1 Error: no valid recipients")
                    }
                    Some(_) => {
                        self.reply("354 End data with <CR><LF>.<CR><LF>");
                        return Flow::Data;
                    }
                }
                Flow::Continue
            }
            Request::Rset => {
                self.abort_transaction("Receiving aborted by sender");
                if let Some(c) = self.cpq.as_mut() {
                    c.meta = None;
                }
                self.reply("250 2.0.0 Ok");
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.reply("250 2.0.0 Ok");
                Flow::Continue
            }
            Request::Quit => {
                let host = self.hostname().to_string();
                self.reply(&format!("221 2.0.0 {host} closing connection"));
                Flow::Close
            }
            Request::Vrfy { .. } => {
                self.reply(
                    "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
                );
                Flow::Continue
            }
            Request::Help { .. } => {
                self.reply(
                    "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS",
                );
                Flow::Continue
            }
            Request::Bdat { .. }
            | Request::Burl { .. }
            | Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. } => {
                self.reply("502 5.5.1 Error: command not implemented");
                if self.bad_command() {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
        }
    }

    fn hello(&mut self, host: &str, esmtp: bool) -> Flow {
        if host.is_empty() {
            self.reply("501 5.5.4 Syntax: EHLO hostname");
            return if self.bad_command() {
                Flow::Close
            } else {
                Flow::Continue
            };
        }
        self.abort_transaction("Receiving aborted by sender");
        self.helo = Some(host.to_string());
        self.esmtp = esmtp;
        let name = self.hostname().to_string();
        if !esmtp {
            self.reply(&format!("250 {name}"));
            return Flow::Continue;
        }
        let size = self.policy().max_message_size;
        self.reply(&format!("250-{name}"));
        self.reply("250-PIPELINING");
        self.reply(&format!("250-SIZE {size}"));
        self.reply("250-8BITMIME");
        // No SMTPUTF8: envelopes are ASCII (`pvo_proto::path` refuses the rest).
        let mut last = "ENHANCEDSTATUSCODES";
        if !self.tls {
            self.reply(&format!("250-{last}"));
            last = "STARTTLS";
        }
        if let Some(c) = self.cpq.as_mut() {
            c.meta = None;
            if self.tls {
                for kw in pvo_proto::cpq::ehlo_keywords(c.role) {
                    self.out
                        .extend_from_slice(format!("250-{last}\r\n").as_bytes());
                    last = kw;
                }
            }
        }
        self.reply(&format!("250 {last}"));
        Flow::Continue
    }

    /// `XPVO-META` / `XPVO-CONTROL` on a cpq_listener (`docs/cpq.md`).
    async fn cpq_command(&mut self, cmd: pvo_proto::cpq::CpqCommand) -> Flow {
        use pvo_proto::cpq::{CpqCommand, MetaRecord, Role};
        let Some(c) = self.cpq.as_ref() else {
            return Flow::Continue;
        };
        if !self.tls || c.peer.is_none() {
            self.cpq_refused(
                crate::core::cpq::refusal::CLEAR_TEXT,
                "a CPQ command before STARTTLS",
            );
            self.reply("530 5.7.0 Must issue a STARTTLS command first");
            return Flow::Continue;
        }
        // The peer policy may have changed since the handshake (`cpqcert revoke`, a
        // commit that deleted the gateway): the session ends as a new handshake would.
        let verdict = match (self.shared.tls.cpq(), c.cert.as_deref()) {
            (Some(t), Some(der)) => t.policy.check(der).err(),
            _ => None,
        };
        if let Some(r) = verdict {
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::CertificateNoLongerAccepted {
                    icid: self.icid,
                    why: &r,
                });
            self.cpq_refused(r.reason, &format!("certificate no longer accepted: {r}"));
            self.reply("421 4.7.0 Error: this certificate is no longer accepted, closing");
            return Flow::Close;
        }
        if self.helo.is_none() {
            self.reply("503 5.5.1 Error: send EHLO first");
            return Flow::Continue;
        }
        if self.tx.is_some() {
            self.reply("503 5.5.1 Error: CPQ commands are not allowed inside a transaction");
            return Flow::Continue;
        }
        let peer = c.peer.clone().unwrap_or_default();
        let own_id = self
            .cfg
            .cpq
            .as_ref()
            .map(|x| x.node_id.clone())
            .unwrap_or_default();
        match (cmd, c.role) {
            (CpqCommand::Meta(MetaRecord::Transfer(t)), Role::Manager) => {
                if t.gateway_id != peer {
                    self.shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::MetaRefusedIdMismatch {
                            icid: self.icid,
                            gateway: &t.gateway_id,
                            peer: &peer,
                        });
                    self.cpq_refused(
                        crate::core::cpq::refusal::ID_MISMATCH,
                        &format!(
                            "the record names gateway {}, the certificate {peer}",
                            t.gateway_id
                        ),
                    );
                    self.reply("550 5.7.1 the gateway id does not match the client certificate");
                } else if !self
                    .cfg
                    .cpq
                    .as_ref()
                    .is_some_and(|x| x.gateways.iter().any(|g| g.id == t.gateway_id))
                {
                    self.shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::MetaRefusedNotEnrolled {
                            icid: self.icid,
                            gateway: &t.gateway_id,
                        });
                    self.cpq_refused(
                        crate::core::cpq::refusal::NOT_ENROLLED,
                        &format!("gateway {} is not added to this manager", t.gateway_id),
                    );
                    self.reply("550 5.7.1 this gateway is not enrolled on this manager");
                } else {
                    self.cpq.as_mut().unwrap().meta = Some(MetaRecord::Transfer(t));
                    self.reply(pvo_proto::cpq::META_OK_REPLY);
                }
            }
            (CpqCommand::Meta(MetaRecord::Release(r)), Role::Gateway) => {
                if r.gateway_id != own_id {
                    self.shared.mail.log.emit(
                        crate::core::events::Event::MetaRefusedOtherGateway {
                            icid: self.icid,
                            release: &r.release_id,
                            gateway: &r.gateway_id,
                            own: &own_id,
                        },
                    );
                    self.reply("550 5.7.1 this release is meant for another gateway");
                } else {
                    self.cpq.as_mut().unwrap().meta = Some(MetaRecord::Release(r));
                    self.reply(pvo_proto::cpq::META_OK_REPLY);
                }
            }
            (CpqCommand::Control(ctl), Role::Manager) => {
                if ctl.gateway_id != peer {
                    self.cpq_refused(
                        crate::core::cpq::refusal::ID_MISMATCH,
                        &format!(
                            "the control record names gateway {}, the certificate {peer}",
                            ctl.gateway_id
                        ),
                    );
                    self.reply("550 5.7.1 the gateway id does not match the client certificate");
                } else {
                    let r = crate::core::cpq::manager::control(
                        &(&self.shared).into(),
                        &self.shared.access,
                        ctl,
                        self.icid,
                    )
                    .await;
                    self.reply(&r);
                }
            }
            (CpqCommand::Meta(_), _) => {
                self.reply("502 5.5.1 Error: this kind of XPVO-META record is not accepted here");
            }
            (CpqCommand::Control(_), _) => {
                self.reply("502 5.5.1 Error: XPVO-CONTROL is not accepted here");
            }
        }
        Flow::Continue
    }

    fn mail(&mut self, sender: Option<Mailbox>, size: usize) -> Flow {
        if self.helo.is_none() {
            self.reply("503 5.5.1 Error: send HELO/EHLO first");
            return Flow::Continue;
        }
        if let Some(c) = &self.cpq {
            if !self.tls || c.peer.is_none() {
                self.cpq_refused(
                    crate::core::cpq::refusal::CLEAR_TEXT,
                    "MAIL before STARTTLS",
                );
                self.reply("530 5.7.0 Must issue a STARTTLS command first");
                return Flow::Continue;
            }
            if c.meta.is_none() && self.tx.is_none() {
                self.reply("503 5.5.1 Error: send XPVO-META first");
                return Flow::Continue;
            }
        }
        if self.tx.is_some() {
            self.reply("503 5.5.1 Error: nested MAIL command");
            return Flow::Continue;
        }
        if self.messages >= self.cfg.limits.max_messages_per_session {
            self.reply("421 4.7.0 Too many messages in this session, reconnect");
            return Flow::Close;
        }
        let max = self.policy().max_message_size;
        if size > max {
            self.reply(&format!(
                "552 5.3.4 Message size exceeds fixed limit of {max} bytes"
            ));
            return Flow::Continue;
        }
        let mid = self.shared.mail.ids.next(Kind::Mid);
        let icid = self.icid;
        self.shared
            .mail
            .log
            .emit(crate::core::events::Event::Start { mid, icid });
        let wire = sender.as_ref().map(Mailbox::wire).unwrap_or_default();
        self.shared.mail.log.emit(crate::core::events::Event::From {
            mid,
            icid,
            sender: &wire,
        });
        self.tx = Some(Transaction {
            mid,
            sender: sender.map(|m| m.to_string()).unwrap_or_default(),
            rcpts: Vec::new(),
        });
        self.reply("250 2.1.0 Sender ok");
        Flow::Continue
    }

    fn rcpt(&mut self, mailbox: Mailbox) -> Flow {
        let Some(tx) = &self.tx else {
            self.reply("503 5.5.1 Error: need MAIL command");
            return Flow::Continue;
        };
        let (mid, icid, rid) = (tx.mid, self.icid, tx.rcpts.len());
        let policy = self.policy();
        if rid >= policy.max_recipients {
            self.reply("452 4.5.3 Too many recipients");
            return Flow::Continue;
        }
        let relay = policy.behavior == Behavior::Relay;
        let address = mailbox.wire();
        if !relay {
            if mailbox.has_routing() {
                self.shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::RatRejectedRouting {
                        mid,
                        icid,
                        address: &address,
                    });
                self.reply(
                    "550 5.7.1 Recipient address rejected: sender-specified routing is not allowed",
                );
                return Flow::Continue;
            }
            if !super::rat_accepts(&self.cfg, self.listener, &mailbox) {
                self.shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::RatRejected {
                        mid,
                        icid,
                        address: &address,
                    });
                self.reply("550 5.7.1 Recipient address rejected: relaying denied");
                return Flow::Continue;
            }
        }
        self.shared.mail.log.emit(crate::core::events::Event::To {
            mid,
            icid,
            rid,
            address: &address,
        });
        self.tx.as_mut().unwrap().rcpts.push(mailbox.to_string());
        self.reply("250 2.1.5 Recipient ok");
        Flow::Continue
    }

    /// Reads DATA and answers it. `Ok(false)`: the connection must close.
    async fn data(&mut self, io: &mut Box<dyn Io>) -> Result<bool, ()> {
        let max = self.policy().max_message_size;
        let mut dec = DataDecoder::new(max);
        let mut body = Vec::with_capacity(8192);
        let deadline = Instant::now() + Duration::from_secs(self.cfg.limits.data_timeout);
        let mut input = std::mem::take(&mut self.inbuf);
        loop {
            match dec.feed(&input, &mut body) {
                DataStatus::Done { consumed } => {
                    input.drain(..consumed);
                    self.inbuf = input;
                    break;
                }
                DataStatus::NeedMore => {
                    input.clear();
                    self.inbuf = input;
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.fill(io, left).await {
                        Ok(true) => {
                            input = std::mem::take(&mut self.inbuf);
                        }
                        Ok(false) => {
                            self.abort_transaction("Receiving aborted by sender");
                            return Ok(false);
                        }
                        Err(_) => {
                            let host = self.hostname().to_string();
                            self.reply(&format!("421 4.4.2 {host} Error: timeout exceeded"));
                            self.abort_transaction("Receiving timed out");
                            let _ = self.flush(io).await;
                            return Ok(false);
                        }
                    }
                }
            }
        }
        let tx = self.tx.take().expect("DATA only with a transaction");
        let (mid, icid) = (tx.mid, self.icid);
        if dec.size_exceeded() {
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::SizeExceeded {
                    mid,
                    icid,
                    max: max as u64,
                });
            self.reply(&format!(
                "552 5.3.4 Message size exceeds fixed limit of {max} bytes"
            ));
            return Ok(self.flush(io).await.is_ok());
        }
        if dec.nul_bytes() > 0 {
            // RFC 5321 (and 8BITMIME) allow no NUL; a receiver that drops them
            // would read `\r\n\0.\r\n` as an end of data. Refused, never stored.
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::NulRefused {
                    mid,
                    icid,
                    nuls: dec.nul_bytes() as usize,
                });
            self.reply("554 5.6.0 Message contains NUL characters, which SMTP does not allow");
            return Ok(self.flush(io).await.is_ok());
        }
        if dec.bare_line_endings() > 0 {
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::BareLineEndings {
                    mid,
                    icid,
                    count: dec.bare_line_endings() as usize,
                });
        }
        if let Some(meta) = self.cpq.as_mut().and_then(|c| c.meta.take()) {
            if self.flush(io).await.is_err() {
                return Ok(false);
            }
            let peer = self
                .cpq
                .as_ref()
                .and_then(|c| c.peer.clone())
                .unwrap_or_default();
            let rcpts = tx.rcpts.len() as u64;
            let reply = match meta {
                pvo_proto::cpq::MetaRecord::Transfer(t) => {
                    crate::core::cpq::manager::receive_transfer(
                        &(&self.shared).into(),
                        t,
                        mid,
                        body,
                        icid,
                        &peer,
                    )
                    .await
                }
                pvo_proto::cpq::MetaRecord::Release(r) => {
                    crate::core::cpq::gateway::receive_release(
                        &(&self.shared).into(),
                        r,
                        mid,
                        tx.sender,
                        tx.rcpts,
                        body,
                        icid,
                        &peer,
                    )
                    .await
                }
            };
            if reply.starts_with('2') {
                self.messages += 1;
                let c = &self.shared.mail.counters;
                c.messages_received.fetch_add(1, Ordering::Relaxed);
                c.recipients_received.fetch_add(rcpts, Ordering::Relaxed);
            }
            self.reply(&reply);
            return Ok(self.flush(io).await.is_ok());
        }
        let received = self.received_header(mid, &tx);
        let mut stored = Vec::with_capacity(received.len() + body.len());
        stored.extend_from_slice(received.as_bytes());
        stored.extend_from_slice(&body);
        drop(body);
        let now = crate::core::clock::unix_now();
        let env = Envelope {
            mid,
            icid,
            sender: tx.sender,
            recipients: tx.rcpts,
            received_at: now,
            source_ip: self.peer.ip().to_string(),
            listener: self.cfg.listeners[self.listener].name.clone(),
            dsn: false,
            size: stored.len() as u64,
            outgoing: self.policy().behavior == Behavior::Relay,
            scanned: false,
            cpq: None,
        };
        let len = stored.len();
        // Whatever the client pipelined behind the final dot waits until the
        // message is safe; flush our earlier replies first.
        if self.flush(io).await.is_err() {
            return Ok(false);
        }
        match self.shared.mail.spool_message(&env, stored).await {
            Ok(body) => {
                self.messages += 1;
                // Counted as received (messages and recipients) by the event.
                self.shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::Received {
                        mid,
                        bytes: len,
                        sender: &env.sender,
                        recipients: env.recipients.len(),
                    });
                self.shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::Queued { mid });
                crate::core::scanning::pipeline::submit(
                    &(&self.shared).into(),
                    Arc::new(env),
                    body,
                );
                self.reply(&format!("250 2.0.0 Ok: Message {mid} accepted"));
            }
            Err(e) => {
                // The file and the cause (the OS error is the source of an IO error).
                let why = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": ");
                self.shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::SpoolWriteFailed {
                        mid,
                        icid,
                        why: &why,
                    });
                if e.is_no_space() {
                    self.reply("452 4.3.1 Insufficient system storage");
                } else {
                    self.reply("451 4.3.0 Error: queue file write error");
                }
            }
        }
        Ok(self.flush(io).await.is_ok())
    }

    fn received_header(&self, mid: u64, tx: &Transaction) -> String {
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let rdns = self.rdns.host.as_deref().unwrap_or("unknown");
        let proto = match (self.esmtp, self.tls) {
            (true, true) => "ESMTPS",
            (true, false) => "ESMTP",
            (false, _) => "SMTP",
        };
        let helo: String = helo
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let mut h = format!(
            "Received: from {helo} ({rdns} [{}])\r\n\tby {} with {proto} id {mid}",
            self.peer.ip(),
            self.hostname()
        );
        if tx.rcpts.len() == 1 {
            let rcpt = pvo_proto::address::wire_address(&tx.rcpts[0]).unwrap_or_default();
            h.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!("; {date}\r\n"));
        h
    }
}
