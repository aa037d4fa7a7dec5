//! Delivery connections: the only place that sends mail out.
//!
//! The queue manager starts one task per connection with a first job; the
//! task resolves the next hops (SMTP route, else MX), connects from the
//! default delivery interface, negotiates TLS as the destination's mode asks,
//! and then delivers jobs one after another (pipelined MAIL/RCPT/DATA when the
//! server offers PIPELINING), asking the manager for the next job after each.
//! Every outcome goes back to the manager as an event; this module never
//! decides about retries or bounces.
//!
//! Bodies are sent with `pvo_proto::dotstuff::encode_data`, which turns any
//! bare CR or LF into CRLF: PVO never forwards a bare line ending.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::core::config::{RouteTarget, TlsMode};
use crate::core::ids::Kind;
use crate::core::queue::{Event, Job, RcptOutcome, IDLE_WAIT};
use crate::core::state::{ConfigHandle, CpqHandle, MailHandle, TlsHandle};
use crate::net::outbound::{connect, tls_error_text};
use crate::net::smtp_io::Io;

const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// The handles delivery uses: the configuration, the mail path (ids, log, queue events,
/// bodies read back), next hops, the outbound and CPQ TLS configurations, and the CPQ
/// state (endpoints, counters, the SSH refresh of an endpoint). `node` builds it.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<ConfigHandle>,
    pub cpq: Arc<CpqHandle>,
    pub mail: Arc<MailHandle>,
    pub resolver: Arc<dyn crate::core::resolve::Resolve>,
    pub tls: Arc<TlsHandle>,
}

/// The queue's [`crate::core::queue::Transport`]: SMTP to the next hop, CPQ to the manager or
/// a gateway, maildir for a local route.
pub struct SmtpTransport(pub Deps);

impl crate::core::queue::Transport for SmtpTransport {
    fn spawn_connection(&self, domain: String, job: Job) {
        spawn_connection(self.0.clone(), domain, job);
    }
}

pub fn spawn_connection(shared: Deps, domain: String, job: Job) {
    tokio::spawn(async move {
        let mut job = job;
        // A connection to `the.cpq.release.host` serves one gateway; a job
        // for another gateway continues on a new connection of this task.
        // One span per delivery connection, carrying its DCID once it has one.
        while let Some(next) = tracing::Instrument::instrument(
            run_connection(&shared, &domain, job),
            tracing::debug_span!("delivery", %domain, dcid = tracing::field::Empty),
        )
        .await
        {
            job = next;
        }
        shared.mail.queue.send(Event::ConnClosed { domain });
    });
}

/// The source address of an outbound connection. A manager delivers releases
/// from the interface of its cpq_listener (the address gateways know it by);
/// a gateway — also to the manager, as on the appliance (docs/appliance.md, scenario 3) —
/// from its default delivery interface (`deliveryconfig`; Auto: the system's
/// choice).
fn cpq_bind(cfg: &crate::core::config::Config, cpq: bool) -> Option<IpAddr> {
    match (&cfg.cpq, cfg.role) {
        (Some(c), crate::core::config::Role::Manager) if cpq => {
            Some(cfg.interfaces[c.interface].address)
        }
        _ => cfg
            .delivery
            .default_interface
            .map(|i| cfg.interfaces[i].address),
    }
}

/// The gateway a release job goes to.
fn release_gateway(job: &Job) -> Option<&str> {
    match &job.env.cpq {
        Some(crate::core::envelope::CpqTag::Release(r)) => Some(&r.gateway_id),
        _ => None,
    }
}

