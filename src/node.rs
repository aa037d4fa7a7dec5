//! The composition root of a running node: start-up, shutdown, and the wiring of the
//! adapters into the state the core shares ([`Handles`], defined in `state`). It builds the
//! listeners, servers and subsystems, implements [`NodeControl`] (a commit put in force
//! across every adapter), and is imported by nothing but `main` and `quickstart`.
//!
//! Start-up order matters for durability: the spool is recovered before any
//! listener accepts, and recovered messages go to the queue manager before new
//! ones, so a restart delivers what was accepted before the crash first.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use pvo_spool::{Spool, SpoolConfig};
use tokio::sync::oneshot;

use crate::core::config::Config;
use crate::core::envelope::{Envelope, Update};
use crate::core::ids::Ids;
use crate::core::mail_log::MailLog;
use crate::core::queue::{self, Event};
use crate::core::state::{
    AccessHandle, ConfigHandle, ControlHandle, Counters, CpqHandle, Handles, MailHandle,
    NodeControl, ScanHandle, TlsHandle,
};
use crate::listeners::Listeners;
use crate::net::dns::Resolver;
use crate::servers::Servers;

/// Bytes the spool keeps in `spool/reserve` for a full disk: room for thousands of finish
/// records, the SQLite shared-memory files, `run/ids` and log lines.
const SPOOL_RESERVE: u64 = 128 << 10;

/// The composition root's side of [`Handles`]: the concrete listeners and servers, which a
/// commit binds and moves.
struct Wiring {
    listeners: Arc<Listeners>,
    servers: Arc<Servers>,
    /// The node's handles, set once they are built. A commit touches every one of them;
    /// they hold this (in the control handle), so it holds them weakly.
    handles: std::sync::OnceLock<std::sync::Weak<Handles>>,
}

impl NodeControl for Wiring {
    /// Applies a validated configuration to the running node, all or
    /// nothing: TLS material is loaded and new listener sockets are bound
    /// first; only when everything succeeded is the configuration swapped and
    /// the listeners moved. Sessions already running keep the snapshot they
    /// started with, and queued mail is untouched, so nothing in flight is
    /// dropped.
    fn apply_config(&self, new: Config) -> Result<()> {
        let shared = &self
            .handles
            .get()
            .and_then(std::sync::Weak::upgrade)
            .context("the node is not running")?;
        let old = shared.config.current();
        if new.data_dir != old.data_dir {
            anyhow::bail!(
                "node.data_dir cannot change on a running node (it is {}, the new configuration says {}); stop the node, move the directory, and start it again",
                old.data_dir.display(),
                new.data_dir.display()
            );
        }
        let tls_server = crate::net::tls::server_config(&new)?;
        let tls_clients = crate::net::tls::client_configs(&new)?;
        if new.role != old.role {
            anyhow::bail!(
                "node.role cannot change on a running node (it is {}, the new configuration says {})",
                old.role.as_str(),
                new.role.as_str()
            );
        }
        let cpq_tls = crate::net::cpq_certs::load_tls(&new)?.map(Arc::new);
        let scanner =
            crate::core::scanning::Scanner::new(&new.scanning, crate::adapters::clamd::scanner_for)
                .map_err(|e| anyhow::anyhow!("scanning configuration: {e}"))?;
        let outbreak = crate::core::scanning::outbreak_store::prepare_commit(
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
        shared.config.swap(Arc::new(new.clone()));
        shared.tls.swap(tls_server, tls_clients, cpq_tls);
        if new.cpq.is_some()
            && new.role == crate::core::config::Role::Gateway
            && shared.cpq.state.ledger.get().is_none()
        {
            let (ledger, settled) = crate::core::cpq::ledger::ReleaseLedger::open(
                &new.data_dir.join("cpq"),
                &shared.mail.spool,
            )?;
            crate::core::cpq::ledger::log_settled(&shared.mail.log, &settled);
            let _ = shared.cpq.state.ledger.set(ledger);
        }
        shared.scan.set_scanner(scanner);
        if let Some(change) = outbreak {
            shared
                .scan
                .outbreak
                .commit(change, crate::core::clock::unix_now(), &shared.mail.log);
        }
        for name in self.listeners.names() {
            if !new.listeners.iter().any(|l| l.name == name) {
                self.listeners.remove(&name);
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::ListenerRemoved { name: &name });
            }
        }
        for (name, sock) in bound {
            let addr = self.listeners.adopt(&name, sock)?;
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ListenerListening { name: &name, addr });
        }
        self.servers.switch(shared, servers);
        shared
            .mail
            .queue
            .send(crate::core::queue::Event::Reconfigured);
        crate::core::cpq::migrate::start(&(&**shared).into());
        Ok(())
    }

    fn check_gateway_material(
        &self,
        dir: &std::path::Path,
        pinned: Option<Vec<Vec<u8>>>,
    ) -> Result<()> {
        crate::net::cpq_certs::check_gateway_material(dir, pinned)
    }
}

