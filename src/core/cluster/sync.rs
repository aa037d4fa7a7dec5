//! The member loop: keeps a machine on its cluster's newest revision.
//!
//! It connects to the store `[cluster]` names, listens for commits, and whenever the
//! store's newest revision (or this machine's chain of layers) is not what the machine
//! runs, composes the machine's configuration, keeps it on its own disk as the last good
//! one (`cache`), puts it in force (`NodeControl::apply_config`, all or nothing) and
//! reports the revision it runs. A revision that does not compose or cannot be put in force
//! here is logged with the reason and the machine keeps what it ran. Unreachable: it retries
//! with a growing pause (1 s to 30 s) and catches up when the store is back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pvo_cluster::{Level, Members, Name};

use crate::core::cluster::cache::{self, LastGood};
use crate::core::cluster::member::ClusterHandle;
use crate::core::cluster::store::{ClusterStore, Snapshot, StoreError};
use crate::core::config::{Config, ConfigError, Membership};
use crate::core::cpq::enrollment::Enrollment;
use crate::core::events::Event;
use crate::core::state::{ConfigHandle, MailHandle, NodeControl};

/// How often a member looks whether the features its keys turn on changed.
const FEATURES_EVERY: Duration = Duration::from_secs(5);

/// The longest pause between two attempts to reach the store.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Waits `pause` (or until woken by a command) and doubles it, up to [`MAX_PAUSE`].
async fn back_off(deps: &Deps, pause: &mut Duration) {
    let _ = tokio::time::timeout(*pause, deps.cluster.wake.notified()).await;
    *pause = (*pause * 2).min(MAX_PAUSE);
}

/// What the loop needs of the node.
pub struct Deps {
    pub cluster: Arc<ClusterHandle>,
    pub control: Arc<dyn NodeControl>,
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    /// The machine's feature keys, reported to the store for scenario 5.
    pub features: Arc<crate::core::feature_keys::FeatureKeys>,
    /// The users: the cluster's base, kept as the last good copy (`cluster::users`).
    pub access: Arc<crate::core::state::AccessHandle>,
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
            lost(&deps, &membership, "held by `clusterconfig disconnect`");
            deps.cluster.wake.notified().await;
            continue;
        }
        let machine = membership.machine.to_string();
        let store = match deps.cluster.connector.connect(&membership, &machine).await {
            Ok(s) => s,
            Err(e) => {
                lost(&deps, &membership, &e.to_string());
                back_off(&deps, &mut pause).await;
                continue;
            }
        };
        let mut notices = match store.listen().await {
            Ok(n) => n,
            Err(e) => {
                lost(&deps, &membership, &e.to_string());
                back_off(&deps, &mut pause).await;
                continue;
            }
        };
        // Listening before reading: a commit between the two is heard, not missed.
        if let Err(e) = catch_up(&deps, &*store, &membership).await {
            lost(&deps, &membership, &e.to_string());
            back_off(&deps, &mut pause).await;
            continue;
        }
        pause = Duration::from_secs(1);
        deps.cluster.set_connected(Some(store.clone()), None);
        deps.mail.log.emit(Event::ClusterConnected {
            machine: &machine,
            store: &describe(&membership.url),
            revision: deps.cluster.status().revision,
        });
        // The features this machine's keys turn on and its enrollment on a manager,
        // reported on connecting and whenever they change (a key added, removed or
        // expired; a CPQ certificate installed), looked at every few seconds.
        let mut reported: Option<(Vec<String>, String)> = None;
        let mut tick = tokio::time::interval(FEATURES_EVERY);
        let why = loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = facts(&deps);
                    if reported.as_ref() != Some(&now) {
                        if let Err(e) = store
                            .report_facts(&membership.machine, &now.0, Some(&now.1))
                            .await
                        {
                            break e.to_string();
                        }
                        reported = Some(now);
                    }
                }
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
        if !why.is_empty() {
            lost(&deps, &membership, &why);
        }
    }
}

/// What this machine reports of itself: the features its keys turn on, and its
/// enrollment on a manager (JSON).
fn facts(deps: &Deps) -> (Vec<String>, String) {
    let features = deps
        .features
        .active_features()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let cfg = deps.config.current();
    let enrollment = match &cfg.cpq {
        Some(c) => Enrollment::read(Some(&c.node_id), &c.dir),
        None => Enrollment::read(None, &cfg.data_dir.join("cpq")),
    };
    (
        features,
        serde_json::to_string(&enrollment).unwrap_or_default(),
    )
}

/// The member is not connected, for `why`: said once per change of reason.
fn lost(deps: &Deps, membership: &Membership, why: &str) {
    if !deps.cluster.set_connected(None, Some(why.to_string())) {
        return;
    }
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
    super::users::catch_up(&deps.access, &deps.mail, store, &membership.machine).await?;
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
    // The user base it had is its own again.
    if let Err(why) = deps.access.users.own_again() {
        deps.mail.log.emit(Event::ClusterNotApplied {
            machine: &membership.machine,
            revision: snap.head,
            why: &format!("removed from the cluster, but keeping its users failed: {why}"),
            running: deps.cluster.status().revision,
        });
    }
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
