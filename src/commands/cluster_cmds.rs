//! `clusterconfig` and `clustercheck`, and the configuration commands of a cluster
//! member: editing the layers (`core::cluster::view`), committing them as revisions of
//! the cluster's store, the cluster's history, rollback per level, `showconfig` with
//! where each section comes from.
//!
//! Everything that changes the cluster goes through the store the member is connected to
//! (`ClusterHandle::store`): a member that cannot reach it refuses, saying why and which
//! revision it runs, rather than diverging. Handlers run on the blocking pool one at a
//! time (`config_cmds::one_at_a_time`), so they wait for the store with `block_on`.

use std::sync::Arc;
use std::time::Duration;

use pvo_cluster::{LayerDoc, Level, Members, Name, MAIN_GROUP};
use serde_json::{json, Value as Json};

use super::command::{ClusterAction, ClusterArgs, CommandError, NoArgs};
use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::core::cluster::store::{
    ClusterStore, Commit, Snapshot, StoreError, TokenRefused, TokenUse,
};
use crate::core::cluster::sync::{base_dir, chain_of, flattened_file};
use crate::core::cluster::view::{self, View};
use crate::core::cluster::SCHEMA;
use crate::core::config::{Config, Membership};
use crate::core::config_store::{self, Change, Doc, Store};
use crate::core::cpq::enrollment::Enrollment;
use crate::core::events::Event;
use crate::core::state::Handles;

/// How long a command waits for this machine to put in force what it committed.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Runs `f` to its end from a synchronous handler: on a blocking thread (the commands
/// run through `one_at_a_time`) or on a runtime worker (an async command such as
/// `pvoconfig enable` editing the configuration), which is handed to other tasks meanwhile.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A store error as a reply, its kind from what went wrong.
pub fn store_error(e: &StoreError) -> Response {
    use pvo_cluster::MembersError as M;
    let kind = match e {
        StoreError::Unreachable { .. } | StoreError::Lost(_) | StoreError::Refused(_) => {
            ErrorKind::Unavailable
        }
        StoreError::BadUrl { .. } | StoreError::Ca { .. } => ErrorKind::Invalid,
        StoreError::AlreadyCluster(_) | StoreError::Conflict(_) | StoreError::UsersConflict(_) => {
            ErrorKind::Conflict
        }
        StoreError::NoCluster => ErrorKind::NotFound,
        StoreError::Members(M::NoMachine(_) | M::NoGroup(_)) => ErrorKind::NotFound,
        StoreError::Members(_) => ErrorKind::Conflict,
        StoreError::Corrupt(_) => ErrorKind::Unavailable,
        StoreError::TooNew { .. } => ErrorKind::Conflict,
        StoreError::Token(TokenRefused::Unknown | TokenRefused::NoPrefix(_)) => ErrorKind::NotFound,
        StoreError::Token(_) => ErrorKind::Conflict,
    };
    Response::fail(kind, e.to_string())
}

fn unavailable(e: crate::core::cluster::member::Unavailable) -> Response {
    Response::fail(ErrorKind::Unavailable, e.to_string())
}

fn name_arg(what: &str, v: &Option<String>) -> Result<Name, Response> {
    let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Err(Response::error(format!("clusterconfig: give the {what}")));
    };
    Name::new(v).map_err(|e| Response::error(format!("clusterconfig: {e}")))
}

fn store_of(shared: &Handles) -> Result<Arc<dyn ClusterStore>, Response> {
    shared.cluster.store().map_err(unavailable)
}

fn fresh_snapshot(store: &dyn ClusterStore) -> Result<Snapshot, Response> {
    block_on(store.snapshot()).map_err(|e| store_error(&e))
}

// ---------------------------------------------------------------------------
// The configuration commands in a cluster
// ---------------------------------------------------------------------------

/// Whether this machine is in a cluster (its configuration commands then work on the
/// cluster's layers).
pub fn in_cluster(shared: &Handles) -> bool {
    shared.cluster.membership().is_some()
}

/// The view the configuration commands of a member work on.
pub struct Working {
    pub view: View,
    pub membership: Membership,
    /// The level the command named (`--level`).
    pub level: Option<Level>,
    /// The document seen from that level.
    pub text: String,
    /// The configuration with the pending changes.
    pub cfg: Config,
    pub pending: bool,
}

fn membership(shared: &Handles) -> Result<Membership, Response> {
    shared
        .cluster
        .membership()
        .ok_or_else(|| unavailable(crate::core::cluster::member::Unavailable::NotInCluster))
}

/// The layers as last read from the store (connected: read now), with the pending
/// changes, seen from the request's level.
pub fn working(shared: &Handles, req: &Request) -> Result<Working, Response> {
    let membership = membership(shared)?;
    let snap = match shared.cluster.store() {
        Ok(store) => fresh_snapshot(&*store)?,
        Err(e) => match shared.cluster.snapshot() {
            Some(s) => s,
            None => return Err(unavailable(e)),
        },
    };
    let data_dir = shared.config.current().data_dir.clone();
    let pending = view::load_pending(&data_dir).map_err(Response::error)?;
    let has_pending = pending.is_some();
    let v = View::new(
        snap.members.clone(),
        membership.machine.clone(),
        snap.head,
        &snap.layers,
        pending,
    );
    let level = match &req.level {
        Some(l) => Some(view::parse_level(l, &membership.machine).map_err(Response::error)?),
        None => None,
    };
    let text = v.flattened(level.as_ref()).map_err(Response::error)?;
    let cfg = v
        .compose(&membership, &base_dir(&shared.config.path))
        .map_err(|e| {
            Response::error(format!(
                "The cluster configuration {}is not valid on this machine: {e}",
                if has_pending {
                    "with the pending changes "
                } else {
                    ""
                }
            ))
        })?;
    Ok(Working {
        view: v,
        membership,
        level,
        text,
        cfg,
        pending: has_pending,
    })
}

/// A configuration editor's run in a cluster: the editor changes the document seen from
/// the level; the sections it changed go to their layers; the result must compose.
pub fn edit(
    shared: &Handles,
    req: &Request,
    edit: impl FnOnce(&Config, &mut Doc) -> Result<String, CommandError>,
    pending_note: &str,
) -> Response {
    let mut w = match working(shared, req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let mut doc = match Doc::parse(&w.text) {
        Ok(d) => d,
        Err(e) => return Response::error(e),
    };
    let summary = match edit(&w.cfg, &mut doc) {
        Ok(s) => s,
        Err(e) => return Response::from(e),
    };
    let after = doc.text();
    let changed = match w.view.apply_edit(&w.text, &after, w.level.as_ref()) {
        Ok(c) => c,
        Err(e) => return Response::error(format!("Not changed: {e}")),
    };
    if changed.is_empty() {
        return Response::ok(
            format!("{summary}\nNo change: the configuration already says so."),
            json!({ "changed": false, "pending": w.pending, "summary": summary }),
        );
    }
    if let Err(e) = w
        .view
        .compose(&w.membership, &base_dir(&shared.config.path))
    {
        return Response::not_valid(&e);
    }
    let levels: Vec<String> = changed.iter().map(|l| l.to_string()).collect();
    w.view.pending.changes.push(Change {
        time: config_store::now(),
        user: req.author(),
        command: req.command.name(),
        summary: format!("{} ({})", summary.replace('\n', "; "), levels.join(", ")),
    });
    let data_dir = shared.config.current().data_dir.clone();
    if let Err(e) = view::save_pending(&data_dir, &w.view.pending) {
        return Response::error(e);
    }
    Response::ok(
        format!(
            "{summary}\nChanged at {}.\n{pending_note}",
            levels.join(", ")
        ),
        json!({ "changed": true, "pending": true, "summary": summary, "levels": levels }),
    )
}

/// `commit` in a cluster: each level with pending changes becomes a revision, all in one
/// transaction of the store; every connected member applies them.
pub fn commit(shared: &Arc<Handles>, req: &Request, comment: &str) -> Response {
    let data_dir = shared.config.current().data_dir.clone();
    let pending = match view::load_pending(&data_dir) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Response::ok(
                "There are no changes to commit.",
                json!({ "committed": false }),
            )
        }
        Err(e) => return Response::error(e),
    };
    let store = match store_of(shared) {
        Ok(s) => s,
        Err(r) => {
            return Response::fail(
                ErrorKind::Unavailable,
                format!(
                    "Changes not committed: {}\nThe changes stay pending.",
                    r.text
                ),
            )
        }
    };
    let snap = match fresh_snapshot(&*store) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(membership) = membership(shared) else {
        return Response::error("this machine is not in a cluster");
    };
    let base = pending.base;
    let v = View::new(
        snap.members.clone(),
        membership.machine.clone(),
        snap.head,
        &snap.layers,
        Some(pending),
    );
    let wanted: Vec<(Level, String)> = match req.level.as_deref() {
        None => v.changed_levels(&snap.layers),
        Some(l) => {
            let level = match view::parse_level(l, &membership.machine) {
                Ok(l) => l,
                Err(e) => return Response::error(e),
            };
            v.changed_levels(&snap.layers)
                .into_iter()
                .filter(|(c, _)| *c == level)
                .collect()
        }
    };
    if wanted.is_empty() {
        if req.level.is_none() {
            let _ = view::clear_pending(&data_dir);
        }
        return Response::ok(
            "There are no changes to commit.",
            json!({ "committed": false }),
        );
    }
    // This machine must be able to run the result; other members say so if they cannot.
    if let Err(e) = v.compose(&membership, &base_dir(&shared.config.path)) {
        return Response::error(format!(
            "Changes not committed: {e}\nThe changes stay pending: fix them, or discard them with `pvo clearchanges`."
        ));
    }
    let who = req.author();
    let commits: Vec<Commit> = wanted
        .iter()
        .map(|(level, text)| Commit {
            level: level.clone(),
            base,
            text: Some(text.clone()),
            author: who.clone(),
            comment: comment.to_string(),
        })
        .collect();
    let revisions = match block_on(store.commit(&commits)) {
        Ok(r) => r,
        Err(e) => {
            let r = store_error(&e);
            return Response::fail(
                r.kind.unwrap_or(ErrorKind::Unavailable),
                format!(
                    "Changes not committed: {}\nThe changes stay pending.",
                    r.text
                ),
            );
        }
    };
    // What was committed leaves the pending changes; what was not stays.
    let mut rest = v.pending.clone();
    for (level, _) in &wanted {
        rest.levels.remove(&level.to_string());
    }
    let left = if rest.levels.is_empty() {
        view::clear_pending(&data_dir).map(|_| ())
    } else {
        view::save_pending(&data_dir, &rest)
    };
    if let Err(e) = left {
        return Response::error(format!(
            "committed, but updating the pending changes failed: {e}"
        ));
    }
    for r in &revisions {
        shared.mail.log.emit(Event::ClusterCommitted {
            by: &who,
            revision: r.number,
            level: &r.level,
            comment: &comment,
        });
    }
    let last = revisions.last().map(|r| r.number).unwrap_or(snap.head);
    let applied = block_on(shared.cluster.wait_for(last, APPLY_WAIT));
    let lines: Vec<String> = revisions
        .iter()
        .map(|r| format!("revision {} ({})", r.number, r.level))
        .collect();
    Response::ok(
        format!(
            "Changes committed: {}{}",
            lines.join(", "),
            if applied {
                format!("; in force on this machine ({})", membership.machine)
            } else {
                format!(
                    "; not yet in force on this machine ({}): see `clusterconfig connstatus`",
                    membership.machine
                )
            }
        ),
        json!({
            "committed": true,
            "revisions": revisions.iter().map(revision_json).collect::<Vec<_>>(),
            "applied": applied,
        }),
    )
}