/// How one attempt at a CPQ job ended, for the counters of `cpq::gateways`.
enum Attempt<'a> {
    /// No connection, no TLS, or the connection broke.
    Failed(crate::core::cpq::stats::TransferFailure, &'a str),
    /// The peer answered for each recipient.
    Answered(&'a [RcptOutcome]),
}

/// Counts an attempt at a job under `the.cpq.host` (a gateway's transfer) or
/// `the.cpq.release.host` (a manager's release); other hosts are not counted here.
fn cpq_count(shared: &Deps, domain: &str, job: &Job, attempt: Attempt<'_>) {
    use crate::core::cpq::stats::TransferFailure;
    let stats = &shared.cpq.state.stats;
    let delivered = |o: &[RcptOutcome]| o.iter().any(|x| matches!(x, RcptOutcome::Delivered));
    if domain == crate::core::config::CPQ_HOST {
        match attempt {
            Attempt::Failed(why, _) => stats.transfer_failed(why),
            Attempt::Answered(o) if delivered(o) => {
                stats
                    .transfers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Attempt::Answered(o) if o.iter().any(|x| matches!(x, RcptOutcome::Perm(_))) => {
                stats.transfer_failed(TransferFailure::Refused)
            }
            Attempt::Answered(_) => stats.transfer_failed(TransferFailure::Deferred),
        }
    } else if let Some(gw) =
        release_gateway(job).filter(|_| domain == crate::core::config::CPQ_RELEASE_HOST)
    {
        // A release recovered from the spool after a restart is learnt here.
        stats.release_queued(job.env.mid, gw);
        let r = match attempt {
            Attempt::Failed(_, e) => Err(e.to_string()),
            Attempt::Answered(o) if delivered(o) => {
                Ok(o.iter().all(|x| matches!(x, RcptOutcome::Delivered)))
            }
            Attempt::Answered(o) => Err(o
                .iter()
                .find_map(|x| match x {
                    RcptOutcome::Temp(e) | RcptOutcome::Perm(e) => Some(e.clone()),
                    RcptOutcome::Delivered => None,
                })
                .unwrap_or_default()),
        };
        stats.release_outcome(job.env.mid, gw, r);
    }
}

/// The CPQ peers of a job under `the.cpq.host` (every manager of the deployment, in the
/// configured order: a manager that cannot be reached is passed over for the next, and the
/// first is tried again on every connection, so it takes the traffic back when it returns)
/// / `the.cpq.release.host` (the one gateway the release is for).
fn cpq_hop(
    shared: &Deps,
    cfg: &crate::core::config::Config,
    domain: &str,
    job: &Job,
) -> Option<Result<Vec<(String, u16)>, String>> {
    if domain == crate::core::config::CPQ_HOST {
        return Some(match cfg.cpq.as_ref().filter(|c| c.central()) {
            Some(c) => Ok(c.managers.clone()),
            None => Err("this gateway has no manager configured ([cpq] mode = \"central\" and manager = \"HOST:PORT\")".into()),
        });
    }
    if domain == crate::core::config::CPQ_RELEASE_HOST {
        let gw = release_gateway(job).unwrap_or_default();
        return Some(
            cfg.cpq
                .as_ref()
                .and_then(|c| c.gateways.iter().find(|g| g.id == gw))
                .map(|g| {
                    // What the gateway last said over SSH wins over the configuration.
                    vec![match shared.cpq.state.endpoints.get(gw) {
                        Some((ip, port)) => (ip.to_string(), port),
                        None => (g.address.to_string(), g.port),
                    }]
                })
                .ok_or_else(|| {
                    format!("gateway {gw} is not enrolled on this manager ([[cpq.gateway]])")
                }),
        );
    }
    None
}

async fn run_connection(shared: &Deps, domain: &str, job: Job) -> Option<Job> {
    let cfg = shared.config.current();
    let opened_with = cfg.clone();
    let cpq = match cpq_hop(shared, &cfg, domain, &job) {
        None => None,
        Some(Ok(hop)) => Some(hop),
        Some(Err(error)) => {
            shared.mail.queue.send(Event::ConnFailed { job, error });
            return None;
        }
    };
    let target = match (&job.redirect, &cpq) {
        (_, Some(hops)) => Some(RouteTarget::Hosts(hops.clone())),
        (Some((h, p)), None) => Some(RouteTarget::Hosts(vec![(h.clone(), *p)])),
        (None, None) => cfg.route(domain).map(|r| r.target.clone()),
    };
    if let Some(RouteTarget::Maildir(dir)) = target {
        run_maildir(shared, &dir, job).await;
        return None;
    }
    let hops: Vec<(String, u16)> = match target {
        Some(RouteTarget::Hosts(h)) => h,
        // An address literal (`user@[192.0.2.1]`) names the host itself.
        _ if domain.starts_with('[') => {
            let ip = domain.trim_matches(['[', ']']).trim_start_matches("ipv6:");
            vec![(ip.to_string(), 25)]
        }
        _ => match shared.resolver.mx(domain).await {
            Ok(h) if h.is_empty() => {
                let n = job.rids.len();
                let outcomes = vec![
                    RcptOutcome::Perm(format!(
                        "5.1.10 domain {domain} accepts no mail (null MX)"
                    ));
                    n
                ];
                shared.mail.queue.send(Event::JobDone {
                    job,
                    dcid: 0,
                    outcomes,
                    next: None,
                });
                return None;
            }
            Ok(h) => h.into_iter().map(|h| (h.host, h.port)).collect(),
            Err(e) => {
                shared.mail.queue.send(Event::ConnFailed { job, error: e });
                return None;
            }
        },
    };
    // CPQ is always TLS with a verified peer (mutual TLS, `trust`).
    let tls_mode = if cpq.is_some() {
        TlsMode::RequiredVerify
    } else {
        cfg.destination(domain)
            .map_or(cfg.tls_outbound.default, |d| d.tls)
    };
    // CPQ leaves from the interface of the node's cpq_listener: that is the
    // address the peer knows it by (the manager's HAT relays exactly the
    // enrolled gateway addresses; a gateway's HAT, the manager's address).
    // Everything else leaves from the default delivery interface
    // (`deliveryconfig`).
    let bind = cpq_bind(&cfg, cpq.is_some());
    // A CPQ connection is mutual TLS to one known peer: it keeps going (a new
    // handshake every 50 messages would cost more than the transfers).
    let max_per_conn = if cpq.is_some() {
        cfg.delivery.max_messages_per_connection.max(1000)
    } else {
        cfg.delivery.max_messages_per_connection
    };
    let helo = cfg.default_interface_hostname();
    drop(cfg);

    let opened_tls_mode = tls_mode;
    let mut tls_mode = tls_mode;
    // The hops not tried yet: a host that cannot be reached, or that answers its greeting,
    // EHLO or STARTTLS with a temporary failure (a manager whose store is down says 421),
    // is passed over for the next one, as Postfix does with the MX hosts of a domain.
    let mut first = 0usize;
    let mut client = loop {
        let (stream, addr, server_name) = match connect_any(shared, &hops[first..], bind).await {
            Ok((i, stream, addr, name)) => {
                first += i;
                (stream, addr, name)
            }
            Err(error) => {
                // A gateway that moved its cpq_listener: ask it (over SSH) where to.
                if let Some(gw) = release_gateway(&job) {
                    shared.cpq.gateway_shell.refresh_endpoint(gw);
                }
                cpq_count(
                    shared,
                    domain,
                    &job,
                    Attempt::Failed(crate::core::cpq::stats::TransferFailure::Connect, &error),
                );
                shared.mail.queue.send(Event::ConnFailed { job, error });
                return None;
            }
        };
        let mut client = Client::connected(shared, stream, addr, cpq.is_some());
        let dcid = client.dcid;
        match client
            .start(shared, &helo, tls_mode, &server_name, domain)
            .await
        {
            Ok(()) => break client,
            Err(Failure::TlsFallback(e)) if tls_mode == TlsMode::Preferred => {
                // Opportunistic TLS that fails is retried in the clear at once,
                // as Postfix does at security level "may"; the verify and
                // required modes never downgrade.
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::DeliveryClose { dcid });
                tracing::debug!(dcid, "TLS failed ({e}), retrying without TLS");
                tls_mode = TlsMode::Off;
            }
            Err(f @ (Failure::Temp(_) | Failure::TlsFallback(_))) => {
                let (why, e) = match f {
                    Failure::TlsFallback(e) => (crate::core::cpq::stats::TransferFailure::Tls, e),
                    Failure::Temp(e) => (
                        crate::core::cpq::stats::TransferFailure::of_connection_error(&e),
                        e,
                    ),
                };
                cpq_count(shared, domain, &job, Attempt::Failed(why, &e));
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::DeliveryClose { dcid });
                if first + 1 < hops.len() {
                    first += 1;
                    tracing::debug!(dcid, "{e}; trying the next host");
                    tls_mode = opened_tls_mode;
                    continue;
                }
                shared.mail.queue.send(Event::ConnFailed { job, error: e });
                return None;
            }
        }
    };
    let dcid = client.dcid;

    let mut job = job;
    let mut sent = 0usize;
    let mut leftover = None;
    loop {
        let result = client.deliver(shared, &job).await;
        sent += 1;
        let broken = result.is_err();
        let outcomes = match result {
            Ok(o) => {
                cpq_count(shared, domain, &job, Attempt::Answered(&o));
                o
            }
            Err(e) => {
                cpq_count(
                    shared,
                    domain,
                    &job,
                    Attempt::Failed(crate::core::cpq::stats::TransferFailure::Connect, &e),
                );
                vec![RcptOutcome::Temp(e); job.rids.len()]
            }
        };
        // A commit may have changed routes, TLS or interfaces: a connection
        // opened under the old configuration takes no further jobs.
        let reconfigured = !Arc::ptr_eq(&shared.config.current(), &opened_with);
        if broken || sent >= max_per_conn || reconfigured {
            shared.mail.queue.send(Event::JobDone {
                job,
                dcid,
                outcomes,
                next: None,
            });
            break;
        }
        let (tx, rx) = oneshot::channel();
        let peer = release_gateway(&job).map(str::to_string);
        shared.mail.queue.send(Event::JobDone {
            job,
            dcid,
            outcomes,
            next: Some(tx),
        });
        match wait_next(rx).await {
            Some(next) if release_gateway(&next) != peer.as_deref() => {
                leftover = Some(next);
                break;
            }
            Some(next) => job = next,
            None => break,
        }
    }
    if client.quit().await.is_err() {
        tracing::debug!(dcid, "QUIT failed");
    }
    shared
        .mail
        .log
        .emit(crate::core::events::Event::DeliveryClose { dcid });
    leftover
}