/// Which part receives which handles: each part's own struct of the handles it uses,
/// taken from the node's [`Handles`] (the root and the commands build them).
impl From<&Handles> for crate::adapters::delivery::Deps {
    fn from(h: &Handles) -> Self {
        crate::adapters::delivery::Deps {
            config: h.config.clone(),
            cpq: h.cpq.clone(),
            mail: h.mail.clone(),
            resolver: h.resolver.clone(),
            tls: h.tls.clone(),
        }
    }
}

impl From<&Handles> for crate::core::cpq::handles::Deps {
    fn from(h: &Handles) -> Self {
        crate::core::cpq::handles::Deps {
            config: h.config.clone(),
            mail: h.mail.clone(),
            scan: h.scan.clone(),
            cpq: h.cpq.clone(),
        }
    }
}

impl From<&Handles> for crate::core::scanning::pipeline::Deps {
    fn from(h: &Handles) -> Self {
        crate::core::scanning::pipeline::Deps {
            config: h.config.clone(),
            mail: h.mail.clone(),
            scan: h.scan.clone(),
        }
    }
}

/// A started node.
pub struct Node {
    pub shared: Arc<Handles>,
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
        // A cluster member starts on its last good configuration, if it has one.
        let (config, cluster_revision, cache_problem) =
            match crate::core::cluster::sync::startup_config(config.clone(), &config_path) {
                Ok((c, r)) => (c, r, None),
                Err(e) => (config, 0, Some(e)),
            };
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        // Where SSH and API commands take their file arguments from (`import`).
        crate::core::import::ensure(&config.data_dir).with_context(|| {
            format!(
                "creating the import directory {}",
                crate::core::import::dir(&config.data_dir).display()
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
            log.emit(crate::core::events::Event::SpoolFileMovedAside {
                from: &m.from,
                to: &m.to,
                reason: &m.reason,
            });
        }
        let ids = Ids::open(&config.run_dir(), recovered.max_mid + 1)?;
        for news in ids.take_news() {
            log.emit(crate::core::events::Event::Notice(&news));
        }
        let scanner = crate::core::scanning::Scanner::new(
            &config.scanning,
            crate::adapters::clamd::scanner_for,
        )
        .map_err(|e| anyhow::anyhow!("scanning configuration: {e}"))?;
        let outbreak = crate::core::scanning::outbreak_store::OutbreakState::start(
            &config.data_dir,
            config.scanning.outbreak_rules.as_deref(),
            &log,
        )?;
        let quota = match (&config.role, &config.cpq) {
            (crate::core::config::Role::Manager, Some(c)) => c.quota,
            _ => config.scanning.quarantine_quota,
        };
        let local_quarantine = match &config.store {
            None => crate::core::scanning::quarantine_store::LocalQuarantine::open(
                &config.data_dir.join("quarantine"),
                quota,
            )?,
            Some(s) => {
                // The managers of one store number their messages in ranges of their own.
                let node_id = config
                    .cpq
                    .as_ref()
                    .map_or(config.hostname.clone(), |c| c.node_id.clone());
                let (store, floor) = open_postgres_store(s, quota, node_id)?;
                ids.raise_floor(crate::core::ids::Kind::Mid, floor);
                crate::core::scanning::quarantine_store::LocalQuarantine::with_store(store)
            }
        };
        let cpq_tls = crate::net::cpq_certs::load_tls(&config)?.map(Arc::new);
        let cpq = crate::core::cpq::State {
            endpoints: crate::core::cpq::endpoints::Endpoints::load(
                &config.data_dir.join("cpq").join("endpoints.json"),
            ),
            ..Default::default()
        };
        match config.role {
            crate::core::config::Role::Manager => {
                let _ = cpq.inbox.set(crate::core::cpq::inbox::Inbox::start(
                    local_quarantine.store(),
                ));
            }
            crate::core::config::Role::Gateway if config.cpq.is_some() => {
                let (ledger, settled) = crate::core::cpq::ledger::ReleaseLedger::open(
                    &config.data_dir.join("cpq"),
                    &spool,
                )?;
                crate::core::cpq::ledger::log_settled(&log, &settled);
                let _ = cpq.ledger.set(ledger);
            }
            crate::core::config::Role::Gateway => {}
        }
        let (users, initial_admin_password) =
            crate::core::users::Users::open(&config.data_dir, crate::core::clock::unix_now())?;
        let audit = crate::core::audit::Audit::open(&config.data_dir)?;
        let tls_server = crate::net::tls::server_config(&config)?;
        let tls_clients = crate::net::tls::client_configs(&config)?;
        let (queue, rx) = queue::channel();
        let listeners = Arc::new(Listeners::default());
        let servers = Arc::new(Servers::default());
        let config_handle = Arc::new(ConfigHandle::new(config.clone(), config_path));
        let mail = Arc::new(MailHandle {
            spool,
            ids,
            counters: Counters::open(&config.run_dir(), log.tally()),
            log,
            queue: queue.clone(),
        });
        let resolver: Arc<dyn crate::core::resolve::Resolve> = Arc::new(Resolver::new());
        let tls = Arc::new(TlsHandle::new(
            tls_server,
            tls_clients,
            cpq_tls,
            Box::new(crate::net::cpq_certs::load_tls),
        ));
        let features = Arc::new(crate::core::feature_keys::FeatureKeys::open(
            &config.data_dir,
            crate::core::clock::unix_now(),
        )?);
        let scan = Arc::new(ScanHandle::new(
            scanner,
            outbreak,
            local_quarantine,
            features.clone(),
        ));
        // The CPQ handle holds the adapters that use it (the control link, the gateway
        // shell, the release route): they hold it weakly, so a dropped node frees it.
        let cpq_handle = Arc::new_cyclic(|cpq_weak: &std::sync::Weak<CpqHandle>| CpqHandle {
            state: cpq,
            manager_link: Arc::new(crate::adapters::delivery::CpqLink {
                config: config_handle.clone(),
                cpq: cpq_weak.clone(),
                mail: mail.clone(),
                resolver: resolver.clone(),
                tls: tls.clone(),
            }),
            gateway_shell: Arc::new(crate::adapters::ssh_client::Ssh {
                config: config_handle.clone(),
                mail: mail.clone(),
                cpq: cpq_weak.clone(),
            }),
            release_route: match config.role {
                crate::core::config::Role::Manager => {
                    Some(Arc::new(crate::core::cpq::manager::ToGateways {
                        config: config_handle.clone(),
                        mail: mail.clone(),
                        scan: scan.clone(),
                        cpq: cpq_weak.clone(),
                    }))
                }
                crate::core::config::Role::Gateway => None,
            },
        });
        let wiring = Arc::new(Wiring {
            listeners: listeners.clone(),
            servers: servers.clone(),
            handles: Default::default(),
        });
        let probes = Arc::new(crate::adapters::diag::preflight::Probe(
            crate::adapters::diag::Deps {
                config: config_handle.clone(),
                resolver: resolver.clone(),
                tls: tls.clone(),
            },
        ));
        let shared = Arc::new(Handles {
            config: config_handle,
            mail,
            resolver,
            tls,
            scan,
            cpq: cpq_handle,
            access: Arc::new(AccessHandle {
                users,
                audit,
                logins: Default::default(),
            }),
            control: Arc::new(ControlHandle::new(
                listeners.clone(),
                servers.clone(),
                wiring.clone(),
            )),
            probes,
            inbound_certificate: Arc::new(crate::net::tls::Inbound),
            cluster: Arc::new(crate::core::cluster::member::ClusterHandle::new(
                Arc::new(crate::adapters::cluster_db::Postgres),
                &config.data_dir,
                config.cluster.clone(),
                cluster_revision,
            )),
        });
        if let (Some(why), Some(m)) = (&cache_problem, &config.cluster) {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ClusterNotApplied {
                    machine: &m.machine,
                    revision: 0,
                    why,
                    running: 0,
                });
        }
        {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    let counters = shared.clone();
                    let news =
                        tokio::task::spawn_blocking(move || counters.mail.counters.persist())
                            .await
                            .ok()
                            .flatten();
                    for n in news.into_iter().chain(shared.mail.ids.take_news()) {
                        shared.mail.log.emit(crate::core::events::Event::Notice(&n));
                    }
                }
            });
        }
        // A key that expired while the node was down is said once, as at its expiry.
        for f in features.expired(crate::core::clock::unix_now()) {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::FeatureKeyExpired {
                    feature: f.title(),
                    command: f.name(),
                });
        }
        tokio::spawn(crate::core::feature_keys::watch(
            features,
            shared.mail.log.clone(),
        ));
        tokio::spawn(crate::net::tls::renew_self_signed(
            shared.config.clone(),
            shared.mail.clone(),
            shared.tls.clone(),
        ));
        shared.mail.log.emit(crate::core::events::Event::Starting {
            version: env!("CARGO_PKG_VERSION"),
            hostname: &config.hostname,
            role: config.role.as_str(),
        });

        let mut recovered_count = 0usize;
        for m in recovered.messages {
            let env = match Envelope::decode(&m.meta) {
                Ok(e) => e,
                Err(e) => {
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::UnreadableEnvelope {
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
                    Err(e) => {
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::UnreadableProgress {
                                mid: m.mid,
                                error: &e,
                            })
                    }
                }
            }
            recovered_count += 1;
            if !scanned && !env.scanned && done.is_empty() && redirect.is_none() {
                // Accepted but not through the scanning pipeline before the
                // restart: it is scanned now, never delivered unscanned.
                crate::core::scanning::pipeline::submit_recovered(
                    &(&*shared).into(),
                    Arc::new(env),
                );
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
            shared.mail.log.emit(crate::core::events::Event::Recovered {
                messages: recovered_count,
            });
        }
        tokio::spawn(
            queue::Manager::new(
                shared.config.clone(),
                shared.mail.clone(),
                rx,
                Arc::new(crate::adapters::delivery::SmtpTransport(
                    crate::adapters::delivery::Deps::from(&*shared),
                )),
            )
            .run(),
        );
        let _ = wiring.handles.set(Arc::downgrade(&shared));
        listeners.wire(crate::adapters::smtp_server::Deps {
            config: shared.config.clone(),
            mail: shared.mail.clone(),
            resolver: shared.resolver.clone(),
            tls: shared.tls.clone(),
            scan: shared.scan.clone(),
            cpq: shared.cpq.clone(),
            access: shared.access.clone(),
            disconnect: shared.control.disconnect.subscribe(),
        });
        crate::core::scanning::local_quarantine::start(&(&*shared).into());
        crate::core::cpq::migrate::start(&(&*shared).into());

        let mut bound_listeners = Vec::new();
        for l in config.listeners.iter() {
            let addr = SocketAddr::new(config.interfaces[l.interface].address, l.port);
            let bound = listeners.start(&l.name, addr)?;
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ListenerListening {
                    name: &l.name,
                    addr: bound,
                });
            bound_listeners.push((l.name.clone(), bound));
        }
        crate::adapters::admin::server::start(shared.clone())?;
        let (ssh, web) = servers.start(&shared)?;
        tokio::spawn(crate::core::cluster::sync::run(
            crate::core::cluster::sync::Deps {
                cluster: shared.cluster.clone(),
                control: wiring.clone(),
                config: shared.config.clone(),
                mail: shared.mail.clone(),
                features: shared.scan.features.clone(),
                access: shared.access.clone(),
            },
        ));
        Ok(Node {
            shared,
            listeners: bound_listeners,
            ssh,
            web,
            initial_admin_password,
        })
    }

    /// Stops delivery, flushes the spool and the log.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.shared.mail.queue.send(Event::Shutdown(tx));
        let _ = rx.await;
        let spool = self.shared.mail.spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.sync()).await;
        if let Some(news) = self.shared.mail.counters.persist() {
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::Notice(&news));
        }
        for news in self.shared.mail.ids.take_news() {
            self.shared
                .mail
                .log
                .emit(crate::core::events::Event::Notice(&news));
        }
        self.shared
            .mail
            .log
            .emit(crate::core::events::Event::ShuttingDown);
        self.shared.mail.log.flush();
    }
}

