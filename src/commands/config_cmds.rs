//! Configuration commands: pending changes, `commit`, `commitdetail`,
//! `rollback`, `clearchanges`, `showconfig`, and the editors
//! `deliveryconfig`, `sslconfig`, `interfaceconfig`, `listenerconfig`,
//! `smtproutes`.
//!
//! Editors change only the pending document (`config_store`), never the
//! running node: each checks names against the configuration it edits,
//! validates the whole resulting text with `Config::parse` and saves nothing
//! when it would be invalid, so these commands never leave an invalid pending
//! configuration behind. `commit` and `rollback` are the only ways a change
//! reaches the node, through `state::NodeControl::apply_config`, which is all or nothing;
//! before it, every listener address that changes is test-bound so that a
//! port taken by another program is reported against its key and line.
//!
//! The work is file IO and fsync, so it runs on the blocking pool, one
//! command at a time (`config_store::lock`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value as Json};

use super::command::{
    text, CommandError, CommitArgs, CpqEnrollArgs, DeliveryConfigCmd, InterfaceArgs, List,
    ListAction, ListenerAction, ListenerArgs, NoArgs, RollbackArgs, RouteAction, RouteArgs,
    ShowconfigArgs, SslConfigCmd,
};
use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::core::config::{Config, RouteTarget, SenderPattern, TlsVersion};
use crate::core::config_store::{self, normalize_domain, quoted_list, Change, Doc, Store};
use crate::core::mail_log::ctime;
use crate::core::state::Handles;

const PENDING_NOTE: &str = "Changes pending. Use `pvo commit` to apply them.";

/// Runs a configuration command's handler on the blocking pool, one at a time.
pub async fn one_at_a_time<A: Clone + Send + 'static>(
    shared: &Arc<Handles>,
    req: &Request,
    args: &A,
    handler: fn(&Arc<Handles>, &Request, &A) -> Response,
) -> Response {
    let (s, r, a) = (shared.clone(), req.clone(), args.clone());
    let answer = tokio::task::spawn_blocking(move || {
        let _one_at_a_time = config_store::lock();
        handler(&s, &r, &a)
    })
    .await;
    answer.unwrap_or_else(|e| {
        Response::error(format!(
            "{} failed inside the node: {e}",
            req.command.name()
        ))
    })
}

fn store(shared: &Handles) -> Store {
    Store::new(&shared.config.current().data_dir, &shared.config.path)
}

/// An error of the store's files (not of the configuration).
fn io_error(e: anyhow::Error) -> Response {
    Response::error(format!("{e:#}"))
}

/// The configuration the editors work on, parsed, with its document.
struct Working {
    store: Store,
    text: String,
    cfg: Config,
    pending: bool,
}

fn working(shared: &Handles, req: &Request) -> Result<Working, Response> {
    let store = store(shared);
    if super::cluster_cmds::in_cluster(shared) {
        let w = super::cluster_cmds::working(shared, req)?;
        return Ok(Working {
            store,
            text: w.text,
            cfg: w.cfg,
            pending: w.pending,
        });
    }
    let (text, file, pending) = store.working().map_err(io_error)?;
    match store.parse(&text, &file) {
        Ok(cfg) => Ok(Working { store, text, cfg, pending }),
        Err(e) if pending => Err(Response::error(format!(
            "The pending configuration is not valid: {e}\nFix {} by hand, or discard the pending changes with `pvo clearchanges`.",
            file.display()
        ))),
        Err(e) => Err(Response::error(format!("The committed configuration is not valid: {e}"))),
    }
}

/// "(including changes pending commit)" when showing the pending version.
fn pending_label(pending: bool) -> &'static str {
    if pending {
        " (including changes not yet committed)"
    } else {
        ""
    }
}

/// Runs an editor on the working document, validates the result and saves
/// it as pending. `edit` returns the summary of what it changed.
pub(crate) fn edit(
    shared: &Handles,
    req: &Request,
    edit: impl FnOnce(&Config, &mut Doc) -> Result<String, CommandError>,
) -> Response {
    if super::cluster_cmds::in_cluster(shared) {
        return super::cluster_cmds::edit(shared, req, edit, PENDING_NOTE);
    }
    if req.level.is_some() {
        return Response::error(
            "--level names a level of a cluster, and this machine is not in one (`clusterconfig create` or `clusterconfig join`)",
        );
    }
    let w = match working(shared, req) {
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
    let text = doc.text();
    if let Err(e) = w.store.parse(&text, &w.store.pending_path()) {
        return Response::not_valid(&e);
    }
    if text == w.text {
        return Response::ok(
            format!("{summary}\nNo change: the configuration already says so."),
            json!({ "changed": false, "pending": w.pending, "summary": summary }),
        );
    }
    let change = Change {
        time: config_store::now(),
        user: req.author(),
        command: req.command.name(),
        summary: summary.replace('\n', "; "),
    };
    if let Err(e) = w.store.save_pending(&text, change) {
        return io_error(e);
    }
    Response::ok(
        format!("{summary}\n{PENDING_NOTE}"),
        json!({ "changed": true, "pending": true, "summary": summary }),
    )
}

// ---------------------------------------------------------------------------
// commit, rollback, clearchanges, commitdetail, showconfig
// ---------------------------------------------------------------------------

fn not_committed(store: &Store, why: &str) -> Response {
    Response::error(format!(
        "Changes not committed: {why}\n\
         The node keeps its current configuration and the changes stay pending: fix them \
         (with the configuration commands, or in {}) and commit again, or discard them with `pvo clearchanges`.",
        store.pending_path().display()
    ))
}

/// Test-binds every listener address the new configuration changes, so a
/// taken port is reported against its key instead of as a bare bind error.
fn preflight(shared: &Handles, cfg: &Config, text: &str, file: &Path) -> Result<(), String> {
    for (i, l) in cfg.listeners.iter().enumerate() {
        let want = SocketAddr::new(cfg.interfaces[l.interface].address, l.port);
        let unchanged = shared
            .control
            .listeners
            .address(&l.name)
            .is_some_and(|cur| cur.ip() == want.ip() && (l.port == 0 || cur.port() == l.port));
        if unchanged {
            continue;
        }
        let Err(e) = probe_bind(want) else { continue };
        let (key, line, allowed) = match e.kind() {
            std::io::ErrorKind::AddrNotAvailable => (
                format!("interface[{}].address", l.interface),
                config_store::line_of_key(text, "interface", l.interface, "address"),
                "an address configured on this host",
            ),
            std::io::ErrorKind::PermissionDenied => (
                format!("listener[{i}].port"),
                config_store::line_of_key(text, "listener", i, "port"),
                "a port above 1023 (or give the node the right to bind low ports)",
            ),
            _ => (
                format!("listener[{i}].port"),
                config_store::line_of_key(text, "listener", i, "port"),
                "a port no other program or listener is using, or 0 (any free port)",
            ),
        };
        let place = match line {
            Some(n) => format!("{} line {n}", file.display()),
            None => file.display().to_string(),
        };
        let why = e.to_string();
        let why = why.split(" (os error").next().unwrap_or(&why).to_string();
        return Err(format!(
            "{place}, key {key}: listener {} cannot listen on {want} ({why}); allowed: {allowed}",
            l.name
        ));
    }
    Ok(())
}

fn probe_bind(addr: SocketAddr) -> std::io::Result<()> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1)
}

