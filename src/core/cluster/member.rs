//! A machine's standing in a cluster: its membership, the connection to the cluster's
//! store, the revision it runs — the handle the commands and the loop (`sync`) share.
//!
//! The loop (`sync::run`) connects to the store `[cluster]` names, listens for commits, and
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

use pvo_cluster::Level;

use crate::core::cluster::cache;
use crate::core::cluster::store::{ClusterStore, Connector, Snapshot};
use crate::core::config::Membership;

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

pub(super) struct Inner {
    pub(super) membership: Option<Membership>,
    pub(super) store: Option<Arc<dyn ClusterStore>>,
    pub(super) snapshot: Option<Snapshot>,
    /// The chain of layers the configuration in force was composed from.
    pub(super) applied: Vec<(Level, String)>,
    pub(super) status: Status,
}

/// The node's handle on its cluster.
pub struct ClusterHandle {
    pub connector: Arc<dyn Connector>,
    inner: Mutex<Inner>,
    pub(super) wake: tokio::sync::Notify,
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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
            features: Vec::new(),
            cpq: Vec::new(),
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
        {
            let mut inner = self.lock();
            inner.status.held = held;
            if held {
                // Held at once: no commit goes through between this and the loop's turn.
                if inner.status.connected {
                    inner.status.since = crate::core::clock::unix_now();
                }
                inner.status.connected = false;
                inner.store = None;
            }
        }
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

    pub(super) fn set_connected(
        &self,
        store: Option<Arc<dyn ClusterStore>>,
        why: Option<String>,
    ) -> bool {
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