/// Waits a short while for another job; closing the receiver first and then
/// looking once more makes sure a job sent at the last moment is not lost.
async fn wait_next(mut rx: oneshot::Receiver<Option<Job>>) -> Option<Job> {
    match tokio::time::timeout(IDLE_WAIT, &mut rx).await {
        Ok(Ok(j)) => j,
        Ok(Err(_)) => None,
        Err(_) => {
            rx.close();
            rx.try_recv().ok().flatten()
        }
    }
}

async fn connect_any(
    shared: &Deps,
    hops: &[(String, u16)],
    bind: Option<IpAddr>,
) -> Result<(usize, TcpStream, SocketAddr, String), String> {
    let mut last = String::from("no next hop");
    for (i, (host, port)) in hops.iter().enumerate() {
        let addrs = match shared.resolver.addresses(host).await {
            Ok(a) => a,
            Err(e) => {
                last = e;
                continue;
            }
        };
        for ip in addrs {
            let addr = SocketAddr::new(ip, *port);
            match connect(addr, bind).await {
                Ok(s) => return Ok((i, s, addr, host.clone())),
                Err(e) => last = format!("connection to {addr} failed: {e}"),
            }
        }
    }
    Err(last)
}

#[derive(Default)]
struct Extensions {
    pipelining: bool,
    starttls: bool,
    size: bool,
    eight_bit: bool,
    /// `XPVO-META 1` (and `XPVO-RELEASE 1` on a gateway) advertised.
    cpq_meta: bool,
    cpq_release: bool,
}

