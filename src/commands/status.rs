//! `status`, `suspend`/`resume`, `suspendlisteners`/`resumelisteners`,
//! `suspenddel`/`resumedel`, `resetcounters`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;

use super::command::{text, ListenersArgs, StatusArgs, SuspendArgs};
use super::replies::{
    self, CounterTable, Counters, ListenerRow, SelfSigned, StatusGauges, StatusReply, SystemStatus,
};
use crate::commands::protocol::Response;
use crate::core::mail_log::ctime;
use crate::core::queue::{Event, Gauges};
use crate::core::state::Resumed;
use crate::core::state::{CounterSet, Handles};

use crate::core::clock::unix_now as now;

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else {
        format!("{h}h {m}m {s}s")
    }
}

pub async fn gauges(shared: &Handles) -> Gauges {
    let (tx, rx) = oneshot::channel();
    shared.mail.queue.send(Event::Gauges(tx));
    rx.await.unwrap_or_default()
}

/// "Online" unless every listener is suspended (nothing is accepted).
pub fn system_status(shared: &Handles) -> &'static str {
    let states = shared.control.listeners.states();
    if !states.is_empty() && states.iter().all(|s| s.suspended) {
        "Offline"
    } else {
        "Online"
    }
}

pub async fn status(shared: &Arc<Handles>, args: &StatusArgs) -> Response {
    let detail = args.detail;
    let g = gauges(shared).await;
    let c = shared.mail.counters.snapshot();
    let reset = shared.mail.counters.since_reset();
    let lifetime = shared.mail.counters.lifetime();
    let up = shared.control.started.elapsed().as_secs();
    let started_at = now().saturating_sub(up);
    let state = system_status(shared);
    let listeners = shared.control.listeners.states();
    let suspended: Vec<&str> = listeners
        .iter()
        .filter(|l| l.suspended)
        .map(|l| l.name.as_str())
        .collect();
    let spool = shared.mail.spool.stats();
    let mut t = String::new();
    if !detail {
        t.push_str("Enter \"status detail\" for more information.\n\n");
    }
    t.push_str(&format!(
        "Status as of:                  {} GMT\n",
        ctime(now())
    ));
    t.push_str(&format!(
        "Up since:                      {} GMT ({})\n",
        ctime(started_at),
        human_duration(up)
    ));
    t.push_str(&format!(
        "Last counter reset:            {}\n",
        shared
            .mail
            .counters
            .reset_at()
            .map_or("Never".to_string(), |r| format!("{} GMT", ctime(r)))
    ));
    t.push_str(&format!("System status:                 {state}\n"));
    if !suspended.is_empty() && state == "Online" {
        t.push_str(&format!(
            "Listeners suspended:           {}\n",
            suspended.join(", ")
        ));
    }
    if g.delivery_suspended {
        t.push_str("Delivery:                      Suspended\n");
    }
    let cluster = cluster_state(shared);
    if let Some(c) = &cluster {
        t.push_str(&format!(
            "Cluster:                       {}\n",
            cluster_line(c)
        ));
    }
    t.push_str(&format!(
        "Oldest Message:                {}\n",
        g.oldest_received_at
            .map_or("No Messages".to_string(), |r| human_duration(
                now().saturating_sub(r)
            ))
    ));
    t.push('\n');
    t.push_str("Counters:                          Reset         Uptime       Lifetime\n");
    let row = |t: &mut String, label: &str, f: fn(&CounterSet) -> u64| {
        t.push_str(&format!(
            "    {label:<28}{:>10} {:>14} {:>14}\n",
            f(&reset),
            f(&c),
            f(&lifetime)
        ));
    };
    t.push_str("  Receiving\n");
    row(&mut t, "Messages Received", |s| s.messages_received);
    row(&mut t, "Recipients Received", |s| s.recipients_received);
    row(&mut t, "Connections Received", |s| s.connections_in);
    t.push_str("  Rejection\n");
    row(&mut t, "Rejected Recipients", |s| s.rejected_recipients);
    t.push_str("  Queue\n");
    row(&mut t, "Soft Bounced Events", |s| s.soft_bounced);
    t.push_str("  Completion\n");
    row(&mut t, "Completed Recipients", |s| {
        s.delivered_rcpts + s.bounced_rcpts
    });
    row(&mut t, "Hard Bounced Recipients", |s| s.bounced_rcpts);
    row(&mut t, "Delivered Recipients", |s| s.delivered_rcpts);
    if detail {
        let rate = |n: u64| {
            if up == 0 {
                0.0
            } else {
                n as f64 * 3600.0 / up as f64
            }
        };
        t.push_str("\nRates (Events Per Hour, average since start):\n");
        t.push_str(&format!(
            "    {:<28}{:>10.0}\n",
            "Messages Received",
            rate(c.messages_received)
        ));
        t.push_str(&format!(
            "    {:<28}{:>10.0}\n",
            "Recipients Received",
            rate(c.recipients_received)
        ));
        t.push_str(&format!(
            "    {:<28}{:>10.0}\n",
            "Completed Recipients",
            rate(c.delivered_rcpts + c.bounced_rcpts)
        ));
    }
    t.push_str("\nGauges:                           Current\n");
    t.push_str("  Connections\n");
    t.push_str(&format!(
        "    {:<28}{:>10}\n",
        "Current Inbound Conn.", c.connections_open
    ));
    t.push_str(&format!(
        "    {:<28}{:>10}\n",
        "Current Outbound Conn.", g.connections_out
    ));
    t.push_str("  Queue\n");
    t.push_str(&format!(
        "    {:<28}{:>10}\n",
        "Active Recipients", g.active_recipients
    ));
    t.push_str(&format!(
        "    {:<28}{:>10}\n",
        "Messages In Work Queue", g.messages
    ));
    t.push_str(&format!(
        "    {:<28}{:>10}\n",
        "Kilobytes Used",
        spool.live_bytes / 1024
    ));
    let self_signed = shared
        .inbound_certificate
        .self_signed(&shared.config.current());
    if detail {
        t.push_str("\nListeners:\n");
        for l in &listeners {
            t.push_str(&format!(
                "    {:<28}{:>22} {}\n",
                l.name,
                l.address.to_string(),
                if l.suspended {
                    "suspended"
                } else {
                    "receiving"
                }
            ));
        }
        // Said because clients cannot verify it (`state::InboundCertificate`).
        if let Some(note) = &self_signed {
            t.push_str(&format!(
                "    {} serve a {note}\n",
                served_by(shared).join(", ")
            ));
        }
        // The management servers where they listen now (a commit may move them).
        let services = [
            (
                "SSH",
                shared
                    .control
                    .servers
                    .address(crate::core::state::ServerKind::Ssh),
            ),
            (
                "Web (HTTPS)",
                shared
                    .control
                    .servers
                    .address(crate::core::state::ServerKind::Web),
            ),
        ];
        t.push_str("\nServices:\n");
        for (name, addr) in services {
            t.push_str(&format!(
                "    {:<28}{:>22}\n",
                name,
                addr.map_or("off".to_string(), |a| a.to_string())
            ));
        }
    }
    let features = super::feature_cmds::rows(shared, now());
    t.push('\n');
    t.push_str(&super::feature_cmds::section(&features));
    let data = StatusReply {
        system_status: if state == "Offline" {
            SystemStatus::Offline
        } else {
            SystemStatus::Online
        },
        self_signed_certificate: self_signed.map(|note| SelfSigned {
            served_by: served_by(shared),
            certificate: note,
        }),
        up_since: started_at,
        uptime_seconds: up,
        delivery_suspended: g.delivery_suspended,
        listeners: listeners.iter().map(ListenerRow::from).collect(),
        ssh: shared
            .control
            .servers
            .address(crate::core::state::ServerKind::Ssh)
            .map(|a| a.to_string()),
        web: shared
            .control
            .servers
            .address(crate::core::state::ServerKind::Web)
            .map(|a| a.to_string()),
        counters: CounterTable {
            reset: Counters::from(&reset),
            uptime: Counters::from(&c),
            lifetime: Counters::from(&lifetime),
        },
        gauges: StatusGauges {
            connections_in: c.connections_open,
            connections_out: g.connections_out as u64,
            active_recipients: g.active_recipients as u64,
            messages_in_queue: g.messages as u64,
            kilobytes_used: spool.live_bytes / 1024,
            oldest_message_received_at: g.oldest_received_at,
        },
        features: features.features,
        cluster,
    };
    Response::ok(t, replies::data(&data))
}

