//! The subsystem handles of a running node, each an `Arc` of a small struct with the
//! methods that belong to what it holds, grouped by who uses what: [`ConfigHandle`] (the
//! configuration in force and its file; nearly every part), [`MailHandle`] (spool, ids,
//! queue, `mail_logs`, counters: sessions, queue, delivery, bounces, pipeline, CPQ),
//! [`TlsHandle`] (inbound, outbound and CPQ TLS configurations and their reload),
//! [`ScanHandle`] (scanner, outbreak rules, quarantine store, feature keys), [`CpqHandle`] (CPQ state,
//! manager link, gateway shell, release route), [`AccessHandle`] (users, audit, login
//! throttle) and [`ControlHandle`] (listeners, servers, node control, idle-session
//! disconnect, start time); the resolver is its own handle, `Arc<dyn Resolve>`.
//! [`Handles`] is the plain struct of all of them that `node` builds, the context of the
//! commands and of the channels that dispatch them; no other part receives it.
//!
//! Every other part takes the handles it uses, as parameters or as a `Deps` struct next
//! to it: the queue manager and `bounce` config + mail; `cpq::transfer` config + mail;
//! `scanning::pipeline` config + mail + scan; the CPQ services and the quarantine service
//! (`cpq::handles::Deps`) config + mail + scan + cpq (and access for a preflight's
//! readiness); the certificate renewal (`net::tls`) config + mail + tls; `delivery`
//! config + cpq + mail + resolver + tls; the SMTP server config + mail + resolver + tls +
//! scan + cpq + access and the idle-session disconnect; the probes (`diag`) config +
//! resolver + tls; `/metrics` config + mail + scan + cpq; the SSH client to gateways
//! config (+ mail and cpq for an endpoint refresh). The traits below take no handles: an
//! implementation captures its own when `node` builds it, weakly when it lives in the
//! handle it uses (the CPQ handle's links, the control handle's node control).
//!
//! Their fields are core types and small traits only: what the core needs from an adapter
//! or from the composition root (the running listeners and management servers, a new
//! configuration put in force) is a trait object here ([`ListenerControl`],
//! [`ServerControl`], [`NodeControl`]) that `node` implements and wires at start. So a
//! module that receives a handle reaches no adapter through it, and the import graph goes
//! one way: adapters and the root import this module, never the reverse.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Result;
use pvo_quarantine::{EarlyReleaseActions, MessageInfo, MsgId};
use pvo_spool::{Spool, SpoolError};
use tokio::sync::oneshot;

use crate::core::config::Config;
use crate::core::envelope::Envelope;
use crate::core::ids::Ids;
use crate::core::mail_log::MailLog;
use crate::core::queue::handle::QueueHandle;

/// Counters for `status`: atomics for this run, a snapshot at the last
/// `resetcounters`, and the lifetime totals of earlier runs (`run/counters`).
pub struct Counters {
    // Shared with the log's `events::Tally`: bumped when their event is emitted.
    pub connections_in: Arc<AtomicU64>,
    pub connections_open: AtomicU64,
    pub messages_received: Arc<AtomicU64>,
    pub recipients_received: Arc<AtomicU64>,
    pub rejected_recipients: Arc<AtomicU64>,
    pub soft_bounced: AtomicU64,
    pub delivered_rcpts: AtomicU64,
    pub bounced_rcpts: Arc<AtomicU64>,
    /// How long scanning a message takes (`/metrics`).
    pub scan_latency: crate::core::histogram::Histogram,
    reset_base: Mutex<(Option<u64>, CounterSet)>,
    lifetime_base: CounterSet,
    path: std::path::PathBuf,
    /// The last write of `path` failed (reported once, until one works again).
    persist_failing: Mutex<bool>,
}

/// One column of the counters table.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct CounterSet {
    pub connections_in: u64,
    pub connections_open: u64,
    pub messages_received: u64,
    pub recipients_received: u64,
    pub rejected_recipients: u64,
    pub soft_bounced: u64,
    pub delivered_rcpts: u64,
    pub bounced_rcpts: u64,
}

impl CounterSet {
    fn zip(&self, o: &CounterSet, f: impl Fn(u64, u64) -> u64) -> CounterSet {
        CounterSet {
            connections_in: f(self.connections_in, o.connections_in),
            connections_open: self.connections_open,
            messages_received: f(self.messages_received, o.messages_received),
            recipients_received: f(self.recipients_received, o.recipients_received),
            rejected_recipients: f(self.rejected_recipients, o.rejected_recipients),
            soft_bounced: f(self.soft_bounced, o.soft_bounced),
            delivered_rcpts: f(self.delivered_rcpts, o.delivered_rcpts),
            bounced_rcpts: f(self.bounced_rcpts, o.bounced_rcpts),
        }
    }
}

