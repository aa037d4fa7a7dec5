//! The manager's live view of its gateways (`applianceconfig status`), and the CPQ
//! counters of `/metrics` on both sides.
//!
//! What the manager knows of a gateway comes from two places. Its own counters, kept in
//! memory where things happen: transfers received per gateway (`manager::receive_transfer`),
//! refused CPQ connections and records by gateway id or source address
//! (`smtp_server::session`), and the outcome of each release delivered to it
//! (`delivery`). And the gateway's own view, asked over SSH with the manager's key
//! (`pvoconfig status --json`, through `state::GatewayShell`): its mode, how many
//! recipients wait under `the.cpq.host` (its backlog for this manager) and its migration.
//! A background task asks every gateway that has SSH configured at most once per
//! `[cpq] status_poll` seconds (30 by default) and caches the answer; the command answers
//! from the cache, and waits (at most [`FIRST_CHECK_WAIT`]) only for a gateway that was
//! never checked. Nothing here is persisted: the counters start at zero with the node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::core::config::{EnrolledGateway, Role, CPQ_RELEASE_HOST};
use crate::core::cpq::handles::Deps;

/// How long `applianceconfig status` waits for the first check of a gateway.
pub const FIRST_CHECK_WAIT: Duration = Duration::from_secs(3);

/// A gateway that sent nothing for this long and cannot be reached over SSH is
/// unreachable.
const RECENT: u64 = 300;

use crate::core::cpq::stats::{now, Check, Seen};

/// The added gateway with `id` whose address is `ip`, if any.
pub fn gateway_at(shared: &Deps, ip: IpAddr) -> Option<String> {
    shared
        .config
        .current()
        .cpq
        .as_ref()?
        .gateways
        .iter()
        .find(|g| g.address == ip)
        .map(|g| g.id.clone())
}

/// Starts the background checks on a manager (once; later calls do nothing). Called at
/// node start and after every commit.
pub fn start(shared: &Deps) {
    if shared.config.current().role != Role::Manager
        || tokio::runtime::Handle::try_current().is_err()
    {
        return;
    }
    if shared.cpq.state.stats.poller.swap(true, Ordering::SeqCst) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let cfg = shared.config.current();
            let interval = cfg.cpq.as_ref().map_or(30, |c| c.status_poll).max(1);
            let due: Vec<String> = cfg
                .cpq
                .as_ref()
                .map(crate::core::config::Cpq::ssh_gateway_ids)
                .unwrap_or_default();
            drop(cfg);
            for id in due {
                let last = shared
                    .cpq
                    .state
                    .stats
                    .checks
                    .lock()
                    .unwrap()
                    .get(&id)
                    .and_then(|c| c.attempted_at);
                if last.is_none_or(|t| now().saturating_sub(t) + 1 >= interval) {
                    spawn_check(&shared, &id);
                }
            }
            tokio::time::sleep(Duration::from_secs(interval)).await;
        }
    });
}

/// Checks `id` over SSH in the background, unless a check of it is running.
fn spawn_check(shared: &Deps, id: &str) {
    {
        let mut checks = shared.cpq.state.stats.checks.lock().unwrap();
        let c = checks.entry(id.to_string()).or_default();
        if c.running {
            return;
        }
        c.running = true;
    }
    let shared = shared.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let r = shared.cpq.gateway_shell.query_status(&id).await;
        let stats = &shared.cpq.state.stats;
        {
            let mut checks = stats.checks.lock().unwrap();
            let c = checks.entry(id.clone()).or_default();
            c.running = false;
            c.attempted_at = Some(now());
            match r {
                Ok(data) => {
                    c.checked_at = c.attempted_at;
                    c.error = None;
                    c.mode = data["mode"].as_str().map(str::to_string);
                    c.backlog = data["queued_for_manager"].as_u64();
                    c.migration = Some(data["migration"].clone()).filter(|m| !m.is_null());
                    c.cluster = Some(data["cluster"].clone()).filter(|m| m.is_object());
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    if c.error.as_deref() != Some(text.as_str()) {
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::GatewayStatusFailed {
                                gateway: &id,
                                why: &text,
                            });
                    }
                    c.error = Some(text);
                }
            }
        }
        stats.checked.notify_waiters();
    });
}