/// Validates `text`, applies it to the node and makes it the committed
/// configuration; on error the node and the committed file are unchanged.
fn put_in_force(
    shared: &Arc<Handles>,
    store: &Store,
    text: &str,
    file: &Path,
) -> Result<(), String> {
    let cfg = store.parse(text, file).map_err(|e| e.to_string())?;
    preflight(shared, &cfg, text, file)?;
    // Entry 0 must hold the configuration before this one.
    store.history().map_err(|e| format!("{e:#}"))?;
    let old = shared.config.current();
    shared
        .control
        .node
        .apply_config(cfg)
        .map_err(|e| format!("the node cannot apply it: {e:#}"))?;
    if let Err(e) = store.write_committed(text) {
        let back = shared.control.node.apply_config((*old).clone());
        return Err(format!(
            "{e:#}; {}",
            match back {
                Ok(()) => "the node went back to its previous configuration".to_string(),
                Err(b) => format!("and going back to the previous configuration failed too: {b:#}"),
            }
        ));
    }
    Ok(())
}

fn entry_json(e: &config_store::HistoryEntry) -> Json {
    json!({ "n": e.n, "time": e.time, "time_text": ctime(e.time), "user": e.user, "comment": e.comment, "changes": e.changes })
}

pub fn commit(shared: &Arc<Handles>, req: &Request, args: &CommitArgs) -> Response {
    if super::cluster_cmds::in_cluster(shared) {
        let comment = text(&args.comment).unwrap_or("").trim().to_string();
        return super::cluster_cmds::commit(shared, req, &comment);
    }
    let store = store(shared);
    let pending = match store.pending() {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Response::ok(
                "There are no changes to commit.",
                json!({ "committed": false }),
            )
        }
        Err(e) => return io_error(e),
    };
    let committed = match store.committed_text() {
        Ok(t) => t,
        Err(e) => return io_error(e),
    };
    if pending.text == committed {
        if let Err(e) = store.clear_pending() {
            return io_error(e);
        }
        return Response::ok(
            "There are no changes to commit.",
            json!({ "committed": false }),
        );
    }
    if let Err(why) = put_in_force(shared, &store, &pending.text, &store.pending_path()) {
        return not_committed(&store, &why);
    }
    let who = req.author();
    let comment = text(&args.comment).unwrap_or("").trim().to_string();
    let entry = match store.record(&pending.text, &who, &comment, pending.meta.changes) {
        Ok(e) => e,
        Err(e) => return io_error(e.context(
            "the configuration is committed and in force, but recording it in the history failed",
        )),
    };
    if let Err(e) = store.clear_pending() {
        return io_error(e);
    }
    shared.mail.log.emit(crate::core::events::Event::Committed {
        by: &who,
        commit: entry.n,
        comment: &comment,
    });
    Response::ok(
        format!("Changes committed: {}", ctime(entry.time)),
        json!({ "committed": true, "commit": entry_json(&entry) }),
    )
}

pub fn clearchanges(shared: &Arc<Handles>, _req: &Request, _: &NoArgs) -> Response {
    if super::cluster_cmds::in_cluster(shared) {
        return super::cluster_cmds::clearchanges(shared);
    }
    match store(shared).clear_pending() {
        Ok(true) => Response::ok("Changes cleared.", json!({ "cleared": true })),
        Ok(false) => Response::ok(
            "There are no changes to clear.",
            json!({ "cleared": false }),
        ),
        Err(e) => io_error(e),
    }
}

/// The history table, newest first, and what is pending.
fn history_report(store: &Store) -> Result<(String, Json), Response> {
    let entries = store.history().map_err(io_error)?;
    let pending = store.pending().map_err(io_error)?;
    let mut t = String::from("Commit history (newest first):\n");
    t.push_str(&format!(
        "{:>5}  {:<26}{:<16}{}\n",
        "#", "Time", "User", "Comment"
    ));
    for e in entries.iter().rev() {
        t.push_str(&format!(
            "{:>5}  {:<26}{:<16}{}\n",
            e.n,
            ctime(e.time),
            e.user,
            e.comment
        ));
        for c in &e.changes {
            t.push_str(&format!(
                "{:>7}{} ({}): {}\n",
                "- ", c.command, c.user, c.summary
            ));
        }
    }
    let pending_json = match &pending {
        Some(p) => {
            let users = p.meta.users();
            let by = if users.is_empty() {
                "(edited by hand)".to_string()
            } else {
                users.join(", ")
            };
            t.push_str(&format!("\nChanges pending, made by {by}:\n"));
            for c in &p.meta.changes {
                t.push_str(&format!(
                    "{:>7}{} ({}, {}): {}\n",
                    "- ",
                    c.command,
                    c.user,
                    ctime(c.time),
                    c.summary
                ));
            }
            t.push_str(PENDING_NOTE);
            t.push('\n');
            json!({ "users": users, "created": p.meta.created, "changes": p.meta.changes })
        }
        None => {
            t.push_str("\nNo changes pending.\n");
            Json::Null
        }
    };
    let data = json!({
        "history": entries.iter().rev().map(entry_json).collect::<Vec<_>>(),
        "pending": pending.is_some(),
        "pending_changes": pending_json,
    });
    Ok((t, data))
}

pub fn commitdetail(shared: &Arc<Handles>, _req: &Request, _: &NoArgs) -> Response {
    if super::cluster_cmds::in_cluster(shared) {
        return super::cluster_cmds::commitdetail(shared);
    }
    match history_report(&store(shared)) {
        Ok((t, data)) => Response::ok(t, data),
        Err(r) => r,
    }
}

