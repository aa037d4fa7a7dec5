//! A running node: the state every task shares, start-up and shutdown.
//!
//! Start-up order matters for durability: the spool is recovered before any
//! listener accepts, and recovered messages go to the queue manager before new
//! ones, so a restart delivers what was accepted before the crash first.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use pvo_spool::{Spool, SpoolConfig, SpoolError};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::dns::Resolver;
use crate::envelope::{Envelope, Update};
use crate::ids::Ids;
use crate::mail_log::MailLog;
use crate::queue::{self, Event, QueueHandle};
use crate::tls::ClientConfigs;

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
    pub scan_latency: crate::web::metrics::Histogram,
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
    fn open(run_dir: &std::path::Path, tally: &crate::events::Tally) -> Counters {
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
        let now = crate::clock::unix_now();
        *self.reset_base.lock().unwrap() = (Some(now), self.snapshot());
    }

    /// Writes the lifetime totals (periodically and at shutdown). Returns what mail_logs
    /// should say: the first failure (file and cause; the totals stay in memory and are
    /// written with the next try) and the first success after failures.
    pub fn persist(&self) -> Option<crate::events::Notice> {
        let bytes = serde_json::to_vec(&self.lifetime()).ok()?;
        let result = crate::atomic_file::write(&self.path, &bytes);
        let mut failing = self.persist_failing.lock().unwrap();
        match result {
            Ok(()) => {
                std::mem::take(&mut *failing).then(|| crate::events::Notice::CountersWrittenAgain {
                    path: self.path.clone(),
                })
            }
            Err(e) if !*failing => {
                *failing = true;
                Some(crate::events::Notice::CountersNotWritten {
                    path: self.path.clone(),
                    error: format!("{e:#}"),
                })
            }
            Err(_) => None,
        }
    }
}

/// Bytes the spool keeps in `spool/reserve` for a full disk: room for thousands of finish
/// records, the SQLite shared-memory files, `run/ids` and log lines.
const SPOOL_RESERVE: u64 = 128 << 10;

/// What every task of a node shares.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    /// The file the committed configuration lives in.
    pub config_path: std::path::PathBuf,
    pub spool: Spool,
    pub ids: Ids,
    pub log: MailLog,
    pub resolver: Resolver,
    tls_server: RwLock<Arc<rustls::ServerConfig>>,
    tls_clients: RwLock<Arc<ClientConfigs>>,
    pub queue: QueueHandle,
    pub counters: Counters,
    pub listeners: crate::listeners::Listeners,
    /// The running `[ssh]` and `[web]` servers (moved by a commit).
    pub servers: crate::servers::Servers,
    pub started: std::time::Instant,
    /// Set to true to make idle sessions close (`suspend --delay`).
    pub disconnect: tokio::sync::watch::Sender<bool>,
    disconnect_gen: AtomicU64,
    scanner: RwLock<Arc<crate::scanning::Scanner>>,
    /// The outbreak rules in force and their persisted copy (`DATA_DIR/outbreak`).
    pub outbreak: crate::scanning::outbreak_store::OutbreakState,
    /// The local quarantines (gateway) or the central store (manager).
    pub local_quarantine: crate::scanning::local_quarantine::LocalQuarantine,
    cpq_tls: RwLock<Option<Arc<crate::cpq::CpqTls>>>,
    pub cpq: crate::cpq::State,
    /// The node's users and roles (`DATA_DIR/users.json`).
    pub users: crate::users::Users,
    /// The audit trail (`DATA_DIR/audit.db`).
    pub audit: crate::audit::Audit,
    /// Failed password logins per account and per address (web, SSH, `pvo --user`).
    pub logins: crate::login_throttle::LoginThrottle,
}