impl Counters {
    pub(crate) fn open(run_dir: &std::path::Path, tally: &crate::core::events::Tally) -> Counters {
        let path = run_dir.join("counters.json");
        let lifetime_base = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Counters {
            connections_in: tally.connections_in.clone(),
            connections_open: AtomicU64::new(0),
            messages_received: tally.messages_received.clone(),
            recipients_received: tally.recipients_received.clone(),
            rejected_recipients: tally.rejected_recipients.clone(),
            soft_bounced: AtomicU64::new(0),
            delivered_rcpts: AtomicU64::new(0),
            bounced_rcpts: tally.bounced_rcpts.clone(),
            scan_latency: Default::default(),
            reset_base: Mutex::new((None, CounterSet::default())),
            lifetime_base,
            path,
            persist_failing: Mutex::new(false),
        }
    }

    /// Since this node started.
    pub fn snapshot(&self) -> CounterSet {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSet {
            connections_in: l(&self.connections_in),
            connections_open: l(&self.connections_open),
            messages_received: l(&self.messages_received),
            recipients_received: l(&self.recipients_received),
            rejected_recipients: l(&self.rejected_recipients),
            soft_bounced: l(&self.soft_bounced),
            delivered_rcpts: l(&self.delivered_rcpts),
            bounced_rcpts: l(&self.bounced_rcpts),
        }
    }

    pub fn since_reset(&self) -> CounterSet {
        let base = self.reset_base.lock().unwrap().1;
        self.snapshot().zip(&base, |a, b| a.saturating_sub(b))
    }

    pub fn lifetime(&self) -> CounterSet {
        self.snapshot().zip(&self.lifetime_base, |a, b| a + b)
    }

    pub fn reset_at(&self) -> Option<u64> {
        self.reset_base.lock().unwrap().0
    }

    pub fn reset(&self) {
        let now = crate::core::clock::unix_now();
        *self.reset_base.lock().unwrap() = (Some(now), self.snapshot());
    }

    /// Writes the lifetime totals (periodically and at shutdown). Returns what mail_logs
    /// should say: the first failure (file and cause; the totals stay in memory and are
    /// written with the next try) and the first success after failures.
    pub fn persist(&self) -> Option<crate::core::events::Notice> {
        let bytes = serde_json::to_vec(&self.lifetime()).ok()?;
        let result = crate::core::atomic_file::write(&self.path, &bytes);
        let mut failing = self.persist_failing.lock().unwrap();
        match result {
            Ok(()) => std::mem::take(&mut *failing).then(|| {
                crate::core::events::Notice::CountersWrittenAgain {
                    path: self.path.clone(),
                }
            }),
            Err(e) if !*failing => {
                *failing = true;
                Some(crate::core::events::Notice::CountersNotWritten {
                    path: self.path.clone(),
                    error: format!("{e:#}"),
                })
            }
            Err(_) => None,
        }
    }
}

/// The configuration in force and the file it was committed to. Readers take a snapshot
/// (an `Arc`), so a commit swaps the whole configuration at once and never half of it.
pub struct ConfigHandle {
    current: RwLock<Arc<Config>>,
    /// The file the committed configuration lives in.
    pub path: std::path::PathBuf,
}

impl ConfigHandle {
    pub fn new(config: Arc<Config>, path: std::path::PathBuf) -> ConfigHandle {
        ConfigHandle {
            current: RwLock::new(config),
            path,
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.current.read().unwrap().clone()
    }

    /// Puts a validated configuration in force (the commit's swap, by `node`).
    pub fn swap(&self, new: Arc<Config>) {
        *self.current.write().unwrap() = new;
    }
}

/// The mail path: the spool, the ids it numbers messages and connections with, the
/// queue's handle, the `mail_logs` writer and the counters those lines bump. What the
/// SMTP sessions, the queue, delivery, bounces, the pipeline and the CPQ services share.
pub struct MailHandle {
    pub spool: Spool,
    pub ids: Ids,
    pub log: MailLog,
    pub queue: QueueHandle,
    pub counters: Counters,
}

impl MailHandle {
    /// Writes a message to the spool and waits for the fsync.
    pub async fn spool_message(
        &self,
        env: &Envelope,
        body: Vec<u8>,
    ) -> Result<Arc<Vec<u8>>, SpoolError> {
        let (tx, rx) = oneshot::channel();
        let body = Arc::new(body);
        // The spool takes ownership of a copy; the queue keeps the Arc for
        // delivery so the common case never reads the body back.
        self.spool.append(
            env.mid,
            env.encode(),
            body.as_ref().clone(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(Ok(())) => Ok(body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SpoolError::Closed),
        }
    }

    pub async fn read_body(&self, mid: u64) -> Result<Vec<u8>, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || spool.read_body(mid))
            .await
            .unwrap_or(Err(SpoolError::Closed))
    }
}

