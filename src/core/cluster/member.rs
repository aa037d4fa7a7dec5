//! A machine's life in a cluster: the connection to the cluster's store, the revision it
//! runs, and the loop that keeps it up to date.
//!
//! The loop ([`run`]) connects to the store `[cluster]` names, listens for commits, and
//! whenever the store's newest revision is not the one the machine runs, composes the
//! machine's configuration from its three layers, keeps it on its own disk as the last
//! good one (`cache`), puts it in force (`NodeControl::apply_config`, all or nothing) and
//! reports the revision it now runs. A revision that does not compose or cannot be put in
//! force on this machine is logged with the reason and the machine keeps what it ran.
//!
//! When the store cannot be reached the machine keeps running its last good
//! configuration, says so in `status` and `diagnose` ([`ClusterHandle::status`]), and
//! the configuration commands refuse to commit ([`ClusterHandle::store`]); it tries
//! again with a growing pause (1 s to 30 s) and catches up from its last revision when
//! the store is back. `clusterconfig disconnect` holds it disconnected on purpose (for
//! an upgrade) until `clusterconfig reconnect`; a file under the data directory keeps
//! that across restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvo_cluster::{Level, Members, Name};

use crate::core::cluster::cache::{self, LastGood};
use crate::core::cluster::store::{ClusterStore, Connector, Snapshot, StoreError};
use crate::core::config::{Config, ConfigError, Membership};
use crate::core::events::Event;
use crate::core::state::{ConfigHandle, MailHandle, NodeControl};

/// The longest pause between two attempts to reach the store.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// How the machine stands with its cluster, for `status`, `diagnose` and
/// `clusterconfig connstatus`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// The machine's name in its cluster; `None`: not in a cluster.
    pub machine: Option<String>,
    pub connected: bool,
    /// Held disconnected by `clusterconfig disconnect`.
    pub held: bool,
    /// Since when (Unix seconds) it is connected or disconnected.
    pub since: u64,
    /// Why it is disconnected.
    pub why: Option<String>,
    /// The revision it runs (0: none yet, its own file).
    pub revision: u64,
    /// The newest revision it knows of.
    pub head: u64,
}

struct Inner {
    membership: Option<Membership>,
    store: Option<Arc<dyn ClusterStore>>,
    snapshot: Option<Snapshot>,
    /// The chain of layers the configuration in force was composed from.
    applied: Vec<(Level, String)>,
    status: Status,
}

/// The node's handle on its cluster.
pub struct ClusterHandle {
    pub connector: Arc<dyn Connector>,
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
    data_dir: PathBuf,
}

/// The file that holds a machine disconnected across restarts.
fn held_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("disconnected")
}

/// Why commits are refused while the machine cannot reach its store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("this machine is not in a cluster; create one with `clusterconfig create` or join one with `clusterconfig join`")]
    NotInCluster,
    #[error("this machine is disconnected from the cluster's store ({why}); it runs its last good configuration (revision {revision}) and takes no configuration changes until it is back: see `clusterconfig connstatus`")]
    Disconnected { why: String, revision: u64 },
}