enum Failure {
    Temp(String),
    /// The TLS handshake failed; an opportunistic destination may retry in the clear.
    TlsFallback(String),
}

struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

struct Client {
    io: BufReader<Box<dyn Io>>,
    dcid: u64,
    ext: Extensions,
    /// A CPQ connection: mutual TLS with the deployment certificates.
    cpq: bool,
}

impl Client {
    /// A new outbound connection: its DCID and the `New SMTP DCID` log line.
    fn connected(shared: &Deps, stream: TcpStream, addr: SocketAddr, cpq: bool) -> Client {
        let dcid = shared.mail.ids.next(Kind::Dcid);
        tracing::Span::current().record("dcid", dcid);
        let local = stream
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        shared
            .mail
            .log
            .emit(crate::core::events::Event::DeliveryConnection {
                dcid,
                interface: &local,
                address: addr.ip(),
                port: addr.port(),
            });
        Client {
            io: BufReader::new(Box::new(stream) as Box<dyn Io>),
            dcid,
            ext: Extensions::default(),
            cpq,
        }
    }

    /// One reply, read by `pvo_proto::reply` (bounded; the tail of an over-long line is
    /// skipped, never taken for the next reply).
    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, String> {
        use crate::net::smtp_io::ReadError;
        match crate::net::smtp_io::read_reply(&mut self.io, timeout).await {
            Ok(r) => Ok(Reply {
                code: r.code,
                text: r.text(),
            }),
            Err(ReadError::Timeout) => Err("timeout waiting for a reply".into()),
            Err(ReadError::Closed) => Err("connection closed by the remote host".into()),
            Err(ReadError::Io(e)) => Err(format!("read error: {e}")),
            Err(ReadError::Malformed(l)) => Err(format!("malformed reply: {l:?}")),
        }
    }

    async fn command(&mut self, cmd: &str) -> Result<Reply, String> {
        self.io
            .get_mut()
            .write_all(cmd.as_bytes())
            .await
            .map_err(|e| format!("write error: {e}"))?;
        self.io
            .get_mut()
            .flush()
            .await
            .map_err(|e| format!("write error: {e}"))?;
        self.read_reply(REPLY_TIMEOUT).await
    }

    async fn ehlo(&mut self, helo: &str) -> Result<(), Failure> {
        let r = self
            .command(&format!("EHLO {helo}\r\n"))
            .await
            .map_err(Failure::Temp)?;
        if r.code == 250 {
            self.ext = Extensions::default();
            for l in r.text.lines().skip(1) {
                let kw = l
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                match kw.as_str() {
                    "PIPELINING" => self.ext.pipelining = true,
                    "STARTTLS" => self.ext.starttls = true,
                    "SIZE" => self.ext.size = true,
                    "8BITMIME" => self.ext.eight_bit = true,
                    _ => match pvo_proto::cpq::parse_ehlo_keyword(l.trim()) {
                        Some((pvo_proto::cpq::Extension::Meta, v)) if v.contains(&1) => {
                            self.ext.cpq_meta = true
                        }
                        Some((pvo_proto::cpq::Extension::Release, v)) if v.contains(&1) => {
                            self.ext.cpq_release = true
                        }
                        _ => {}
                    },
                }
            }
            return Ok(());
        }
        let r = self
            .command(&format!("HELO {helo}\r\n"))
            .await
            .map_err(Failure::Temp)?;
        if r.code == 250 {
            self.ext = Extensions::default();
            Ok(())
        } else {
            Err(Failure::Temp(format!("HELO refused: {}", r.line())))
        }
    }