/// Waits (at most [`FIRST_CHECK_WAIT`]) until every gateway in `ids` was checked once.
async fn first_checks(shared: &Deps, ids: &[String]) {
    let never = |shared: &Deps| -> Vec<String> {
        let checks = shared.cpq.state.stats.checks.lock().unwrap();
        ids.iter()
            .filter(|id| checks.get(*id).is_none_or(|c| c.attempted_at.is_none()))
            .cloned()
            .collect()
    };
    let todo = never(shared);
    if todo.is_empty() {
        return;
    }
    for id in &todo {
        spawn_check(shared, id);
    }
    let _ = tokio::time::timeout(FIRST_CHECK_WAIT, async {
        loop {
            let notified = shared.cpq.state.stats.checked.notified();
            if never(shared).is_empty() {
                return;
            }
            notified.await;
        }
    })
    .await;
}

/// The status of every added gateway (or only `only`): the JSON of
/// `applianceconfig status`.
pub async fn status(shared: &Deps, only: Option<&str>) -> Result<Value, String> {
    let cfg = shared.config.current();
    let gateways: Vec<EnrolledGateway> = cfg
        .cpq
        .as_ref()
        .map(|c| c.gateways.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|g| only.is_none_or(|id| g.id == id))
        .collect();
    let interval = cfg.cpq.as_ref().map_or(30, |c| c.status_poll);
    drop(cfg);
    if let Some(id) = only {
        if gateways.is_empty() {
            return Err(format!(
                "No gateway {id} is added (`applianceconfig list` shows the added ones)."
            ));
        }
    }
    let with_ssh: Vec<String> = gateways
        .iter()
        .filter(|g| g.ssh_port.is_some())
        .map(|g| g.id.clone())
        .collect();
    first_checks(shared, &with_ssh).await;

    // What waits under the.cpq.release.host, by gateway.
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared
        .mail
        .queue
        .send(crate::core::queue::Event::Recipients(
            crate::core::queue::Selection::Host(CPQ_RELEASE_HOST.to_string()),
            tx,
        ));
    let rows = rx.await.unwrap_or_default();
    let mut waiting: HashMap<String, u64> = HashMap::new();
    {
        let mids = shared.cpq.state.stats.release_mids.lock().unwrap();
        for r in &rows {
            if let Some(gw) = mids.get(&r.mid) {
                *waiting.entry(gw.clone()).or_default() += 1;
            }
        }
    }
    // Messages held in the central store, by gateway.
    let ids: Vec<String> = gateways.iter().map(|g| g.id.clone()).collect();
    let held: HashMap<String, u64> = shared
        .scan
        .local_quarantine
        .with(move |s| {
            ids.into_iter()
                .filter_map(|id| {
                    let q = pvo_quarantine::SearchQuery {
                        gateway: Some(id.clone()),
                        limit: 0,
                        max_count: None,
                        ..Default::default()
                    };
                    s.search(&q).ok().map(|p| (id, p.total))
                })
                .collect()
        })
        .await;

    let t = now();
    let seen = shared.cpq.state.stats.seen.lock().unwrap().clone();
    let checks = shared.cpq.state.stats.checks.lock().unwrap().clone();
    let mut out = Vec::new();
    for g in &gateways {
        let by_id = seen.get(&g.id).cloned().unwrap_or_default();
        let by_addr = seen
            .get(&g.address.to_string())
            .cloned()
            .unwrap_or_default();
        let last_refusal = [by_id.last_refusal.clone(), by_addr.last_refusal]
            .into_iter()
            .flatten()
            .max_by_key(|(at, _)| *at);
        let check = checks.get(&g.id).cloned().unwrap_or_default();
        let ssh_error = if g.ssh_port.is_none() {
            Some(format!(
                "no SSH access: gateway {} was added without SSH (`pvo manager enroll`)",
                g.id
            ))
        } else if check.attempted_at.is_none() {
            Some(format!(
                "the first check over SSH has not finished yet (it may take up to {} s)",
                shared.cpq.gateway_shell.timeout().as_secs() * 2
            ))
        } else {
            check.error.clone()
        };
        let recent = by_id
            .last_transfer_at
            .is_some_and(|at| t.saturating_sub(at) <= RECENT.max(interval * 2));
        let (state, state_text) = judge(g, &check, &by_id, recent, interval);
        out.push(json!({
            "id": g.id,
            "address": g.address.to_string(),
            "port": g.port,
            "state": state,
            "state_text": state_text,
            "mode": check.mode,
            "backlog": check.backlog,
            "migration": check.migration,
            "cluster": check.cluster.as_ref().and_then(|c| c["name"].as_str()),
            "checked_at": check.checked_at,
            "ssh_error": ssh_error,
            "transfers_received": by_id.transfers,
            "last_transfer_at": by_id.last_transfer_at,
            "last_refusal": last_refusal.map(|(at, text)| json!({ "at": at, "text": text })),
            "held_messages": held.get(&g.id).copied().unwrap_or(0),
            "releases_waiting": waiting.get(&g.id).copied().unwrap_or(0),
            "last_release_error": by_id.last_release_error,
        }));
    }
    let clusters = clusters(&gateways, &checks);
    Ok(json!({ "gateways": out, "clusters": clusters, "releases_waiting_total": rows.len() }))
}