pub fn rollback(shared: &Arc<Handles>, req: &Request, args: &RollbackArgs) -> Response {
    if super::cluster_cmds::in_cluster(shared) {
        return super::cluster_cmds::rollback(shared, req, args.n);
    }
    let store = store(shared);
    let Some(n) = args.n else {
        return match history_report(&store) {
            Ok((t, data)) => Response::ok(
                format!("{t}\nUse `pvo rollback N` to go back to commit N."),
                data,
            ),
            Err(r) => r,
        };
    };
    let entries = match store.history() {
        Ok(e) => e,
        Err(e) => return io_error(e),
    };
    if !entries.iter().any(|e| e.n == n) {
        let have: Vec<String> = entries.iter().map(|e| e.n.to_string()).collect();
        return Response::fail(
            ErrorKind::NotFound,
            format!(
                "There is no commit {n}; allowed: {} (see `pvo commitdetail`).",
                have.join(", ")
            ),
        );
    }
    let pending = match store.pending() {
        Ok(p) => p,
        Err(e) => return io_error(e),
    };
    if let Some(p) = &pending {
        if !args.yes {
            let users = p.meta.users();
            let by = if users.is_empty() {
                String::new()
            } else {
                format!(" (by {})", users.join(", "))
            };
            return Response::error(format!(
                "There are changes pending{by}; a rollback discards them. Run `pvo rollback {n} --yes` to discard them, \
                 or `pvo commit` or `pvo clearchanges` first."
            ));
        }
    }
    let text = match store.history_text(n) {
        Ok(t) => t,
        Err(e) => return io_error(e),
    };
    if let Err(why) = put_in_force(shared, &store, &text, &store.history_path(n)) {
        return Response::error(format!(
            "Not rolled back: {why}\nThe node keeps its current configuration."
        ));
    }
    let who = req.author();
    let comment = format!("rollback to {n}");
    let entry = match store.record(&text, &who, &comment, Vec::new()) {
        Ok(e) => e,
        Err(e) => return io_error(e.context(
            "the configuration is rolled back and in force, but recording it in the history failed",
        )),
    };
    let discarded = pending.is_some();
    if discarded {
        if let Err(e) = store.clear_pending() {
            return io_error(e);
        }
    }
    shared
        .mail
        .log
        .emit(crate::core::events::Event::RolledBack {
            to: n,
            by: &who,
            commit: entry.n,
        });
    let mut t = format!("Rolled back to commit {n}.\n");
    if discarded {
        t.push_str("Pending changes discarded.\n");
    }
    t.push_str(&format!("Changes committed: {}", ctime(entry.time)));
    Response::ok(
        t,
        json!({ "rolled_back_to": n, "pending_discarded": discarded, "commit": entry_json(&entry) }),
    )
}

pub fn showconfig(shared: &Arc<Handles>, req: &Request, args: &ShowconfigArgs) -> Response {
    if super::cluster_cmds::in_cluster(shared) {
        return super::cluster_cmds::showconfig(shared, req, args.pending);
    }
    let store = store(shared);
    let (text, file) = if args.pending {
        match store.pending() {
            Ok(Some(p)) => (p.text, store.pending_path()),
            Ok(None) => return Response::ok("There are no changes pending.", Json::Null),
            Err(e) => return io_error(e),
        }
    } else {
        match store.committed_text() {
            Ok(t) => (t, store.committed_path().to_path_buf()),
            Err(e) => return io_error(e),
        }
    };
    match store.parse(&text, &file) {
        Ok(cfg) => Response::ok(text, serde_json::to_value(&cfg).unwrap_or(Json::Null)),
        // The text is still worth showing: it is what needs fixing.
        Err(e) => Response {
            ok: false,
            data: json!({ "error": e.to_string(), "text": text }),
            text: format!("{text}\n# This configuration is not valid: {e}"),
            kind: Some(crate::commands::protocol::ErrorKind::Invalid),
        },
    }
}

// ---------------------------------------------------------------------------
// deliveryconfig
// ---------------------------------------------------------------------------

fn interface_label(cfg: &Config, i: Option<usize>) -> String {
    i.map_or("Auto".to_string(), |i| cfg.interfaces[i].name.clone())
}

fn allowed_interfaces(cfg: &Config, with_auto: bool) -> String {
    let mut names: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    if with_auto {
        names.insert(0, "Auto".to_string());
    }
    names.join(", ")
}

pub fn deliveryconfig(shared: &Arc<Handles>, req: &Request, args: &DeliveryConfigCmd) -> Response {
    let (interface, max) = match args {
        DeliveryConfigCmd::Show => (None, None),
        DeliveryConfigCmd::Set {
            interface,
            max_concurrency,
        } => (text(interface).map(str::to_string), *max_concurrency),
    };
    if interface.is_none() && max.is_none() {
        let w = match working(shared, req) {
            Ok(w) => w,
            Err(r) => return r,
        };
        let c = &w.cfg;
        let t = format!(
            "Delivery settings{}:\nDefault interface to deliver mail: {}\nMaximum concurrent outbound connections: {}\n",
            pending_label(w.pending),
            interface_label(c, c.delivery.default_interface),
            c.delivery.max_concurrency
        );
        return Response::ok(
            t,
            json!({
                "default_interface": interface_label(c, c.delivery.default_interface),
                "max_concurrency": c.delivery.max_concurrency,
                "allowed_interfaces": allowed_interfaces(c, true).split(", ").collect::<Vec<_>>(),
                "pending": w.pending,
            }),
        );
    }
    edit(shared, req, |cfg, doc| {
        let name = match interface.as_deref() {
            None => None,
            Some(i) if i.eq_ignore_ascii_case("auto") => Some("Auto".to_string()),
            Some(i) => match cfg.interface_by_name(i) {
                Some(k) => Some(cfg.interfaces[k].name.clone()),
                None => {
                    return Err(format!(
                        "Unknown interface \"{i}\"; allowed: {}.",
                        allowed_interfaces(cfg, true)
                    )
                    .into())
                }
            },
        };
        doc.set_delivery(name.as_deref(), max)?;
        let mut lines = Vec::new();
        if let Some(n) = &name {
            lines.push(format!("Default interface to deliver mail: {n}"));
        }
        if let Some(m) = max {
            lines.push(format!("Maximum concurrent outbound connections: {m}"));
        }
        Ok(lines.join("\n"))
    })
}

// ---------------------------------------------------------------------------
// sslconfig
// ---------------------------------------------------------------------------

fn version_label(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::V1_2 => "TLSv1.2",
        TlsVersion::V1_3 => "TLSv1.3",
    }
}