/// Loads the CPQ mutual-TLS material of a configuration (`cpq_certs`, wired by `node`:
/// the core does not read certificates).
pub type CpqTlsLoader =
    Box<dyn Fn(&Config) -> Result<Option<crate::core::cpq::CpqTls>> + Send + Sync>;

/// The TLS configurations in force: the inbound server configuration (listeners, the web
/// server), the outbound client configurations, and the CPQ mutual-TLS ones. Each is
/// swapped whole: a renewed certificate, a commit, a revocation.
pub struct TlsHandle {
    server: RwLock<Arc<rustls::ServerConfig>>,
    clients: RwLock<Arc<ClientConfigs>>,
    cpq: RwLock<Option<Arc<crate::core::cpq::CpqTls>>>,
    load_cpq: CpqTlsLoader,
}

impl TlsHandle {
    pub fn new(
        server: Arc<rustls::ServerConfig>,
        clients: ClientConfigs,
        cpq: Option<Arc<crate::core::cpq::CpqTls>>,
        load_cpq: CpqTlsLoader,
    ) -> TlsHandle {
        TlsHandle {
            server: RwLock::new(server),
            clients: RwLock::new(Arc::new(clients)),
            cpq: RwLock::new(cpq),
            load_cpq,
        }
    }

    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        self.server.read().unwrap().clone()
    }

    /// Puts a renewed inbound certificate in force (`tls::renew_self_signed`).
    pub fn set_server(&self, c: Arc<rustls::ServerConfig>) {
        *self.server.write().unwrap() = c;
    }

    pub fn clients(&self) -> Arc<ClientConfigs> {
        self.clients.read().unwrap().clone()
    }

    /// The CPQ mutual-TLS configurations (when `[cpq]` is configured).
    pub fn cpq(&self) -> Option<Arc<crate::core::cpq::CpqTls>> {
        self.cpq.read().unwrap().clone()
    }

    /// Puts the TLS material of a committed configuration in force (by `node`, once
    /// everything of the commit is prepared).
    pub fn swap(
        &self,
        server: Arc<rustls::ServerConfig>,
        clients: ClientConfigs,
        cpq: Option<Arc<crate::core::cpq::CpqTls>>,
    ) {
        *self.server.write().unwrap() = server;
        *self.cpq.write().unwrap() = cpq;
        *self.clients.write().unwrap() = Arc::new(clients);
    }

    /// Rebuilds the CPQ TLS configurations of `cfg` from disk (after `cpqcert revoke`),
    /// so the next handshake applies the new revocation list.
    pub fn reload_cpq(&self, cfg: &Config) -> Result<()> {
        let tls = (self.load_cpq)(cfg)?.map(Arc::new);
        *self.cpq.write().unwrap() = tls;
        Ok(())
    }
}

/// Scanning and the quarantines: the compiled mail policies, the outbreak rules in force,
/// and the quarantine store (the local quarantines of a gateway, the central store of a
/// manager).
pub struct ScanHandle {
    scanner: RwLock<Arc<crate::core::scanning::Scanner>>,
    /// The outbreak rules in force and their persisted copy (`DATA_DIR/outbreak`).
    pub outbreak: crate::core::scanning::outbreak_store::OutbreakState,
    /// The local quarantines (gateway) or the central store (manager).
    pub local_quarantine: crate::core::scanning::quarantine_store::LocalQuarantine,
    /// The machine's feature keys (`DATA_DIR/featurekeys.json`): which engines may run
    /// here; `features.active_features()` is what the machine has on now.
    pub features: Arc<crate::core::feature_keys::FeatureKeys>,
}