/// The clusters the added gateways belong to, as they said over SSH: for each, the
/// machines its PVO settings cover, those added here and those not yet (with the
/// address to add them at). The wizard covers a cluster only when none is missing.
fn clusters(gateways: &[EnrolledGateway], checks: &HashMap<String, Check>) -> Vec<Value> {
    use std::collections::BTreeMap;
    let mut by_name: BTreeMap<String, (Vec<String>, BTreeMap<String, String>)> = BTreeMap::new();
    for g in gateways {
        let Some(c) = checks.get(&g.id).and_then(|c| c.cluster.as_ref()) else {
            continue;
        };
        // What a gateway says is shown on the manager (text, UI, commands to run): only
        // what is a cluster or machine name and an address, nothing else.
        let Some(name) = c["name"]
            .as_str()
            .filter(|n| pvo_cluster::Name::new(n).is_ok())
        else {
            continue;
        };
        let entry = by_name.entry(name.to_string()).or_default();
        entry.0.push(g.id.clone());
        for m in c["pvo_machines"].as_array().into_iter().flatten() {
            let n = m["name"]
                .as_str()
                .filter(|n| pvo_cluster::Name::new(n).is_ok());
            let a = m["address"].as_str().filter(|a| {
                !a.is_empty()
                    && a.len() <= 253
                    && a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            });
            if let (Some(n), Some(a)) = (n, a) {
                entry.1.insert(n.to_string(), a.to_string());
            }
        }
    }
    by_name
        .into_iter()
        .map(|(name, (added, machines))| {
            let missing: Vec<Value> = machines
                .iter()
                .filter(|(m, _)| !added.contains(m))
                .map(|(m, a)| json!({ "name": m, "address": a }))
                .collect();
            json!({
                "name": name,
                "machines": machines.keys().collect::<Vec<_>>(),
                "added": added,
                "missing": missing,
            })
        })
        .collect()
}

