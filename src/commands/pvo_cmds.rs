//! `pvoconfig` (the centralized PVO quarantines of a gateway, and the migration
//! wizard of a manager) and `diagnose` (every check behind the failure
//! scenarios of docs/appliance.md, with cause and remedy).

use std::sync::Arc;

use serde_json::{json, Value};

use super::command::{
    text, ApplianceAction, ApplianceArgs, CertAction, CpqCertArgs, PvoAction, PvoArgs,
};
use super::config_cmds;
use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::core::config::{Config, Role, CPQ_HOST, CPQ_RELEASE_HOST};
use crate::core::cpq::checks::Check;
use crate::core::state::Handles;

pub async fn pvoconfig(
    shared: &Arc<Handles>,
    req: &Request,
    args: &PvoArgs,
    id: &crate::core::users::Identity,
) -> Response {
    let role = shared.config.current().role;
    match (args.action, role) {
        (PvoAction::Status, _) => status(shared).await,
        (PvoAction::Enable, Role::Gateway) => enable(shared, req, args).await,
        (PvoAction::Disable, Role::Gateway) => disable(shared, req),
        (PvoAction::Migration, Role::Manager) => {
            // The wizard covers every machine of a cluster it centralizes, or none.
            if matches!(text(&args.mode), Some("automatic" | "custom")) {
                let deps = (&**shared).into();
                if let Ok(st) = crate::core::cpq::gateways::status(&deps, None).await {
                    let lines = crate::core::cpq::gateways::uncovered(&st);
                    if !lines.is_empty() {
                        return Response::fail(
                            ErrorKind::Conflict,
                            format!(
                                "{}\nThe migration wizard covers every machine of a cluster, or none of them: add the machines named, then run it again.",
                                lines.join("\n")
                            ),
                        );
                    }
                }
            }
            migration(shared, req, args, &id.user)
        }
        (PvoAction::Service, _) => service(shared, req, args),
        (PvoAction::Enable | PvoAction::Disable, Role::Manager) => Response::error(
            "pvoconfig enable/disable is a gateway command; on the manager, run the migration wizard (`pvoconfig migration`) and add gateways.",
        ),
        (PvoAction::Migration, Role::Gateway) => Response::error(
            "The migration wizard runs on the manager (`pvo --dir MANAGER pvoconfig migration`).",
        ),
    }
}

fn mode_text(cfg: &Config) -> String {
    match &cfg.cpq {
        None => "local (no [cpq]: not set up for centralization)".into(),
        Some(c) if c.central() && c.managers.len() > 1 => format!(
            "centralized on the managers {} (one deployment, tried in this order)",
            c.managers_text()
        ),
        Some(c) if c.central() => format!("centralized on the manager {}", c.managers_text()),
        Some(_) => "local".into(),
    }
}

async fn status(shared: &Arc<Handles>) -> Response {
    let cfg = shared.config.current();
    let hosts = shared.mail.queue.hosts().await;
    let mut t = String::new();
    let mut data = json!({ "role": cfg.role.as_str() });
    match cfg.role {
        Role::Gateway => {
            t.push_str(&format!(
                "Centralized Policy, Virus and Outbreak Quarantines: {}\n",
                mode_text(&cfg)
            ));
            let queued = hosts
                .iter()
                .find(|h| h.host == CPQ_HOST)
                .map_or(0, |h| h.active_recipients);
            t.push_str(&format!(
                "Messages waiting for the manager ({CPQ_HOST}): {queued}\n"
            ));
            data["mode"] = json!(if cfg.cpq.as_ref().is_some_and(|c| c.central()) {
                "central"
            } else {
                "local"
            });
            data["manager"] = json!(cfg
                .cpq
                .as_ref()
                .and_then(|c| c.manager())
                .map(|(h, p)| format!("{h}:{p}")));
            data["managers"] = json!(cfg
                .cpq
                .as_ref()
                .map(|c| c
                    .managers
                    .iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect::<Vec<_>>())
                .unwrap_or_default());
            data["queued_for_manager"] = json!(queued);
            let p = crate::core::cpq::migrate::progress(&(&**shared).into());
            if p.total > 0 || p.running {
                let width = 30usize;
                let done = (p.migrated.min(p.total) * width as u64)
                    .checked_div(p.total)
                    .map_or(width, |d| d as usize);
                let pct = (p.migrated.min(p.total) * 100)
                    .checked_div(p.total)
                    .unwrap_or(100);
                t.push_str(&format!(
                    "Migration of local quarantines: [{}{}] {pct}% ({} of {}){}\n",
                    "#".repeat(done),
                    ".".repeat(width - done),
                    p.migrated,
                    p.total,
                    if p.running { "" } else { ", done" }
                ));
                if let Some(e) = &p.last_error {
                    t.push_str(&format!("  last problem: {e}\n"));
                }
            }
            data["migration"] = json!(p);
            if let Some((line, c)) = super::cluster_cmds::pvo_cluster(shared, &cfg) {
                t.push_str(&line);
                data["cluster"] = c;
            }
            // What the manager asks over SSH: where released mail goes.
            data["node_id"] = json!(cfg.cpq.as_ref().map(|c| c.node_id.clone()));
            data["cpq_listener"] = match shared
                .control
                .listeners
                .address(crate::core::config::CPQ_LISTENER)
            {
                Some(a) => json!({ "address": a.ip().to_string(), "port": a.port() }),
                None => Value::Null,
            };
        }
        Role::Manager => {
            let c = cfg.cpq.as_ref();
            let gws: Vec<Value> = c
                .map(|c| {
                    c.gateways
                        .iter()
                        .map(|g| json!({ "id": g.id, "address": g.address.to_string(), "port": g.port }))
                        .collect()
                })
                .unwrap_or_default();
            t.push_str(&format!(
                "Centralized PVO service: cpq_listener port {}\n",
                c.map_or(0, |c| c.port)
            ));
            t.push_str(&format!("Gateways added: {}\n", gws.len()));
            for g in &gws {
                t.push_str(&format!(
                    "  {} ({}:{})\n",
                    g["id"].as_str().unwrap_or(""),
                    g["address"].as_str().unwrap_or(""),
                    g["port"]
                ));
            }
            let m = c.and_then(|c| c.migration.as_ref());
            t.push_str(&match m {
                None => "Migration wizard: not run\n".to_string(),
                Some(m) => format!(
                    "Migration wizard: {} (by {})\n",
                    if m.custom { "custom" } else { "automatic" },
                    m.set_by
                ),
            });
            let queued = hosts
                .iter()
                .find(|h| h.host == CPQ_RELEASE_HOST)
                .map_or(0, |h| h.active_recipients);
            t.push_str(&format!(
                "Released messages waiting for their gateways ({CPQ_RELEASE_HOST}): {queued}\n"
            ));
            data["gateways"] = json!(gws);
            data["migration"] = json!(m);
            data["queued_for_gateways"] = json!(queued);
        }
    }
    Response::ok(t, data)
}