/// A manager's central store on PostgreSQL (`[store]`): over TLS checked against `ca`
/// when it names one, else as is (a Unix socket or loopback; the store refuses anything
/// else in clear). Opened on a thread of its own: the blocking `postgres` client may not
/// run on the runtime.
fn open_postgres_store(
    s: &crate::core::config::StoreConfig,
    quota: Option<u64>,
    node_id: String,
) -> anyhow::Result<(pvo_quarantine::Store, u64)> {
    use anyhow::Context;
    let (url, ca) = (s.url.clone(), s.ca.clone());
    let shown = crate::core::cluster::sync::describe(&url);
    std::thread::spawn(move || {
        let now = crate::core::clock::unix_now();
        let store = match ca {
            Some(ca) => {
                let tls = crate::adapters::cluster_db::tls_connector(&ca)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                pvo_quarantine::Store::open_postgres_tls(&url, tls, now)?
            }
            None => pvo_quarantine::Store::open_postgres(&url, now)?,
        };
        store.set_quota(quota)?;
        let floor = store
            .mid_floor(&node_id, now)
            .context("registering this manager among the managers of the store")?;
        anyhow::Ok((store, floor))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("opening the central store panicked"))?
    .with_context(|| format!("opening the central store on PostgreSQL ({shown}) from [store] url"))
}

/// `pvo manager migrate-store --to URL`: moves a stopped manager's embedded store into
/// PostgreSQL (`pvo_quarantine::copy_to_postgres`: resumable, verified by counts and
/// checksums), then points the configuration at it (`[store] url`). The manager must be
/// stopped: its gateways keep what they quarantine in `the.cpq.host` meanwhile.
pub fn migrate_store(
    config_path: &std::path::Path,
    to: &str,
    ca: Option<&std::path::Path>,
    json_out: bool,
) -> Result<()> {
    use std::io::{IsTerminal, Write};
    let cfg = Config::load(config_path).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    if cfg.role != crate::core::config::Role::Manager {
        anyhow::bail!(
            "{} is not a manager's configuration (node.role = \"manager\"): a gateway's quarantines move to its manager with `pvoconfig enable`",
            config_path.display()
        );
    }
    if let Some(s) = &cfg.store {
        anyhow::bail!(
            "this manager's store is on PostgreSQL already ([store] url = {})",
            crate::core::cluster::sync::describe(&s.url)
        );
    }
    let socket = cfg.run_dir().join("admin.sock");
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        anyhow::bail!(
            "the manager is running: stop it first (the store moves while the manager is stopped; its gateways keep what they quarantine in the.cpq.host and send it when the manager is back)"
        );
    }
    let path = cfg.data_dir.join("quarantine").join("quarantine.db");
    if !path.exists() {
        anyhow::bail!(
            "{} does not exist: this manager has no embedded store to move",
            path.display()
        );
    }
    let now = crate::core::clock::unix_now();
    let src = pvo_quarantine::Store::open_sqlite(&path, now)
        .with_context(|| format!("opening the embedded store {}", path.display()))?;
    let target = crate::core::config::StoreConfig {
        url: to.to_string(),
        ca: ca.map(std::path::Path::to_path_buf),
    };
    let node_id = cfg
        .cpq
        .as_ref()
        .map_or(cfg.hostname.clone(), |c| c.node_id.clone());
    let (dst, _) = open_postgres_store(&target, None, node_id)?;
    let shown = crate::core::cluster::sync::describe(to);
    let terminal = std::io::stderr().is_terminal() && !json_out;
    let mut last_tenth = u64::MAX;
    let mut bar = |copied: u64, total: u64| {
        const WIDTH: u64 = 30;
        let done = (copied * WIDTH).checked_div(total).unwrap_or(WIDTH);
        let pct = (copied * 100).checked_div(total).unwrap_or(100);
        let line = format!(
            "Moving the quarantine store to {shown}: [{}{}] {pct}% ({copied} of {total} messages)",
            "#".repeat(done as usize),
            ".".repeat((WIDTH - done) as usize),
        );
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r{line}");
            let _ = err.flush();
        } else if pct / 10 != last_tenth {
            last_tenth = pct / 10;
            let _ = writeln!(err, "{line}");
        }
    };
    let source = path.display().to_string();
    let report = pvo_quarantine::copy_to_postgres(&src, &dst, &source, now, &mut bar);
    if terminal {
        eprintln!();
    }
    // The blocking client is dropped off any runtime, like the node does.
    let _ = std::thread::spawn(move || drop(dst)).join();
    let report = report.with_context(|| {
        format!("moving {} to PostgreSQL ({shown}); run the same command again to go on from where it stopped", path.display())
    })?;
    // Point the manager at the database.
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut doc = crate::core::config_store::Doc::parse(&text).map_err(|e| anyhow::anyhow!(e))?;
    doc.store_set(to, ca.map(|p| p.to_str().unwrap_or_default()))
        .map_err(|e| anyhow::anyhow!(e))?;
    let new = doc.text();
    Config::parse(
        &new,
        config_path,
        config_path.parent().unwrap_or(std::path::Path::new(".")),
    )
    .map_err(|e| anyhow::anyhow!("the configuration with [store] would not be valid: {e}"))?;
    crate::core::atomic_file::write(config_path, new.as_bytes())?;
    let tables: Vec<String> = report
        .tables
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    if json_out {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "data": {
                    "messages": report.messages,
                    "resumed_after": report.resumed_after,
                    "already_done": report.already_done,
                    "tables": report.tables.iter().map(|(t, n)| (t.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
                    "checksum": report.checksum,
                    "config": config_path.display().to_string(),
                }
            })
        );
    } else {
        println!(
            "{} {} messages from {} to PostgreSQL ({shown}){}.\nVerified: {} rows alike on both sides ({}); SHA-256 of the messages {}.\n[store] url set in {}: start the manager (`pvo manager run --config {}`) and it uses PostgreSQL. The embedded store is left in {} (remove it once satisfied).",
            if report.already_done { "Already moved:" } else { "Moved" },
            report.messages,
            path.display(),
            if report.resumed_after > 0 {
                format!(", going on after the {} copied by an earlier run", report.resumed_after)
            } else {
                String::new()
            },
            report.tables.len(),
            tables.join(", "),
            report.checksum,
            config_path.display(),
            config_path.display(),
            path.parent().unwrap_or(&path).display(),
        );
    }
    Ok(())
}