fn revision_json(r: &pvo_cluster::Revision) -> Json {
    json!({ "revision": r.number, "level": r.level.to_string(), "author": r.author, "at": r.at, "comment": r.comment })
}

pub fn clearchanges(shared: &Handles) -> Response {
    match view::clear_pending(&shared.config.current().data_dir) {
        Ok(true) => Response::ok("Changes cleared.", json!({ "cleared": true })),
        Ok(false) => Response::ok(
            "There are no changes to clear.",
            json!({ "cleared": false }),
        ),
        Err(e) => Response::error(e),
    }
}

/// `commitdetail` in a cluster: the cluster's history, newest first, and the pending
/// changes of this machine.
pub fn commitdetail(shared: &Handles) -> Response {
    let store = match store_of(shared) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let history = match block_on(store.history(0)) {
        Ok(h) => h,
        Err(e) => return store_error(&e),
    };
    let status = shared.cluster.status();
    let mut t = format!(
        "Cluster configuration history ({} revisions; this machine runs revision {}):\n",
        history.len(),
        status.revision
    );
    for r in history.iter().rev() {
        t.push_str(&format!(
            "  {}  {}  {}  {}  {}\n",
            r.number,
            r.at,
            r.author,
            r.level,
            if r.comment.is_empty() {
                "-"
            } else {
                &r.comment
            }
        ));
    }
    let pending = view::load_pending(&shared.config.current().data_dir)
        .ok()
        .flatten();
    match &pending {
        Some(p) if !p.changes.is_empty() => {
            t.push_str(&format!(
                "\nChanges pending commit (from revision {}):\n",
                p.base
            ));
            for c in &p.changes {
                t.push_str(&format!("  {} ({}): {}\n", c.user, c.command, c.summary));
            }
        }
        _ => t.push_str("\nNo changes pending.\n"),
    }
    Response::ok(
        t,
        json!({
            "cluster": true,
            "history": history.iter().rev().map(revision_json).collect::<Vec<_>>(),
            "running": status.revision,
            "pending": pending.map(|p| json!({ "base": p.base, "levels": p.levels.keys().collect::<Vec<_>>(), "changes": p.changes })),
        }),
    )
}