async fn enable(shared: &Arc<Handles>, req: &Request, args: &PvoArgs) -> Response {
    let cfg = shared.config.current();
    // `--manager HOST[:PORT]`, or `--manager M1,M2` for the managers of one deployment.
    let managers: Vec<(String, u16)> = match text(&args.manager) {
        Some(list) => {
            let mut managers = Vec::new();
            for m in list.split(',').map(str::trim) {
                match crate::core::config::parse_host_port(m) {
                    Some((h, p)) => {
                        let hp = (h, if p == 25 && !m.contains(':') { 7025 } else { p });
                        if managers.contains(&hp) {
                            return Response::error(format!(
                                "\"{m}\" is listed twice in --manager; give each manager once"
                            ));
                        }
                        managers.push(hp);
                    }
                    None => {
                        return Response::error(format!(
                            "\"{m}\" is not HOST[:PORT] (the manager's CPQ address, port 7025 by default; several managers separated by commas)"
                        ))
                    }
                }
            }
            managers
        }
        None => match cfg.cpq.as_ref().map(|c| c.managers.clone()) {
            Some(m) if !m.is_empty() => m,
            _ => {
                return Response::error(
                    "Give the manager's CPQ address: pvoconfig enable --manager HOST[:PORT] (several managers of one deployment: --manager M1:PORT,M2:PORT)",
                )
            }
        },
    };
    // A cluster first: its members must quarantine alike (scenario 6).
    let mut cluster: Vec<Check> = super::cluster_cmds::checks(shared)
        .into_iter()
        .filter(|c| !c.passed)
        .collect();
    // ... and every machine of the level it is enabled at is added on the manager.
    let covered = super::cluster_cmds::enable_check(shared, req);
    if let Some(c) = covered.as_ref().filter(|c| !c.passed) {
        if !cluster.iter().any(|x| x.name == c.name) {
            cluster.push(c.clone());
        }
    }
    if let Some(first) = cluster.first() {
        let mut text = String::new();
        for c in &cluster {
            text.push_str(&c.text());
        }
        let mut r = Response::error(format!(
            "{text}Enable is unavailable: {}\n",
            first.cause.clone().unwrap_or_default()
        ));
        r.data = json!({ "enabled": false, "checks": cluster, "cause": first.cause, "remedy": first.remedy, "scenario": first.scenario });
        return r;
    }
    if cfg.cpq.is_none() {
        return Response::error(
            "This gateway has no [cpq] section (its id, cpq_listener and certificate): add one (see docs/gateway.example.toml) and commit first.",
        );
    }
    drop(cfg);
    // Every manager of the deployment must be ready: each answers for the others' store.
    let mut checks = Vec::new();
    for (h, p) in &managers {
        let pre = shared.probes.preflight(h, *p).await;
        checks.extend(
            pre.into_iter()
                .map(|c| of_manager(c, h, *p, managers.len())),
        );
    }
    checks.extend(covered);
    let mut text = String::new();
    for c in &checks {
        text.push_str(&c.text());
    }
    if let Some(failed) = checks.iter().find(|c| !c.passed) {
        let mut r = Response::error(format!(
            "{text}Enable is unavailable: {}.\n",
            failed.cause.clone().unwrap_or_default()
        ));
        r.data = json!({ "enabled": false, "checks": checks, "cause": failed.cause, "remedy": failed.remedy, "scenario": failed.scenario });
        return r;
    }
    let listed: Vec<String> = managers.iter().map(|(h, p)| format!("{h}:{p}")).collect();
    let mut r = config_cmds::edit(shared, req, move |_, doc| {
        doc.cpq_set("mode", "central")?;
        doc.cpq_set_managers(&listed)?;
        Ok(if listed.len() == 1 {
            format!(
                "Centralized Policy, Virus and Outbreak Quarantines enabled on the manager {}; after `commit`, quarantined messages go to the manager and the local ones migrate there.",
                listed[0]
            )
        } else {
            format!(
                "Centralized Policy, Virus and Outbreak Quarantines enabled on the managers {} (tried in this order: one that is down is passed over); after `commit`, quarantined messages go to the deployment and the local ones migrate there.",
                listed.join(", ")
            )
        })
    });
    r.text = format!("{text}{}", r.text);
    if r.ok {
        r.data["checks"] = json!(checks);
        r.data["enabled"] = json!(true);
    }
    r
}

fn disable(shared: &Arc<Handles>, req: &Request) -> Response {
    config_cmds::edit(shared, req, |cfg, doc| {
        if cfg.cpq.is_none() {
            return Err("This gateway is not set up for centralization (no [cpq]).".into());
        }
        doc.cpq_set("mode", "local")?;
        Ok("Centralized quarantines disabled: after `commit`, quarantined messages stay in this gateway's local quarantines (messages already on the manager stay there).".into())
    })
}