fn versions_label(vs: &[TlsVersion]) -> String {
    vs.iter()
        .map(|v| version_label(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// (versions, ciphers) of a direction.
fn direction(cfg: &Config, inbound: bool) -> (&[TlsVersion], Option<&[String]>) {
    if inbound {
        (
            &cfg.tls_inbound.versions,
            cfg.tls_inbound.ciphers.as_deref(),
        )
    } else {
        (
            &cfg.tls_outbound.versions,
            cfg.tls_outbound.ciphers.as_deref(),
        )
    }
}

fn direction_json(cfg: &Config, inbound: bool) -> Json {
    let (versions, ciphers) = direction(cfg, inbound);
    let effective: Vec<Json> = crate::core::config::effective_suites(versions, ciphers)
        .into_iter()
        .map(|(name, v)| json!({ "name": name, "version": v.as_str() }))
        .collect();
    json!({
        "versions": versions.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        "ciphers": ciphers.map_or_else(|| json!("default"), |c| json!(c)),
        "effective": effective,
    })
}

const UNAVAILABLE_NOTE: &str = "SSL, TLS 1.0, TLS 1.1, RC4, export and anonymous cipher suites do not exist in rustls and cannot be enabled.";

fn parse_versions(list: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for v in list {
        let lower = v.trim().to_ascii_lowercase();
        let bare = lower
            .trim_start_matches("tlsv")
            .trim_start_matches("tls")
            .trim_start_matches('v')
            .trim();
        match bare {
            "1.2" | "1.3" => {
                if !out.iter().any(|o| o == bare) {
                    out.push(bare.to_string());
                }
            }
            _ => {
                let why = crate::core::config::why_unavailable(v).map_or_else(
                    || format!("\"{v}\" is not a TLS version"),
                    |w| format!("\"{v}\" is not offered: {w}"),
                );
                return Err(format!("{why}; allowed: 1.2, 1.3"));
            }
        }
    }
    if out.is_empty() {
        return Err("No TLS version given; allowed: 1.2, 1.3 (comma-separated)".to_string());
    }
    Ok(out)
}

pub fn sslconfig(shared: &Arc<Handles>, req: &Request, args: &SslConfigCmd) -> Response {
    let (dir_arg, versions, ciphers) = match args {
        SslConfigCmd::Verify => return sslverify(shared),
        SslConfigCmd::Show => (None, None, None),
        SslConfigCmd::Set {
            direction,
            versions,
            ciphers,
        } => (
            text(direction),
            versions.as_ref().map(List::items),
            ciphers.as_ref().map(List::items),
        ),
    };
    if versions.is_none() && ciphers.is_none() {
        let w = match working(shared, req) {
            Ok(w) => w,
            Err(r) => return r,
        };
        let mut t = format!("sslconfig settings{}:\n", pending_label(w.pending));
        for (label, inbound) in [("Inbound", true), ("Outbound", false)] {
            let (vs, cs) = direction(&w.cfg, inbound);
            t.push_str(&format!("  {label} SMTP method:  {}\n", versions_label(vs)));
            t.push_str(&format!(
                "  {label} SMTP ciphers: {}\n",
                cs.map_or_else(
                    || "default (every suite rustls offers)".to_string(),
                    |c| c.join(", ")
                )
            ));
        }
        t.push_str(&format!(
            "\nCipher suites rustls offers: {}\n{UNAVAILABLE_NOTE}\n",
            crate::core::config::cipher_suite_names().join(", ")
        ));
        t.push_str("Use `pvo sslconfig verify` to list the suites each direction offers.\n");
        return Response::ok(
            t,
            json!({
                "inbound": direction_json(&w.cfg, true),
                "outbound": direction_json(&w.cfg, false),
                "available": crate::core::config::cipher_suite_names(),
                "pending": w.pending,
            }),
        );
    }
    let dir = match dir_arg.map(str::to_ascii_lowercase) {
        Some(d) if d == "inbound" || d == "outbound" => d,
        Some(d) => {
            return Response::error(format!(
                "\"{d}\" is not a direction; allowed: inbound, outbound"
            ))
        }
        None => {
            return Response::error(
                "Say which direction to change: --direction inbound or --direction outbound.",
            )
        }
    };
    let versions = match versions.as_deref().map(parse_versions).transpose() {
        Ok(v) => v,
        Err(e) => return Response::error(e),
    };
    // "default" (alone) means every suite: the key is removed.
    let ciphers: Option<Option<Vec<String>>> = ciphers.map(|list| {
        if list.len() == 1 && list[0].eq_ignore_ascii_case("default") {
            None
        } else {
            Some(
                list.iter()
                    .map(|n| {
                        crate::core::config::cipher_suite_names()
                            .into_iter()
                            .find(|c| c.eq_ignore_ascii_case(n))
                            .map_or_else(|| n.clone(), str::to_string)
                    })
                    .collect(),
            )
        }
    });
    edit(shared, req, |_cfg, doc| {
        doc.set_tls(
            &dir,
            versions.as_deref(),
            ciphers.as_ref().map(|c| c.as_deref()),
        )?;
        let label = if dir == "inbound" {
            "Inbound"
        } else {
            "Outbound"
        };
        let mut lines = Vec::new();
        if let Some(v) = &versions {
            lines.push(format!(
                "{label} SMTP method: {}",
                v.iter()
                    .map(|v| format!("TLSv{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        match &ciphers {
            None => {}
            Some(None) => lines.push(format!(
                "{label} SMTP ciphers: default (every suite rustls offers)"
            )),
            Some(Some(c)) => lines.push(format!("{label} SMTP ciphers: {}", c.join(", "))),
        }
        Ok(lines.join("\n"))
    })
}

/// The suites each direction offers: those in force, and those a commit of
/// the pending changes would bring when they differ.
fn sslverify(shared: &Arc<Handles>) -> Response {
    let in_force = shared.config.current();
    let pending = match store(shared).pending() {
        Ok(Some(p)) => store(shared)
            .parse(&p.text, &store(shared).pending_path())
            .ok(),
        Ok(None) => None,
        Err(e) => return io_error(e),
    };
    let section = |cfg: &Config, inbound: bool, when: &str| -> String {
        let (vs, cs) = direction(cfg, inbound);
        let mut s = format!(
            "{} SMTP{when}: {}\n",
            if inbound { "Inbound" } else { "Outbound" },
            versions_label(vs)
        );
        for (name, v) in crate::core::config::effective_suites(vs, cs) {
            s.push_str(&format!("  {:<9}{name}\n", version_label(v)));
        }
        s
    };
    let mut t = String::new();
    for inbound in [true, false] {
        t.push_str(&section(&in_force, inbound, " (in force)"));
        if let Some(p) = &pending {
            if direction_json(p, inbound) != direction_json(&in_force, inbound) {
                t.push_str(&section(p, inbound, " (after `pvo commit`)"));
            }
        }
    }
    t.push_str(UNAVAILABLE_NOTE);
    let data = json!({
        "inbound": direction_json(&in_force, true),
        "outbound": direction_json(&in_force, false),
        "pending": pending.as_ref().map(|p| json!({ "inbound": direction_json(p, true), "outbound": direction_json(p, false) })),
    });
    Response::ok(t, data)
}

// ---------------------------------------------------------------------------
// interfaceconfig
// ---------------------------------------------------------------------------

fn interface_line(i: &crate::core::config::Interface) -> String {
    format!("{} ({}: {})", i.name, i.address, i.hostname)
}

/// `--ssh`/`--https` of `interfaceconfig edit`: `Some(port)` or `None` (off).
fn parse_service(flag: &str, v: &str) -> Result<Option<u16>, String> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse::<u16>()
        .map(Some)
        .map_err(|_| format!("--{flag} {v}: allowed: a port 0-65535 (0: any free port) or off"))
}

/// The services (`[ssh]`, `[web]`) on interface `k` of `cfg`: `SSH port 2222, HTTPS port 8443`.
fn services_on(cfg: &Config, k: usize) -> Vec<(&'static str, u16)> {
    let mut v = Vec::new();
    if let Some(s) = cfg.ssh.as_ref().filter(|s| s.interface == k) {
        v.push(("SSH", s.port));
    }
    if let Some(w) = cfg.web.as_ref().filter(|w| w.interface == k) {
        v.push(("HTTPS", w.port));
    }
    v
}

pub fn interfaceconfig(shared: &Arc<Handles>, req: &Request, args: &InterfaceArgs) -> Response {
    let name = text(&args.name).map(str::to_string);
    let address = text(&args.address).map(str::to_string);
    let hostname = text(&args.hostname).map(str::to_string);
    match args.action {
        ListAction::List => {
            let w = match working(shared, req) {
                Ok(w) => w,
                Err(r) => return r,
            };
            let mut t = format!(
                "Currently configured interfaces{}:\n",
                pending_label(w.pending)
            );
            for (k, i) in w.cfg.interfaces.iter().enumerate() {
                t.push_str(&format!("{}. {}\n", k + 1, interface_line(i)));
                let services: Vec<String> = services_on(&w.cfg, k)
                    .iter()
                    .map(|(n, p)| format!("{n} port {p}"))
                    .collect();
                if !services.is_empty() {
                    t.push_str(&format!("   Services: {}\n", services.join(", ")));
                }
            }
            if w.cfg.interfaces.is_empty() {
                t.push_str("(none)\n");
            }
            let list: Vec<Json> = w.cfg.interfaces.iter().enumerate().map(|(k, i)| {
                let services = services_on(&w.cfg, k);
                let port = |n: &str| services.iter().find(|(s, _)| *s == n).map(|(_, p)| *p);
                json!({ "name": i.name, "address": i.address, "hostname": i.hostname, "ssh_port": port("SSH"), "https_port": port("HTTPS") })
            }).collect();
            Response::ok(t, json!({ "interfaces": list, "pending": w.pending }))
        }
        ListAction::New => {
            let (Some(name), Some(address)) = (name, address) else {
                return Response::error("interfaceconfig new needs --name NAME and --address IP.");
            };
            edit(shared, req, |cfg, doc| {
                if let Some(k) = cfg.interface_by_name(&name) {
                    return Err(CommandError::conflict(format!("An interface named {} already exists ({}); use `pvo interfaceconfig edit {}`.", cfg.interfaces[k].name, interface_line(&cfg.interfaces[k]), cfg.interfaces[k].name)));
                }
                if name.eq_ignore_ascii_case("auto") {
                    return Err("\"Auto\" is reserved (the automatic choice of deliveryconfig); allowed: any other name.".to_string().into());
                }
                let ip: std::net::IpAddr = address.parse().map_err(|_| format!("\"{address}\" is not an IP address; allowed: an IPv4 or IPv6 address such as 192.0.2.10"))?;
                doc.interface_new(&name, &ip.to_string(), hostname.as_deref())?;
                Ok(format!(
                    "Interface {name} ({ip}: {}) created.",
                    hostname.as_deref().unwrap_or(&cfg.hostname)
                ))
            })
        }
        ListAction::Edit => {
            let Some(name) = name else {
                return Response::error("interfaceconfig edit needs the name of the interface.");
            };
            let ssh = text(&args.ssh).map(str::to_string);
            let https = text(&args.https).map(str::to_string);
            if address.is_none() && hostname.is_none() && ssh.is_none() && https.is_none() {
                return Response::error(format!("Nothing to change: give --address IP, --hostname NAME, --ssh PORT|off and/or --https PORT|off for interface {name}."));
            }
            edit(shared, req, |cfg, doc| {
                let k = cfg.interface_by_name(&name).ok_or_else(|| {
                    format!(
                        "Unknown interface \"{name}\"; allowed: {}.",
                        allowed_interfaces(cfg, false)
                    )
                })?;
                let ip = match &address {
                    Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| format!("\"{a}\" is not an IP address; allowed: an IPv4 or IPv6 address such as 192.0.2.10"))?.to_string()),
                    None => None,
                };
                let i = &cfg.interfaces[k];
                let mut notes = Vec::new();
                for (flag, section, label, v, current) in [
                    (
                        "ssh",
                        "ssh",
                        "SSH",
                        &ssh,
                        cfg.ssh.as_ref().map(|s| s.interface),
                    ),
                    (
                        "https",
                        "web",
                        "HTTPS",
                        &https,
                        cfg.web.as_ref().map(|w| w.interface),
                    ),
                ] {
                    let Some(v) = v else { continue };
                    match parse_service(flag, v)? {
                        Some(port) => {
                            doc.server_set(section, Some((&i.name, port)))?;
                            notes.push(format!("{label} on port {port}"));
                        }
                        None if current == Some(k) => {
                            doc.server_set(section, None)?;
                            notes.push(format!("{label} off"));
                        }
                        None => match current {
                            Some(other) => return Err(format!("{label} is not on interface {} but on {}; turn it off there (`pvo interfaceconfig edit {} --{flag} off`).", i.name, cfg.interfaces[other].name, cfg.interfaces[other].name).into()),
                            None => notes.push(format!("{label} was already off")),
                        },
                    }
                }
                if ip.is_some() || hostname.is_some() {
                    doc.interface_edit(&name, ip.as_deref(), hostname.as_deref())?;
                }
                let services = if notes.is_empty() {
                    String::new()
                } else {
                    format!(" {}.", notes.join(", "))
                };
                Ok(format!(
                    "Interface {} changed: {} ({}: {}).{services}",
                    i.name,
                    i.name,
                    ip.as_deref().unwrap_or(&i.address.to_string()),
                    hostname.as_deref().unwrap_or(&i.hostname)
                ))
            })
        }
        ListAction::Delete => {
            let Some(name) = name else {
                return Response::error("interfaceconfig delete needs the name of the interface.");
            };
            edit(shared, req, |cfg, doc| {
                let k = cfg.interface_by_name(&name).ok_or_else(|| {
                    format!(
                        "Unknown interface \"{name}\"; allowed: {}.",
                        allowed_interfaces(cfg, false)
                    )
                })?;
                let mut users: Vec<String> = cfg
                    .listeners
                    .iter()
                    .filter(|l| l.interface == k)
                    .map(|l| format!("listener {}", l.name))
                    .collect();
                if cfg.delivery.default_interface == Some(k) {
                    users.push("deliveryconfig (the default delivery interface)".to_string());
                }
                for (n, _) in services_on(cfg, k) {
                    users.push(format!("the {n} service"));
                }
                if !users.is_empty() {
                    return Err(CommandError::conflict(format!(
                        "Interface {} is in use by {}; move them to another interface first (`pvo listenerconfig edit NAME --interface OTHER`, `pvo deliveryconfig --interface Auto`, `pvo interfaceconfig edit OTHER --ssh PORT --https PORT`).",
                        cfg.interfaces[k].name,
                        users.join(" and ")
                    )));
                }
                doc.interface_delete(&name)?;
                Ok(format!("Interface {} deleted.", cfg.interfaces[k].name))
            })
        }
    }
}

// ---------------------------------------------------------------------------
// listenerconfig
// ---------------------------------------------------------------------------

fn sender_list(s: &[SenderPattern]) -> String {
    s.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn listener_report(shared: &Handles, cfg: &Config, k: usize, t: &mut String) -> Json {
    let l = &cfg.listeners[k];
    let iface = &cfg.interfaces[l.interface];
    let (proto, kind) = match l.kind {
        crate::core::config::ListenerType::Public => ("SMTP", "Public"),
        crate::core::config::ListenerType::Private => ("SMTP", "Private"),
        crate::core::config::ListenerType::Cpq => {
            ("CPQ", "Private (hidden; set by [cpq], listen queue 50)")
        }
    };
    t.push_str(&format!(
        "{}. {} (on {}, {}) {proto} TCP Port {} {}\n",
        k + 1,
        l.name,
        iface.name,
        iface.address,
        l.port,
        kind
    ));
    let running = shared
        .control
        .listeners
        .states()
        .into_iter()
        .find(|s| s.name == l.name);
    if let Some(r) = &running {
        t.push_str(&format!(
            "   Now {} on {}\n",
            if r.suspended {
                "suspended"
            } else {
                "receiving"
            },
            r.address
        ));
    }
    t.push_str("   Host Access Table (HAT), first match wins:\n");
    if l.hat.is_empty() {
        t.push_str("     (empty: every sender is rejected)\n");
    }
    let mut hat = Vec::new();
    for h in &l.hat {
        let p = &cfg.policies[h.policy];
        let senders = sender_list(&h.senders);
        if h.group == "ALL" && senders == "ALL" {
            t.push_str(&format!(
                "     ALL -> ${} ({})\n",
                p.name,
                p.behavior.as_str()
            ));
        } else {
            t.push_str(&format!(
                "     {}: {} -> ${} ({})\n",
                h.group,
                senders,
                p.name,
                p.behavior.as_str()
            ));
        }
        hat.push(json!({ "group": h.group, "senders": h.senders.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "policy": p.name, "behavior": p.behavior.as_str() }));
    }
    t.push_str("   Recipient Access Table (RAT), first match wins:\n");
    let mut rat = Vec::new();
    for r in &l.rat {
        let action = match r.action {
            crate::core::config::RatAction::Accept => "ACCEPT",
            crate::core::config::RatAction::Reject => "REJECT",
        };
        t.push_str(&format!("     {} -> {action}\n", r.recipients.join(", ")));
        rat.push(json!({ "recipients": r.recipients, "action": action }));
    }
    if !l
        .rat
        .iter()
        .any(|r| r.recipients.iter().any(|x| x == "ALL"))
    {
        t.push_str("     (anything else) -> REJECT\n");
    }
    json!({
        "name": l.name,
        "interface": iface.name,
        "address": iface.address,
        "port": l.port,
        "type": kind.to_ascii_lowercase(),
        "running": running.map(|r| json!({ "address": r.address, "suspended": r.suspended })),
        "hat": hat,
        "rat": rat,
    })
}

/// "GROUP=SENDER[,SENDER...]:POLICY" -> (group, senders, policy name).
fn parse_hat_spec(cfg: &Config, spec: &str) -> Result<(String, Vec<String>, String), String> {
    let bad = || {
        format!("Cannot read --hat-add \"{spec}\"; write GROUP=SENDER[,SENDER...]:POLICY, for example \"PARTNERS=10.0.0.0/8,.partner.example:RELAYED\".")
    };
    let (group, rest) = spec.split_once('=').ok_or_else(bad)?;
    let (senders, policy) = rest.rsplit_once(':').ok_or_else(bad)?;
    let group = group.trim();
    let senders: Vec<String> = senders
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if group.is_empty() || senders.is_empty() {
        return Err(bad());
    }
    let policy = policy.trim().trim_start_matches('$');
    let Some(p) = cfg
        .policies
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(policy))
    else {
        let names: Vec<&str> = cfg.policies.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "Unknown policy \"{policy}\" in --hat-add \"{spec}\"; allowed: {}.",
            quoted_list(&names)
        ));
    };
    Ok((group.to_string(), senders, p.name.clone()))
}

/// "RECIPIENT[,RECIPIENT...]:accept|reject" -> (recipients, action).
fn parse_rat_spec(spec: &str) -> Result<(Vec<String>, String), String> {
    let bad = || {
        format!("Cannot read --rat-add \"{spec}\"; write RECIPIENT[,RECIPIENT...]:accept or :reject, for example \"example.com,.example.com:accept\".")
    };
    let (recipients, action) = spec.rsplit_once(':').ok_or_else(bad)?;
    let action = action.trim().to_ascii_lowercase();
    if action != "accept" && action != "reject" {
        return Err(format!(
            "\"{action}\" is not a RAT action in --rat-add \"{spec}\"; allowed: accept, reject."
        ));
    }
    let recipients: Vec<String> = recipients
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if recipients.is_empty() {
        return Err(bad());
    }
    Ok((recipients, action))
}

/// The HAT/RAT edits of `listenerconfig new|edit`; returns summary lines.
fn table_edits(
    cfg: &Config,
    doc: &mut Doc,
    listener: &str,
    args: &ListenerArgs,
) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for g in items(&args.hat_delete) {
        doc.hat_delete(listener, &g)?;
        lines.push(format!("HAT: sender group {g} deleted."));
    }
    for spec in raw(&args.hat_add) {
        let (group, senders, policy) = parse_hat_spec(cfg, &spec)?;
        let added = doc.hat_add(listener, &group, &senders, &policy)?;
        lines.push(format!(
            "HAT: {group}: {} -> ${policy} {}.",
            senders.join(", "),
            if added { "added" } else { "replaced" }
        ));
    }
    for r in items(&args.rat_delete) {
        doc.rat_delete(listener, &r)?;
        lines.push(format!("RAT: {r} deleted."));
    }
    for spec in raw(&args.rat_add) {
        let (recipients, action) = parse_rat_spec(&spec)?;
        doc.rat_add(listener, &recipients, &action)?;
        lines.push(format!(
            "RAT: {} -> {} added.",
            recipients.join(", "),
            action.to_ascii_uppercase()
        ));
    }
    Ok(lines)
}

/// A list of specs that contain commas themselves: one string is one spec.
fn raw(list: &Option<List>) -> Vec<String> {
    list.as_ref().map(List::raw).unwrap_or_default()
}

/// A list of names: an array, or one comma-separated string.
fn items(list: &Option<List>) -> Vec<String> {
    list.as_ref().map(List::items).unwrap_or_default()
}

fn parse_kind(k: &str) -> Result<String, String> {
    match k.to_ascii_lowercase().as_str() {
        "public" => Ok("public".into()),
        "private" => Ok("private".into()),
        other => Err(format!(
            "\"{other}\" is not a listener type; allowed: public, private."
        )),
    }
}

fn parse_port(port: Option<u64>) -> Result<Option<u16>, String> {
    match port {
        None => Ok(None),
        Some(p) if p <= 65535 => Ok(Some(p as u16)),
        Some(p) => Err(format!(
            "{p} is not a port; allowed: 0 (any free port) to 65535."
        )),
    }
}

pub fn listenerconfig(shared: &Arc<Handles>, req: &Request, args: &ListenerArgs) -> Response {
    let name = text(&args.name).map(str::to_string);
    let port = match parse_port(args.port) {
        Ok(p) => p,
        Err(e) => return Response::error(e),
    };
    let kind = match text(&args.kind).map(parse_kind).transpose() {
        Ok(k) => k,
        Err(e) => return Response::error(e),
    };
    let interface = text(&args.interface).map(str::to_string);
    let has_table_edits = args.has_table_edits();
    match args.action {
        ListenerAction::List => {
            let w = match working(shared, req) {
                Ok(w) => w,
                Err(r) => return r,
            };
            let mut t = format!(
                "Currently configured listeners{}:\n",
                pending_label(w.pending)
            );
            let mut list = Vec::new();
            for k in 0..w.cfg.listeners.len() {
                if name
                    .as_deref()
                    .is_some_and(|n| !w.cfg.listeners[k].name.eq_ignore_ascii_case(n))
                {
                    continue;
                }
                list.push(listener_report(shared, &w.cfg, k, &mut t));
            }
            if list.is_empty() {
                if let Some(n) = &name {
                    let names: Vec<&str> =
                        w.cfg.listeners.iter().map(|l| l.name.as_str()).collect();
                    return Response::error(format!(
                        "Unknown listener \"{n}\"; allowed: {}.",
                        quoted_list(&names)
                    ));
                }
                t.push_str("(none)\n");
            }
            Response::ok(t, json!({ "listeners": list, "pending": w.pending }))
        }
        ListenerAction::New => {
            let (Some(name), Some(interface), Some(port)) = (name, interface, port) else {
                return Response::error(
                    "listenerconfig new needs --name NAME, --interface INTERFACE and --port PORT.",
                );
            };
            edit(shared, req, |cfg, doc| {
                if let Some(l) = cfg
                    .listeners
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(&name))
                {
                    return Err(CommandError::conflict(format!(
                        "A listener named {} already exists; use `pvo listenerconfig edit {}`.",
                        l.name, l.name
                    )));
                }
                let k = cfg.interface_by_name(&interface).ok_or_else(|| {
                    format!(
                        "Unknown interface \"{interface}\"; allowed: {}.",
                        allowed_interfaces(cfg, false)
                    )
                })?;
                let kind = kind.clone().unwrap_or_else(|| "public".into());
                doc.listener_new(&name, &cfg.interfaces[k].name, port, &kind)?;
                let mut lines = vec![format!(
                    "Listener {name} (on {}, {}) SMTP TCP Port {port} {kind} created.",
                    cfg.interfaces[k].name, cfg.interfaces[k].address
                )];
                lines.extend(table_edits(cfg, doc, &name, args)?);
                if raw(&args.hat_add).is_empty() {
                    lines.push("Its HAT is empty, so every sender is rejected until you add sender groups (--hat-add).".to_string());
                }
                Ok(lines.join("\n"))
            })
        }
        ListenerAction::Edit => {
            let Some(name) = name else {
                return Response::error("listenerconfig edit needs the name of the listener.");
            };
            if port.is_none() && interface.is_none() && kind.is_none() && !has_table_edits {
                return Response::error(format!(
                    "Nothing to change for listener {name}: give --port, --interface, --type, --hat-add, --hat-delete, --rat-add or --rat-delete."
                ));
            }
            edit(shared, req, |cfg, doc| {
                let Some(l) = cfg
                    .listeners
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(&name))
                else {
                    let names: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
                    return Err(format!(
                        "Unknown listener \"{name}\"; allowed: {}.",
                        quoted_list(&names)
                    )
                    .into());
                };
                let iface = match &interface {
                    Some(i) => Some(
                        cfg.interfaces[cfg.interface_by_name(i).ok_or_else(|| {
                            format!(
                                "Unknown interface \"{i}\"; allowed: {}.",
                                allowed_interfaces(cfg, false)
                            )
                        })?]
                        .name
                        .clone(),
                    ),
                    None => None,
                };
                doc.listener_edit(&l.name, port, iface.as_deref(), kind.as_deref())?;
                let mut lines = Vec::new();
                if let Some(p) = port {
                    lines.push(format!("Listener {}: port {} -> {p}.", l.name, l.port));
                }
                if let Some(i) = &iface {
                    lines.push(format!(
                        "Listener {}: interface {} -> {i}.",
                        l.name, cfg.interfaces[l.interface].name
                    ));
                }
                if let Some(k) = &kind {
                    lines.push(format!("Listener {}: type {k}.", l.name));
                }
                lines.extend(table_edits(cfg, doc, &l.name, args)?);
                Ok(lines.join("\n"))
            })
        }
        ListenerAction::Delete => {
            let Some(name) = name else {
                return Response::error("listenerconfig delete needs the name of the listener.");
            };
            edit(shared, req, |cfg, doc| {
                let Some(l) = cfg
                    .listeners
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(&name))
                else {
                    let names: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
                    return Err(format!(
                        "Unknown listener \"{name}\"; allowed: {}.",
                        quoted_list(&names)
                    )
                    .into());
                };
                doc.listener_delete(&l.name)?;
                Ok(format!("Listener {} deleted.", l.name))
            })
        }
        ListenerAction::Policy => listenerconfig_policy(shared, req, args),
    }
}