    async fn start(
        &mut self,
        shared: &Deps,
        helo: &str,
        tls: TlsMode,
        server_name: &str,
        domain: &str,
    ) -> Result<(), Failure> {
        let banner = self
            .read_reply(REPLY_TIMEOUT)
            .await
            .map_err(Failure::Temp)?;
        if banner.code != 220 {
            return Err(Failure::Temp(format!("banner: {}", banner.line())));
        }
        self.ehlo(helo).await?;
        let dcid = self.dcid;
        if tls == TlsMode::Off {
            return Ok(());
        }
        if !self.ext.starttls {
            if tls.required() {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::TlsRequired { dcid });
                return Err(Failure::Temp(
                    "TLS was required but the server does not offer STARTTLS".into(),
                ));
            }
            return Ok(());
        }
        let r = self.command("STARTTLS\r\n").await.map_err(Failure::Temp)?;
        if r.code != 220 {
            if tls.required() {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::StartTlsRefused {
                        dcid,
                        reply: &r.line(),
                    });
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::TlsRequired { dcid });
                return Err(Failure::Temp(format!("STARTTLS refused: {}", r.line())));
            }
            return Ok(());
        }
        let configs = shared.tls.clients();
        let cfg = if self.cpq {
            match shared.tls.cpq() {
                Some(t) => t.client.clone(),
                None => {
                    return Err(Failure::Temp(
                        "no CPQ certificate on this node (enroll it)".into(),
                    ))
                }
            }
        } else if tls.verify() {
            configs.verify.clone()
        } else {
            configs.opportunistic.clone()
        };
        let name = ServerName::try_from(server_name.to_string())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid".to_string()).unwrap());
        let connector = tokio_rustls::TlsConnector::from(cfg);
        // Take the plain stream out; buffered bytes before the handshake would
        // be a STARTTLS injection attempt, so they are discarded.
        let plain = std::mem::replace(
            &mut self.io,
            BufReader::new(Box::new(empty::EmptyDuplex) as Box<dyn Io>),
        );
        let stream = plain.into_inner();
        match connector.connect(name, stream).await {
            Ok(s) => {
                let (proto, cipher) = crate::net::tls::describe(s.get_ref().1);
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::DeliveryTlsSuccess {
                        dcid,
                        protocol: &proto,
                        cipher: &cipher,
                        domain,
                    });
                self.io = BufReader::new(Box::new(s) as Box<dyn Io>);
                self.ehlo(helo).await
            }
            Err(e) => {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::DeliveryTlsFailed {
                        dcid,
                        why: &tls_error_text(&e),
                    });
                if tls.required() {
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::TlsRequired { dcid });
                }
                Err(Failure::TlsFallback(format!(
                    "TLS failed: {}",
                    tls_error_text(&e)
                )))
            }
        }
    }

    /// Delivers one job; `Err` means the connection is broken.
    async fn deliver(&mut self, shared: &Deps, job: &Job) -> Result<Vec<RcptOutcome>, String> {
        let body = match &job.body {
            Some(b) => b.clone(),
            None => {
                let spool = shared.mail.spool.clone();
                let mid = job.env.mid;
                Arc::new(
                    tokio::task::spawn_blocking(move || spool.read_body(mid))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("spool read error: {e}"))?,
                )
            }
        };
        let mid = job.env.mid;
        let dcid = self.dcid;
        let cpq = match &job.env.cpq {
            None => None,
            Some(tag) => {
                let release = matches!(tag, crate::core::envelope::CpqTag::Release(_));
                if !self.ext.cpq_meta || (release && !self.ext.cpq_release) {
                    return Ok(vec![
                        RcptOutcome::Temp(
                            "the peer does not offer XPVO-META 1 (is it a PVO cpq_listener?)"
                                .into()
                        );
                        job.rids.len()
                    ]);
                }
                let node_id = shared
                    .config
                    .current()
                    .cpq
                    .as_ref()
                    .map(|c| c.node_id.clone())
                    .unwrap_or_default();
                let line = match crate::core::cpq::records::meta_line(&node_id, &job.env) {
                    Ok(l) => l,
                    Err(e) => return Ok(vec![RcptOutcome::Temp(e); job.rids.len()]),
                };
                Some((release, line))
            }
        };
        match &cpq {
            Some((false, _)) => shared
                .mail
                .log
                .emit(crate::core::events::Event::DeliveryStart {
                    dcid,
                    mid,
                    rids: &job.rids,
                    dest: crate::core::events::Dest::Cpq,
                    gateway: "",
                }),
            Some((true, _)) => shared
                .mail
                .log
                .emit(crate::core::events::Event::DeliveryStart {
                    dcid,
                    mid,
                    rids: &job.rids,
                    dest: crate::core::events::Dest::Release,
                    gateway: release_gateway(job).unwrap_or_default(),
                }),
            None => shared
                .mail
                .log
                .emit(crate::core::events::Event::DeliveryStart {
                    dcid,
                    mid,
                    rids: &job.rids,
                    dest: crate::core::events::Dest::Next,
                    gateway: "",
                }),
        }
        // Without PIPELINING the record goes alone; with it, it leads the batch below.
        if let Some((_, line)) = cpq.as_ref().filter(|_| !self.ext.pipelining) {
            let r = self.command(line).await?;
            if r.code != 250 {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::MetaRefusedByPeer {
                        dcid,
                        mid,
                        reply: &r.line(),
                    });
                self.command("RSET\r\n").await?;
                return Ok(vec![outcome_of(&r); job.rids.len()]);
            }
        }
        // Addresses go out in their RFC 5321 form (a local part that is not a
        // Dot-string quoted), so the next hop sees the mailbox we accepted and
        // nothing of a local part can turn into an ESMTP parameter. Only an
        // address spooled before that (non-ASCII) cannot be written: it fails
        // permanently rather than waiting for ever.
        let sender = match pvo_proto::address::wire_address(&job.env.sender) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("553 5.1.7 the sender cannot be sent over SMTP: {e}");
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::SenderUnsendable {
                        dcid,
                        mid,
                        error: &e,
                    });
                return Ok(vec![RcptOutcome::Perm(why); job.rids.len()]);
            }
        };
        let mut unsendable = Vec::new();
        let wire_rcpts: Vec<String> =
            job.rids
                .iter()
                .map(|r| {
                    pvo_proto::address::wire_address(&job.env.recipients[*r as usize])
                        .unwrap_or_else(|e| {
                            unsendable.push((*r, e));
                            String::new()
                        })
                })
                .collect();
        if !unsendable.is_empty() {
            let bad: Vec<u32> = unsendable.iter().map(|(r, _)| *r).collect();
            for (r, e) in &unsendable {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::RecipientUnsendable {
                        dcid,
                        mid,
                        rid: *r,
                        error: e,
                    });
            }
            // The others go in the next attempt, without these.
            return Ok(job
                .rids
                .iter()
                .map(|r| {
                    if bad.contains(r) {
                        RcptOutcome::Perm(
                            "553 5.1.3 the recipient cannot be sent over SMTP (non-ASCII address)"
                                .into(),
                        )
                    } else {
                        RcptOutcome::Temp("another recipient of the batch was unsendable".into())
                    }
                })
                .collect());
        }
        let mut mail = format!("MAIL FROM:<{sender}>");
        if self.ext.size {
            mail.push_str(&format!(" SIZE={}", body.len()));
        }
        if self.ext.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        mail.push_str("\r\n");
        let rcpts: Vec<String> = wire_rcpts
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();

        let mut outcomes: Vec<Option<RcptOutcome>> = vec![None; job.rids.len()];
        let mut accepted = 0usize;
        let data_reply;
        if self.ext.pipelining {
            let mut batch = match &cpq {
                Some((_, line)) => line.clone(),
                None => String::new(),
            };
            batch.push_str(&mail);
            for r in &rcpts {
                batch.push_str(r);
            }
            batch.push_str("DATA\r\n");
            self.write(batch.as_bytes()).await?;
            if cpq.is_some() {
                let r = self.read_reply(REPLY_TIMEOUT).await?;
                if r.code != 250 {
                    // MAIL, the RCPTs and DATA were refused behind it (no record).
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::MetaRefusedByPeer {
                            dcid,
                            mid,
                            reply: &r.line(),
                        });
                    let _ = self.read_reply(REPLY_TIMEOUT).await?;
                    for _ in &rcpts {
                        let _ = self.read_reply(REPLY_TIMEOUT).await?;
                    }
                    let d = self.read_reply(REPLY_TIMEOUT).await?;
                    return self.fail_all(&r, job.rids.len(), d.code == 354).await;
                }
            }
            let m = self.read_reply(REPLY_TIMEOUT).await?;
            for o in outcomes.iter_mut() {
                let r = self.read_reply(REPLY_TIMEOUT).await?;
                *o = classify_rcpt(&m, &r, &mut accepted);
            }
            data_reply = self.read_reply(REPLY_TIMEOUT).await?;
            if m.code != 250 {
                return self
                    .fail_all(&m, job.rids.len(), data_reply.code == 354)
                    .await;
            }
        } else {
            let m = self.command(&mail).await?;
            if m.code != 250 {
                return self.fail_all(&m, job.rids.len(), false).await;
            }
            for (i, r) in rcpts.iter().enumerate() {
                let reply = self.command(r).await?;
                outcomes[i] = classify_rcpt(&m, &reply, &mut accepted);
            }
            if accepted == 0 {
                self.command("RSET\r\n").await?;
                return Ok(outcomes.into_iter().map(|o| o.unwrap()).collect());
            }
            data_reply = self.command("DATA\r\n").await?;
        }
        if data_reply.code != 354 {
            if accepted > 0 {
                let o = outcome_of(&data_reply);
                for x in outcomes.iter_mut() {
                    if x.is_none() {
                        *x = Some(o.clone());
                    }
                }
            }
            self.command("RSET\r\n").await?;
            return Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or(RcptOutcome::Temp("no reply".into())))
                .collect());
        }
        if accepted == 0 {
            // RFC 2920: DATA was accepted although no recipient was; end it
            // at once without content.
            self.write(b".\r\n").await?;
            let _ = self.read_reply(DATA_REPLY_TIMEOUT).await?;
            return Ok(outcomes.into_iter().map(|o| o.unwrap()).collect());
        }
        let mut wire = Vec::with_capacity(body.len() + body.len() / 32 + 8);
        pvo_proto::dotstuff::encode_data(&body, &mut wire);
        self.write(&wire).await?;
        let fin = self.read_reply(DATA_REPLY_TIMEOUT).await?;
        let o = outcome_of(&fin);
        let mut done_rids = Vec::new();
        for (i, x) in outcomes.iter_mut().enumerate() {
            if x.is_none() {
                *x = Some(o.clone());
                if matches!(o, RcptOutcome::Delivered) {
                    done_rids.push(job.rids[i]);
                }
            }
        }
        if !done_rids.is_empty() {
            let dest = match &cpq {
                Some((false, _)) => crate::core::events::Dest::Cpq,
                Some((true, _)) => crate::core::events::Dest::Release,
                None => crate::core::events::Dest::Next,
            };
            shared.mail.log.emit(crate::core::events::Event::Done {
                dcid,
                mid,
                rids: &done_rids,
                dest,
            });
            if cpq.is_some() {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::CpqResponse {
                        mid,
                        rids: &done_rids,
                        text: &fin.text,
                    });
            }
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap()).collect())
    }

    async fn fail_all(
        &mut self,
        reply: &Reply,
        n: usize,
        in_data: bool,
    ) -> Result<Vec<RcptOutcome>, String> {
        if in_data {
            self.write(b".\r\n").await?;
            let _ = self.read_reply(DATA_REPLY_TIMEOUT).await?;
        }
        self.command("RSET\r\n").await?;
        Ok(vec![outcome_of(reply); n])
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let w = self.io.get_mut();
        w.write_all(bytes)
            .await
            .map_err(|e| format!("write error: {e}"))?;
        w.flush().await.map_err(|e| format!("write error: {e}"))
    }

    async fn quit(&mut self) -> Result<(), String> {
        let _ = self.command("QUIT\r\n").await?;
        let _ = self.io.get_mut().shutdown().await;
        Ok(())
    }
}