/// `pvoconfig migration automatic | custom [--map GW:LOCAL=CENTRAL]... [--unmap GW:LOCAL]... | show`.
fn migration(shared: &Arc<Handles>, req: &Request, args: &PvoArgs, user: &str) -> Response {
    let mode = text(&args.mode).unwrap_or("show").to_string();
    let maps: Vec<String> = args.map.clone().unwrap_or_default();
    let unmaps: Vec<String> = args.unmap.clone().unwrap_or_default();
    if mode == "show" {
        let cfg = shared.config.current();
        let m = cfg.cpq.as_ref().and_then(|c| c.migration.clone());
        return Response::ok(tree(&cfg, m.as_ref()), json!({ "migration": m }));
    }
    if mode != "automatic" && mode != "custom" {
        return Response::error(format!(
            "Unknown migration mode \"{mode}\"; allowed: automatic (by name), custom, show."
        ));
    }
    // The PVO user (not the OS user): the manager checks its role at enable time.
    let who = user.to_string();
    config_cmds::edit(shared, req, move |cfg, doc| {
        let mut map: Vec<(String, String, String)> = cfg
            .cpq
            .as_ref()
            .and_then(|c| c.migration.as_ref())
            .filter(|m| m.custom)
            .map(|m| m.map.clone())
            .unwrap_or_default();
        if mode == "automatic" && !(maps.is_empty() && unmaps.is_empty()) {
            return Err("--map and --unmap belong to the custom mode.".into());
        }
        if mode == "automatic" {
            map.clear();
        }
        for m in &maps {
            let parsed = m
                .split_once(':')
                .and_then(|(g, rest)| rest.split_once('=').map(|(l, c)| (g, l, c)));
            let Some((g, l, c)) =
                parsed.filter(|(g, l, c)| !g.is_empty() && !l.is_empty() && !c.is_empty())
            else {
                return Err(format!(
                    "\"{m}\" is not GATEWAY:LOCAL=CENTRAL (for example gw1:Policy=Policy)"
                )
                .into());
            };
            map.retain(|(g2, l2, _)| !(g2 == g && l2.eq_ignore_ascii_case(l)));
            map.push((g.to_string(), l.to_string(), c.to_string()));
        }
        for u in &unmaps {
            let Some((g, l)) = u.split_once(':') else {
                return Err(format!("\"{u}\" is not GATEWAY:LOCAL").into());
            };
            let before = map.len();
            map.retain(|(g2, l2, _)| !(g2 == g && l2.eq_ignore_ascii_case(l)));
            if map.len() == before {
                return Err(format!("No mapping for {g}:{l} to undo.").into());
            }
        }
        doc.cpq_migration(&mode, &who, &map)?;
        let m = crate::core::config::Migration {
            custom: mode == "custom",
            set_by: who.clone(),
            map: map.clone(),
        };
        Ok(format!(
            "Migration wizard: {mode}, by {who}.\n{}",
            tree(cfg, Some(&m))
        ))
    })
}

/// The resulting tree: each gateway's local quarantines and where they go.
fn tree(cfg: &Config, m: Option<&crate::core::config::Migration>) -> String {
    let Some(m) = m else {
        return "The migration wizard has not been run (`pvoconfig migration automatic` or `custom`).\n".into();
    };
    let mut t = String::new();
    let gws: Vec<&str> = cfg
        .cpq
        .as_ref()
        .map(|c| c.gateways.iter().map(|g| g.id.as_str()).collect())
        .unwrap_or_default();
    for g in gws {
        t.push_str(&format!("{g}\n"));
        let mut locals: Vec<&str> = vec!["Policy", "Virus", "Outbreak", "Unclassified"];
        for (mg, l, _) in &m.map {
            if mg == g && !locals.iter().any(|x| x.eq_ignore_ascii_case(l)) {
                locals.push(l);
            }
        }
        for l in locals {
            t.push_str(&format!("  {l} -> {}\n", m.central_for(g, l)));
        }
    }
    t
}