impl Shared {
    /// The configuration in force. Readers take a snapshot (an `Arc`), so a
    /// commit swaps the whole configuration at once and never half of it.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    pub fn tls_server(&self) -> Arc<rustls::ServerConfig> {
        self.tls_server.read().unwrap().clone()
    }

    /// Puts a renewed inbound certificate in force (`tls::renew_self_signed`).
    pub fn set_tls_server(&self, c: Arc<rustls::ServerConfig>) {
        *self.tls_server.write().unwrap() = c;
    }

    pub fn tls_clients(&self) -> Arc<ClientConfigs> {
        self.tls_clients.read().unwrap().clone()
    }

    /// The CPQ mutual-TLS configurations (when `[cpq]` is configured).
    pub fn cpq_tls(&self) -> Option<Arc<crate::cpq::CpqTls>> {
        self.cpq_tls.read().unwrap().clone()
    }

    /// Rebuilds the CPQ TLS configurations from disk (after `cpqcert revoke`), so
    /// the next handshake applies the new revocation list.
    pub fn reload_cpq_tls(&self) -> Result<()> {
        let tls = crate::cpq::load_tls(&self.config())?.map(Arc::new);
        *self.cpq_tls.write().unwrap() = tls;
        Ok(())
    }

    pub fn scanner(&self) -> Arc<crate::scanning::Scanner> {
        self.scanner.read().unwrap().clone()
    }

    pub fn outbreak_rules(&self) -> Option<Arc<pvo_scan::outbreak::OutbreakRules>> {
        self.outbreak.rules()
    }

    /// Injects a message generated or released here: a new MID, spooled
    /// (fsynced), then scanned or queued. Returns the new MID.
    pub async fn inject(
        self: &Arc<Self>,
        template: &Envelope,
        body: Vec<u8>,
        scanned: bool,
    ) -> Result<u64> {
        let mid = self.ids.next(crate::ids::Kind::Mid);
        let mut env = template.clone();
        env.mid = mid;
        env.size = body.len() as u64;
        env.scanned = scanned;
        let body = self
            .spool_message(&env, body)
            .await
            .map_err(|e| anyhow::anyhow!("spool: {e}"))?;
        self.submit_injected(env, body);
        Ok(mid)
    }

    /// The second half of [`Shared::inject`], for a message already spooled: logs it and
    /// hands it to scanning or delivery.
    pub fn submit_injected(self: &Arc<Self>, env: Envelope, body: Arc<Vec<u8>>) {
        self.log.emit(crate::events::Event::Ready {
            mid: env.mid,
            bytes: body.len(),
            sender: &env.sender,
        });
        self.log.emit(crate::events::Event::Queued { mid: env.mid });
        crate::scanning::pipeline::submit(self, Arc::new(env), body);
    }

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

    /// Applies a validated configuration to the running node, all or
    /// nothing: TLS material is loaded and new listener sockets are bound
    /// first; only when everything succeeded is the configuration swapped and
    /// the listeners moved. Sessions already running keep the snapshot they
    /// started with, and queued mail is untouched, so nothing in flight is
    /// dropped.
    pub fn apply_config(self: &Arc<Self>, new: Config) -> Result<()> {
        let old = self.config();
        if new.data_dir != old.data_dir {
            anyhow::bail!(
                "node.data_dir cannot change on a running node (it is {}, the new configuration says {}); stop the node, move the directory, and start it again",
                old.data_dir.display(),
                new.data_dir.display()
            );
        }
        let tls_server = crate::tls::server_config(&new)?;
        let tls_clients = crate::tls::client_configs(&new)?;
        if new.role != old.role {
            anyhow::bail!(
                "node.role cannot change on a running node (it is {}, the new configuration says {})",
                old.role.as_str(),
                new.role.as_str()
            );
        }
        let cpq_tls = crate::cpq::load_tls(&new)?.map(Arc::new);
        let scanner = crate::scanning::Scanner::new(&new.scanning)
            .map_err(|e| anyhow::anyhow!("scanning configuration: {e}"))?;
        let outbreak = crate::scanning::outbreak_store::prepare_commit(
            old.scanning.outbreak_rules.as_deref(),
            new.scanning.outbreak_rules.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        // Bind what is new or moved; keep what did not change.
        let mut bound = Vec::new();
        for l in &new.listeners {
            let want = SocketAddr::new(new.interfaces[l.interface].address, l.port);
            let unchanged = self
                .listeners
                .address(&l.name)
                .is_some_and(|cur| cur.ip() == want.ip() && (l.port == 0 || cur.port() == l.port));
            if !unchanged {
                let sock = crate::listeners::Listeners::bind_only(want)
                    .with_context(|| format!("listener {} cannot listen on {want}", l.name))?;
                bound.push((l.name.clone(), sock));
            }
        }
        // The same for `[ssh]` and `[web]`: the new server is bound before the old stops.
        let servers = self.servers.prepare(&new)?;
        *self.config.write().unwrap() = Arc::new(new.clone());
        *self.tls_server.write().unwrap() = tls_server;
        *self.cpq_tls.write().unwrap() = cpq_tls;
        if new.cpq.is_some()
            && new.role == crate::config::Role::Gateway
            && self.cpq.ledger.get().is_none()
        {
            let (ledger, settled) =
                crate::cpq::gateway::ReleaseLedger::open(&new.data_dir.join("cpq"), &self.spool)?;
            crate::cpq::gateway::log_settled(&self.log, &settled);
            let _ = self.cpq.ledger.set(ledger);
        }
        *self.scanner.write().unwrap() = Arc::new(scanner);
        if let Some(change) = outbreak {
            self.outbreak
                .commit(change, crate::clock::unix_now(), &self.log);
        }
        *self.tls_clients.write().unwrap() = Arc::new(tls_clients);
        for name in self.listeners.names() {
            if !new.listeners.iter().any(|l| l.name == name) {
                self.listeners.remove(&name);
                self.log
                    .emit(crate::events::Event::ListenerRemoved { name: &name });
            }
        }
        for (name, sock) in bound {
            let addr = self.listeners.adopt(self, &name, sock)?;
            self.log
                .emit(crate::events::Event::ListenerListening { name: &name, addr });
        }
        self.servers.switch(self, servers);
        self.queue.send(crate::queue::Event::Reconfigured);
        crate::cpq::migrate::start(self);
        Ok(())
    }

    pub async fn read_body(&self, mid: u64) -> Result<Vec<u8>, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || spool.read_body(mid))
            .await
            .unwrap_or(Err(SpoolError::Closed))
    }
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