fn outcome_of(r: &Reply) -> RcptOutcome {
    match r.code {
        200..=299 => RcptOutcome::Delivered,
        500..=599 => RcptOutcome::Perm(r.line()),
        _ => RcptOutcome::Temp(r.line()),
    }
}

fn classify_rcpt(mail: &Reply, rcpt: &Reply, accepted: &mut usize) -> Option<RcptOutcome> {
    if mail.code != 250 {
        return Some(outcome_of(mail));
    }
    match rcpt.code {
        250 | 251 => {
            *accepted += 1;
            None
        }
        _ => Some(outcome_of(rcpt)),
    }
}

/// Delivers jobs routed to a local maildir: one file per message, written to
/// `tmp/`, fsynced and renamed into `new/` (the maildir protocol), so a
/// delivered message is durable before the spool forgets it.
async fn run_maildir(shared: &Deps, dir: &Path, mut job: Job) {
    let dcid = shared.mail.ids.next(Kind::Dcid);
    tracing::Span::current().record("dcid", dcid);
    let mut sent = 0;
    loop {
        let mid = job.env.mid;
        shared
            .mail
            .log
            .emit(crate::core::events::Event::DeliveryStart {
                dcid,
                mid,
                rids: &job.rids,
                dest: crate::core::events::Dest::Next,
                gateway: "",
            });
        let body = job.body.clone();
        let spool = shared.mail.spool.clone();
        let d = dir.to_path_buf();
        let env = job.env.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let body = match body {
                Some(b) => b,
                None => Arc::new(spool.read_body(mid).map_err(|e| e.to_string())?),
            };
            write_maildir(&d, &env.sender, &body, mid)
                .map_err(|e| format!("maildir {}: {e}", d.display()))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let outcomes = match res {
            Ok(()) => {
                shared.mail.log.emit(crate::core::events::Event::Done {
                    dcid,
                    mid,
                    rids: &job.rids,
                    dest: crate::core::events::Dest::Next,
                });
                vec![RcptOutcome::Delivered; job.rids.len()]
            }
            Err(e) => {
                vec![RcptOutcome::Temp(format!("4.3.0 local delivery failed: {e}")); job.rids.len()]
            }
        };
        sent += 1;
        if sent >= 50 {
            shared.mail.queue.send(Event::JobDone {
                job,
                dcid,
                outcomes,
                next: None,
            });
            break;
        }
        let (tx, rx) = oneshot::channel();
        shared.mail.queue.send(Event::JobDone {
            job,
            dcid,
            outcomes,
            next: Some(tx),
        });
        match wait_next(rx).await {
            Some(j) => job = j,
            None => break,
        }
    }
}