/// `listenerconfig policy NAME --max-concurrency N --max-concurrency-per-ip N
/// --max-connections-per-ip-per-minute N`: the connection limits of a mail flow
/// policy; the values are checked by the configuration's own validation.
fn listenerconfig_policy(shared: &Arc<Handles>, req: &Request, args: &ListenerArgs) -> Response {
    let Some(name) = text(&args.policy).map(|n| n.trim_start_matches('$').to_string()) else {
        return Response::error("listenerconfig policy needs the name of a mail flow policy.");
    };
    let keys = [
        ("max_concurrency", args.max_concurrency),
        ("max_concurrency_per_ip", args.max_concurrency_per_ip),
        (
            "max_connections_per_ip_per_minute",
            args.max_connections_per_ip_per_minute,
        ),
    ];
    let values: Vec<(&str, u64)> = keys
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    if values.is_empty() {
        return Response::error(format!(
            "Nothing to change for policy {name}: give --max-concurrency, --max-concurrency-per-ip or --max-connections-per-ip-per-minute."
        ));
    }
    edit(shared, req, |cfg, doc| {
        let Some(p) = cfg
            .policies
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(&name))
        else {
            let names: Vec<&str> = cfg.policies.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "Unknown policy \"{name}\"; allowed: {}.",
                quoted_list(&names)
            )
            .into());
        };
        doc.policy_set(&p.name, &values)?;
        let lines: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("Policy ${}: {k} = {v}.", p.name))
            .collect();
        Ok(lines.join("\n"))
    })
}