pub async fn suspend(shared: &Arc<Handles>, args: &SuspendArgs) -> Response {
    let delay = args.delay.unwrap_or(30);
    let names = shared.control.listeners.suspend(&[]);
    let (tx, rx) = oneshot::channel();
    shared.mail.queue.send(Event::SuspendDelivery(true, tx));
    let was_suspended = rx.await.unwrap_or(false);
    if !names.is_empty() {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::ReceivingSuspended { listeners: &names });
    }
    if !was_suspended {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::DeliverySuspended);
    }
    shared
        .control
        .disconnect_sessions_after(Duration::from_secs(delay));
    let mut text = String::new();
    if names.is_empty() {
        text.push_str("Receiving was already suspended.\n");
    } else {
        text.push_str(&format!("Receiving suspended for {}.\n", names.join(", ")));
    }
    text.push_str("Delivery suspended.\n");
    if delay > 0 {
        text.push_str(&format!(
            "Open connections are closed after {delay} seconds.\n"
        ));
    }
    Response::ok(
        text,
        json!({ "suspended_listeners": names, "delivery_suspended": true, "delay": delay }),
    )
}

pub async fn resume(shared: &Arc<Handles>) -> Response {
    shared.control.cancel_disconnect();
    let resumed = shared.control.listeners.resume(&[]);
    // Delivery resumes even if a listener cannot: the administrator asked
    // for both, and queued mail should not wait for a port.
    let (tx, rx) = oneshot::channel();
    shared.mail.queue.send(Event::SuspendDelivery(false, tx));
    let was_suspended = rx.await.unwrap_or(false);
    if was_suspended {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::DeliveryResumed);
    }
    // The appliance answers with the one line "Receiving resumed for ..."
    // (the appliance shows `Receiving resumed for euq_listener, cpq_listener.`);
    // that delivery resumed too is in mail_logs and in the JSON.
    resumed_answer(
        shared,
        resumed,
        json!({ "delivery_resumed": was_suspended }),
    )
}

