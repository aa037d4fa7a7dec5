//! Queue commands: `tophosts`, `hoststatus`, `showrecipients`,
//! `deleterecipients`, `redirectrecipients`, `bouncerecipients`, `delivernow`.
//!
//! Every destination is a host like any other here, including the CPQ ones
//! (`the.cpq.host`, `the.cpq.release.host`) that the appliance only partly
//! supports in these commands.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::oneshot;

use super::command::{text, HostArgs, SelectionArgs, TophostsArgs};
use super::replies::{self, TopHost, TopHostsReply};
use crate::commands::protocol::Response;
use crate::core::mail_log::ctime;
use crate::core::queue::{Event, HostStatus, QueuedRecipient, Removal, Selection};
use crate::core::state::Handles;

use crate::core::clock::unix_now as now;

/// The selection of `showrecipients` and friends: --host, --sender or --all.
fn selection(args: &SelectionArgs) -> Result<Selection, Response> {
    match (text(&args.host), text(&args.sender), args.all) {
        (Some(h), None, false) => Ok(Selection::Host(h.trim_end_matches('.').to_ascii_lowercase())),
        (None, Some(s), false) => Ok(Selection::Sender(s.trim_matches(['<', '>']).to_string())),
        (None, None, true) => Ok(Selection::All),
        _ => Err(Response::error("Select the recipients with exactly one of: --host HOST (by recipient host), --sender ADDRESS (by envelope sender), --all.")),
    }
}

fn describe(sel: &Selection) -> String {
    match sel {
        Selection::All => "all recipients".to_string(),
        Selection::Host(h) => format!("recipient host {h}"),
        Selection::Sender(s) => format!("envelope sender <{s}>"),
    }
}

pub async fn tophosts(shared: &Arc<Handles>, args: &TophostsArgs) -> Response {
    let mut rows = shared.mail.queue.hosts().await;
    let sort = text(&args.sort).unwrap_or("active");
    match sort {
        "active" => rows.sort_by(|a, b| {
            b.active_recipients
                .cmp(&a.active_recipients)
                .then(a.host.cmp(&b.host))
        }),
        "conn" => rows.sort_by(|a, b| {
            b.connections_out
                .cmp(&a.connections_out)
                .then(a.host.cmp(&b.host))
        }),
        "delivered" => rows.sort_by(|a, b| {
            b.delivered_recipients
                .cmp(&a.delivered_recipients)
                .then(a.host.cmp(&b.host))
        }),
        "soft" => rows.sort_by(|a, b| {
            b.soft_bounced
                .cmp(&a.soft_bounced)
                .then(a.host.cmp(&b.host))
        }),
        "hard" => rows.sort_by(|a, b| {
            b.hard_bounced
                .cmp(&a.hard_bounced)
                .then(a.host.cmp(&b.host))
        }),
        other => {
            return Response::error(format!(
                "Unknown sort order \"{other}\"; use one of: active, conn, delivered, hard, soft."
            ))
        }
    }
    let mut t = format!("Status as of:                  {} GMT\n", ctime(now()));
    t.push_str("Hosts marked with '*' were down as of the last delivery attempt.\n");
    t.push_str(&format!(
        "{:<3} {:<34} {:>7} {:>6} {:>7} {:>8} {:>8}\n",
        "", "", "Active", "Conn.", "Deliv.", "Soft", "Hard"
    ));
    t.push_str(&format!(
        "{:<3} {:<34} {:>7} {:>6} {:>7} {:>8} {:>8}\n",
        "#", "Recipient Host", "Recip.", "Out", "Recip.", "Bounced", "Bounced"
    ));
    for (i, r) in rows.iter().enumerate() {
        let name = if r.down {
            format!("*{}", r.host)
        } else {
            r.host.clone()
        };
        t.push_str(&format!(
            "{:<3} {:<34} {:>7} {:>6} {:>7} {:>8} {:>8}\n",
            i + 1,
            name,
            r.active_recipients,
            r.connections_out,
            r.delivered_recipients,
            r.soft_bounced,
            r.hard_bounced
        ));
    }
    if rows.is_empty() {
        t.push_str("(no hosts)\n");
    }
    let data = TopHostsReply {
        sort: sort.to_string(),
        hosts: rows.iter().map(TopHost::from).collect(),
    };
    Response::ok(t, replies::data(&data))
}