fn write_maildir(dir: &Path, sender: &str, body: &[u8], mid: u64) -> std::io::Result<()> {
    use std::io::Write;
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.M{}P{}Q{mid}.pvo",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    );
    let tmp = dir.join("tmp").join(&name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        // The header holds the RFC 5321 form; an address that has none (spooled
        // non-ASCII) is left out rather than written as another mailbox.
        let sender = pvo_proto::address::wire_address(sender).unwrap_or_default();
        f.write_all(format!("Return-Path: <{sender}>\r\n").as_bytes())?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("new").join(&name))?;
    std::fs::File::open(dir.join("new"))?.sync_all()?;
    Ok(())
}

/// A stream that is never read or written: the placeholder while the plain
/// stream is handed to the TLS handshake.
mod empty {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;
    use tokio::io::{AsyncRead, AsyncWrite};

    pub struct EmptyDuplex;
    impl AsyncRead for EmptyDuplex {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    impl AsyncWrite for EmptyDuplex {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

/// Sends CPQ control lines (`XPVO-CONTROL`, already encoded) to the manager
/// over one mutual-TLS connection and returns each reply line. Logged like a
/// delivery connection (`New SMTP DCID … port 7025`, `TLS success`, close).
/// The gateway's [`crate::core::state::ManagerLink`]: [`cpq_control`]. It lives in the
/// CPQ handle it uses, so it holds that one weakly (`node` builds both together).
pub struct CpqLink {
    pub config: Arc<ConfigHandle>,
    pub cpq: std::sync::Weak<CpqHandle>,
    pub mail: Arc<MailHandle>,
    pub resolver: Arc<dyn crate::core::resolve::Resolve>,
    pub tls: Arc<TlsHandle>,
}

impl crate::core::state::ManagerLink for CpqLink {
    fn control<'a>(
        &'a self,
        lines: &'a [String],
    ) -> crate::core::state::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            // Gone only while the node is being dropped.
            let Some(cpq) = self.cpq.upgrade() else {
                return Err("the node is stopping".to_string());
            };
            let deps = Deps {
                config: self.config.clone(),
                cpq,
                mail: self.mail.clone(),
                resolver: self.resolver.clone(),
                tls: self.tls.clone(),
            };
            cpq_control(&deps, lines).await
        })
    }
}