/// `rollback N --level L`: level L's text as of revision N becomes a new revision.
pub fn rollback(shared: &Arc<Handles>, req: &Request, n: Option<u64>) -> Response {
    let Some(n) = n else {
        return commitdetail(shared);
    };
    let membership = match membership(shared) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(level) = req.level.as_deref() else {
        return Response::error(
            "rollback in a cluster goes back one level at a time: say which with --level cluster|group:NAME|machine",
        );
    };
    let level = match view::parse_level(level, &membership.machine) {
        Ok(l) => l,
        Err(e) => return Response::error(e),
    };
    let store = match store_of(shared) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let history = match block_on(store.history(0)) {
        Ok(h) => h,
        Err(e) => return store_error(&e),
    };
    let snap = match fresh_snapshot(&*store) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let source = match pvo_cluster::rollback_source(&level, n, &history) {
        Ok(s) => s,
        Err(e) => return Response::fail(ErrorKind::NotFound, e.to_string()),
    };
    let text = match block_on(store.layer_at(&level, source)) {
        Ok(t) => t,
        Err(e) => return store_error(&e),
    };
    let mut v = View::new(
        snap.members.clone(),
        membership.machine.clone(),
        snap.head,
        &snap.layers,
        None,
    );
    v.set_text(&level, text.clone().unwrap_or_default());
    if let Err(e) = v.compose(&membership, &base_dir(&shared.config.path)) {
        return Response::error(format!("Not rolled back: {e}"));
    }
    let who = req.author();
    let commit = Commit {
        level: level.clone(),
        base: snap.head,
        text,
        author: who.clone(),
        comment: format!("rollback of {level} to revision {n}"),
    };
    let revisions = match block_on(store.commit(std::slice::from_ref(&commit))) {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let r = &revisions[0];
    shared.mail.log.emit(Event::ClusterCommitted {
        by: &who,
        revision: r.number,
        level: &r.level,
        comment: &commit.comment,
    });
    let applied = block_on(shared.cluster.wait_for(r.number, APPLY_WAIT));
    Response::ok(
        format!(
            "{level} rolled back to revision {n}: revision {}{}",
            r.number,
            if applied {
                "; in force on this machine"
            } else {
                ""
            }
        ),
        json!({ "rolled_back": true, "revision": revision_json(r), "applied": applied }),
    )
}

/// `showconfig` in a cluster: the configuration in force on this machine (or seen from
/// `--level`), each section with the level it comes from.
pub fn showconfig(shared: &Handles, req: &Request, pending: bool) -> Response {
    let w = match working(shared, req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let v = if pending {
        w.view.clone()
    } else {
        let mut v = w.view.clone();
        v.pending = Default::default();
        match shared.cluster.snapshot() {
            Some(s) => View::new(
                s.members,
                w.membership.machine.clone(),
                s.head,
                &s.layers,
                None,
            ),
            None => v,
        }
    };
    let origins = match v.origins(w.level.as_ref()) {
        Ok(o) => o,
        Err(e) => return Response::error(e),
    };
    let mut t = format!(
        "# Cluster configuration of {} at revision {}{}\n",
        w.membership.machine,
        v.head,
        if pending && w.pending {
            " (including changes not yet committed)"
        } else {
            ""
        }
    );
    let mut data = serde_json::Map::new();
    for (section, level) in &origins {
        let Ok(doc) = LayerDoc::parse(level.clone(), v.text(level)) else {
            continue;
        };
        let mut one = LayerDoc::empty(level.clone());
        if one.replace_from(&doc, section).is_err() {
            continue;
        }
        t.push_str(&format!("\n# [{section}] from {level}\n"));
        t.push_str(one.text().trim_start());
        if !t.ends_with('\n') {
            t.push('\n');
        }
        data.insert(section.clone(), json!(level.to_string()));
    }
    Response::ok(
        t,
        json!({ "cluster": true, "revision": v.head, "machine": w.membership.machine.to_string(),
            "origins": data, "layers": layers_json(&v), "pending": pending && w.pending }),
    )
}

/// Every level of the cluster (the cluster, each group, each machine) with the sections
/// it sets and where each section may be (`scope`), for the Cluster page's
/// "Centralized Management" table.
fn layers_json(v: &View) -> Json {
    let mut levels = vec![Level::Cluster];
    levels.extend(v.members.groups().map(|g| Level::Group(g.clone())));
    levels.extend(v.members.machines().map(|m| Level::Machine(m.name.clone())));
    let mut sections: Vec<String> = Vec::new();
    let rows: Vec<Json> = levels
        .iter()
        .map(|l| {
            let set = LayerDoc::parse(l.clone(), v.text(l))
                .map(|d| d.sections())
                .unwrap_or_default();
            for s in &set {
                if !sections.contains(s) {
                    sections.push(s.clone());
                }
            }
            json!({ "level": l.to_string(), "sections": set })
        })
        .collect();
    let scopes: serde_json::Map<String, Json> = sections
        .iter()
        .map(|s| {
            let scope = match SCHEMA.scope(s) {
                pvo_cluster::Scope::MachineOnly => "machine",
                pvo_cluster::Scope::ClusterOnly => "cluster",
                pvo_cluster::Scope::AnyLevel => "any",
            };
            (s.clone(), json!(scope))
        })
        .collect();
    json!({ "levels": rows, "scopes": scopes })
}

// ---------------------------------------------------------------------------
// clusterconfig
// ---------------------------------------------------------------------------

/// The address this machine is known by in the cluster: `--address`, or its first
/// interface's.
/// An argument given with something in it, trimmed.
fn given(arg: &Option<String>) -> Option<&str> {
    arg.as_deref().map(str::trim).filter(|a| !a.is_empty())
}

fn address_of(shared: &Handles, address: &Option<String>) -> String {
    match given(address) {
        Some(a) => a.to_string(),
        None => shared
            .config
            .current()
            .interfaces
            .first()
            .map(|i| i.address.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
    }
}

/// The membership a `create` or `join` asks for.
fn membership_from(shared: &Handles, args: &ClusterArgs) -> Result<Membership, Response> {
    let Some(url) = args.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Err(Response::error(
            "clusterconfig: give the cluster's PostgreSQL with --url postgresql://USER@HOST:PORT/DATABASE",
        ));
    };
    let cfg = shared.config.current();
    // A gateway added on a manager keeps the id it is known by there (in a cluster a
    // machine's CPQ id is its machine name).
    let known_as = cfg.cpq.as_ref().and_then(|c| Name::new(&c.node_id).ok());
    let machine = match (&args.machine, known_as) {
        (Some(_), _) => name_arg("machine name (--machine)", &args.machine)?,
        (None, Some(id)) => id,
        (None, None) => {
            crate::core::config::default_machine_name(&cfg.hostname).ok_or_else(|| {
                Response::error(format!(
                "clusterconfig: the host name {:?} is not a machine name; give one with --machine",
                cfg.hostname
            ))
            })?
        }
    };
    Ok(Membership {
        url: url.to_string(),
        ca: args
            .ca
            .as_deref()
            .map(|c| base_dir(&shared.config.path).join(c)),
        machine,
    })
}

/// The machine's own file: its text, refusing when local changes are pending.
fn own_file(shared: &Handles) -> Result<(Store, String), Response> {
    let store = Store::new(&shared.config.current().data_dir, &shared.config.path);
    match store.pending() {
        Ok(Some(_)) => {
            return Err(Response::fail(
                ErrorKind::Conflict,
                "this machine has configuration changes pending: commit them (`pvo commit`) or discard them (`pvo clearchanges`) first",
            ))
        }
        Ok(None) => {}
        Err(e) => return Err(Response::error(format!("{e:#}"))),
    }
    let text = store
        .committed_text()
        .map_err(|e| Response::error(format!("{e:#}")))?;
    Ok((store, text))
}

/// Writes `[cluster]` into the machine's own file (its bootstrap: where the store is).
fn write_membership(store: &Store, text: &str, m: &Membership) -> Result<(), Response> {
    let mut doc = Doc::parse(text).map_err(Response::error)?;
    doc.set_cluster(
        &m.url,
        m.ca.as_deref().and_then(|p| p.to_str()),
        m.machine.as_str(),
    )
    .map_err(Response::error)?;
    store
        .write_committed(&doc.text())
        .map_err(|e| Response::error(format!("{e:#}")))
}

/// A machine's own file split for the cluster: its machine-only sections (its layer)
/// and the rest (what it gives up, or, on `create`, the cluster's first layer).
fn split_own(machine: &Name, text: &str) -> Result<(LayerDoc, LayerDoc, Vec<String>), Response> {
    let own = LayerDoc::parse(Level::Machine(machine.clone()), text).map_err(|e| {
        Response::error(format!(
            "this machine's configuration, line {}: {}",
            e.line, e.message
        ))
    })?;
    let (mut kept, dropped) = pvo_cluster::take_over(&SCHEMA, &own);
    if kept.sets("cluster") {
        let _ = kept.delete("cluster");
    }
    let mut rest = LayerDoc::empty(Level::Cluster);
    for s in &dropped {
        if !SCHEMA.allows(s, &Level::Cluster) {
            continue;
        }
        rest.replace_from(&own, s)
            .map_err(|e| Response::error(e.to_string()))?;
    }
    Ok((kept, without_cpq_id(rest)?, dropped))
}

/// `layer` without `[cpq] node_id`: above a machine, each machine is its own CPQ id.
fn without_cpq_id(layer: LayerDoc) -> Result<LayerDoc, Response> {
    if layer
        .value("cpq")
        .is_none_or(|v| v.get("node_id").is_none())
    {
        return Ok(layer);
    }
    let mut doc: toml_edit::DocumentMut = layer
        .text()
        .parse()
        .map_err(|e: toml_edit::TomlError| Response::error(e.to_string()))?;
    if let Some(t) = doc.get_mut("cpq").and_then(|c| c.as_table_like_mut()) {
        t.remove("node_id");
    }
    LayerDoc::parse(layer.level().clone(), &doc.to_string())
        .map_err(|e| Response::error(format!("line {}: {}", e.line, e.message)))
}

pub fn clusterconfig(shared: &Arc<Handles>, req: &Request, args: &ClusterArgs) -> Response {
    match args.action {
        ClusterAction::List => list(shared),
        ClusterAction::Connstatus => connstatus(shared),
        ClusterAction::Create => create(shared, req, args),
        ClusterAction::Join => join(shared, req, args),
        ClusterAction::Addgroup => members_change(shared, req, args),
        ClusterAction::Setgroup => members_change(shared, req, args),
        ClusterAction::Renamegroup => members_change(shared, req, args),
        ClusterAction::Deletegroup => members_change(shared, req, args),
        ClusterAction::Removemachine => removemachine(shared, req, args),
        ClusterAction::Disconnect | ClusterAction::Reconnect => hold(shared, req, args),
        ClusterAction::Copysettings
        | ClusterAction::Movesettings
        | ClusterAction::Deletesettings => settings(shared, req, args),
        ClusterAction::Joininfo => joininfo(shared, args, None),
        ClusterAction::Jointoken => jointoken(shared, req, args),
        ClusterAction::JointokenList => jointoken_list(shared),
        ClusterAction::JointokenRevoke => jointoken_revoke(shared, req, args),
    }
}

/// What a joining machine asks a member over SSH (as an Administrator, or logged in
/// with the join token whose hash is `token`): where the store is and the CA its
/// certificate is checked against. With a token, the token is first claimed for the
/// joining machine (`--machine`): a second machine using it is refused, the same one
/// retrying is not.
pub fn joininfo(shared: &Handles, args: &ClusterArgs, token: Option<&str>) -> Response {
    let m = match membership(shared) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Some(hash) = token {
        let machine = match name_arg("joining machine's name (--machine)", &args.machine) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let store = match store_of(shared) {
            Ok(s) => s,
            Err(r) => return r,
        };
        if let Err(e) = block_on(store.claim_token(hash, machine.as_str())) {
            shared.mail.log.emit(Event::JoinTokenRefused {
                what: &format!("machine {machine}"),
                why: &e,
            });
            return store_error(&e);
        }
        shared.mail.log.emit(Event::JoinTokenClaimed {
            token: hash.get(..8).unwrap_or(hash),
            machine: machine.as_str(),
        });
    }
    let ca = match &m.ca {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) => {
                return Response::error(format!(
                    "cannot read this member's store CA {}: {e}",
                    path.display()
                ))
            }
        },
        None => None,
    };
    let cluster = shared
        .cluster
        .snapshot()
        .map(|s| s.members.cluster.to_string());
    Response::ok(
        format!(
            "Cluster {} on {}",
            cluster.as_deref().unwrap_or("?"),
            crate::core::cluster::sync::describe(&m.url)
        ),
        json!({ "cluster": cluster, "url": m.url, "ca": ca, "machine": m.machine.to_string() }),
    )
}

/// How long a join token works unless `--expires` says otherwise, and the longest.
const TOKEN_MINUTES: u64 = 60;
const TOKEN_MINUTES_MAX: u64 = 1440;

/// `clusterconfig jointoken [--expires MINUTES]`: a single-use join token naming this
/// member's SSH address and host key; the store keeps only the hash of its secret.
fn jointoken(shared: &Handles, req: &Request, args: &ClusterArgs) -> Response {
    let minutes = args.expires.unwrap_or(TOKEN_MINUTES);
    if !(1..=TOKEN_MINUTES_MAX).contains(&minutes) {
        return Response::error(format!(
            "clusterconfig jointoken: --expires is in minutes, 1 to {TOKEN_MINUTES_MAX} (a day), not {minutes}"
        ));
    }
    let membership = match membership(shared) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let store = match shared.cluster.store() {
        Ok(s) => s,
        Err(e) => {
            return Response::fail(
                ErrorKind::Unavailable,
                format!("No join token made: {e}; see `clusterconfig connstatus`"),
            )
        }
    };
    let Some(ssh) = shared
        .control
        .servers
        .address(crate::core::state::ServerKind::Ssh)
    else {
        return Response::fail(
            ErrorKind::Unavailable,
            "No join token made: this machine's SSH server is off, and a joining machine logs in over it: turn it on ([ssh] in the configuration)",
        );
    };
    // The address a joining machine reaches: the SSH server's, or, when it listens on
    // every address, the one this machine is known by in the cluster.
    let ip = if ssh.ip().is_unspecified() {
        let known = shared.cluster.snapshot().and_then(|s| {
            s.members
                .machine(&membership.machine)
                .map(|m| m.address.clone())
                .ok()
        });
        match known {
            Some(a) => a,
            None => ssh.ip().to_string(),
        }
    } else {
        ssh.ip().to_string()
    };
    let member = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", ssh.port()),
        _ => format!("{ip}:{}", ssh.port()),
    };
    let host_key = match own_host_key(shared) {
        Ok(k) => k,
        Err(e) => return Response::error(format!("No join token made: {e}")),
    };
    let mut secret = [0u8; 32];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).is_err() {
        return Response::error("No join token made: the system's random source failed");
    }
    let token = match pvo_cluster::JoinToken::new(&member, host_key, secret) {
        Ok(t) => t,
        Err(e) => {
            return Response::error(format!(
                "No join token made: {e} (the SSH address of this member; give the machine a cluster address with --address when it joins)"
            ))
        }
    };
    let hash = crate::core::cluster::store::token_hash(&secret);
    let who = req.author();
    let info = match block_on(store.make_token(&hash, minutes as u32, &who)) {
        Ok(i) => i,
        Err(e) => return store_error(&e),
    };
    shared.mail.log.emit(Event::JoinTokenMade {
        token: info.short(),
        by: &who,
        expires: &info.expires_at,
    });
    let fingerprint = format!(
        "SHA256:{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, host_key)
    );
    Response::ok(
        format!(
            "Join token (works once, until {}; it is shown only now):\n\n{token}\n\n             On the machine that is to join, run:\n  pvo clusterconfig join --token TOKEN [--machine NAME] [--group GROUP] [--address ADDRESS]\n             It logs into this member ({member}, SSH host key {fingerprint}) with the token;              `clusterconfig jointoken list` shows it as {}, `clusterconfig jointoken revoke {}` withdraws it.",
            info.expires_at,
            info.short(),
            info.short()
        ),
        json!({
            "token": token.to_string(),
            "hash": info.short(),
            "member": member,
            "host_key": fingerprint,
            "expires": info.expires_at,
            "created_by": info.created_by,
        }),
    )
}