/// The answer of `resume` and `resumelisteners`: the appliance's line, and
/// an error naming each listener that could not listen again.
fn resumed_answer(shared: &Handles, r: Resumed, mut data: serde_json::Value) -> Response {
    let mut text = String::new();
    if !r.receiving.is_empty() {
        text = format!("Receiving resumed for {}.", r.receiving.join(", "));
        shared
            .mail
            .log
            .emit(crate::core::events::Event::ReceivingResumed {
                listeners: &r.receiving,
            });
    }
    for why in &r.failed {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::StaysSuspended { why });
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "{why}; it stays suspended. Free the port, then run resumelisteners."
        ));
    }
    data["resumed_listeners"] = json!(r.receiving);
    if r.failed.is_empty() {
        return Response::ok(text, data);
    }
    data["error"] = json!(r.failed);
    Response {
        ok: false,
        text,
        data,
        kind: Some(crate::commands::protocol::ErrorKind::Unavailable),
    }
}

/// The listeners named by `listener`: `all` (or nothing) is every one,
/// otherwise one name or several separated by commas, as the appliance
/// accepts them. Empty means all.
fn selected(shared: &Handles, args: &ListenersArgs) -> Result<Vec<String>, Response> {
    let which = text(&args.listener).unwrap_or("all");
    let wanted: Vec<&str> = which
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    if wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case("all")) {
        return Ok(Vec::new());
    }
    let names = shared.control.listeners.names();
    let mut out = Vec::new();
    for w in wanted {
        match names.iter().find(|n| n.eq_ignore_ascii_case(w)) {
            Some(n) => out.push(n.clone()),
            None => {
                return Err(Response::error(format!(
                    "Unknown listener \"{w}\". Listeners: {}, or all.",
                    names.join(", ")
                )))
            }
        }
    }
    Ok(out)
}

