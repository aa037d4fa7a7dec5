//! `GET /metrics`: Prometheus text format, written by hand from the node's counters, the
//! queue's host table and the quarantine store. Unauthenticated (the management
//! interface only: put `[web]` on it).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::node::Shared;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut out = String::new();
    let c = shared.counters.lifetime();
    for (name, help, v) in [
        (
            "pvo_connections_in_total",
            "Inbound SMTP connections accepted.",
            c.connections_in,
        ),
        (
            "pvo_messages_received_total",
            "Messages received.",
            c.messages_received,
        ),
        (
            "pvo_recipients_received_total",
            "Recipients accepted.",
            c.recipients_received,
        ),
        (
            "pvo_recipients_rejected_total",
            "Recipients rejected.",
            c.rejected_recipients,
        ),
        (
            "pvo_recipients_delivered_total",
            "Recipients delivered.",
            c.delivered_rcpts,
        ),
        (
            "pvo_recipients_bounced_total",
            "Recipients hard-bounced.",
            c.bounced_rcpts,
        ),
        (
            "pvo_recipients_soft_bounced_total",
            "Delivery attempts that failed temporarily.",
            c.soft_bounced,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        "pvo_connections_open",
        "gauge",
        "Inbound SMTP connections open.",
    );
    let _ = writeln!(out, "pvo_connections_open {}", c.connections_open);

    let hosts = shared.queue.hosts().await;
    family(
        &mut out,
        "pvo_queue_recipients",
        "gauge",
        "Recipients queued per destination host.",
    );
    for h in &hosts {
        let _ = writeln!(
            out,
            "pvo_queue_recipients{{host=\"{}\"}} {}",
            label(&h.host),
            h.active_recipients
        );
    }
    family(
        &mut out,
        "pvo_destination_delivered_total",
        "counter",
        "Recipients delivered per destination host.",
    );
    for h in &hosts {
        let _ = writeln!(
            out,
            "pvo_destination_delivered_total{{host=\"{}\"}} {}",
            label(&h.host),
            h.delivered_recipients
        );
    }
    // CPQ: the transfer queue of a gateway (the.cpq.host) and the release queue of a
    // manager (the.cpq.release.host) are destinations like any other.
    family(
        &mut out,
        "pvo_cpq_transfers_total",
        "counter",
        "CPQ transfers (gateway) or releases (manager) delivered.",
    );
    family(
        &mut out,
        "pvo_cpq_failures_total",
        "counter",
        "CPQ transfer or release attempts that failed.",
    );
    for h in hosts.iter().filter(|h| h.host.starts_with("the.cpq.")) {
        let l = label(&h.host);
        let _ = writeln!(
            out,
            "pvo_cpq_transfers_total{{host=\"{l}\"}} {}",
            h.delivered_recipients
        );
        let _ = writeln!(
            out,
            "pvo_cpq_failures_total{{host=\"{l}\"}} {}",
            h.soft_bounced + h.hard_bounced
        );
    }

    let usage = shared.local_quarantine.with(|s| s.usage()).await;
    if let Ok(u) = usage {
        family(
            &mut out,
            "pvo_quarantine_messages",
            "gauge",
            "Messages held per quarantine.",
        );
        for q in &u.quarantines {
            let _ = writeln!(
                out,
                "pvo_quarantine_messages{{quarantine=\"{}\"}} {}",
                label(&q.name),
                q.messages
            );
        }
        family(
            &mut out,
            "pvo_quarantine_bytes",
            "gauge",
            "Bytes held per quarantine.",
        );
        for q in &u.quarantines {
            let _ = writeln!(
                out,
                "pvo_quarantine_bytes{{quarantine=\"{}\"}} {}",
                label(&q.name),
                q.bytes
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
