//! `GET /metrics`: Prometheus text format, written by hand from the node's counters, the
//! queue's host table and the quarantine store. Unauthenticated (the management
//! interface only: put `[web]` on it).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;

use crate::core::state::{ConfigHandle, CpqHandle, MailHandle, ScanHandle};

/// The handles `/metrics` reads: the configuration (the role), the counters and the
/// queue's host table, the quarantine store, and the CPQ counters.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    pub scan: Arc<ScanHandle>,
    pub cpq: Arc<CpqHandle>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A family of one series.
fn single(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {v}");
}

/// A family with one series per value of the label `key`.
fn labelled<S: AsRef<str>, N: std::fmt::Display>(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    key: &str,
    series: impl IntoIterator<Item = (S, N)>,
) {
    family(out, name, kind, help);
    for (v, n) in series {
        let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {n}", label(v.as_ref()));
    }
}

/// The CPQ families: a gateway's transfers to its manager and refusals, a manager's
/// receptions, refusals, releases and the backlog each gateway last reported over SSH.
fn cpq(shared: &Deps, out: &mut String) {
    use crate::core::cpq::stats::TransferFailure;
    let s = &shared.cpq.state.stats;
    match shared.config.current().role {
        crate::core::config::Role::Gateway => {
            single(
                out,
                "pvo_cpq_transfers_total",
                "counter",
                "Quarantined messages the manager accepted from this gateway.",
                s.transfers.load(Ordering::Relaxed),
            );
            let failures = s.transfer_failures();
            labelled(
                out,
                (
                    "pvo_cpq_transfer_failures_total",
                    "counter",
                    "Attempts to hand a message to the manager that failed, by reason.",
                ),
                "reason",
                TransferFailure::ALL
                    .iter()
                    .map(|r| (r.as_str(), failures.get(r).copied().unwrap_or(0))),
            );
            labelled(
                out,
                (
                    "pvo_cpq_refused_total",
                    "counter",
                    "CPQ connections or records refused on this gateway's cpq_listener (a peer that is not its manager, a revoked certificate...), by reason.",
                ),
                "reason",
                s.refusals(),
            );
        }
        crate::core::config::Role::Manager => {
            labelled(
                out,
                (
                    "pvo_cpq_received_total",
                    "counter",
                    "Quarantined messages received from each gateway.",
                ),
                "gateway",
                s.received_by_gateway(),
            );
            labelled(
                out,
                (
                    "pvo_cpq_refused_total",
                    "counter",
                    "CPQ connections or records refused, by reason.",
                ),
                "reason",
                s.refusals(),
            );
            single(
                out,
                "pvo_cpq_releases_total",
                "counter",
                "Released messages the gateways accepted.",
                s.releases.load(Ordering::Relaxed),
            );
            single(
                out,
                "pvo_cpq_release_failures_total",
                "counter",
                "Attempts to deliver a released message to its gateway that failed.",
                s.release_failures.load(Ordering::Relaxed),
            );
            labelled(
                out,
                (
                    "pvo_cpq_gateway_backlog",
                    "gauge",
                    "Recipients waiting on each gateway for this manager (the.cpq.host), as last checked over SSH.",
                ),
                "gateway",
                s.backlogs(),
            );
        }
    }
}

pub async fn metrics(shared: Deps) -> impl IntoResponse {
    let mut out = String::new();
    let c = shared.mail.counters.lifetime();
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
        single(&mut out, name, "counter", help, v);
    }
    single(
        &mut out,
        "pvo_connections_open",
        "gauge",
        "Inbound SMTP connections open.",
        c.connections_open,
    );

    family(
        &mut out,
        "pvo_scan_seconds",
        "histogram",
        "Time to scan a message (all engines), since this node started.",
    );
    shared
        .mail
        .counters
        .scan_latency
        .render(&mut out, "pvo_scan_seconds");

    let hosts = shared.mail.queue.hosts().await;
    labelled(
        &mut out,
        (
            "pvo_queue_recipients",
            "gauge",
            "Recipients queued per destination host.",
        ),
        "host",
        hosts.iter().map(|h| (&h.host, h.active_recipients)),
    );
    labelled(
        &mut out,
        (
            "pvo_destination_delivered_total",
            "counter",
            "Recipients delivered per destination host.",
        ),
        "host",
        hosts.iter().map(|h| (&h.host, h.delivered_recipients)),
    );
    // CPQ (`cpq::gateways`): the queue sizes of the.cpq.host and the.cpq.release.host
    // are above, with every destination's.
    cpq(&shared, &mut out);

    let usage = shared.scan.local_quarantine.with(|s| s.usage()).await;
    if let Ok(u) = usage {
        labelled(
            &mut out,
            (
                "pvo_quarantine_messages",
                "gauge",
                "Messages held per quarantine.",
            ),
            "quarantine",
            u.quarantines.iter().map(|q| (&q.name, q.messages)),
        );
        labelled(
            &mut out,
            (
                "pvo_quarantine_bytes",
                "gauge",
                "Bytes held per quarantine.",
            ),
            "quarantine",
            u.quarantines.iter().map(|q| (&q.name, q.bytes)),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