pub fn suspend_listeners(shared: &Arc<Handles>, args: &ListenersArgs) -> Response {
    let sel = match selected(shared, args) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let names = shared.control.listeners.suspend(&sel);
    if names.is_empty() {
        return Response::ok(
            "The selected listeners were already suspended.",
            json!({ "suspended_listeners": names }),
        );
    }
    shared
        .mail
        .log
        .emit(crate::core::events::Event::ReceivingSuspended { listeners: &names });
    Response::ok(
        format!("Receiving suspended for {}.", names.join(", ")),
        json!({ "suspended_listeners": names }),
    )
}

pub fn resume_listeners(shared: &Arc<Handles>, args: &ListenersArgs) -> Response {
    let sel = match selected(shared, args) {
        Ok(s) => s,
        Err(r) => return r,
    };
    shared.control.cancel_disconnect();
    let resumed = shared.control.listeners.resume(&sel);
    resumed_answer(shared, resumed, json!({}))
}

pub async fn suspend_delivery(shared: &Arc<Handles>, on: bool) -> Response {
    let (tx, rx) = oneshot::channel();
    shared.mail.queue.send(Event::SuspendDelivery(on, tx));
    let was = rx.await.unwrap_or(false);
    let text = match (on, was) {
        (true, false) => "Delivery suspended.",
        (true, true) => "Delivery was already suspended.",
        (false, true) => "Delivery resumed.",
        (false, false) => "Delivery was not suspended.",
    };
    if on != was {
        shared.mail.log.emit(if on {
            crate::core::events::Event::DeliverySuspended
        } else {
            crate::core::events::Event::DeliveryResumed
        });
    }
    Response::ok(text, json!({ "delivery_suspended": on }))
}

pub fn reset_counters(shared: &Arc<Handles>) -> Response {
    shared.mail.counters.reset();
    Response::ok("Counters reset.", json!({ "reset_at": now() }))
}

/// Who serves the inbound certificate: every listener but the CPQ one (which has the
/// deployment's), and the web server as "HTTPS" when it runs.
pub(super) fn served_by(shared: &crate::core::state::Handles) -> Vec<String> {
    let mut names: Vec<String> = shared
        .control
        .listeners
        .states()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != crate::core::config::CPQ_LISTENER)
        .collect();
    if shared
        .control
        .servers
        .address(crate::core::state::ServerKind::Web)
        .is_some()
    {
        names.push("HTTPS".to_string());
    }
    names
}

/// The machine's standing with its cluster, for `status` and `diagnose`.
pub fn cluster_state(shared: &Handles) -> Option<replies::ClusterState> {
    let s = shared.cluster.status();
    let machine = s.machine.clone()?;
    Some(replies::ClusterState {
        cluster: shared
            .cluster
            .snapshot()
            .map(|snap| snap.members.cluster.to_string()),
        machine,
        connected: s.connected,
        held: s.held,
        since: s.since,
        why: s.why,
        revision: s.revision,
        head: s.head,
    })
}

/// "east, machine gw1: connected, runs revision 12", or what disconnected means.
pub fn cluster_line(c: &replies::ClusterState) -> String {
    let name = c.cluster.as_deref().unwrap_or("?");
    if c.connected {
        format!(
            "{name}, machine {}: connected, runs revision {}",
            c.machine, c.revision
        )
    } else if c.held {
        format!(
            "{name}, machine {}: DISCONNECTED by `clusterconfig disconnect` since {} GMT; runs its last good configuration (revision {}) and takes no configuration changes",
            c.machine,
            ctime(c.since),
            c.revision
        )
    } else {
        format!(
            "{name}, machine {}: DISCONNECTED from the cluster's store since {} GMT ({}); runs its last good configuration (revision {}) and takes no configuration changes until it is back",
            c.machine,
            ctime(c.since),
            c.why.as_deref().unwrap_or("not connected"),
            c.revision
        )
    }
}