impl ScanHandle {
    pub fn new(
        scanner: crate::core::scanning::Scanner,
        outbreak: crate::core::scanning::outbreak_store::OutbreakState,
        local_quarantine: crate::core::scanning::quarantine_store::LocalQuarantine,
        features: Arc<crate::core::feature_keys::FeatureKeys>,
    ) -> ScanHandle {
        ScanHandle {
            scanner: RwLock::new(Arc::new(scanner)),
            outbreak,
            local_quarantine,
            features,
        }
    }

    pub fn scanner(&self) -> Arc<crate::core::scanning::Scanner> {
        self.scanner.read().unwrap().clone()
    }

    /// Puts the mail policies of a committed configuration in force.
    pub fn set_scanner(&self, scanner: crate::core::scanning::Scanner) {
        *self.scanner.write().unwrap() = Arc::new(scanner);
    }

    pub fn outbreak_rules(&self) -> Option<Arc<pvo_scan::outbreak::OutbreakRules>> {
        self.outbreak.rules()
    }
}

/// The gateway <-> manager link: the CPQ state (counters, ledgers, inbox, endpoints,
/// migration), and what the core needs of the adapters for it: a gateway's control link
/// to its manager, a manager's shell on its gateways, and a manager's route for released
/// mail back to its gateways.
pub struct CpqHandle {
    pub state: crate::core::cpq::State,
    /// Gateway: the control link to the manager (`XPVO-CONTROL`, `delivery`'s CPQ client).
    pub manager_link: Arc<dyn ManagerLink>,
    /// Manager: the SSH client that asks gateways (`ssh_client`).
    pub gateway_shell: Arc<dyn GatewayShell>,
    /// Manager: where a message released from all its quarantines goes (back to its
    /// gateway, `cpq::manager`); `None` on a gateway, which injects it again itself.
    pub release_route: Option<Arc<dyn ReleaseRoute>>,
}

/// Who may do what: the node's users and roles, the audit trail, the login throttle.
pub struct AccessHandle {
    /// The node's users and roles (`DATA_DIR/users.json`).
    pub users: crate::core::users::Users,
    /// The audit trail (`DATA_DIR/audit.db`).
    pub audit: crate::core::audit::Audit,
    /// Failed password logins per account and per address (web, SSH, `pvo --user`).
    pub logins: crate::core::login_throttle::LoginThrottle,
}

/// The running node as the commands steer it: the listeners, the management servers, a
/// commit put in force (the composition root's, through traits), the idle-session
/// disconnect of `suspend`, and when the node started.
pub struct ControlHandle {
    /// The running listeners (started and moved by `node`).
    pub listeners: Arc<dyn ListenerControl>,
    /// The running `[ssh]` and `[web]` servers (moved by a commit).
    pub servers: Arc<dyn ServerControl>,
    /// What only the composition root does: a configuration put in force.
    pub node: Arc<dyn NodeControl>,
    pub started: std::time::Instant,
    /// Set to true to make idle sessions close (`suspend --delay`).
    pub disconnect: tokio::sync::watch::Sender<bool>,
    disconnect_gen: AtomicU64,
}

impl ControlHandle {
    pub fn new(
        listeners: Arc<dyn ListenerControl>,
        servers: Arc<dyn ServerControl>,
        node: Arc<dyn NodeControl>,
    ) -> ControlHandle {
        ControlHandle {
            listeners,
            servers,
            node,
            started: std::time::Instant::now(),
            disconnect: tokio::sync::watch::channel(false).0,
            disconnect_gen: AtomicU64::new(0),
        }
    }

    /// Tells sessions to close at their next command after `delay`, unless
    /// `cancel_disconnect` comes first.
    pub fn disconnect_sessions_after(self: &Arc<Self>, delay: std::time::Duration) {
        let generation = self.disconnect_gen.fetch_add(1, Ordering::SeqCst) + 1;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if me.disconnect_gen.load(Ordering::SeqCst) == generation {
                me.disconnect.send_replace(true);
            }
        });
    }

    pub fn cancel_disconnect(&self) {
        self.disconnect_gen.fetch_add(1, Ordering::SeqCst);
        self.disconnect.send_replace(false);
    }
}