pub async fn hoststatus(shared: &Arc<Handles>, args: &HostArgs) -> Response {
    let Some(host) = text(&args.host) else {
        return Response::error(
            "hoststatus needs a host name, for example: pvo hoststatus example.com",
        );
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let rows = shared.mail.queue.hosts().await;
    let row: HostStatus = match rows.into_iter().find(|r| r.host == host) {
        Some(r) => r,
        None => {
            return Response::ok(
                format!("Host mail status for: '{host}'\nNo record of deliveries to this host since the node started, and none queued.\n"),
                json!({ "host": host, "known": false }),
            )
        }
    };
    let cfg = shared.config.current();
    // The CPQ hosts are not routed: the manager, or each enrolled gateway,
    // always over mutual TLS (`delivery::cpq_hop`).
    let cpq = cfg.cpq.as_ref();
    let route = if host == crate::core::config::CPQ_HOST {
        match cpq.filter(|c| c.central()) {
            Some(c) if c.managers.len() > 1 => format!(
                "{} (the managers' cpq_listeners, tried in this order)",
                c.managers_text()
            ),
            Some(c) => format!("{} (the manager's cpq_listener)", c.managers_text()),
            None => "none: no manager configured ([cpq] mode = \"central\", manager)".into(),
        }
    } else if host == crate::core::config::CPQ_RELEASE_HOST {
        let gws: Vec<String> = cpq
            .into_iter()
            .flat_map(|c| c.gateways.iter())
            .map(|g| format!("{} {}:{}", g.id, g.address, g.port))
            .collect();
        format!(
            "the originating gateway's cpq_listener ({})",
            gws.join(", ")
        )
    } else {
        match cfg.route(&host).map(|r| r.target.clone()) {
            Some(crate::core::config::RouteTarget::Hosts(h)) => h
                .iter()
                .map(|(h, p)| format!("{h}:{p}"))
                .collect::<Vec<_>>()
                .join(", "),
            Some(crate::core::config::RouteTarget::Maildir(d)) => {
                format!("maildir {}", d.display())
            }
            None => "MX records".to_string(),
        }
    };
    let tls =
        if host == crate::core::config::CPQ_HOST || host == crate::core::config::CPQ_RELEASE_HOST {
            crate::core::config::TlsMode::RequiredVerify
        } else {
            cfg.destination(&host)
                .map_or(cfg.tls_outbound.default, |d| d.tls)
        };
    let mut t = format!("Host mail status for: '{host}'\n");
    t.push_str(&format!("Status as of:          {} GMT\n", ctime(now())));
    t.push_str(&format!(
        "Host up/down:          {}\n",
        if row.down { "down" } else { "up" }
    ));
    t.push_str(&format!("Route:                 {route}\n"));
    t.push_str(&format!("TLS:                   {}\n\n", tls.as_str()));
    t.push_str("Counters:\n  Queue\n");
    t.push_str(&format!(
        "    {:<32}{:>10}\n",
        "Soft Bounced Events", row.soft_bounced
    ));
    t.push_str("  Completion\n");
    t.push_str(&format!(
        "    {:<32}{:>10}\n",
        "Completed Recipients",
        row.delivered_recipients + row.hard_bounced
    ));
    t.push_str(&format!(
        "    {:<32}{:>10}\n",
        "Hard Bounced Recipients", row.hard_bounced
    ));
    t.push_str(&format!(
        "    {:<32}{:>10}\n",
        "Delivered Recipients", row.delivered_recipients
    ));
    t.push_str("Gauges:\n  Queue\n");
    t.push_str(&format!(
        "    {:<32}{:>10}\n",
        "Active Recipients", row.active_recipients
    ));
    t.push_str("  Connections\n");
    t.push_str(&format!(
        "    {:<32}{:>10}\n",
        "Current Outbound Connections", row.connections_out
    ));
    if let Some(e) = &row.last_error {
        t.push_str(&format!("\nLast error: {e}\n"));
    }
    Response::ok(
        t,
        json!({ "host": host, "known": true, "status": row, "route": route, "tls": tls.as_str() }),
    )
}

async fn recipients(shared: &Handles, sel: Selection) -> Vec<QueuedRecipient> {
    let (tx, rx) = oneshot::channel();
    shared.mail.queue.send(Event::Recipients(sel, tx));
    rx.await.unwrap_or_default()
}

pub async fn showrecipients(shared: &Arc<Handles>, args: &SelectionArgs) -> Response {
    let sel = match selection(args) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = recipients(shared, sel.clone()).await;
    let mut t = format!("Recipients in the queue for {}:\n", describe(&sel));
    t.push_str(&format!(
        "{:<18} {:<16} {}\n",
        "MID/[RID]", "Bytes/Attempts", "Sender/Recipient"
    ));
    for r in &rows {
        t.push_str(&format!(
            "{:<18} {:<16} {}\n",
            format!("{} [{}]", r.mid, r.rid),
            format!("{}/{}", r.size, r.attempts),
            r.sender_shown()
        ));
        t.push_str(&format!(
            "{:<18} {:<16} {} ({}, {})\n",
            "", "", r.recipient, r.host, r.state
        ));
    }
    let mids: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.mid).collect();
    t.push_str(&format!(
        "{} recipients in {} messages.\n",
        rows.len(),
        mids.len()
    ));
    Response::ok(t, json!({ "selection": sel, "recipients": rows }))
}