pub async fn diagnose(shared: &Arc<Handles>) -> Response {
    let cfg = shared.config.current();
    let mut checks: Vec<Check> = Vec::new();
    // Listeners: scenario 1 on either node.
    let states = shared.control.listeners.states();
    let suspended: Vec<String> = states
        .iter()
        .filter(|s| s.suspended)
        .map(|s| s.name.clone())
        .collect();
    if suspended.is_empty() {
        checks.push(Check::pass(
            "listeners",
            format!(
                "System status: Online ({} receiving)",
                states
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    } else {
        checks.push(Check::fail(
            "listeners",
            format!("suspended: {}", suspended.join(", ")),
            if suspended.iter().any(|n| n == crate::core::config::CPQ_LISTENER) {
                "the cpq_listener is suspended: nothing is accepted on the CPQ port (System status: Offline)".to_string()
            } else {
                "listeners are suspended (System status: Offline)".to_string()
            },
            "`pvo resume` (or `resumelisteners NAME`)",
            Some(1),
        ));
    }
    // In a cluster: the store, and the cluster reasons of scenario 6.
    checks.extend(super::cluster_cmds::checks(shared));
    // Informational: a self-signed certificate works, but clients cannot verify it.
    if let Some(note) = shared.inbound_certificate.self_signed(&cfg) {
        checks.push(Check::pass(
            "TLS certificate",
            format!(
                "{} serve a {note}; configure [tls.inbound] cert and key to use one a CA issued",
                super::status::served_by(shared).join(", ")
            ),
        ));
    }
    match (&cfg.cpq, cfg.role) {
        (None, Role::Gateway) => checks.push(Check::pass(
            "centralization",
            "not set up (no [cpq]): quarantines are local",
        )),
        (None, Role::Manager) => {}
        (Some(c), _) => {
            // Certificates and their expiry.
            let now = crate::core::clock::unix_now();
            match crate::core::cpq::pki::summarize(&c.dir.join(crate::core::cpq::pki::NODE_CERT)) {
                Ok(s) if s.not_after > now + 30 * 86_400 => checks.push(Check::pass(
                    "CPQ certificate",
                    format!(
                        "{} issued by {}, valid for {} more days",
                        s.subject_cn,
                        s.issuer_cn,
                        (s.not_after - now) / 86_400
                    ),
                )),
                Ok(s) => checks.push(Check::fail(
                    "CPQ certificate",
                    format!(
                        "{} expires in {} days",
                        s.subject_cn,
                        s.not_after.saturating_sub(now) / 86_400
                    ),
                    "the node's CPQ certificate expires soon (or has expired)",
                    "enroll the node again (`pvo manager enroll`) to get a new certificate",
                    Some(4),
                )),
                Err(e) => checks.push(Check::fail(
                    "CPQ certificate",
                    format!("{e:#}"),
                    "this node has no CPQ certificate",
                    "enroll it on the manager (`pvo manager enroll ... --out DATA_DIR/cpq`)",
                    Some(4),
                )),
            }
            // Whom the handshakes accept, and what is revoked (`cpqcert list`).
            if let Some((text, data)) = cpq_trust_report(&cfg) {
                let summary = text
                    .lines()
                    .skip(1)
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("; ");
                match data["revocation_list_error"].as_str() {
                    None => checks.push(Check::pass("CPQ peers", summary)),
                    Some(e) => checks.push(Check::fail(
                        "CPQ peers",
                        e.to_string(),
                        "the revocation list cannot be read: no CPQ handshake succeeds",
                        "fix or remove the file named above",
                        None,
                    )),
                }
            }
        }
    }
    let hosts = shared.mail.queue.hosts().await;
    let backlog = |host: &str, checks: &mut Vec<Check>| {
        let h = hosts.iter().find(|h| h.host == host);
        match h {
            None => checks.push(Check::pass(
                format!("{host} queue"),
                "empty".to_string(),
            )),
            Some(h) if h.active_recipients == 0 || h.last_error.is_none() => checks.push(Check::pass(
                format!("{host} queue"),
                format!("{} waiting", h.active_recipients),
            )),
            Some(h) => checks.push(Check::fail(
                format!("{host} queue"),
                format!("{} waiting; last error: {}", h.active_recipients, h.last_error.clone().unwrap_or_default()),
                format!("deliveries to {host} fail: {}", h.last_error.clone().unwrap_or_default()),
                format!("fix the cause above; the messages are retried (`pvo delivernow {host}` retries now)"),
                None,
            )),
        }
    };
    match cfg.role {
        Role::Gateway => {
            let managers = cfg
                .cpq
                .as_ref()
                .map(|c| c.managers.clone())
                .unwrap_or_default();
            let many = managers.len();
            for (h, p) in managers {
                // Port reachability from each interface (scenario 3 names the
                // default delivery interface; the others show the way out).
                for iface in &cfg.interfaces {
                    let addr = match shared.resolver.addresses(&h).await {
                        Ok(a) if !a.is_empty() => std::net::SocketAddr::new(a[0], p),
                        _ => break,
                    };
                    match shared.probes.reach(addr, iface.address).await {
                        Ok(_) => checks.push(Check::pass(
                            format!("reach {h}:{p} from {}", iface.name),
                            format!("connected from {}", iface.address),
                        )),
                        Err(e) => checks.push(Check::fail(
                            format!("reach {h}:{p} from {}", iface.name),
                            e.clone(),
                            format!("interface {} ({}) cannot reach the manager {h}:{p}: {e}", iface.name, iface.address),
                            "use an interface with a route to the manager as default delivery interface (or Auto)",
                            if e.contains("refused") { Some(1) } else { Some(3) },
                        )),
                    }
                }
                let pre = shared.probes.preflight(&h, p).await;
                let central = cfg.cpq.as_ref().is_some_and(|c| c.central());
                checks.extend(pre.into_iter().map(|c| {
                    let c = if central { live_link(c, &h, p) } else { c };
                    of_manager(c, &h, p, many)
                }));
            }
            if many > 0 {
                backlog(CPQ_HOST, &mut checks);
            }
        }
        Role::Manager => {
            checks.extend(components(shared).await);
            let ready: Vec<String> = cfg
                .cpq
                .as_ref()
                .map(|c| c.gateways.iter().map(|g| g.id.clone()).collect())
                .unwrap_or_default();
            if ready.is_empty() {
                checks.push(Check::fail(
                    "gateways",
                    "no gateway is added",
                    "the manager has no gateways to centralize",
                    "add each gateway (`pvo manager enroll`), then `commit`",
                    None,
                ));
            }
            let ssh_gateways: Vec<String> = cfg
                .cpq
                .as_ref()
                .map(crate::core::config::Cpq::ssh_gateway_ids)
                .unwrap_or_default();
            // SSH from the manager to each gateway added with applianceconfig.
            for g in ssh_gateways {
                match shared.cpq.gateway_shell.query_endpoint(&g).await {
                    Ok(ep) => checks.push(Check::pass(
                        format!("SSH to {g}"),
                        format!("the manager's key logs in; released mail goes to {}:{}", ep.address, ep.port),
                    )),
                    Err(e) => checks.push(Check::fail(
                        format!("SSH to {g}"),
                        format!("{e:#}"),
                        format!("the manager cannot ask gateway {g} over SSH: {e:#}"),
                        "check the gateway's SSH service and that the manager's key is still installed for its user (`applianceconfig test`; add it again with `applianceconfig new` if its host key or key changed)",
                        None,
                    )),
                }
            }
            for g in ready {
                match crate::core::cpq::manager::readiness(&shared.config, &shared.access, &g) {
                    Ok(()) => checks.push(Check::pass(
                        format!("ready for {g}"),
                        "enrolled; migration wizard committed by an Administrator",
                    )),
                    Err(why) => {
                        let scenario = why.contains("wizard").then_some(2);
                        checks.push(Check::fail(
                            format!("ready for {g}"),
                            why.clone(),
                            why,
                            "as an Administrator: `pvoconfig migration automatic` (or custom), then `commit`",
                            scenario,
                        ))
                    }
                }
            }
            backlog(CPQ_RELEASE_HOST, &mut checks);
        }
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    let mut text = String::new();
    for c in &checks {
        text.push_str(&c.text());
    }
    text.push_str(&if failed == 0 {
        format!("All {} checks passed.\n", checks.len())
    } else {
        format!("{failed} of {} checks failed.\n", checks.len())
    });
    let data = json!({ "checks": checks, "failed": failed, "role": cfg.role.as_str(), "cpq_trust": cpq_trust_report(&cfg).map(|x| x.1) });
    if failed == 0 {
        Response::ok(text, data)
    } else {
        let mut r = Response::error(text);
        r.data = data;
        r
    }
}

/// How long a component of the manager may take to answer `diagnose`.
const COMPONENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The manager's own components (a failure an internal component causes, named; see
/// docs/appliance.md): the central store answers a read, its writer thread is alive and
/// stored its last batch, the delivery queue answers.
async fn components(shared: &Arc<Handles>) -> Vec<Check> {
    let mut out = Vec::new();
    // Where the store is, for the remedies: the embedded file, or [store] url's server.
    let (at, fix) = match &shared.config.current().store {
        None => (
            "the store's disk (DATA_DIR/quarantine)".to_string(),
            "check the store (DATA_DIR/quarantine: disk, permissions)".to_string(),
        ),
        Some(s) => {
            let db = crate::core::cluster::sync::describe(&s.url);
            (
                format!("the PostgreSQL server of [store] url ({db})"),
                format!("check the PostgreSQL server of [store] url ({db}): running, reachable, accepting this manager's login"),
            )
        }
    };
    let read = shared.scan.local_quarantine.with(|s| s.usage());
    out.push(match tokio::time::timeout(COMPONENT_WAIT, read).await {
        Ok(Ok(u)) => Check::pass(
            "central store",
            format!(
                "answers: {} messages held ({})",
                u.total_messages,
                pvo_quarantine::format_bytes(u.total_bytes)
            ),
        ),
        Ok(Err(e)) => Check::fail(
            "central store",
            format!("{e}"),
            format!("the central store cannot be read: {e}"),
            format!("{fix}; `quarantine search` fails until it answers"),
            None,
        ),
        Err(_) => Check::fail(
            "central store",
            format!("no answer in {} s", COMPONENT_WAIT.as_secs()),
            "the central store does not answer: a long operation or a stuck disk holds it",
            format!("look for Critical: lines in mail_logs and at {at}"),
            None,
        ),
    });
    if let Some(inbox) = shared.cpq.state.inbox.get() {
        let state = inbox.state();
        out.push(match (inbox.ping(COMPONENT_WAIT).await, state.failing()) {
            (Err(why), _) => Check::fail(
                "central store writer",
                why.clone(),
                format!("{why}: transfers are refused with a temporary error, and gateways keep them in {CPQ_HOST}"),
                "restart the manager (`pvo manager run`); nothing is lost: gateways retry",
                None,
            ),
            (Ok(()), Some((at, why))) => Check::fail(
                "central store writer",
                format!(
                    "the last transfers could not be stored ({} s ago): {why}",
                    crate::core::clock::unix_now().saturating_sub(at)
                ),
                format!("the central store refuses writes ({why}): transfers are refused with a temporary error, and gateways keep them in {CPQ_HOST}"),
                format!("{fix} (or free space on {at}); the gateways' retries then drain"),
                None,
            ),
            (Ok(()), _) => Check::pass(
                "central store writer",
                match state.stored_at() {
                    Some(at) => format!(
                        "alive; last transfers stored {} s ago",
                        crate::core::clock::unix_now().saturating_sub(at)
                    ),
                    None => "alive; no transfer stored since the start".to_string(),
                },
            ),
        });
    }
    out.push(
        match tokio::time::timeout(COMPONENT_WAIT, shared.mail.queue.hosts()).await {
            Ok(hosts) => Check::pass(
                "delivery queue",
                format!("answers ({} destinations)", hosts.len()),
            ),
            Err(_) => Check::fail(
                "delivery queue",
                format!("no answer in {} s", COMPONENT_WAIT.as_secs()),
                "the delivery queue does not answer: releases are not delivered",
                "look for Critical: lines in mail_logs; restart the manager (the queue is rebuilt from the spool)",
                None,
            ),
        },
    );
    out
}

/// On a gateway that is central already, the enable preflight's last step ("manager
/// ready": the manager's wizard) is what Enable needed, not what the link needs now:
/// it becomes "manager link", which fails only for what still stops transfers (the
/// manager does not know this gateway); a wizard not run or not committed there is
/// a matter for the manager's own `diagnose`. Every other check passes through.
/// A check of one manager of several: its name and cause say which manager (`many` is how
/// many the gateway lists; with one, the checks keep the appliance's names).
fn of_manager(c: Check, host: &str, port: u16, many: usize) -> Check {
    if many < 2 {
        return c;
    }
    Check {
        name: format!("{} ({host}:{port})", c.name),
        cause: c
            .cause
            .map(|cause| format!("manager {host}:{port}: {cause}")),
        ..c
    }
}

fn live_link(c: Check, host: &str, port: u16) -> Check {
    if c.name != "manager ready" {
        return c;
    }
    if c.passed || c.scenario == Some(2) {
        return Check::pass(
            "manager link",
            format!("central: quarantined messages go to the manager {host}:{port}, which accepts this gateway"),
        );
    }
    Check {
        name: "manager link".into(),
        ..c
    }
}

/// `cpqcert install | revoke | list`: this node's CPQ certificate, whom it accepts
/// and its revocation list.
pub fn cpqcert(shared: &Arc<Handles>, req: &Request, args: &CpqCertArgs) -> Response {
    match args.action {
        CertAction::Install => cpqcert_install(shared, req, args),
        CertAction::Revoke => cpqcert_revoke(shared, req, args),
        CertAction::List => cpqcert_list(shared),
    }
}

/// `cpqcert install --id ID --cert HEX --key HEX --ca HEX --manager HEX` (sent by the
/// manager over SSH when it adds this gateway): installs the CPQ certificate the manager
/// issued and pins the manager's own certificate (the only peer that may release to
/// this gateway), and puts them in force; a gateway without `[cpq]` gets one pending
/// (node_id = ID).
fn cpqcert_install(shared: &Arc<Handles>, req: &Request, args: &CpqCertArgs) -> Response {
    let (Some(id), Some(cert), Some(key), Some(ca)) = (
        text(&args.id),
        text(&args.cert).and_then(|h| hex::decode(h).ok()),
        text(&args.key).and_then(|h| hex::decode(h).ok()),
        text(&args.ca).and_then(|h| hex::decode(h).ok()),
    ) else {
        return Response::error(
            "cpqcert install needs --id and the hex-encoded --cert, --key, --ca and --manager.",
        );
    };
    let manager = match text(&args.manager) {
        Some(h) => match hex::decode(h) {
            Ok(m) => Some(m),
            Err(_) => return Response::error("cpqcert install: --manager is not hex."),
        },
        None => None,
    };
    let cfg = shared.config.current();
    if cfg.role != Role::Gateway {
        return Response::error("cpqcert install is for gateways.");
    }
    // In a cluster a machine's CPQ id is its machine name (`core::cluster::compose`).
    let machine = shared.cluster.membership().map(|m| m.machine.to_string());
    if let Some(m) = machine.as_deref().filter(|m| *m != id) {
        return Response::error(format!(
            "This gateway is machine {m} of a cluster, and in a cluster a machine's CPQ id is its machine name: add it on the manager as {m} (`applianceconfig new --id {m} ...`), not as {id}."
        ));
    }
    let dir = cfg
        .cpq
        .as_ref()
        .map(|c| c.dir.clone())
        .unwrap_or_else(|| cfg.data_dir.join("cpq"));
    let write = || -> anyhow::Result<()> {
        use crate::core::cpq::pki;
        std::fs::create_dir_all(&dir)?;
        crate::core::atomic_file::write(&dir.join(pki::CA_CERT), &ca)?;
        crate::core::atomic_file::write(&dir.join(pki::NODE_CERT), &cert)?;
        let keyp = dir.join(pki::NODE_KEY);
        crate::core::atomic_file::write_private(&keyp, &key)?;
        let pin = dir.join(pki::MANAGER_CERT);
        let pinned = match &manager {
            Some(m) => {
                crate::core::atomic_file::write(&pin, m)?;
                Some(
                    pki::identify_all_file(&pin)?
                        .into_iter()
                        .map(|(_, der)| der)
                        .collect(),
                )
            }
            // A manager of an older version sends no certificate of its own: a pin
            // from an earlier manager would refuse it, so the role alone decides.
            None => {
                match std::fs::remove_file(&pin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                None
            }
        };
        // Refuse material rustls cannot use before it is in force.
        shared.control.node.check_gateway_material(&dir, pinned)
    };
    if let Err(e) = write() {
        return Response::error(format!(
            "The CPQ certificate could not be installed in {}: {e:#}",
            dir.display()
        ));
    }
    let same_id = machine.is_some() || cfg.cpq.as_ref().is_some_and(|c| c.node_id == id);
    if cfg.cpq.is_some() {
        if let Err(e) = shared.control.node.apply_config((*cfg).clone()) {
            return Response::error(format!("Installed, but not in force: {e:#}"));
        }
    }
    drop(cfg);
    let id = id.to_string();
    if same_id {
        return Response::ok(
            format!("CPQ certificate of {id} installed and in force."),
            json!({ "installed": true, "pending": false }),
        );
    }
    let mut r = config_cmds::edit(shared, req, move |_, doc| {
        doc.cpq_set("node_id", &id)?;
        Ok(format!(
            "CPQ certificate of {id} installed; this gateway's id becomes {id}."
        ))
    });
    r.data["installed"] = json!(true);
    r
}

/// `cpqcert revoke --serial HEX | --id ID`: puts a certificate on this node's
/// revocation list, in force at once (the next handshake with it fails). On a manager
/// `--id` names an added gateway (the serial enrolled for it); on a gateway, its
/// manager (the pinned certificate).
fn cpqcert_revoke(shared: &Arc<Handles>, req: &Request, args: &CpqCertArgs) -> Response {
    use crate::core::cpq::pki;
    let cfg = shared.config.current();
    let Some(c) = cfg.cpq.as_ref() else {
        return Response::error("cpqcert revoke: this node has no [cpq] section.");
    };
    let (serial, subject) = match (text(&args.serial), text(&args.id)) {
        (Some(s), _) => (s.to_ascii_lowercase(), text(&args.id).unwrap_or("").to_string()),
        (None, Some(id)) if cfg.role == Role::Manager => {
            match c.gateways.iter().find(|g| g.id == id) {
                Some(g) => match &g.serial {
                    Some(s) => (s.clone(), id.to_string()),
                    None => return Response::error(format!(
                        "Gateway {id} was enrolled by an older version: the serial of its certificate is not recorded. Give --serial (the gateway's `cpqcert list` shows it), or `applianceconfig delete {id}`, commit, and add it again."
                    )),
                },
                None => return Response::error(format!(
                    "No gateway {id} is added (committed); give the certificate's --serial."
                )),
            }
        }
        (None, Some(id)) => match pki::identify_all_file(&c.dir.join(pki::MANAGER_CERT)) {
            Ok(all) => match all.iter().find(|(m, _)| m.cn == id) {
                Some((m, _)) => (m.serial.clone(), id.to_string()),
                None => return Response::error(format!(
                    "This gateway's managers are {}, not {id}; give the certificate's --serial.",
                    all.iter().map(|(m, _)| m.cn.as_str()).collect::<Vec<_>>().join(", ")
                )),
            },
            Err(_) => return Response::error(
                "No manager certificate is pinned on this gateway; give the certificate's --serial.",
            ),
        },
        (None, None) => {
            return Response::error("cpqcert revoke needs --serial HEX or --id ID.")
        }
    };
    if !pki::is_serial(&serial) {
        return Response::error(format!(
            "\"{serial}\" is not a certificate serial number (hex digits, as `cpqcert list` shows)."
        ));
    }
    let own = pki::identify_file(&c.dir.join(pki::NODE_CERT)).ok();
    if own.as_ref().is_some_and(|(o, _)| o.serial == serial) {
        return Response::error(format!(
            "{serial} is this node's own certificate; revoke it on its peers instead."
        ));
    }
    let dir = c.dir.clone();
    drop(cfg);
    let added = match pki::revoke(&dir, &serial, &subject) {
        Ok(a) => a,
        Err(e) => return Response::error(format!("{e:#}")),
    };
    if let Err(e) = shared.tls.reload_cpq(&shared.config.current()) {
        return Response::error(format!(
            "Certificate {serial} is on the revocation list in {}, but not in force: {e:#}",
            dir.display()
        ));
    }
    let who = if subject.is_empty() {
        String::new()
    } else {
        format!(" ({subject})")
    };
    shared
        .mail
        .log
        .emit(crate::core::events::Event::CertificateRevoked {
            serial: &serial,
            subject: &subject,
            by: &req.user,
        });
    Response::ok(
        if added {
            format!("Certificate {serial}{who} revoked: the next handshake with it fails.")
        } else {
            format!("Certificate {serial}{who} was already revoked.")
        },
        json!({ "serial": serial, "subject": subject, "added": added }),
    )
}

/// What `cpqcert list` and `diagnose` show: this node's certificate, whom it accepts
/// (the pinned manager, or each added gateway's serial) and the revocation list.
fn cpq_trust_report(cfg: &Config) -> Option<(String, Value)> {
    use crate::core::cpq::pki;
    let c = cfg.cpq.as_ref()?;
    let mut t = String::new();
    let own = pki::identify_file(&c.dir.join(pki::NODE_CERT))
        .ok()
        .map(|x| x.0);
    match &own {
        Some(o) => t.push_str(&format!(
            "This node: {} ({}), serial {}\n",
            o.cn,
            o.role
                .map_or("no role: issued by an older version", pki::CertRole::as_str),
            o.serial
        )),
        None => t.push_str("This node: no CPQ certificate\n"),
    }
    let accepted: Vec<Value> = match cfg.role {
        Role::Manager => {
            t.push_str("Accepted gateways (committed):\n");
            if c.gateways.is_empty() {
                t.push_str("  none\n");
            }
            c.gateways
                .iter()
                .map(|g| {
                    t.push_str(&format!(
                        "  {:<16} {}\n",
                        g.id,
                        g.serial.as_deref().map_or_else(
                            || "any certificate with its id (enrolled by an older version; add it again to pin one)".to_string(),
                            |s| format!("serial {s}")
                        )
                    ));
                    json!({ "id": g.id, "serial": g.serial })
                })
                .collect()
        }
        Role::Gateway => match pki::identify_all_file(&c.dir.join(pki::MANAGER_CERT)) {
            Ok(all) => all
                .into_iter()
                .map(|(m, _)| {
                    t.push_str(&format!(
                        "Accepted manager (pinned): {} serial {}\n",
                        m.cn, m.serial
                    ));
                    json!({ "id": m.cn, "serial": m.serial, "pinned": true })
                })
                .collect(),
            Err(_) => {
                t.push_str("Accepted manager: any certificate issued for the manager role (not pinned: added by an older version; add this gateway on the manager again to pin it)\n");
                vec![json!({ "id": Value::Null, "serial": Value::Null, "pinned": false })]
            }
        },
    };
    let (revoked, error) = match pki::load_revoked(&c.dir) {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    t.push_str(&format!("Revoked ({}):\n", revoked.len()));
    for r in &revoked {
        t.push_str(&format!(
            "  {} {} revoked {}\n",
            r.serial,
            if r.subject.is_empty() {
                "-"
            } else {
                &r.subject
            },
            r.at
        ));
    }
    if let Some(e) = &error {
        t.push_str(&format!("  {e}\n"));
    }
    let data = json!({
        "certificate": own.as_ref().map(|o| json!({ "id": o.cn, "role": o.role.map(pki::CertRole::as_str), "serial": o.serial })),
        "accepted": accepted,
        "revoked": revoked,
        "revocation_list_error": error,
    });
    Some((t, data))
}

fn cpqcert_list(shared: &Arc<Handles>) -> Response {
    match cpq_trust_report(&shared.config.current()) {
        Some((t, data)) => Response::ok(t, data),
        None => Response::error("cpqcert: this node has no [cpq] section."),
    }
}

/// `applianceconfig list | new | test | delete` on the manager.
pub async fn applianceconfig(
    shared: &Arc<Handles>,
    req: &Request,
    args: &ApplianceArgs,
) -> Response {
    let cfg = shared.config.current();
    if cfg.role != Role::Manager && args.action == ApplianceAction::Status {
        return Response::error(
            "applianceconfig status runs on the manager (it shows the gateways added to it); on a gateway, `pvoconfig status` shows its own state.",
        );
    }
    if cfg.role != Role::Manager {
        return Response::error("applianceconfig runs on the manager (it adds gateways to it).");
    }
    let Some(c) = cfg.cpq.clone() else {
        return Response::error(
            "The centralized PVO service is not configured on this manager ([cpq]).",
        );
    };
    drop(cfg);
    match args.action {
        ApplianceAction::List => {
            let mut t = format!(
                "{:<16} {:<24} {:<10} {}\n",
                "Gateway", "CPQ (released mail)", "SSH", "PVO service"
            );
            for g in &c.gateways {
                let ep = shared
                    .cpq
                    .state
                    .endpoints
                    .get(&g.id)
                    .unwrap_or((g.address, g.port));
                t.push_str(&format!(
                    "{:<16} {:<24} {:<10} {}\n",
                    g.id,
                    format!("{}:{}", ep.0, ep.1),
                    g.ssh_port.map_or("-".to_string(), |p| p.to_string()),
                    "enabled"
                ));
            }
            if c.gateways.is_empty() {
                t = "No gateways added (`applianceconfig new`).\n".into();
            }
            let list: Vec<Value> = c
                .gateways
                .iter()
                .map(|g| json!({ "id": g.id, "address": g.address.to_string(), "port": g.port, "ssh_port": g.ssh_port, "ssh_user": g.ssh_user, "ssh_host_key": g.ssh_host_key, "learned": shared.cpq.state.endpoints.get(&g.id).map(|(a, p)| format!("{a}:{p}")) }))
                .collect();
            Response::ok(t, json!({ "gateways": list }))
        }
        ApplianceAction::Status => {
            match crate::core::cpq::gateways::status(&(&**shared).into(), text(&args.id)).await {
                Ok(data) => Response::ok(crate::core::cpq::gateways::table(&data), data),
                Err(e) => Response::error(e),
            }
        }
        ApplianceAction::New => appliance_new(shared, req, args, &c).await,
        ApplianceAction::Test => {
            let Some(id) = text(&args.id) else {
                return Response::error("applianceconfig test needs the gateway id.");
            };
            match shared.cpq.gateway_shell.query_endpoint(id).await {
                Ok(ep) => Response::ok(
                    format!("Gateway {id}: SSH login with the manager's key works; released mail goes to {}:{}.\n", ep.address, ep.port),
                    json!({ "id": id, "address": ep.address.to_string(), "port": ep.port }),
                ),
                Err(e) => Response::fail(ErrorKind::Unavailable, format!("Gateway {id}: {e:#}")),
            }
        }
        ApplianceAction::Edit => {
            let Some(id) = text(&args.id).map(str::to_string) else {
                return Response::error("applianceconfig edit needs the gateway id.");
            };
            let Some(g) = c.gateways.iter().find(|g| g.id == id).cloned() else {
                return Response::error(format!("No gateway {id} is added."));
            };
            let address = match text(&args.address) {
                Some(a) => match a.parse::<std::net::IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => return Response::error(format!("\"{a}\" is not an IP address.")),
                },
                None => g.address,
            };
            let ssh_port = args.ssh_port.map(|p| p as u16).or(g.ssh_port);
            let user = text(&args.user).unwrap_or(&g.ssh_user).to_string();
            // The gateway's SSH host key fingerprint (`SHA256:...`) to pin.
            let host_key = text(&args.host_key)
                .map(str::to_string)
                .or(g.ssh_host_key.clone())
                .unwrap_or_default();
            if !host_key.is_empty() && !host_key.starts_with("SHA256:") {
                return Response::error(format!(
                    "\"{host_key}\" is not an SSH host key fingerprint (SHA256:...)."
                ));
            }
            config_cmds::edit(shared, req, move |_, doc| {
                doc.cpq_gateway_set(&id, &address.to_string(), g.port)?;
                if let Some(p) = ssh_port {
                    doc.cpq_gateway_ssh(&id, p, &user, &host_key)?;
                }
                Ok(format!(
                    "Gateway {id}: address {address}, SSH port {}, user {user}.",
                    ssh_port.map_or("-".into(), |p| p.to_string())
                ))
            })
        }
        ApplianceAction::Delete => {
            let Some(id) = text(&args.id).map(str::to_string) else {
                return Response::error("applianceconfig delete needs the gateway id.");
            };
            config_cmds::edit(shared, req, move |_, doc| {
                if !doc.cpq_gateway_delete(&id)? {
                    return Err(format!("No gateway {id} is added.").into());
                }
                Ok(format!("Gateway {id} removed: from the commit on, its certificate fails the handshake (it can no longer transfer messages), and nothing is released to it."))
            })
        }
    }
}

async fn appliance_new(
    shared: &Arc<Handles>,
    req: &Request,
    args: &ApplianceArgs,
    c: &crate::core::config::Cpq,
) -> Response {
    use crate::core::cpq::shell::{parse_status, ShellLogin};
    let shell = &shared.cpq.gateway_shell;
    let (Some(id), Some(address), Some(password)) = (
        text(&args.id).map(str::to_string),
        text(&args.address).and_then(|a| a.parse::<std::net::IpAddr>().ok()),
        text(&args.password).map(str::to_string),
    ) else {
        return Response::error("applianceconfig new needs --id ID, --address IP (the gateway's SSH address) and its Administrator's password.");
    };
    if !pvo_proto::cpq::is_identifier(&id) {
        return Response::error(format!(
            "\"{id}\" is not a gateway id; allowed: 1-128 of A-Z a-z 0-9 . - _ :"
        ));
    }
    let ssh_port = args.ssh_port.unwrap_or(22) as u16;
    let user = text(&args.user).unwrap_or("admin").to_string();
    let mut t = String::new();
    let line = match shell.manager_key_line() {
        Ok(l) => l,
        Err(e) => return Response::error(format!("{e:#}")),
    };
    // 1. Log in once with the password; install the manager's key for that user.
    let first = match shell
        .exec(
            (address, ssh_port),
            &user,
            &ShellLogin::Password(password),
            None,
            &format!("userconfig sshkey add {user} \"{line}\""),
        )
        .await
    {
        Ok(x) => x,
        Err(e) => return Response::error(format!("Cannot add gateway {id}: {e:#}")),
    };
    if first.status != 0 && !first.output.contains("already") {
        return Response::error(format!(
            "Cannot add gateway {id}: installing the manager's SSH key failed: {}",
            first.output.trim()
        ));
    }
    t.push_str(&format!("Logged into {address}:{ssh_port} as {user} (host key {}); the manager's SSH key is installed.\n", first.host_key));
    let login = ShellLogin::ManagerKey;
    // 2. Enroll: the gateway's CPQ certificate from the deployment CA.
    let tmp = c.dir.join(format!("issue-{id}"));
    let issued = crate::core::cpq::pki::ensure_ca(&c.dir, &c.node_id)
        .and_then(|_| {
            crate::core::cpq::pki::issue(
                &c.dir,
                &id,
                crate::core::cpq::pki::CertRole::Gateway,
                &[id.clone(), address.to_string()],
                &tmp,
            )
        })
        .and_then(|serial| {
            let r = |f: &std::path::Path| std::fs::read(f).map_err(anyhow::Error::from);
            Ok((
                r(&tmp.join(crate::core::cpq::pki::NODE_CERT))?,
                r(&tmp.join(crate::core::cpq::pki::NODE_KEY))?,
                r(&tmp.join(crate::core::cpq::pki::CA_CERT))?,
                // The gateway pins this: only it may release to the gateway.
                r(&c.dir.join(crate::core::cpq::pki::NODE_CERT))?,
                serial,
            ))
        });
    let _ = std::fs::remove_dir_all(&tmp);
    let (cert, nkey, ca, manager_cert, serial) = match issued {
        Ok(x) => x,
        Err(e) => return Response::error(format!("Cannot issue the certificate of {id}: {e:#}")),
    };
    let install = format!(
        "cpqcert install --id {id} --cert {} --key {} --ca {} --manager {}",
        hex::encode(&cert),
        hex::encode(&nkey),
        hex::encode(&ca),
        hex::encode(&manager_cert)
    );
    match shell
        .exec(
            (address, ssh_port),
            &user,
            &login,
            Some(&first.host_key),
            &install,
        )
        .await
    {
        Ok(x) if x.status == 0 => t.push_str(&format!(
            "CPQ certificate of {id} issued and installed on the gateway.\n"
        )),
        Ok(x) => {
            return Response::error(format!(
                "{t}Cannot install the CPQ certificate on {id}: {}",
                x.output.trim()
            ))
        }
        Err(e) => {
            return Response::error(format!("{t}Cannot log in with the manager's key: {e:#}"))
        }
    }
    // 3. Where released mail goes.
    let ep = match shell.exec((address, ssh_port), &user, &login, Some(&first.host_key), "pvoconfig status --json").await {
        Ok(x) => match parse_status(&x.output) {
            Ok(ep) => ep,
            Err(e) => return Response::error(format!("{t}{e:#} (the gateway may need `commit` of its new [cpq] first; then `applianceconfig new` again)")),
        },
        Err(e) => return Response::error(format!("{t}{e:#}")),
    };
    t.push_str(&format!(
        "The gateway delivers released mail to {}:{}.\n",
        ep.address, ep.port
    ));
    if !ep.node_id.is_empty() && ep.node_id != id {
        t.push_str(&format!("The gateway still calls itself {}: run `commit` on it so that its [cpq] node_id becomes {id}.\n", ep.node_id));
    }
    let host_key = first.host_key.clone();
    let mut r = config_cmds::edit(shared, req, move |_, doc| {
        doc.cpq_gateway_set(&id, &ep.address.to_string(), ep.port)?;
        doc.cpq_gateway_ssh(&id, ssh_port, &user, &host_key)?;
        doc.cpq_gateway_serial(&id, &serial)?;
        Ok(format!(
            "Gateway {id} added with the PVO service (certificate serial {serial})."
        ))
    });
    r.text = format!("{t}{}", r.text);
    r
}

/// `pvoconfig service [--interface NAME] [--port P]`: the interface and port of this
/// node's cpq_listener (the PVO service; 7025 by default), pending until commit.
fn service(shared: &Arc<Handles>, req: &Request, args: &PvoArgs) -> Response {
    let args = args.clone();
    config_cmds::edit(shared, req, move |cfg, doc| {
        let iface = match text(&args.interface) {
            Some(name) => match cfg.interface_by_name(name) {
                Some(i) => Some(cfg.interfaces[i].name.clone()),
                None => {
                    return Err(format!(
                        "Unknown interface \"{name}\"; allowed: {}.",
                        cfg.interfaces
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                    .into())
                }
            },
            None => None,
        };
        let port = args.port;
        if iface.is_none() && port.is_none() {
            return Err(
                "Give --interface NAME and/or --port PORT for the PVO service (cpq_listener)."
                    .into(),
            );
        }
        if let Some(i) = &iface {
            doc.cpq_set("interface", i)?;
        }
        if let Some(p) = port {
            if !(1..=65535).contains(&p) {
                return Err(
                    format!("{p} is not a port; allowed: 1 to 65535 (7025 by default)").into(),
                );
            }
            doc.cpq_set_int("port", p as i64)?;
        }
        let current = cfg
            .cpq
            .as_ref()
            .map(|c| (cfg.interfaces[c.interface].name.clone(), c.port));
        Ok(format!(
            "PVO service (cpq_listener): interface {}, port {}.",
            iface
                .or_else(|| current.as_ref().map(|c| c.0.clone()))
                .unwrap_or_else(|| "the first".into()),
            port.unwrap_or(current.map_or(7025, |c| u64::from(c.1)))
        ))
    })
}