/// The SHA-256 of this machine's SSH host key (what the SSH client pins).
fn own_host_key(shared: &Handles) -> Result<[u8; 32], String> {
    let line = shared
        .cpq
        .gateway_shell
        .manager_key_line()
        .map_err(|e| format!("cannot read this machine's SSH host key: {e:#}"))?;
    let key = russh::keys::PublicKey::from_openssh(line.trim())
        .map_err(|e| format!("cannot read this machine's SSH host key: {e}"))?;
    let fp = key.fingerprint(russh::keys::HashAlg::Sha256);
    fp.as_bytes()
        .try_into()
        .map_err(|_| "the SSH host key's fingerprint is not 32 bytes".to_string())
}

fn token_json(t: &crate::core::cluster::store::TokenInfo) -> Json {
    json!({ "hash": t.short(), "created_by": t.created_by, "created": t.created_at, "expires": t.expires_at })
}

/// `clusterconfig jointoken list`: the tokens that still work (never their secret).
fn jointoken_list(shared: &Handles) -> Response {
    let store = match store_of(shared) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tokens = match block_on(store.tokens()) {
        Ok(t) => t,
        Err(e) => return store_error(&e),
    };
    let mut t = if tokens.is_empty() {
        "No join token works now (make one with `clusterconfig jointoken`).\n".to_string()
    } else {
        format!(
            "Join tokens that work now ({}):\n  {:<10} {:<16} {:<24} {}\n",
            tokens.len(),
            "Hash",
            "Made by",
            "Made",
            "Expires"
        )
    };
    for k in &tokens {
        t.push_str(&format!(
            "  {:<10} {:<16} {:<24} {}\n",
            k.short(),
            k.created_by,
            k.created_at,
            k.expires_at
        ));
    }
    Response::ok(
        t,
        json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() }),
    )
}

/// `clusterconfig jointoken revoke HASHPREFIX`.
fn jointoken_revoke(shared: &Handles, req: &Request, args: &ClusterArgs) -> Response {
    let Some(prefix) = given(&args.hash) else {
        return Response::error(
            "clusterconfig jointoken revoke: give the beginning of the token's hash (`clusterconfig jointoken list`)",
        );
    };
    let store = match store_of(shared) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let who = req.author();
    let info = match block_on(store.revoke_token(prefix, &who)) {
        Ok(i) => i,
        Err(e) => return store_error(&e),
    };
    shared.mail.log.emit(Event::JoinTokenRevoked {
        token: info.short(),
        by: &who,
    });
    Response::ok(
        format!(
            "Join token {} (made by {} at {}) revoked: no machine can join with it.",
            info.short(),
            info.created_by,
            info.created_at
        ),
        json!({ "revoked": token_json(&info) }),
    )
}

/// `join --token TOKEN`: logs into the member the token names as `pvojoin` with its
/// secret, pinning the host key it names (another key is refused before the secret is
/// sent), and asks it where the store is, as the password path does. Answers the url,
/// the CA, the member's host key and the token spent by the join.
fn ask_member_with_token(
    shared: &Handles,
    text: &str,
    machine: &Name,
) -> Result<(String, Option<String>, String, TokenUse), Response> {
    let token: pvo_cluster::JoinToken = text
        .parse()
        .map_err(|e: pvo_cluster::TokenError| Response::error(format!("Not joined: {e}")))?;
    let (host, port) = token
        .member
        .rsplit_once(':')
        .map(|(h, p)| {
            (
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().unwrap_or(22),
            )
        })
        .unwrap_or_default();
    let ip: std::net::IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => block_on(tokio::net::lookup_host((host.as_str(), port)))
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip())
            .ok_or_else(|| {
                Response::fail(
                    ErrorKind::Unavailable,
                    format!("Not joined: cannot resolve the member {host} the join token names"),
                )
            })?,
    };
    let pin = format!(
        "SHA256:{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            token.host_key
        )
    );
    let secret = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        token.secret,
    );
    let exec = block_on(shared.cpq.gateway_shell.exec(
        (ip, port),
        crate::core::users::JOIN_USER,
        &crate::core::cpq::shell::ShellLogin::Password(secret),
        Some(&pin),
        &format!("clusterconfig joininfo --machine {machine} --json"),
    ))
    .map_err(|e| {
        Response::fail(
            ErrorKind::Unavailable,
            format!(
                "Not joined: with the join token, cannot log into the member {}: {e:#}",
                token.member
            ),
        )
    })?;
    let answer: Json = serde_json::from_str(exec.output.trim()).unwrap_or(Json::Null);
    if exec.status != 0 || answer["ok"] != true {
        let why = answer["text"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| exec.output.trim().to_string());
        return Err(Response::fail(
            ErrorKind::Conflict,
            format!("Not joined: the member {} answered: {why}", token.member),
        ));
    }
    let (url, ca) = store_from_answer(shared, &answer)?;
    let spent = TokenUse {
        hash: crate::core::cluster::store::token_hash(&token.secret),
        machine: machine.to_string(),
    };
    Ok((url, ca, exec.host_key, spent))
}

/// The store's address and CA from a member's joininfo answer (the CA kept beside
/// this machine's data).
fn store_from_answer(
    shared: &Handles,
    answer: &Json,
) -> Result<(String, Option<String>), Response> {
    let Some(url) = answer["data"]["url"].as_str().map(str::to_string) else {
        return Err(Response::error(
            "Not joined: the member did not say where its store is",
        ));
    };
    let ca = match answer["data"]["ca"].as_str() {
        Some(pem) => {
            let path = shared
                .config
                .current()
                .data_dir
                .join("cluster")
                .join("store-ca.pem");
            crate::core::atomic_file::write_private(&path, pem.as_bytes()).map_err(|e| {
                Response::error(format!(
                    "cannot keep the store's CA in {}: {e:#}",
                    path.display()
                ))
            })?;
            Some(path.to_string_lossy().into_owned())
        }
        None => None,
    };
    Ok((url, ca))
}

/// `join --member IP[:PORT]`: logs into the member over SSH with an Administrator's
/// password (its host key pinned when given), asks it where the store is, keeps the
/// store's CA beside this machine's data, and answers the `url` and `ca` to join with.
fn ask_member(
    shared: &Handles,
    args: &ClusterArgs,
) -> Result<(String, Option<String>, String), Response> {
    let member = args.member.as_deref().unwrap_or("").trim();
    let (host, port) = match member.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse::<u16>().map_err(|_| {
                Response::error(format!("clusterconfig join: {member:?} is not IP[:PORT]"))
            })?,
        ),
        _ => (member.to_string(), 22),
    };
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        Response::error(format!(
            "clusterconfig join --member: {host:?} is not an IP address (the member's SSH address)"
        ))
    })?;
    let Some(password) = args.password.clone().filter(|p| !p.is_empty()) else {
        return Err(Response::error(
            "clusterconfig join --member: give the member Administrator's password (PVO_CLUSTER_PASSWORD or --password-stdin)",
        ));
    };
    let user = args.user.clone().unwrap_or_else(|| "admin".into());
    let shell = &shared.cpq.gateway_shell;
    let exec = block_on(shell.exec(
        (ip, port),
        &user,
        &crate::core::cpq::shell::ShellLogin::Password(password),
        args.host_key.as_deref(),
        "clusterconfig joininfo --json",
    ))
    .map_err(|e| {
        Response::fail(
            ErrorKind::Unavailable,
            format!("Not joined: cannot log into the member {ip}:{port} as {user}: {e:#}"),
        )
    })?;
    let answer: Json = serde_json::from_str(exec.output.trim()).unwrap_or(Json::Null);
    if exec.status != 0 || answer["ok"] != true {
        let why = answer["text"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| exec.output.trim().to_string());
        return Err(Response::fail(
            ErrorKind::Unavailable,
            format!("Not joined: the member {ip}:{port} answered: {why}"),
        ));
    }
    let (url, ca) = store_from_answer(shared, &answer)?;
    Ok((url, ca, exec.host_key))
}