impl QueuedRecipient {
    fn sender_shown(&self) -> String {
        format!("<{}>", self.sender)
    }
}

async fn remove(shared: &Arc<Handles>, args: &SelectionArgs, how: Removal) -> Response {
    let sel = match selection(args) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (tx, rx) = oneshot::channel();
    shared.mail.queue.send(Event::Remove(sel.clone(), how, tx));
    let (n, busy) = rx.await.unwrap_or((0, 0));
    // The queue manager has handed the recipients' new state to the spool;
    // answer only once it is on disk, so that a deleted recipient stays
    // deleted even if the node is killed right after the answer.
    if n > 0 {
        let spool = shared.mail.spool.clone();
        match tokio::task::spawn_blocking(move || spool.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Response::error(format!("{n} recipients were taken out of the queue, but writing that to the spool failed: {e}. They may come back after a restart.")),
            Err(e) => return Response::error(format!("{n} recipients were taken out of the queue, but writing that to the spool failed: {e}")),
        }
    }
    let verb = if how == Removal::Delete {
        "deleted"
    } else {
        "bounced"
    };
    let mut t = format!("{n} recipients {verb} ({}).\n", describe(&sel));
    if busy > 0 {
        t.push_str(&format!(
            "{busy} recipients were being delivered at that moment and were left to finish.\n"
        ));
    }
    Response::ok(t, json!({ "selection": sel, verb: n, "in_delivery": busy }))
}

pub async fn deleterecipients(shared: &Arc<Handles>, args: &SelectionArgs) -> Response {
    remove(shared, args, Removal::Delete).await
}

pub async fn bouncerecipients(shared: &Arc<Handles>, args: &SelectionArgs) -> Response {
    remove(shared, args, Removal::Bounce).await
}

pub async fn redirectrecipients(shared: &Arc<Handles>, args: &HostArgs) -> Response {
    let Some(target) = text(&args.host) else {
        return Response::error("redirectrecipients needs the host to send every queued message to, for example: pvo redirectrecipients mail.example.net:25");
    };
    let Some((host, port)) = crate::core::config::parse_host_port(target) else {
        return Response::error(format!(
            "\"{target}\" is not a host; use HOST, HOST:PORT or [IP]:PORT."
        ));
    };
    let (tx, rx) = oneshot::channel();
    shared
        .mail
        .queue
        .send(Event::Redirect(host.clone(), port, tx));
    let n = rx.await.unwrap_or(0);
    shared
        .mail
        .log
        .emit(crate::core::events::Event::Redirected {
            host: &host,
            port,
            recipients: n,
        });
    Response::ok(
        format!("{n} recipients redirected to {host}:{port}.\n"),
        json!({ "host": host, "port": port, "redirected": n }),
    )
}

pub async fn delivernow(shared: &Arc<Handles>, args: &HostArgs) -> Response {
    let host = text(&args.host).map(|h| h.trim_end_matches('.').to_ascii_lowercase());
    let (tx, rx) = oneshot::channel();
    shared.mail.queue.send(Event::DeliverNow(host.clone(), tx));
    let n = rx.await.unwrap_or(0);
    let which = host.clone().unwrap_or_else(|| "all hosts".into());
    Response::ok(
        format!("{n} recipients of {which} rescheduled for immediate delivery.\n"),
        json!({ "host": host, "rescheduled": n }),
    )
}