pub async fn cpq_control(shared: &Deps, lines: &[String]) -> Result<Vec<String>, String> {
    let cfg = shared.config.current();
    // Any manager of the deployment takes a control message (they share one store).
    let managers = cfg
        .cpq
        .as_ref()
        .map(|c| c.managers.clone())
        .unwrap_or_default();
    if managers.is_empty() {
        return Err("no manager configured ([cpq] manager)".into());
    }
    let bind = cpq_bind(&cfg, true);
    let helo = cfg.default_interface_hostname();
    drop(cfg);
    let (_, stream, addr, server_name) = connect_any(shared, &managers, bind).await?;
    let mut client = Client::connected(shared, stream, addr, true);
    let dcid = client.dcid;
    let started = client
        .start(
            shared,
            &helo,
            TlsMode::RequiredVerify,
            &server_name,
            crate::core::config::CPQ_HOST,
        )
        .await;
    let result = match started {
        Err(Failure::Temp(e)) | Err(Failure::TlsFallback(e)) => Err(e),
        Ok(()) => {
            let mut replies = Vec::new();
            let mut failed = None;
            for l in lines {
                match client.command(l).await {
                    Ok(r) => {
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::ControlAnswered {
                                dcid,
                                reply: &r.line(),
                            });
                        replies.push(r.line());
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let _ = client.quit().await;
            match failed {
                Some(e) => Err(e),
                None => Ok(replies),
            }
        }
    };
    shared
        .mail
        .log
        .emit(crate::core::events::Event::DeliveryClose { dcid });
    result
}