/// A started node.
pub struct Node {
    pub shared: Arc<Shared>,
    pub listeners: Vec<(String, SocketAddr)>,
    /// The SSH server's address, when `[ssh]` is configured.
    pub ssh: Option<SocketAddr>,
    /// The HTTPS server's address (REST API, metrics), when `[web]` is configured.
    pub web: Option<SocketAddr>,
    /// The generated password of `admin` on the first start (printed once).
    pub initial_admin_password: Option<String>,
}

impl Node {
    /// Recovers the spool, starts the queue manager and binds the listeners.
    pub async fn start(config: Config, config_path: std::path::PathBuf) -> Result<Node> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        // Where SSH and API commands take their file arguments from (`import`).
        crate::import::ensure(&config.data_dir).with_context(|| {
            format!(
                "creating the import directory {}",
                crate::import::dir(&config.data_dir).display()
            )
        })?;
        let log = MailLog::open(&config.logs_dir(), config.logs.max_size, config.logs.keep)
            .context("opening mail_logs")?;
        let mut spool_config = SpoolConfig::new(config.spool_dir());
        // Room kept for a full disk: a node that filled it up can still start, record what
        // it delivers and write its small files while it drains (`pvo_spool`, "A full disk").
        spool_config.reserve = SPOOL_RESERVE;
        let (spool, recovered) = Spool::open(spool_config)
            .with_context(|| format!("opening the spool in {}", config.spool_dir().display()))?;
        for m in &recovered.moved_aside {
            log.emit(crate::events::Event::SpoolFileMovedAside {
                from: &m.from,
                to: &m.to,
                reason: &m.reason,
            });
        }
        let ids = Ids::open(&config.run_dir(), recovered.max_mid + 1)?;
        for news in ids.take_news() {
            log.emit(crate::events::Event::Notice(&news));
        }
        let scanner = crate::scanning::Scanner::new(&config.scanning)
            .map_err(|e| anyhow::anyhow!("scanning configuration: {e}"))?;
        let outbreak = crate::scanning::outbreak_store::OutbreakState::start(
            &config.data_dir,
            config.scanning.outbreak_rules.as_deref(),
            &log,
        )?;
        let quota = match (&config.role, &config.cpq) {
            (crate::config::Role::Manager, Some(c)) => c.quota,
            _ => config.scanning.quarantine_quota,
        };
        let local_quarantine = crate::scanning::local_quarantine::LocalQuarantine::open(
            &config.data_dir.join("quarantine"),
            quota,
        )?;
        let cpq_tls = crate::cpq::load_tls(&config)?.map(Arc::new);
        let cpq = crate::cpq::State {
            endpoints: crate::cpq::appliance::Endpoints::load(
                &config.data_dir.join("cpq").join("endpoints.json"),
            ),
            ..Default::default()
        };
        match config.role {
            crate::config::Role::Manager => {
                let _ = cpq
                    .inbox
                    .set(crate::cpq::manager::Inbox::start(local_quarantine.store()));
            }
            crate::config::Role::Gateway if config.cpq.is_some() => {
                let (ledger, settled) =
                    crate::cpq::gateway::ReleaseLedger::open(&config.data_dir.join("cpq"), &spool)?;
                crate::cpq::gateway::log_settled(&log, &settled);
                let _ = cpq.ledger.set(ledger);
            }
            crate::config::Role::Gateway => {}
        }
        let (users, initial_admin_password) =
            crate::users::Users::open(&config.data_dir, crate::clock::unix_now())?;
        let audit = crate::audit::Audit::open(&config.data_dir)?;
        let tls_server = crate::tls::server_config(&config)?;
        let tls_clients = crate::tls::client_configs(&config)?;
        let (queue, rx) = queue::channel();
        let shared = Arc::new(Shared {
            config: RwLock::new(config.clone()),
            config_path,
            spool,
            ids,
            resolver: Resolver::new(),
            tls_server: RwLock::new(tls_server),
            tls_clients: RwLock::new(Arc::new(tls_clients)),
            queue: queue.clone(),
            counters: Counters::open(&config.run_dir(), log.tally()),
            listeners: Default::default(),
            servers: Default::default(),
            started: std::time::Instant::now(),
            disconnect: tokio::sync::watch::channel(false).0,
            disconnect_gen: AtomicU64::new(0),
            log,
            scanner: RwLock::new(Arc::new(scanner)),
            outbreak,
            local_quarantine,
            cpq_tls: RwLock::new(cpq_tls),
            cpq,
            users,
            audit,
            logins: Default::default(),
        });
        {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    let counters = shared.clone();
                    let news = tokio::task::spawn_blocking(move || counters.counters.persist())
                        .await
                        .ok()
                        .flatten();
                    for n in news.into_iter().chain(shared.ids.take_news()) {
                        shared.log.emit(crate::events::Event::Notice(&n));
                    }
                }
            });
        }
        tokio::spawn(crate::tls::renew_self_signed(shared.clone()));
        shared.log.emit(crate::events::Event::Starting {
            version: env!("CARGO_PKG_VERSION"),
            hostname: &config.hostname,
            role: config.role.as_str(),
        });

        let mut recovered_count = 0usize;
        for m in recovered.messages {
            let env = match Envelope::decode(&m.meta) {
                Ok(e) => e,
                Err(e) => {
                    shared.log.emit(crate::events::Event::UnreadableEnvelope {
                        mid: m.mid,
                        error: &e,
                    });
                    continue;
                }
            };
            let mut done = Vec::new();
            let mut redirect = None;
            let mut scanned = false;
            let mut env = env;
            for u in &m.updates {
                match Update::decode(u) {
                    Ok(Update::Rcpt { rid, state }) => done.push((rid, state)),
                    Ok(Update::Redirect { host, port }) => redirect = Some((host, port)),
                    Ok(Update::Scanned) => scanned = true,
                    Ok(Update::Cpq(tag)) => {
                        env.cpq = Some(tag);
                        scanned = true;
                    }
                    Err(e) => shared.log.emit(crate::events::Event::UnreadableProgress {
                        mid: m.mid,
                        error: &e,
                    }),
                }
            }
            recovered_count += 1;
            if !scanned && !env.scanned && done.is_empty() && redirect.is_none() {
                // Accepted but not through the scanning pipeline before the
                // restart: it is scanned now, never delivered unscanned.
                crate::scanning::pipeline::submit_recovered(&shared, Arc::new(env));
                continue;
            }
            queue.send(Event::Enqueue {
                env: Arc::new(env),
                body: None,
                done,
                redirect,
            });
        }
        if recovered_count > 0 {
            shared.log.emit(crate::events::Event::Recovered {
                messages: recovered_count,
            });
        }
        tokio::spawn(queue::Manager::new(shared.clone(), rx).run());
        crate::scanning::local_quarantine::start(&shared);
        crate::cpq::migrate::start(&shared);

        let mut listeners = Vec::new();
        for l in config.listeners.iter() {
            let addr = SocketAddr::new(config.interfaces[l.interface].address, l.port);
            let bound = shared.listeners.start(&shared, &l.name, addr)?;
            shared.log.emit(crate::events::Event::ListenerListening {
                name: &l.name,
                addr: bound,
            });
            listeners.push((l.name.clone(), bound));
        }
        crate::admin::server::start(shared.clone())?;
        let (ssh, web) = shared.servers.start(&shared)?;
        Ok(Node {
            shared,
            listeners,
            ssh,
            web,
            initial_admin_password,
        })
    }

    /// Stops delivery, flushes the spool and the log.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.shared.queue.send(Event::Shutdown(tx));
        let _ = rx.await;
        let spool = self.shared.spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.sync()).await;
        if let Some(news) = self.shared.counters.persist() {
            self.shared.log.emit(crate::events::Event::Notice(&news));
        }
        for news in self.shared.ids.take_news() {
            self.shared.log.emit(crate::events::Event::Notice(&news));
        }
        self.shared.log.emit(crate::events::Event::ShuttingDown);
        self.shared.log.flush();
    }
}