impl ClusterHandle {
    /// `membership`: the `[cluster]` of the configuration the node started with;
    /// `revision`: the revision that configuration is (from the last good cache).
    pub fn new(
        connector: Arc<dyn Connector>,
        data_dir: &Path,
        membership: Option<Membership>,
        revision: u64,
    ) -> ClusterHandle {
        let held = held_path(data_dir).exists();
        // What the configuration in force was composed from, when it is the last good one.
        let applied = match (&membership, cache::load(data_dir)) {
            (Some(m), Ok(Some(last))) if last.machine == m.machine && last.revision == revision => {
                last.layers
            }
            _ => Vec::new(),
        };
        ClusterHandle {
            connector,
            data_dir: data_dir.to_path_buf(),
            inner: Mutex::new(Inner {
                status: Status {
                    machine: membership.as_ref().map(|m| m.machine.to_string()),
                    held,
                    why: membership.as_ref().map(|_| "not connected yet".to_string()),
                    since: crate::core::clock::unix_now(),
                    revision,
                    head: revision,
                    connected: false,
                },
                membership,
                store: None,
                snapshot: None,
                applied,
            }),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    pub fn membership(&self) -> Option<Membership> {
        self.lock().membership.clone()
    }

    /// The store, while the machine is connected to it.
    pub fn store(&self) -> Result<Arc<dyn ClusterStore>, Unavailable> {
        let inner = self.lock();
        if inner.membership.is_none() {
            return Err(Unavailable::NotInCluster);
        }
        match (&inner.store, inner.status.connected) {
            (Some(s), true) => Ok(s.clone()),
            _ => Err(Unavailable::Disconnected {
                why: inner
                    .status
                    .why
                    .clone()
                    .unwrap_or_else(|| "not connected".into()),
                revision: inner.status.revision,
            }),
        }
    }

    /// The store as last seen (members, layers, states), connected or not; before the
    /// first connection since the start, what the last good configuration was made of.
    pub fn snapshot(&self) -> Option<Snapshot> {
        if let Some(s) = self.lock().snapshot.clone() {
            return Some(s);
        }
        let last = cache::load(&self.data_dir).ok().flatten()?;
        Some(Snapshot {
            members: last.members,
            head: last.revision,
            layers: last.layers,
            states: Vec::new(),
        })
    }

    /// The machine has joined (or created) a cluster: the loop connects.
    pub fn joined(&self, membership: Membership) {
        {
            let mut inner = self.lock();
            inner.status.machine = Some(membership.machine.to_string());
            inner.status.why = Some("not connected yet".into());
            inner.membership = Some(membership);
        }
        self.wake.notify_one();
    }

    /// The machine left its cluster: the loop lets go of the store.
    pub fn left(&self) {
        {
            let mut inner = self.lock();
            inner.membership = None;
            inner.store = None;
            inner.snapshot = None;
            inner.applied.clear();
            inner.status = Status::default();
        }
        let _ = std::fs::remove_file(held_path(&self.data_dir));
        let _ = std::fs::remove_file(cache::path(&self.data_dir));
        self.wake.notify_one();
    }

    /// `clusterconfig disconnect` (`true`) and `reconnect` (`false`).
    pub fn hold(&self, held: bool) -> std::io::Result<()> {
        let path = held_path(&self.data_dir);
        if held {
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            crate::core::atomic_file::write_private(&path, b"held by clusterconfig disconnect\n")
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.lock().status.held = held;
        self.wake.notify_one();
        Ok(())
    }

    /// Waits until the machine runs `revision` or later, up to `within`.
    pub async fn wait_for(&self, revision: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.status().revision >= revision {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn set_connected(&self, store: Option<Arc<dyn ClusterStore>>, why: Option<String>) -> bool {
        let mut inner = self.lock();
        let connected = store.is_some();
        let changed = inner.status.connected != connected || inner.status.why != why;
        if inner.status.connected != connected {
            inner.status.since = crate::core::clock::unix_now();
        }
        inner.status.connected = connected;
        inner.status.why = why;
        inner.store = store;
        changed
    }
}

/// What the loop needs of the node.
pub struct Deps {
    pub cluster: Arc<ClusterHandle>,
    pub control: Arc<dyn NodeControl>,
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
}

/// The directory a machine's relative paths resolve against: its configuration file's.
pub fn base_dir(config_path: &Path) -> PathBuf {
    let base = config_path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::canonicalize(&base).unwrap_or(base)
}

/// The machine's configuration from a snapshot of the store, with its own `[cluster]`.
pub fn compose_from(
    snapshot_members: &Members,
    layers: &[(Level, String)],
    revision: u64,
    membership: &Membership,
    base: &Path,
) -> Result<Config, ConfigError> {
    let mut cfg = super::compose(
        snapshot_members,
        &membership.machine,
        layers,
        revision,
        base,
    )?;
    cfg.cluster = Some(membership.clone());
    Ok(cfg)
}

/// The configuration a member starts with: its last good one when it has one for the
/// machine its file names, else the file's own. Answers the revision too (0: the file).
pub fn startup_config(file: Config, config_path: &Path) -> Result<(Config, u64), String> {
    let Some(membership) = file.cluster.clone() else {
        return Ok((file, 0));
    };
    let last = match cache::load(&file.data_dir) {
        Ok(Some(last)) if last.machine == membership.machine => last,
        Ok(_) => return Ok((file, 0)),
        Err(e) => return Err(e.to_string()),
    };
    let cfg = compose_from(
        &last.members,
        &last.layers,
        last.revision,
        &membership,
        &base_dir(config_path),
    )
    .map_err(|e| format!("the last good cluster configuration does not compose: {e}"))?;
    Ok((cfg, last.revision))
}

/// The member loop; runs for the node's lifetime, idle while the machine is in no
/// cluster or is held disconnected.
pub async fn run(deps: Deps) {
    let mut pause = Duration::from_secs(1);
    loop {
        let (membership, held) = {
            let inner = deps.cluster.lock();
            (inner.membership.clone(), inner.status.held)
        };
        let Some(membership) = membership else {
            deps.cluster.wake.notified().await;
            continue;
        };
        if held {
            if deps
                .cluster
                .set_connected(None, Some("held by `clusterconfig disconnect`".into()))
            {
                disconnected(&deps, &membership, "held by `clusterconfig disconnect`");
            }
            deps.cluster.wake.notified().await;
            continue;
        }
        let machine = membership.machine.to_string();
        let store = match deps.cluster.connector.connect(&membership, &machine).await {
            Ok(s) => s,
            Err(e) => {
                let why = e.to_string();
                if deps.cluster.set_connected(None, Some(why.clone())) {
                    disconnected(&deps, &membership, &why);
                }
                let _ = tokio::time::timeout(pause, deps.cluster.wake.notified()).await;
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        let mut notices = match store.listen().await {
            Ok(n) => n,
            Err(e) => {
                let why = e.to_string();
                if deps.cluster.set_connected(None, Some(why.clone())) {
                    disconnected(&deps, &membership, &why);
                }
                let _ = tokio::time::timeout(pause, deps.cluster.wake.notified()).await;
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        // Listening before reading: a commit between the two is heard, not missed.
        if let Err(e) = catch_up(&deps, &*store, &membership).await {
            let why = e.to_string();
            if deps.cluster.set_connected(None, Some(why.clone())) {
                disconnected(&deps, &membership, &why);
            }
            let _ = tokio::time::timeout(pause, deps.cluster.wake.notified()).await;
            pause = (pause * 2).min(MAX_PAUSE);
            continue;
        }
        pause = Duration::from_secs(1);
        deps.cluster.set_connected(Some(store.clone()), None);
        deps.mail.log.emit(Event::ClusterConnected {
            machine: &machine,
            store: &describe(&membership.url),
            revision: deps.cluster.status().revision,
        });
        let why = loop {
            tokio::select! {
                n = notices.next() => match n {
                    Some(_) => {
                        if let Err(e) = catch_up(&deps, &*store, &membership).await {
                            break e.to_string();
                        }
                    }
                    None => break "the connection was lost".to_string(),
                },
                () = deps.cluster.wake.notified() => {
                    let inner = deps.cluster.lock();
                    if inner.membership.as_ref() != Some(&membership) || inner.status.held {
                        break String::new();
                    }
                }
            }
        };
        if deps.cluster.membership().is_none() {
            deps.cluster.set_connected(None, None);
            continue;
        }
        if !why.is_empty() && deps.cluster.set_connected(None, Some(why.clone())) {
            disconnected(&deps, &membership, &why);
        }
    }
}

fn disconnected(deps: &Deps, membership: &Membership, why: &str) {
    deps.mail.log.emit(Event::ClusterDisconnected {
        machine: &membership.machine,
        why: &why,
        revision: deps.cluster.status().revision,
    });
}

/// The store's address for the log, without a password.
pub fn describe(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((who, at)) => {
                let user = who.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{at}")
            }
            None => url.to_string(),
        },
        // The key=value form: everything but the password.
        None => url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Reads the store and, when its newest revision is not the one this machine runs,
/// puts it in force.
async fn catch_up(
    deps: &Deps,
    store: &dyn ClusterStore,
    membership: &Membership,
) -> Result<(), StoreError> {
    let snap = store.snapshot().await?;
    let running = deps.cluster.status().revision;
    {
        let mut inner = deps.cluster.lock();
        inner.status.head = snap.head;
        inner.snapshot = Some(snap.clone());
    }
    if snap.members.machine(&membership.machine).is_err() {
        // Removed from the cluster by another member: keep what it inherited.
        left_by_others(deps, &snap, membership);
        return Ok(());
    }
    let chain = chain_of(&snap, &membership.machine);
    let same = deps.cluster.lock().applied == chain;
    if snap.head == running && same {
        return Ok(());
    }
    let machine = membership.machine.to_string();
    let last = history_line(store, snap.head).await;
    let (by, level) = last.unwrap_or_default();
    if same {
        // A revision of another group or machine: nothing changes here.
        deps.cluster.lock().status.revision = snap.head;
        deps.mail.log.emit(Event::ClusterApplied {
            machine: &machine,
            revision: snap.head,
            by: &by,
            level: &level,
        });
        return store.report(&membership.machine, snap.head).await;
    }
    let base = base_dir(&deps.config.path);
    let cfg = match compose_from(&snap.members, &snap.layers, snap.head, membership, &base) {
        Ok(c) => c,
        Err(e) => {
            deps.mail.log.emit(Event::ClusterNotApplied {
                machine: &machine,
                revision: snap.head,
                why: &e,
                running,
            });
            return Ok(());
        }
    };
    let data_dir = cfg.data_dir.clone();
    let last_good = LastGood {
        revision: snap.head,
        machine: membership.machine.clone(),
        members: snap.members.clone(),
        layers: chain.clone(),
    };
    let control = deps.control.clone();
    let applied = tokio::task::spawn_blocking(move || {
        cache::save(&data_dir, &last_good).map_err(|e| e.to_string())?;
        control.apply_config(cfg).map_err(|e| format!("{e:#}"))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(why) = applied {
        deps.mail.log.emit(Event::ClusterNotApplied {
            machine: &machine,
            revision: snap.head,
            why: &why,
            running,
        });
        return Ok(());
    }
    {
        let mut inner = deps.cluster.lock();
        inner.status.revision = snap.head;
        inner.applied = chain;
    }
    deps.mail.log.emit(Event::ClusterApplied {
        machine: &machine,
        revision: snap.head,
        by: &by,
        level: &level,
    });
    store.report(&membership.machine, snap.head).await
}

/// Who committed `revision` and at which level.
async fn history_line(store: &dyn ClusterStore, revision: u64) -> Option<(String, String)> {
    let h = store.history(revision.saturating_sub(1)).await.ok()?;
    h.into_iter()
        .find(|r| r.number == revision)
        .map(|r| (r.author, r.level.to_string()))
}

/// The texts of `machine`'s chain (its own layer, its group's, the cluster's).
pub fn chain_of(snap: &Snapshot, machine: &Name) -> Vec<(Level, String)> {
    snap.members
        .chain(machine)
        .map(|chain| {
            chain
                .iter()
                .map(|l| (l.clone(), snap.layer(l).to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// This machine is no longer among the members: it keeps the settings it inherited,
/// flattened into its own file, and leaves.
fn left_by_others(deps: &Deps, snap: &Snapshot, membership: &Membership) {
    // The last chain this machine ran is in its cache.
    let Ok(Some(last)) = cache::load(&deps.config.current().data_dir) else {
        deps.cluster.left();
        return;
    };
    let Some(text) = flattened_file(&last.layers) else {
        deps.cluster.left();
        return;
    };
    if let Err(e) = crate::core::atomic_file::write_private(&deps.config.path, text.as_bytes()) {
        deps.mail.log.emit(Event::ClusterNotApplied {
            machine: &membership.machine,
            revision: snap.head,
            why: &format!(
                "removed from the cluster, but writing {} failed: {e:#}",
                deps.config.path.display()
            ),
            running: deps.cluster.status().revision,
        });
        return;
    }
    deps.cluster.left();
    deps.mail.log.emit(Event::ClusterMembers {
        by: &"the cluster",
        what: &format!(
            "machine {} was removed; it keeps the settings it inherited in {}",
            membership.machine,
            deps.config.path.display()
        ),
    });
}

/// A machine's own file made of the chain it ran: every section from the layer it
/// came from, most specific first (`[cluster]` left out: the machine is alone now).
pub fn flattened_file(chain: &[(Level, String)]) -> Option<String> {
    let docs: Vec<pvo_cluster::LayerDoc> = chain
        .iter()
        .filter_map(|(l, t)| pvo_cluster::LayerDoc::parse(l.clone(), t).ok())
        .collect();
    if docs.len() != chain.len() || docs.is_empty() {
        return None;
    }
    let refs: Vec<&pvo_cluster::LayerDoc> = docs.iter().collect();
    let mut flat = pvo_cluster::flatten(&refs);
    if flat.sets("cluster") {
        let _ = flat.delete("cluster");
    }
    Some(flat.text())
}