// ---------------------------------------------------------------------------
// smtproutes
// ---------------------------------------------------------------------------

fn hop_label(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn target_label(t: &RouteTarget) -> String {
    match t {
        RouteTarget::Hosts(h) => h
            .iter()
            .map(|(h, p)| hop_label(h, *p))
            .collect::<Vec<_>>()
            .join(", "),
        RouteTarget::Maildir(d) => format!("maildir {}", d.display()),
    }
}

fn valid_route_domain(d: &str) -> bool {
    let d = d.trim().trim_end_matches('.');
    let labels = d.strip_prefix('.').unwrap_or(d);
    d.eq_ignore_ascii_case("all")
        || (!labels.is_empty()
            && labels.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

pub fn smtproutes(shared: &Arc<Handles>, req: &Request, args: &RouteArgs) -> Response {
    let domain = text(&args.domain).map(str::to_string);
    let hosts = items(&args.hosts);
    let action = args.action.name();
    match args.action {
        RouteAction::List => {
            let w = match working(shared, req) {
                Ok(w) => w,
                Err(r) => return r,
            };
            if w.cfg.routes.is_empty() {
                return Response::ok(
                    format!(
                        "There are currently no routes configured{}.",
                        pending_label(w.pending)
                    ),
                    json!({ "routes": [], "pending": w.pending }),
                );
            }
            let mut t = format!(
                "SMTP routes{}:\n{:<30} {}\n",
                pending_label(w.pending),
                "Domain",
                "Routes"
            );
            let mut list = Vec::new();
            for r in &w.cfg.routes {
                t.push_str(&format!("{:<30} {}\n", r.domain, target_label(&r.target)));
                let target = match &r.target {
                    RouteTarget::Hosts(h) => {
                        json!({ "hosts": h.iter().map(|(h, p)| hop_label(h, *p)).collect::<Vec<_>>() })
                    }
                    RouteTarget::Maildir(d) => json!({ "maildir": d }),
                };
                list.push(json!({ "domain": r.domain, "target": target }));
            }
            Response::ok(t, json!({ "routes": list, "pending": w.pending }))
        }
        RouteAction::New | RouteAction::Edit => {
            let Some(domain) = domain else {
                return Response::error(format!(
                    "smtproutes {action} needs --domain DOMAIN (or ALL for the default route)."
                ));
            };
            if hosts.is_empty() {
                return Response::error(format!(
                    "smtproutes {action} needs --hosts HOST[:PORT][,HOST[:PORT]...]."
                ));
            }
            if !valid_route_domain(&domain) {
                return Response::error(format!("\"{domain}\" is not a route domain; allowed: a domain such as example.com, .example.com (subdomains), or ALL."));
            }
            for h in &hosts {
                if crate::core::config::parse_host_port(h).is_none() {
                    return Response::error(format!(
                        "\"{h}\" is not a next hop; allowed: host, host:port or [1.2.3.4]:port."
                    ));
                }
            }
            let d = normalize_domain(&domain);
            edit(shared, req, |cfg, doc| {
                let existing = cfg.routes.iter().find(|r| r.domain == d);
                match (action, existing) {
                    ("new", Some(r)) => {
                        return Err(CommandError::conflict(format!(
                            "A route for {d} already exists ({}); change it with `pvo smtproutes edit --domain {d} --hosts ...`.",
                            target_label(&r.target)
                        )))
                    }
                    ("edit", None) => {
                        let names: Vec<&str> = cfg.routes.iter().map(|r| r.domain.as_str()).collect();
                        return Err(CommandError::not_found(format!("There is no route for {d}; allowed: {}.", quoted_list(&names))));
                    }
                    _ => {}
                }
                doc.route_set(&d, &hosts)?;
                Ok(format!(
                    "Route {} {d} -> {}.",
                    if action == "new" {
                        "added:"
                    } else {
                        "changed:"
                    },
                    hosts.join(", ")
                ))
            })
        }
        RouteAction::Delete => {
            let Some(domain) = domain else {
                return Response::error("smtproutes delete needs --domain DOMAIN.");
            };
            let d = normalize_domain(&domain);
            edit(shared, req, |cfg, doc| {
                if !cfg.routes.iter().any(|r| r.domain == d) {
                    let names: Vec<&str> = cfg.routes.iter().map(|r| r.domain.as_str()).collect();
                    return Err(CommandError::not_found(format!(
                        "There is no route for {d}; allowed: {}.",
                        quoted_list(&names)
                    )));
                }
                doc.route_delete(&d)?;
                Ok(format!("Route for {d} deleted."))
            })
        }
        RouteAction::Clear => {
            edit(shared, req, |cfg, doc| {
                if cfg.routes.is_empty() {
                    return Err("There are no routes to clear.".to_string().into());
                }
                let n = doc.route_clear();
                Ok(format!("All routes cleared ({n}). Mail is now delivered to the MX hosts of each domain."))
            })
        }
    }
}

// ---------------------------------------------------------------------------
// cpqenroll (from `pvo manager enroll`)
// ---------------------------------------------------------------------------

/// Adds (or updates) an enrolled gateway in the pending configuration.
pub fn cpqenroll(shared: &Arc<Handles>, req: &Request, args: &CpqEnrollArgs) -> Response {
    let (Some(id), Some(address)) = (text(&args.id), text(&args.address)) else {
        return Response::error("cpqenroll needs id and address.");
    };
    let port = args.port.unwrap_or(7025) as u16;
    // The serial of the certificate just issued: the manager accepts only it.
    let serial = text(&args.serial).map(str::to_string);
    let (id, address) = (id.to_string(), address.to_string());
    edit(shared, req, |cfg, doc| {
        if cfg.role != crate::core::config::Role::Manager {
            return Err("Only a manager enrolls gateways (node.role = \"manager\").".into());
        }
        doc.cpq_gateway_set(&id, &address, port)?;
        if let Some(s) = &serial {
            doc.cpq_gateway_serial(&id, s)?;
        }
        Ok(format!(
            "Gateway {id} enrolled: released messages go to its cpq_listener {address}:{port}."
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            "[[policy]]\nname = \"RELAYED\"\nbehavior = \"relay\"\n[[policy]]\nname = \"BLOCKED\"\nbehavior = \"reject\"\n",
            Path::new("t.toml"),
            Path::new("/tmp"),
        )
        .unwrap()
    }

    #[test]
    fn config_hat_specs() {
        let c = cfg();
        let (g, s, p) = parse_hat_spec(
            &c,
            "PARTNERS=10.0.0.0/8, .partner.example , 2001:db8::1:$relayed",
        )
        .unwrap();
        assert_eq!((g.as_str(), p.as_str()), ("PARTNERS", "RELAYED"));
        assert_eq!(s, ["10.0.0.0/8", ".partner.example", "2001:db8::1"]);
        let e = parse_hat_spec(&c, "X=1.2.3.4:NOPE").unwrap_err();
        assert!(e.contains("allowed: \"RELAYED\", \"BLOCKED\""), "{e}");
        assert!(parse_hat_spec(&c, "no-equals:RELAYED").is_err());
        assert!(parse_hat_spec(&c, "X=:RELAYED").is_err());
    }

    #[test]
    fn config_rat_specs_and_versions() {
        assert_eq!(
            parse_rat_spec("example.com,.example.com:ACCEPT").unwrap(),
            (
                vec!["example.com".to_string(), ".example.com".to_string()],
                "accept".to_string()
            )
        );
        assert!(parse_rat_spec("example.com:maybe")
            .unwrap_err()
            .contains("allowed: accept, reject"));
        assert_eq!(
            parse_versions(&["TLSv1.3".into(), "1.2".into(), "1.3".into()]).unwrap(),
            ["1.3", "1.2"]
        );
        let e = parse_versions(&["1.0".into()]).unwrap_err();
        assert!(
            e.contains("do not exist in rustls") && e.contains("allowed: 1.2, 1.3"),
            "{e}"
        );
        assert!(parse_versions(&["SSLv3".into()])
            .unwrap_err()
            .contains("SSL"));
    }

    #[test]
    fn config_route_domains() {
        assert!(
            valid_route_domain("ALL")
                && valid_route_domain("example.com.")
                && valid_route_domain(".example.com")
        );
        assert!(!valid_route_domain("not a domain") && !valid_route_domain("a@b"));
        assert_eq!(hop_label("::1", 25), "[::1]:25");
    }
}