/// What keeps the wizard from covering every machine of a cluster: one sentence per
/// cluster with machines not added, naming each and how to add it.
pub fn uncovered(status: &Value) -> Vec<String> {
    status["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let missing = c["missing"].as_array().filter(|m| !m.is_empty())?;
            Some(format!(
                "Cluster {} centralizes {}, and not all of them are added on this manager: add {}.",
                c["name"].as_str().unwrap_or(""),
                c["machines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                missing
                    .iter()
                    .map(|m| format!(
                        "{} (`applianceconfig new --id {} --address {}`)",
                        m["name"].as_str().unwrap_or(""),
                        m["name"].as_str().unwrap_or(""),
                        m["address"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
        .collect()
}

/// The state of one gateway and the sentence that explains it.
fn judge(
    g: &EnrolledGateway,
    check: &Check,
    seen: &Seen,
    recent: bool,
    interval: u64,
) -> (&'static str, String) {
    let id = &g.id;
    if let Some(e) = &seen.last_release_error {
        return (
            "unreachable",
            format!(
                "Released messages cannot be delivered to {id}: {e}. Check that the gateway runs and that its cpq_listener is up (`pvoconfig status` on it); they are retried (`delivernow {CPQ_RELEASE_HOST}`)."
            ),
        );
    }
    if g.ssh_port.is_none() {
        return if seen.last_transfer_at.is_some() {
            (
                "online",
                format!(
                    "{id} transfers to this manager, but its backlog is unknown: the manager has no SSH access to it; give it with `applianceconfig new` (or `applianceconfig edit {id} --ssh-port PORT` once the manager's key is installed)."
                ),
            )
        } else {
            (
                "unknown",
                format!(
                    "Nothing is known of {id}: no transfer from it yet and no SSH access; give SSH access with `applianceconfig new` (or `applianceconfig edit {id} --ssh-port PORT` once the manager's key is installed)."
                ),
            )
        };
    }
    match (&check.error, check.attempted_at) {
        (_, None) => (
            "unknown",
            format!("The first check of {id} over SSH is still running; ask again in a moment."),
        ),
        (Some(e), Some(_)) if !recent => (
            "unreachable",
            format!(
                "{id} cannot be checked over SSH ({e}) and sent nothing in the last {} minutes: check that it runs and that the network allows SSH from this manager, then `applianceconfig test {id}`.",
                RECENT.max(interval * 2) / 60
            ),
        ),
        (Some(e), Some(_)) => (
            "online",
            format!(
                "{id} transfers to this manager, but the last check over SSH failed ({e}): its backlog is the one last seen; `applianceconfig test {id}` explains the SSH problem."
            ),
        ),
        (None, Some(_)) => match check.backlog.unwrap_or(0) {
            0 => (
                "online",
                format!(
                    "{id} is {} and nothing waits on it for this manager.",
                    match check.mode.as_deref() {
                        Some("central") => "centralized",
                        Some("local") => "in local mode (its quarantines are its own)",
                        _ => "reachable",
                    }
                ),
            ),
            n => (
                "backlog",
                format!(
                    "{n} message recipients wait on {id} for this manager (the.cpq.host): if the number does not fall, check this manager's cpq_listener (`status`; `resume` if suspended) and run `diagnose` on the gateway."
                ),
            ),
        },
    }
}

/// The text table of `applianceconfig status`.
pub fn table(data: &Value) -> String {
    let gws = data["gateways"].as_array().cloned().unwrap_or_default();
    if gws.is_empty() {
        return "No gateways added (`applianceconfig new`).\n".into();
    }
    let mut t = format!(
        "{:<16} {:<12} {:<8} {:>8} {:>10} {:>6} {:>9}  {}\n",
        "Gateway", "State", "Mode", "Backlog", "Received", "Held", "Releases", "Checked"
    );
    let opt = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for g in &gws {
        t.push_str(&format!(
            "{:<16} {:<12} {:<8} {:>8} {:>10} {:>6} {:>9}  {}\n",
            opt(&g["id"]),
            opt(&g["state"]),
            opt(&g["mode"]),
            opt(&g["backlog"]),
            opt(&g["transfers_received"]),
            opt(&g["held_messages"]),
            opt(&g["releases_waiting"]),
            g["checked_at"]
                .as_u64()
                .map_or("never".to_string(), |at| format!(
                    "{} s ago",
                    now().saturating_sub(at)
                )),
        ));
    }
    for g in &gws {
        t.push_str(&format!("\n{}: {}\n", opt(&g["id"]), opt(&g["state_text"])));
        if let Some(e) = g["ssh_error"].as_str() {
            t.push_str(&format!("  SSH: {e}\n"));
        }
        if let Some(r) = g["last_refusal"].as_object() {
            t.push_str(&format!(
                "  last refused: {} s ago: {}\n",
                now().saturating_sub(r["at"].as_u64().unwrap_or(0)),
                r["text"].as_str().unwrap_or("")
            ));
        }
        if let Some(e) = g["last_release_error"].as_str() {
            t.push_str(&format!("  last release error: {e}\n"));
        }
    }
    for c in data["clusters"].as_array().into_iter().flatten() {
        let list = |v: &Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().or_else(|| x["name"].as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.push_str(&format!(
            "\nCluster {}: centralizes {}; added here: {}",
            opt(&c["name"]),
            list(&c["machines"]),
            list(&c["added"]),
        ));
        match list(&c["missing"]) {
            m if m.is_empty() => t.push('\n'),
            m => t.push_str(&format!("; not added yet: {m}\n")),
        }
    }
    for line in uncovered(data) {
        t.push_str(&format!("  {line}\n"));
    }
    t.push_str(&format!(
        "\nReleased messages waiting for their gateways ({CPQ_RELEASE_HOST}): {}\n",
        data["releases_waiting_total"]
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_says_only_names_and_addresses_of_its_cluster() {
        let g = |id: &str| EnrolledGateway {
            id: id.into(),
            address: "10.0.0.1".parse().unwrap(),
            port: 7025,
            ssh_port: Some(22),
            ssh_user: "admin".into(),
            ssh_host_key: None,
            serial: None,
        };
        let check = |cluster: Value| Check {
            cluster: Some(cluster),
            ..Check::default()
        };
        let mut checks = HashMap::new();
        checks.insert(
            "gw1".to_string(),
            check(json!({ "name": "edge", "pvo_machines": [
                { "name": "gw1", "address": "10.0.0.1" },
                { "name": "gw2\u{1b}[2J", "address": "10.0.0.2" },
                { "name": "gw3", "address": "10.0.0.3; rm -rf /" },
                { "name": "gw4", "address": "10.0.0.4" },
            ] })),
        );
        checks.insert(
            "gw9".to_string(),
            check(json!({ "name": "bad name\n", "pvo_machines": [] })),
        );
        let out = clusters(&[g("gw1"), g("gw9")], &checks);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["machines"], json!(["gw1", "gw4"]));
        assert_eq!(
            out[0]["missing"],
            json!([{ "name": "gw4", "address": "10.0.0.4" }])
        );
        let text = uncovered(&json!({ "clusters": out }));
        assert_eq!(
            text,
            ["Cluster edge centralizes gw1, gw4, and not all of them are added on this manager: add gw4 (`applianceconfig new --id gw4 --address 10.0.0.4`)."]
        );
    }
    use crate::core::cpq::refusal;
    use crate::core::cpq::stats::{Stats, TransferFailure};

    fn gw(ssh: bool) -> EnrolledGateway {
        EnrolledGateway {
            id: "gw1".into(),
            address: "127.0.0.1".parse().unwrap(),
            port: 7025,
            ssh_port: ssh.then_some(22),
            ssh_user: "admin".into(),
            ssh_host_key: None,
            serial: None,
        }
    }

    fn checked(backlog: u64) -> Check {
        Check {
            attempted_at: Some(10),
            checked_at: Some(10),
            mode: Some("central".into()),
            backlog: Some(backlog),
            ..Default::default()
        }
    }

    #[test]
    fn each_state_has_its_cause_and_remedy() {
        let failed = Check {
            attempted_at: Some(10),
            error: Some("SSH to 127.0.0.1:22: connection refused".into()),
            ..Default::default()
        };
        let sent = Seen {
            transfers: 1,
            last_transfer_at: Some(5),
            ..Default::default()
        };
        let release_failed = Seen {
            last_release_error: Some("connection to 127.0.0.1:7025 failed".into()),
            ..Default::default()
        };
        let cases: Vec<(EnrolledGateway, Check, Seen, bool, &str, &str)> = vec![
            (
                gw(true),
                checked(0),
                Seen::default(),
                false,
                "online",
                "nothing waits",
            ),
            (
                gw(true),
                checked(7),
                Seen::default(),
                false,
                "backlog",
                "7 message",
            ),
            (
                gw(true),
                failed.clone(),
                Seen::default(),
                false,
                "unreachable",
                "applianceconfig test gw1",
            ),
            (
                gw(true),
                failed,
                sent.clone(),
                true,
                "online",
                "last check over SSH failed",
            ),
            (
                gw(true),
                checked(0),
                release_failed,
                false,
                "unreachable",
                "cannot be delivered",
            ),
            (
                gw(true),
                Check::default(),
                Seen::default(),
                false,
                "unknown",
                "still running",
            ),
            (
                gw(false),
                Check::default(),
                Seen::default(),
                false,
                "unknown",
                "applianceconfig new",
            ),
            (
                gw(false),
                Check::default(),
                sent,
                true,
                "online",
                "backlog is unknown",
            ),
        ];
        for (g, c, s, recent, state, says) in cases {
            let (got, text) = judge(&g, &c, &s, recent, 30);
            assert_eq!(got, state, "{text}");
            assert!(text.contains(says), "{state}: {text}");
            assert!(!text.contains('\n'), "one sentence: {text}");
        }
    }

    #[test]
    fn connection_errors_are_classified() {
        for (e, want) in [
            ("TLS failed: invalid peer certificate", TransferFailure::Tls),
            (
                "TLS was required but the server does not offer STARTTLS",
                TransferFailure::Tls,
            ),
            ("STARTTLS refused: 454 4.7.0 no", TransferFailure::Tls),
            ("banner: 554 5.7.1 Access denied", TransferFailure::Refused),
            ("HELO refused: 550 no", TransferFailure::Refused),
            (
                "connection to 127.0.0.2:7025 failed: Connection refused",
                TransferFailure::Connect,
            ),
            (
                "no CPQ certificate on this node (enroll it)",
                TransferFailure::Connect,
            ),
        ] {
            assert_eq!(TransferFailure::of_connection_error(e), want, "{e}");
        }
    }

    #[test]
    fn counters_and_release_bookkeeping() {
        let s = Stats::default();
        s.received("gw1");
        s.received("gw1");
        s.refused("10.0.0.9", refusal::ADDRESS, "not added");
        s.refused("gw1", refusal::TLS, "no certificate");
        assert_eq!(s.received_by_gateway()["gw1"], 2);
        assert_eq!(s.refusals()[refusal::ADDRESS], 1);
        s.release_queued(42, "gw1");
        s.release_outcome(42, "gw1", Err("down".into()));
        assert_eq!(
            s.seen.lock().unwrap()["gw1"].last_release_error.as_deref(),
            Some("down")
        );
        assert!(s.release_mids.lock().unwrap().contains_key(&42));
        s.release_outcome(42, "gw1", Ok(true));
        assert!(s.seen.lock().unwrap()["gw1"].last_release_error.is_none());
        assert!(s.release_mids.lock().unwrap().is_empty());
        assert_eq!(s.releases.load(Ordering::Relaxed), 1);
        assert_eq!(s.release_failures.load(Ordering::Relaxed), 1);
        s.transfer_failed(TransferFailure::Deferred);
        assert_eq!(s.transfer_failures()[&TransferFailure::Deferred], 1);
    }

    #[test]
    fn the_table_shows_every_gateway_and_why() {
        let data = json!({ "gateways": [{
            "id": "gw1", "state": "backlog", "mode": "central", "backlog": 3,
            "transfers_received": 0, "held_messages": 0, "releases_waiting": 0,
            "checked_at": null, "state_text": "3 message recipients wait", "ssh_error": null,
            "last_refusal": { "at": 0, "text": "TLS failed" }, "last_release_error": null
        }], "releases_waiting_total": 0 });
        let t = table(&data);
        assert!(
            t.contains("gw1") && t.contains("backlog") && t.contains("never"),
            "{t}"
        );
        assert!(
            t.contains("3 message recipients wait") && t.contains("TLS failed"),
            "{t}"
        );
        assert_eq!(
            table(&json!({ "gateways": [], "releases_waiting_total": 0 })),
            "No gateways added (`applianceconfig new`).\n"
        );
    }
}