/// Every handle of a node, built by `node`: the context of the command handlers (which
/// touch everything) and of the channels that dispatch commands. A plain struct of the
/// handles; every other part of the node takes only the handles it uses.
#[derive(Clone)]
pub struct Handles {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    pub resolver: Arc<dyn crate::core::resolve::Resolve>,
    pub tls: Arc<TlsHandle>,
    pub scan: Arc<ScanHandle>,
    pub cpq: Arc<CpqHandle>,
    pub access: Arc<AccessHandle>,
    pub control: Arc<ControlHandle>,
    /// The network probes of `pvoconfig enable` and `diagnose` (`diag::preflight::Probe`).
    pub probes: Arc<dyn Probes>,
    /// What `status` and `diagnose` say of the inbound certificate (`tls::Inbound`).
    pub inbound_certificate: Arc<dyn InboundCertificate>,
    /// The machine's cluster: its store, the revision it runs (`cluster::member`).
    pub cluster: Arc<crate::core::cluster::member::ClusterHandle>,
}

impl Config {
    /// The host name used in EHLO for outbound connections.
    pub fn default_interface_hostname(&self) -> String {
        match self.delivery.default_interface {
            Some(i) => self.interfaces[i].hostname.clone(),
            None => self.hostname.clone(),
        }
    }
}

/// The outbound TLS client configurations: one that verifies the peer, one that does not
/// (opportunistic TLS). Built by `tls::client_configs`.
pub struct ClientConfigs {
    pub verify: Arc<rustls::ClientConfig>,
    pub opportunistic: Arc<rustls::ClientConfig>,
}

/// A management server of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Ssh,
    Web,
}

/// What `ListenerControl::resume` did.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The selected listeners that are receiving now, in configuration order.
    pub receiving: Vec<String>,
    /// Why each of the others could not resume.
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerState {
    pub name: String,
    pub address: SocketAddr,
    pub suspended: bool,
}

/// The running listeners, as the commands see them (`suspendlisteners`,
/// `resumelisteners`, `status`). Implemented by `listeners::Listeners`.
pub trait ListenerControl: Send + Sync {
    /// The address a listener is bound to now.
    fn address(&self, name: &str) -> Option<SocketAddr>;
    /// Every listener, in the order they were started.
    fn states(&self) -> Vec<ListenerState>;
    fn names(&self) -> Vec<String>;
    /// Closes the listening sockets of `names` (all when empty); returns the ones closed.
    fn suspend(&self, names: &[String]) -> Vec<String>;
    /// Binds the suspended ones of `names` (all when empty) again.
    fn resume(&self, names: &[String]) -> Resumed;
}

/// The running management servers, as the commands and the certificate renewal see
/// them. Implemented by `servers::Servers`.
pub trait ServerControl: Send + Sync {
    /// The address a server listens on now.
    fn address(&self, kind: ServerKind) -> Option<SocketAddr>;
}

/// What the composition root does on behalf of the core: put a validated
/// configuration in force across every adapter (all or nothing), and load the CPQ
/// mutual-TLS material. Implemented by `node`.
pub trait NodeControl: Send + Sync {
    fn apply_config(&self, new: Config) -> Result<()>;
    /// Builds the mutual-TLS configurations a gateway would make of the CPQ material in
    /// `dir`, taking only the manager `pinned` (any manager certificate when `None`),
    /// and throws them away: material that rustls cannot use is refused before it is
    /// put in force (`cpqcert install`).
    fn check_gateway_material(
        &self,
        dir: &std::path::Path,
        pinned: Option<Vec<Vec<u8>>>,
    ) -> Result<()>;
}

/// A future as the traits here return it (they are used as trait objects).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The way out of the quarantine store on a manager: a message released from all its
/// quarantines goes back to the gateway it came from. The quarantine service
/// (`scanning::local_quarantine`: the store, its sweeper, the reports of every action)
/// owns the decision that a message leaves; the CPQ manager (`cpq::manager::ToGateways`)
/// owns how, and `node` wires it.
pub trait ReleaseRoute: Send + Sync {
    /// Releases a batch: (node MID, store id, early-release actions) each; returns
    /// (node MID, queued MID) for each message queued.
    fn release_batch<'a>(
        &'a self,
        items: Vec<(u64, MsgId, Vec<EarlyReleaseActions>)>,
    ) -> BoxFuture<'a, Vec<(u64, u64)>>;

    /// Releases one message read from the store; returns its queued MID.
    fn release<'a>(
        &'a self,
        msg_id: MsgId,
        info: &'a MessageInfo,
        raw: Vec<u8>,
        actions: &'a [EarlyReleaseActions],
    ) -> BoxFuture<'a, Result<u64>>;
}