fn create(shared: &Arc<Handles>, req: &Request, args: &ClusterArgs) -> Response {
    if let Some(m) = shared.cluster.membership() {
        return Response::fail(
            ErrorKind::Conflict,
            format!("this machine is already in a cluster, as {}", m.machine),
        );
    }
    let cluster = match name_arg("cluster's name", &args.name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let membership = match membership_from(shared, args) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (file_store, text) = match own_file(shared) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (own, cluster_layer, moved) = match split_own(&membership.machine, &text) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let address = address_of(shared, &args.address);
    let members = Members::create(cluster.clone(), membership.machine.clone(), address);
    let layers = vec![
        (Level::Cluster, cluster_layer.text()),
        (Level::Machine(membership.machine.clone()), own.text()),
    ];
    if let Err(e) = crate::core::cluster::sync::compose_from(
        &members,
        &layers,
        layers.len() as u64,
        &membership,
        &base_dir(&shared.config.path),
    ) {
        return Response::error(format!("Cluster not created: {e}"));
    }
    let store = match block_on(
        shared
            .cluster
            .connector
            .connect(&membership, membership.machine.as_str()),
    ) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let who = req.author();
    let revision = match block_on(store.create(&members, &layers, &who)) {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    if let Err(r) = write_membership(&file_store, &text, &membership) {
        return r;
    }
    // The machine's users become the cluster's (else the member loop seeds them).
    let users = match block_on(crate::core::cluster::users::seed(
        &shared.access,
        &*store,
        &who,
        &membership.machine,
    )) {
        Ok(Some(r)) => {
            crate::core::cluster::users::taken(
                &shared.access,
                &shared.mail,
                &membership.machine,
                r.number,
            );
            format!(
                "\nIts {} users are now the cluster's (users revision {}).",
                shared.access.users.users().len(),
                r.number
            )
        }
        Ok(None) | Err(_) => format!(
            "\nIts {} users become the cluster's once it is connected.",
            shared.access.users.users().len()
        ),
    };
    shared.cluster.joined(membership.clone());
    shared.mail.log.emit(Event::ClusterMembers {
        by: &who,
        what: &format!(
            "cluster {cluster} created with machine {} in group {MAIN_GROUP}",
            membership.machine
        ),
    });
    let applied = block_on(shared.cluster.wait_for(revision, APPLY_WAIT));
    Response::ok(
        format!(
            "Cluster {cluster} created with this machine ({}) in group {MAIN_GROUP} (revision {revision}).\n\
             Its settings are now the cluster's: {}.\n\
             Machine-only settings stay with the machine: {}.{users}{}",
            membership.machine,
            if moved.is_empty() { "none".to_string() } else { moved.join(", ") },
            own.sections().join(", "),
            if applied { "" } else { "\nNot yet connected to the cluster's store: see `clusterconfig connstatus`." }
        ),
        json!({ "cluster": cluster.to_string(), "machine": membership.machine.to_string(), "revision": revision, "cluster_sections": moved, "applied": applied, "users": shared.access.users.users().len() }),
    )
}

fn join(shared: &Arc<Handles>, req: &Request, args: &ClusterArgs) -> Response {
    if let Some(m) = shared.cluster.membership() {
        return Response::fail(
            ErrorKind::Conflict,
            format!("this machine is already in a cluster, as {}", m.machine),
        );
    }
    // Over SSH: the member says where the store is.
    let mut args = args.clone();
    let mut via = None;
    let mut spent = None;
    let ways = [
        args.member.is_some(),
        args.url.is_some(),
        args.token.is_some(),
    ];
    if ways.iter().filter(|w| **w).count() > 1 {
        return Response::error(
            "clusterconfig join: give one of --member (over SSH with a password), --token (over SSH with a join token) or --url (the store)",
        );
    }
    if args.member.is_some() {
        match ask_member(shared, &args) {
            Ok((url, ca, host_key)) => {
                args.url = Some(url);
                args.ca = ca;
                via = Some((args.member.clone().unwrap_or_default(), host_key));
            }
            Err(r) => return r,
        }
    }
    if let Some(token) = args.token.clone() {
        let machine = match &args.machine {
            Some(_) => name_arg("machine name (--machine)", &args.machine),
            None => {
                let cfg = shared.config.current();
                crate::core::config::default_machine_name(&cfg.hostname).ok_or_else(|| {
                    Response::error(format!(
                        "clusterconfig: the host name {:?} is not a machine name; give one with --machine",
                        cfg.hostname
                    ))
                })
            }
        };
        let machine = match machine {
            Ok(m) => m,
            Err(r) => return r,
        };
        match ask_member_with_token(shared, &token, &machine) {
            Ok((url, ca, host_key, used)) => {
                args.url = Some(url);
                args.ca = ca;
                args.machine = Some(machine.to_string());
                let member = token
                    .parse::<pvo_cluster::JoinToken>()
                    .map(|t| t.member)
                    .unwrap_or_default();
                via = Some((format!("{member} with a join token"), host_key));
                spent = Some(used);
            }
            Err(r) => return r,
        }
    }
    let args = &args;
    let membership = match membership_from(shared, args) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let group = match &args.group {
        Some(_) => match name_arg("group (--group)", &args.group) {
            Ok(g) => Some(g),
            Err(r) => return r,
        },
        None => None,
    };
    let (file_store, text) = match own_file(shared) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (own, _, replaced) = match split_own(&membership.machine, &text) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = match block_on(
        shared
            .cluster
            .connector
            .connect(&membership, membership.machine.as_str()),
    ) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let snap = match fresh_snapshot(&*store) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let address = address_of(shared, &args.address);
    // The machine must be able to run the cluster's settings before anything changes.
    let mut members = snap.members.clone();
    if let Err(e) = members.join(membership.machine.clone(), address.clone(), group.clone()) {
        return store_error(&StoreError::Members(e));
    }
    let machine_level = Level::Machine(membership.machine.clone());
    let mut layers = snap.layers.clone();
    layers.retain(|(l, _)| *l != machine_level);
    layers.push((machine_level.clone(), own.text()));
    if let Err(e) = crate::core::cluster::sync::compose_from(
        &members,
        &layers,
        snap.head + 1,
        &membership,
        &base_dir(&shared.config.path),
    ) {
        return Response::error(format!(
            "Not joined: the cluster's configuration cannot run on this machine: {e}"
        ));
    }
    // The cluster's users replace the machine's: read (and checked) before anything changes.
    let cluster_users = match block_on(store.users()) {
        Ok(u) => u,
        Err(e) => return store_error(&e),
    };
    let cluster_count = match &cluster_users {
        Some(base) => match crate::core::users::Users::check_base(&base.users) {
            Ok(n) => Some(n),
            Err(e) => return Response::error(format!("Not joined: {e}")),
        },
        None => None,
    };
    let (name, g) = (membership.machine.clone(), group.clone());
    let who = req.author();
    let own_layer = [Commit {
        level: machine_level,
        base: snap.head,
        text: Some(own.text()),
        author: who.clone(),
        comment: format!("machine {} joined", membership.machine),
    }];
    // One transaction: the machine is a member with its own layer, or nothing changed.
    let revision = match block_on(store.join(
        Box::new(move |m: &mut Members| m.join(name, address, g)),
        &own_layer,
        spent.as_ref(),
    )) {
        Ok(r) => r.last().map(|r| r.number).unwrap_or(snap.head),
        Err(e) => {
            if let (Some(_), StoreError::Token(_)) = (&spent, &e) {
                shared.mail.log.emit(Event::JoinTokenRefused {
                    what: &format!("machine {}", membership.machine),
                    why: &e,
                });
                return Response::fail(
                    store_error(&e).kind.unwrap_or(ErrorKind::Conflict),
                    format!("Not joined: {e}"),
                );
            }
            return store_error(&e);
        }
    };
    if let Some(t) = &spent {
        shared.mail.log.emit(Event::JoinTokenUsed {
            token: t.hash.get(..8).unwrap_or(&t.hash),
            machine: &t.machine,
        });
    }
    if let Err(r) = write_membership(&file_store, &text, &membership) {
        return r;
    }
    let own_count = shared.access.users.users().len();
    let users = match (&cluster_users, cluster_count) {
        (Some(base), Some(m)) => {
            let replaced = shared
                .access
                .users
                .keep_copy("before-join")
                .and_then(|copy| {
                    shared
                        .access
                        .users
                        .adopt(&base.users, base.revision.number, true)
                        .map(|_| copy)
                });
            match replaced {
                Ok(copy) => {
                    // A password generated for this machine's admin is not the cluster's.
                    shared.access.users.forget_initial_password();
                    format!(
                        "\nIts {own_count} users were replaced by the cluster's {m} (users revision {}; the old ones are kept in {}); log in with the cluster's passwords.",
                        base.revision.number,
                        copy.display()
                    )
                }
                Err(e) => format!(
                    "\nIts users could not be replaced by the cluster's yet ({e}); it takes them once it is connected."
                ),
            }
        }
        _ => format!("\nThe cluster had no users yet: its {own_count} users become the cluster's."),
    };
    shared.cluster.joined(membership.clone());
    let group_name = members
        .machine(&membership.machine)
        .map(|m| m.group.to_string())
        .unwrap_or_default();
    shared.mail.log.emit(Event::ClusterMembers {
        by: &who,
        what: &format!(
            "machine {} joined cluster {} in group {group_name}",
            membership.machine, snap.members.cluster
        ),
    });
    let applied = block_on(shared.cluster.wait_for(revision, APPLY_WAIT));
    let via = match &via {
        Some((member, key)) => {
            format!("Asked {member} over SSH (host key {key}) where the cluster's store is.\n")
        }
        None => String::new(),
    };
    Response::ok(
        format!(
            "{via}This machine ({}) joined cluster {} in group {group_name} (revision {revision}).\n\
             It now runs the cluster's settings; its own settings of {} were replaced.\n\
             Machine-only settings stay with the machine: {}.{users}{}",
            membership.machine,
            snap.members.cluster,
            if replaced.is_empty() {
                "nothing".to_string()
            } else {
                replaced.join(", ")
            },
            own.sections().join(", "),
            if applied {
                ""
            } else {
                "\nNot yet in force: see `clusterconfig connstatus`."
            }
        ),
        json!({ "cluster": snap.members.cluster.to_string(), "machine": membership.machine.to_string(), "group": group_name, "revision": revision, "replaced": replaced, "applied": applied, "users_before": own_count, "users": cluster_count }),
    )
}

/// The cluster as the store has it now, or as this machine last saw it.
fn snapshot_now(shared: &Handles) -> Result<(Snapshot, bool), Response> {
    match shared.cluster.store() {
        Ok(store) => fresh_snapshot(&*store).map(|s| (s, true)),
        Err(e) => match shared.cluster.snapshot() {
            Some(s) => Ok((s, false)),
            None => Err(unavailable(e)),
        },
    }
}

fn list(shared: &Handles) -> Response {
    let (snap, fresh) = match snapshot_now(shared) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let me = shared.cluster.status().machine.unwrap_or_default();
    let mut t = format!(
        "Cluster {} (revision {}){}\n",
        snap.members.cluster,
        snap.head,
        if fresh {
            ""
        } else {
            " as last seen: this machine is disconnected from the cluster's store"
        }
    );
    let mut groups = Vec::new();
    for g in snap.members.groups() {
        t.push_str(&format!("\nGroup {g}:\n"));
        let machines = snap.members.in_group(g);
        if machines.is_empty() {
            t.push_str("    (no machines)\n");
        }
        let mut list = Vec::new();
        for m in machines {
            let state = snap.states.iter().find(|s| s.name == m.name);
            let connected = state.is_some_and(|s| s.connected);
            let applied = state.and_then(|s| s.applied);
            t.push_str(&format!(
                "    {} ({}) - {}, {}{}\n",
                m.name,
                m.address,
                if connected {
                    "connected"
                } else {
                    "not connected"
                },
                match applied {
                    Some(r) => format!("runs revision {r}"),
                    None => "has run no revision yet".to_string(),
                },
                if m.name.as_str() == me {
                    " (this machine)"
                } else {
                    ""
                }
            ));
            list.push(json!({ "name": m.name.to_string(), "address": m.address, "connected": connected, "revision": applied }));
        }
        groups.push(json!({ "name": g.to_string(), "machines": list }));
    }
    Response::ok(
        t,
        json!({ "cluster": snap.members.cluster.to_string(), "revision": snap.head, "fresh": fresh, "groups": groups, "machine": me }),
    )
}

fn connstatus(shared: &Handles) -> Response {
    let s = shared.cluster.status();
    let Some(machine) = &s.machine else {
        return Response::ok(
            "This machine is not in a cluster.",
            json!({ "cluster": false }),
        );
    };
    let mut t = match (s.connected, s.held) {
        (true, _) => format!(
            "This machine ({machine}) is connected to the cluster's store since {}; it runs revision {} of {}.\n",
            crate::core::mail_log::ctime(s.since),
            s.revision,
            s.head
        ),
        (false, true) => format!(
            "This machine ({machine}) is disconnected by `clusterconfig disconnect` since {}; it runs revision {} and takes no configuration changes until `clusterconfig reconnect`.\n",
            crate::core::mail_log::ctime(s.since),
            s.revision
        ),
        (false, false) => format!(
            "This machine ({machine}) is NOT connected to the cluster's store since {}: {}.\nIt keeps running its last good configuration (revision {}) and takes no configuration changes until it is back.\n",
            crate::core::mail_log::ctime(s.since),
            s.why.clone().unwrap_or_default(),
            s.revision
        ),
    };
    if let Some(snap) = shared.cluster.snapshot() {
        t.push_str("\nMembers (as the store reports them):\n");
        for st in &snap.states {
            t.push_str(&format!(
                "    {} - {}, {}\n",
                st.name,
                if st.connected {
                    "connected"
                } else {
                    "not connected"
                },
                match st.applied {
                    Some(r) => format!("runs revision {r}"),
                    None => "has run no revision yet".into(),
                }
            ));
        }
    }
    Response::ok(t, json!({ "cluster": true, "status": s }))
}

fn members_change(shared: &Arc<Handles>, req: &Request, args: &ClusterArgs) -> Response {
    let store = match store_of(shared) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let group = || name_arg("group's name", &args.name);
    let (change, what): (crate::core::cluster::store::MembersChange, String) = match args.action {
        ClusterAction::Addgroup => {
            let g = match group() {
                Ok(g) => g,
                Err(r) => return r,
            };
            let w = format!("group {g} added");
            (Box::new(move |m: &mut Members| m.add_group(g)), w)
        }
        ClusterAction::Setgroup => {
            let (machine, g) = match (
                name_arg("machine (--machine)", &args.machine),
                name_arg("group (--group)", &args.group),
            ) {
                (Ok(m), Ok(g)) => (m, g),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            let w = format!("machine {machine} moved to group {g}");
            (
                Box::new(move |m: &mut Members| m.set_group(&machine, &g)),
                w,
            )
        }
        ClusterAction::Renamegroup => {
            let (old, new) = match (group(), name_arg("new name (--to)", &args.to)) {
                (Ok(o), Ok(n)) => (o, n),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            return renamegroup(shared, req, &*store, old, new);
        }
        ClusterAction::Deletegroup => {
            let g = match group() {
                Ok(g) => g,
                Err(r) => return r,
            };
            let to = match &args.to {
                Some(_) => match name_arg("group to move its machines to (--to)", &args.to) {
                    Ok(t) => Some(t),
                    Err(r) => return r,
                },
                None => None,
            };
            return deletegroup(shared, req, &*store, g, to);
        }
        _ => unreachable!("only membership changes come here"),
    };
    let who = req.author();
    match block_on(store.change_members(change)) {
        Ok(_) => {
            shared.mail.log.emit(Event::ClusterMembers {
                by: &who,
                what: &what,
            });
            Response::ok(
                format!("Cluster: {what}."),
                json!({ "changed": true, "what": what }),
            )
        }
        Err(e) => store_error(&e),
    }
}

fn renamegroup(
    shared: &Handles,
    req: &Request,
    store: &dyn ClusterStore,
    old: Name,
    new: Name,
) -> Response {
    let snap = match fresh_snapshot(store) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (o, n) = (old.clone(), new.clone());
    if let Err(e) =
        block_on(store.change_members(Box::new(move |m: &mut Members| m.rename_group(&o, n))))
    {
        return store_error(&e);
    }
    let who = req.author();
    // The group's settings follow it to its new name.
    let text = snap.layer(&Level::Group(old.clone()));
    if !text.is_empty() {
        let moves = [
            Commit {
                level: Level::Group(new.clone()),
                base: snap.head,
                text: Some(text.to_string()),
                author: who.clone(),
                comment: format!("group {old} renamed to {new}"),
            },
            Commit {
                level: Level::Group(old.clone()),
                base: snap.head,
                text: None,
                author: who.clone(),
                comment: format!("group {old} renamed to {new}"),
            },
        ];
        if let Err(e) = block_on(store.commit(&moves)) {
            return store_error(&e);
        }
    }
    let what = format!("group {old} renamed to {new}");
    shared.mail.log.emit(Event::ClusterMembers {
        by: &who,
        what: &what,
    });
    Response::ok(
        format!("Cluster: {what}."),
        json!({ "changed": true, "what": what }),
    )
}

fn deletegroup(
    shared: &Handles,
    req: &Request,
    store: &dyn ClusterStore,
    group: Name,
    to: Option<Name>,
) -> Response {
    let snap = match fresh_snapshot(store) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (g, t) = (group.clone(), to.clone());
    if let Err(e) = block_on(store.change_members(Box::new(move |m: &mut Members| {
        m.delete_group(&g, t.as_ref())
    }))) {
        return store_error(&e);
    }
    let who = req.author();
    if !snap.layer(&Level::Group(group.clone())).is_empty() {
        let gone = Commit {
            level: Level::Group(group.clone()),
            base: snap.head,
            text: None,
            author: who.clone(),
            comment: format!("group {group} deleted"),
        };
        if let Err(e) = block_on(store.commit(std::slice::from_ref(&gone))) {
            return store_error(&e);
        }
    }
    let what = match &to {
        Some(t) => format!("group {group} deleted, its machines moved to {t}"),
        None => format!("group {group} deleted"),
    };
    shared.mail.log.emit(Event::ClusterMembers {
        by: &who,
        what: &what,
    });
    Response::ok(
        format!("Cluster: {what}."),
        json!({ "changed": true, "what": what }),
    )
}

fn removemachine(shared: &Arc<Handles>, req: &Request, args: &ClusterArgs) -> Response {
    let machine = match name_arg("machine to remove", &args.name) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let store = match store_of(shared) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let snap = match fresh_snapshot(&*store) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let me = shared.cluster.membership();
    let itself = me.as_ref().is_some_and(|m| m.machine == machine);
    // Leaving: this machine keeps what it inherited, flattened into its own file.
    let flattened = if itself {
        match flattened_file(&chain_of(&snap, &machine)) {
            Some(t) => Some(t),
            None => {
                return Response::error(
                    "cannot flatten this machine's settings: a layer does not read",
                )
            }
        }
    } else {
        None
    };
    let m = machine.clone();
    if let Err(e) =
        block_on(store.change_members(Box::new(move |x: &mut Members| x.remove(&m).map(|_| ()))))
    {
        return store_error(&e);
    }
    let who = req.author();
    if let Some(text) = flattened {
        let file = Store::new(&shared.config.current().data_dir, &shared.config.path);
        if let Err(e) = file.write_committed(&text) {
            return Response::error(format!(
                "{machine} was removed from the cluster, but writing its own configuration failed: {e:#}"
            ));
        }
        let _ = view::clear_pending(&shared.config.current().data_dir);
        shared.cluster.left();
        // The user base it had is its own again.
        if let Err(e) = shared.access.users.own_again() {
            return Response::error(format!(
                "{machine} was removed from the cluster, but keeping its users failed: {e}"
            ));
        }
    }
    let what = format!(
        "machine {machine} removed from cluster {}",
        snap.members.cluster
    );
    shared.mail.log.emit(Event::ClusterMembers {
        by: &who,
        what: &what,
    });
    Response::ok(
        format!(
            "{machine} removed from cluster {}.{}",
            snap.members.cluster,
            if itself {
                format!(
                    " This machine keeps the settings it inherited, written into {}, and the cluster's {} users as its own.",
                    shared.config.path.display(),
                    shared.access.users.users().len()
                )
            } else {
                " It keeps the settings it inherited, flattened into its own configuration, once it hears of it.".to_string()
            }
        ),
        json!({ "removed": machine.to_string(), "itself": itself }),
    )
}

fn hold(shared: &Handles, req: &Request, args: &ClusterArgs) -> Response {
    let Some(m) = shared.cluster.membership() else {
        return unavailable(crate::core::cluster::member::Unavailable::NotInCluster);
    };
    let held = args.action == ClusterAction::Disconnect;
    if let Err(e) = shared.cluster.hold(held) {
        return Response::error(format!("cannot record it: {e}"));
    }
    if !held {
        block_on(async {
            let deadline = tokio::time::Instant::now() + APPLY_WAIT;
            while !shared.cluster.status().connected && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let what = if held {
        format!("machine {} disconnected from the cluster", m.machine)
    } else {
        format!("machine {} reconnected to the cluster", m.machine)
    };
    shared.mail.log.emit(Event::ClusterMembers {
        by: &req.author(),
        what: &what,
    });
    let s = shared.cluster.status();
    Response::ok(
        if held {
            format!("This machine ({}) is disconnected from the cluster: it keeps running revision {} and takes no configuration changes until `clusterconfig reconnect`.", m.machine, s.revision)
        } else if s.connected {
            format!(
                "This machine ({}) is connected to the cluster again; it runs revision {}.",
                m.machine, s.revision
            )
        } else {
            format!(
                "This machine ({}) is reconnecting: {}",
                m.machine,
                s.why.clone().unwrap_or_default()
            )
        },
        json!({ "held": held, "status": s }),
    )
}

/// `copysettings`, `movesettings`, `deletesettings`: the "Centralized Management" page's
/// moves of whole sections between levels, pending until `commit`.
fn settings(shared: &Handles, req: &Request, args: &ClusterArgs) -> Response {
    let Some(section) = given(&args.section) else {
        return Response::error(
            "clusterconfig: name the section (listener, content_filter, tls, ...)",
        );
    };
    let mut w = match working(shared, req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let machine = w.membership.machine.clone();
    let level_of = |v: &Option<String>, what: &str| -> Result<Level, Response> {
        match v.as_deref() {
            Some(l) => view::parse_level(l, &machine).map_err(Response::error),
            None => Err(Response::error(format!("clusterconfig: give {what}"))),
        }
    };
    let doc = |v: &View, l: &Level| {
        LayerDoc::parse(l.clone(), v.text(l))
            .map_err(|e| Response::error(format!("{l} line {}: {}", e.line, e.message)))
    };
    let result: Result<(Vec<Level>, String), Response> = (|| match args.action {
        ClusterAction::Copysettings | ClusterAction::Movesettings => {
            let from = level_of(&args.from, "the level to take it from (--from)")?;
            let to = level_of(&args.to, "the level to put it at (--to)")?;
            let mut a = doc(&w.view, &from)?;
            let mut b = doc(&w.view, &to)?;
            if args.action == ClusterAction::Copysettings {
                pvo_cluster::copy_section(&SCHEMA, &a, &mut b, section)
                    .map_err(|e| Response::error(e.to_string()))?;
                w.view.set_text(&to, b.text());
                Ok((
                    vec![to.clone()],
                    format!("[{section}] copied from {from} to {to}"),
                ))
            } else {
                pvo_cluster::move_section(&SCHEMA, &mut a, &mut b, section)
                    .map_err(|e| Response::error(e.to_string()))?;
                w.view.set_text(&from, a.text());
                w.view.set_text(&to, b.text());
                Ok((
                    vec![from.clone(), to.clone()],
                    format!("[{section}] moved from {from} to {to}"),
                ))
            }
        }
        _ => {
            let level = match (&w.level, &args.from) {
                (Some(l), _) => l.clone(),
                (None, f) => level_of(f, "the level to delete it from (--level)")?,
            };
            let mut a = doc(&w.view, &level)?;
            a.delete(section)
                .map_err(|e| Response::error(e.to_string()))?;
            w.view.set_text(&level, a.text());
            Ok((
                vec![level.clone()],
                format!("[{section}] deleted from {level}"),
            ))
        }
    })();
    let (levels, summary) = match result {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(e) = w
        .view
        .compose(&w.membership, &base_dir(&shared.config.path))
    {
        return Response::error(format!(
            "Not changed: the configuration would not be valid: {e}"
        ));
    }
    let names: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
    w.view.pending.changes.push(Change {
        time: config_store::now(),
        user: req.author(),
        command: format!("clusterconfig {}", args.action.name()),
        summary: summary.clone(),
    });
    if let Err(e) = view::save_pending(&shared.config.current().data_dir, &w.view.pending) {
        return Response::error(e);
    }
    Response::ok(
        format!("{summary}.\nChanges pending. Use `pvo commit` to apply them."),
        json!({ "changed": true, "pending": true, "summary": summary, "levels": names }),
    )
}

// ---------------------------------------------------------------------------
// clustercheck
// ---------------------------------------------------------------------------

pub fn clustercheck(shared: &Arc<Handles>, _req: &Request, _: &NoArgs) -> Response {
    let (snap, fresh) = match snapshot_now(shared) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let docs: Vec<LayerDoc> = snap
        .layers
        .iter()
        .filter_map(|(l, t)| LayerDoc::parse(l.clone(), t).ok())
        .collect();
    let layers = pvo_cluster::Layers::new(docs);
    let findings = pvo_cluster::check(&SCHEMA, &snap.members, &layers, snap.head, &snap.states);
    let mut t = format!(
        "Cluster {} at revision {}{}: ",
        snap.members.cluster,
        snap.head,
        if fresh {
            ""
        } else {
            " (as last seen; this machine is disconnected)"
        }
    );
    if findings.is_empty() {
        t.push_str("no differences between levels or machines.\n");
    } else {
        t.push_str(&format!("{} difference(s).\n", findings.len()));
        for f in &findings {
            t.push_str(&format!("\n{}: {}\n", f.subject, f.text));
            for r in &f.resolve {
                t.push_str(&format!("    resolve: {r}\n"));
            }
        }
    }
    Response::ok(
        t,
        json!({
            "cluster": snap.members.cluster.to_string(),
            "revision": snap.head,
            "fresh": fresh,
            "findings": findings.iter().map(|f| json!({ "subject": f.subject, "text": f.text, "resolve": f.resolve })).collect::<Vec<_>>(),
        }),
    )
}

// ---------------------------------------------------------------------------
// The cluster's part of `diagnose` and of `pvoconfig enable`
// ---------------------------------------------------------------------------

/// The sections that decide what is quarantined: below the cluster level, members would
/// quarantine differently, so centralization refuses them (scenario 6). Message filters
/// and DMARC settings join this list when they exist.
pub const QUARANTINE_DECIDERS: &[&str] = &["content_filter", "dlp_policy"];

/// The checks a cluster member adds: its connection to the store, and the cluster
/// reasons Enable stays greyed (scenario 6: settings below the cluster level; the CPQ
/// interface missing on a machine). Empty for a machine alone.
pub fn checks(shared: &Handles) -> Vec<crate::core::cpq::checks::Check> {
    use crate::core::cpq::checks::Check;
    let mut out = Vec::new();
    let Some(state) = super::status::cluster_state(shared) else {
        return out;
    };
    if state.connected {
        out.push(Check::pass("cluster", super::status::cluster_line(&state)));
    } else {
        out.push(Check::fail(
            "cluster",
            super::status::cluster_line(&state),
            "this machine cannot reach its cluster's store: it keeps running its last good configuration and refuses configuration commits, so it cannot diverge",
            if state.held {
                "`clusterconfig reconnect` when the maintenance is done".to_string()
            } else {
                "check that the cluster's PostgreSQL runs and is reachable from this machine ([cluster] url, and ca for TLS); the machine reconnects by itself and catches up".to_string()
            },
            None,
        ));
    }
    let Some(snap) = shared.cluster.snapshot() else {
        return out;
    };
    let docs: Vec<LayerDoc> = snap
        .layers
        .iter()
        .filter_map(|(l, t)| LayerDoc::parse(l.clone(), t).ok())
        .collect();
    let layers = pvo_cluster::Layers::new(docs);
    let below = pvo_cluster::features::below_cluster(&snap.members, &layers, QUARANTINE_DECIDERS);
    if below.is_empty() {
        out.push(Check::pass(
            "cluster levels",
            "content filters and DLP policies are set at cluster level only",
        ));
    }
    for b in &below {
        let machines: Vec<&str> = b.machines.iter().map(Name::as_str).collect();
        out.push(Check::fail(
            "cluster levels",
            format!(
                "[{}] is set at {} (machines {})",
                b.section,
                b.level,
                machines.join(", ")
            ),
            pvo_cluster::features::enable_refusal(&machines),
            b.remedy(),
            Some(6),
        ));
    }
    // Scenario 5: members differ in the keys of features the configuration uses.
    let cfg = shared.config.current();
    out.extend(feature_checks(&cfg, &snap));
    // The interface the PVO settings name must exist on every machine.
    if let Some(cpq) = &cfg.cpq {
        let wanted = cfg.interfaces.get(cpq.interface).map(|i| i.name.clone());
        if let Some(wanted) = wanted {
            for m in snap.members.machines() {
                let level = Level::Machine(m.name.clone());
                let has = LayerDoc::parse(level.clone(), snap.layer(&level))
                    .ok()
                    .and_then(|d| d.value("interface"))
                    .and_then(|v| v.as_array().cloned())
                    .is_some_and(|list| {
                        list.iter().any(|i| {
                            i.get("name").and_then(|n| n.as_str()) == Some(wanted.as_str())
                        })
                    });
                if !has {
                    out.push(Check::fail(
                        "cluster interfaces",
                        format!("machine {} has no interface named \"{wanted}\"", m.name),
                        format!("the PVO settings name the interface \"{wanted}\", which must exist on every machine of the cluster"),
                        format!("add it on {} (`interfaceconfig new --name \"{wanted}\" ...` there), or name an interface every machine has in [cpq] interface", m.name),
                        Some(6),
                    ));
                }
            }
        }
    }
    // Centralized at a level (or with a manager named, as Enable would): every machine
    // of it must be added on the manager.
    if cfg
        .cpq
        .as_ref()
        .is_some_and(|c| c.central() || c.manager().is_some())
    {
        if let Some(level) = pvo_level(&cfg, shared) {
            out.push(added_check(&cfg, &snap, &level));
        }
    }
    out
}

/// The level this machine's `[cpq]` comes from (where `pvoconfig enable` edits it).
pub fn pvo_level(cfg: &Config, shared: &Handles) -> Option<Level> {
    let machine = shared.cluster.membership()?.machine;
    Some(match cfg.origin("cpq") {
        Some("machine") | None => Level::Machine(machine),
        Some(other) => other.parse().unwrap_or(Level::Cluster),
    })
}

/// The machines whose PVO settings an edit of `[cpq]` at `level` decides: those of the
/// level whose own (and group's) layers do not set `[cpq]` themselves.
pub fn pvo_machines<'a>(snap: &'a Snapshot, level: &Level) -> Vec<&'a pvo_cluster::Member> {
    snap.members
        .affected(level)
        .into_iter()
        .filter(|m| {
            let Ok(chain) = snap.members.chain(&m.name) else {
                return false;
            };
            let first = chain.iter().find(|l| {
                LayerDoc::parse((*l).clone(), snap.layer(l)).is_ok_and(|d| d.sets("cpq"))
            });
            // Nothing sets it yet, or the level asked is the first that does.
            first.is_none_or(|l| l == level || !level_below(l, level))
        })
        .collect()
}

/// Whether `a` is more specific than `b` (a machine below its group below the cluster).
fn level_below(a: &Level, b: &Level) -> bool {
    let rank = |l: &Level| match l {
        Level::Machine(_) => 0,
        Level::Group(_) => 1,
        Level::Cluster => 2,
    };
    rank(a) < rank(b)
}

/// `pvoconfig enable` in a cluster: every machine of the level the PVO settings are
/// edited at (`--level`, or the level they are at) must be added on the manager. `None`
/// for a machine alone.
pub fn enable_check(shared: &Handles, req: &Request) -> Option<crate::core::cpq::checks::Check> {
    let m = shared.cluster.membership()?;
    let cfg = shared.config.current();
    let level = match &req.level {
        Some(l) => view::parse_level(l, &m.machine).ok()?,
        None => pvo_level(&cfg, shared)?,
    };
    let snap = shared.cluster.snapshot()?;
    Some(added_check(&cfg, &snap, &level))
}

/// What `pvoconfig status` says of the cluster: this machine's name in it, the level its
/// PVO settings come from and the machines they cover (the manager reads it over SSH,
/// so that its wizard covers them all). `None` for a machine alone.
pub fn pvo_cluster(shared: &Handles, cfg: &Config) -> Option<(String, Json)> {
    let m = shared.cluster.membership()?;
    let snap = shared.cluster.snapshot()?;
    let level = pvo_level(cfg, shared)?;
    let machines = pvo_machines(&snap, &level);
    let names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
    Some((
        format!(
            "Cluster {}, machine {}: the PVO settings are at {level} and cover {}\n",
            snap.members.cluster,
            m.machine,
            names.join(", ")
        ),
        json!({
            "name": snap.members.cluster.to_string(),
            "machine": m.machine.to_string(),
            "pvo_level": level.to_string(),
            "pvo_machines": machines
                .iter()
                .map(|m| json!({ "name": m.name.to_string(), "address": m.address }))
                .collect::<Vec<_>>(),
        }),
    ))
}

/// What each machine reported of its enrollment on a manager.
fn enrollment_of(snap: &Snapshot, name: &Name) -> Option<Enrollment> {
    snap.cpq
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, j)| serde_json::from_str(j).ok())
}

/// Every machine of `level` added on the manager this machine is added on.
pub fn added_check(
    cfg: &Config,
    snap: &Snapshot,
    level: &Level,
) -> crate::core::cpq::checks::Check {
    use crate::core::cpq::checks::Check;
    let ours = match &cfg.cpq {
        Some(c) => Enrollment::read(Some(&c.node_id), &c.dir),
        None => Enrollment::read(None, &cfg.data_dir.join("cpq")),
    };
    let machines = pvo_machines(snap, level);
    let mut missing = Vec::new();
    for m in &machines {
        // This machine as it is now; the others as they last reported.
        let reported = if ours.id.as_deref() == Some(m.name.as_str()) {
            Some(ours.clone())
        } else {
            enrollment_of(snap, &m.name)
        };
        let why = match reported {
            Some(e) => e.missing(m.name.as_str(), &ours),
            None => Some("has not reported its enrollment (not connected to the cluster's store since it started)".to_string()),
        };
        if let Some(why) = why {
            missing.push((m, why));
        }
    }
    let names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
    if missing.is_empty() {
        return Check::pass(
            "cluster PVO",
            format!(
                "every machine at {level} is added on the manager: {}",
                names.join(", ")
            ),
        );
    }
    Check::fail(
        "cluster PVO",
        missing
            .iter()
            .map(|(m, why)| format!("{}: {why}", m.name))
            .collect::<Vec<_>>()
            .join("; "),
        format!(
            "centralization at {level} covers {}, and every one of them must first be added on the manager",
            names.join(", ")
        ),
        format!(
            "on the manager, add each: {} (then its wizard covers them all), and Enable again",
            missing
                .iter()
                .map(|(m, _)| format!(
                    "`applianceconfig new --id {} --address {}`",
                    m.name, m.address
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None,
    )
}

/// The features the configuration uses: anti-virus, outbreak filters and DLP in a mail
/// policy.
pub fn used_features(cfg: &Config) -> Vec<pvo_cluster::Feature> {
    use pvo_cluster::Feature;
    let p = &cfg.scanning.policies;
    let mut out = Vec::new();
    if p.iter().any(|m| m.antivirus) {
        out.push(Feature::Antivirus);
    }
    if p.iter().any(|m| m.outbreak.is_some()) {
        out.push(Feature::Outbreak);
    }
    if p.iter().any(|m| !m.dlp_policies.is_empty()) {
        out.push(Feature::Dlp);
    }
    out
}

/// Scenario 5: for each feature the configuration uses, the machines without its key
/// while others have it, with the appliance's refusal and the remedy per machine.
fn feature_checks(cfg: &Config, snap: &Snapshot) -> Vec<crate::core::cpq::checks::Check> {
    use crate::core::cpq::checks::Check;
    use std::collections::{BTreeMap, BTreeSet};
    let used = used_features(cfg);
    let reported: BTreeMap<Name, BTreeSet<pvo_cluster::Feature>> = snap
        .features
        .iter()
        .map(|(m, fs)| {
            (
                m.clone(),
                fs.iter().filter_map(|f| f.parse().ok()).collect(),
            )
        })
        .collect();
    let missing = pvo_cluster::features::missing_keys(&reported);
    let lacking: Vec<(&Name, Vec<&pvo_cluster::Feature>)> = missing
        .iter()
        .map(|(m, fs)| {
            (
                m,
                fs.iter().filter(|f| used.contains(f)).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, fs)| !fs.is_empty())
        .collect();
    let mut out = Vec::new();
    if lacking.is_empty() {
        if !used.is_empty() && !reported.is_empty() {
            out.push(Check::pass(
                "cluster feature keys",
                format!(
                    "every machine that reported holds the keys of {}",
                    used.iter()
                        .map(|f| f.title())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        return out;
    }
    let hosts: Vec<&str> = lacking.iter().map(|(m, _)| m.as_str()).collect();
    let refusal = pvo_cluster::features::enable_refusal(&hosts);
    for (machine, fs) in &lacking {
        for f in fs {
            out.push(Check::fail(
                "cluster feature keys",
                format!("machine {machine} has no key for {} ({f}), which other members hold and the configuration uses", f.title()),
                refusal.clone(),
                format!("add the key on {machine} (`featurekey add {f}` there), or remove it on the other members"),
                Some(5),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// gw1 and gw2 in Main_Group, gw3 in east; `[cpq]` at cluster level, and at east's
    /// level too when `east_sets`.
    fn snapshot(east_sets: bool) -> Snapshot {
        let mut m = Members::create(n("c"), n("gw1"), "10.0.0.1".into());
        m.join(n("gw2"), "10.0.0.2".into(), None).unwrap();
        m.add_group(n("east")).unwrap();
        m.join(n("gw3"), "10.0.0.3".into(), Some(n("east")))
            .unwrap();
        let mut layers = vec![(Level::Cluster, "[cpq]\nmode = \"local\"\n".to_string())];
        if east_sets {
            layers.push((Level::Group(n("east")), "[cpq]\nport = 7026\n".to_string()));
        }
        Snapshot {
            members: m,
            head: 3,
            layers,
            states: Vec::new(),
            features: Vec::new(),
            cpq: Vec::new(),
        }
    }

    fn names(snap: &Snapshot, level: &Level) -> Vec<String> {
        pvo_machines(snap, level)
            .iter()
            .map(|m| m.name.to_string())
            .collect()
    }

    #[test]
    fn the_pvo_level_covers_the_machines_whose_settings_it_decides() {
        let all = snapshot(false);
        assert_eq!(names(&all, &Level::Cluster), ["gw1", "gw2", "gw3"]);
        assert_eq!(names(&all, &Level::Group(n("east"))), ["gw3"]);
        assert_eq!(names(&all, &Level::Machine(n("gw2"))), ["gw2"]);
        // A group with its own [cpq] is not decided at cluster level.
        let east = snapshot(true);
        assert_eq!(names(&east, &Level::Cluster), ["gw1", "gw2"]);
        assert_eq!(names(&east, &Level::Group(n("east"))), ["gw3"]);
    }

    #[test]
    fn a_machine_that_never_reported_is_named_with_why() {
        let snap = snapshot(false);
        let cfg_text = "[node]\nhostname = \"gw1\"\ndata_dir = \"/nonexistent\"\n";
        let cfg = Config::parse(
            cfg_text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("/"),
        )
        .unwrap();
        let c = added_check(&cfg, &snap, &Level::Group(n("east")));
        assert!(!c.passed);
        assert!(
            c.detail.starts_with("gw3: has not reported"),
            "{}",
            c.detail
        );
        assert!(
            c.remedy
                .as_deref()
                .unwrap()
                .contains("`applianceconfig new --id gw3 --address 10.0.0.3`"),
            "{c:?}"
        );
    }
}