/// A gateway's control link to its manager: sends `XPVO-CONTROL` lines over one
/// mutual-TLS connection and returns the replies. Implemented by `delivery::CpqLink`.
pub trait ManagerLink: Send + Sync {
    fn control<'a>(
        &'a self,
        lines: &'a [String],
    ) -> BoxFuture<'a, std::result::Result<Vec<String>, String>>;
}

/// A manager's shell on its gateways (SSH with the manager's key): what a gateway says
/// of itself, and where it says released mail goes. Implemented by
/// `ssh_client::Ssh`.
pub trait GatewayShell: Send + Sync {
    /// The gateway's `pvoconfig status --json`.
    fn query_status<'a>(&'a self, gateway: &'a str) -> BoxFuture<'a, Result<serde_json::Value>>;

    /// Asks the gateway again, in the background, where released mail goes (a release
    /// could not reach it).
    fn refresh_endpoint(&self, gateway: &str);

    /// How long one exchange may take.
    fn timeout(&self) -> std::time::Duration;

    /// Where an added gateway says released mail goes (`pvoconfig status --json`).
    fn query_endpoint<'a>(
        &'a self,
        gateway: &'a str,
    ) -> BoxFuture<'a, Result<crate::core::cpq::shell::Endpoint>>;

    /// The manager's public key as an `authorized_keys` line, to install on a gateway.
    fn manager_key_line(&self) -> Result<String>;

    /// Runs `command` on the gateway at `to` (address, SSH port) as `user`, pinning
    /// `expected_host_key` when given.
    fn exec<'a>(
        &'a self,
        to: (std::net::IpAddr, u16),
        user: &'a str,
        login: &'a crate::core::cpq::shell::ShellLogin,
        expected_host_key: Option<&'a str>,
        command: &'a str,
    ) -> BoxFuture<'a, Result<crate::core::cpq::shell::Exec>>;
}

/// The network probes the commands run: the enable preflight against a manager, a TCP
/// connect from one interface, and the wording of a failed TLS handshake as the log has
/// it. A trait, so that the commands reach the diagnostics adapter only through what
/// the root wires (`diag::preflight::Probe`).
/// What `telnet` and `tlsverify` are asked: the interface to leave by, the host (and, for
/// `tlsverify`, the domain whose certificate is verified), the port and the seconds to
/// wait; empty or absent fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetTest {
    pub interface: Option<String>,
    pub timeout: Option<u64>,
    pub domain: Option<String>,
    pub host: Option<String>,
    pub port: Option<u64>,
}

/// What a network test answers: why it did not run (an argument it refuses), or the
/// transcript the appliance prints with the same facts as JSON and whether it
/// succeeded.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeRun {
    Refused(String),
    Ran {
        ok: bool,
        text: String,
        data: serde_json::Value,
    },
}

impl ProbeRun {
    pub fn refused(text: impl Into<String>) -> ProbeRun {
        ProbeRun::Refused(text.into())
    }

    pub fn ran(ok: bool, text: String, data: serde_json::Value) -> ProbeRun {
        ProbeRun::Ran { ok, text, data }
    }
}

pub trait Probes: Send + Sync {
    /// The enable preflight against the manager `host:port`.
    fn preflight<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Vec<crate::core::cpq::checks::Check>>;

    /// Connects to `addr` from the address `from`, within the preflight's timeout, and
    /// closes again; the error is `telnet`'s words.
    fn reach(
        &self,
        addr: std::net::SocketAddr,
        from: std::net::IpAddr,
    ) -> BoxFuture<'static, std::result::Result<(), String>>;

    /// How `mail_logs` words this failed handshake.
    fn tls_error_text(&self, e: &std::io::Error) -> String;

    /// `telnet`: connect from an interface, show the banner, QUIT.
    fn telnet<'a>(&'a self, test: NetTest) -> BoxFuture<'a, ProbeRun>;

    /// `tlsverify`: the STARTTLS dialogue with a server, verifying its certificate.
    fn tlsverify<'a>(&'a self, test: NetTest) -> BoxFuture<'a, ProbeRun>;
}

/// The inbound certificate (SMTP STARTTLS and HTTPS) as `status` and `diagnose` describe
/// it. A trait, so that the commands read it without importing the TLS module that
/// generates and parses it (`tls::Inbound`).
pub trait InboundCertificate: Send + Sync {
    /// "self-signed certificate for NAME, valid until DATE (generated by PVO|FILE)";
    /// `None` when a CA issued it.
    fn self_signed(&self, cfg: &Config) -> Option<String>;
}
