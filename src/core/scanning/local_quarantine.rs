//! The gateway's local quarantines: the `pvo-quarantine` store under
//! `DATA_DIR/quarantine/`, its retention sweeper, and the way back out — a
//! message released from all its quarantines is re-injected with a new MID
//! (`rewritten to`) and continues after the stage that held it.
//!
//! The store is synchronous (SQLite); every call runs on the blocking pool.
//! Release is repeat-safe end to end: the store returns `Deliver` once per
//! message, and `confirm_delivery` records the new MID; after a crash between
//! the two, `pending_deliveries` hands the message over again at start, which
//! can deliver it twice but never loses it.
//!
//! Who owns what: this module owns the quarantine service of both roles — the store
//! (its handle is `quarantine_store`), the sweeper, and what every action's report
//! means (its `mail_logs` lines, and that a message released from all its quarantines
//! leaves). How a released message leaves a manager (queued back to its gateway) is
//! the CPQ manager's, reached through `state::ReleaseRoute`; the manager calls this
//! module for the reports of its control commands, never the reverse. The migration of
//! a gateway's quarantines (`cpq::migrate`) only reads the store and is asked here
//! whether it runs, to hold the sweeper.

use std::time::Duration;

use pvo_quarantine::{ActionReport, EarlyReleaseActions, MembershipState, MsgId, Outcome};

use crate::core::cpq::handles::Deps;
use crate::core::envelope::Envelope;

/// How often scheduled exits and the space quota are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub(crate) use crate::core::clock::unix_now as now;

/// Starts the sweeper and hands over releases that a crash interrupted.
pub fn start(shared: &Deps) {
    let shared = shared.clone();
    tokio::spawn(async move {
        match shared
            .scan
            .local_quarantine
            .with(|s| s.pending_deliveries())
            .await
        {
            Ok(pending) => {
                for p in pending {
                    deliver_released(&shared, p.msg_id, p.gateway_mid, &p.early_release_actions)
                        .await;
                }
            }
            Err(e) => shared
                .mail
                .log
                .emit(crate::core::events::Event::InterruptedReleasesUnlisted { error: &e }),
        }
        // A store that several managers share (PostgreSQL): one of them sweeps, and each
        // takes over the releases a stopped one left unqueued.
        // Asked until the store answers (`None` while it does not).
        let mut shared_store: Option<Option<String>> = None;
        let mut leading = false;
        loop {
            if shared_store.is_none() {
                if let Ok(id) = shared
                    .scan
                    .local_quarantine
                    .with(|s| s.deployment_id())
                    .await
                {
                    if let Some(d) = &id {
                        let _ = shared.cpq.state.release_prefix.set(d.clone());
                    }
                    shared_store = Some(id);
                }
            }
            if let Some(Some(d)) = &shared_store {
                take_over_releases(&shared).await;
                match shared.scan.local_quarantine.with(|s| s.try_lead()).await {
                    Ok(lead) => {
                        if lead != leading {
                            shared.mail.log.emit(if lead {
                                crate::core::events::Event::SweepLeaderGained { deployment: d }
                            } else {
                                crate::core::events::Event::SweepLeaderLost { deployment: d }
                            });
                        }
                        leading = lead;
                    }
                    Err(e) => {
                        if leading {
                            shared
                                .mail
                                .log
                                .emit(crate::core::events::Event::SweepLeaderLost {
                                    deployment: d,
                                });
                        }
                        leading = false;
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::SweepFailed { error: &e });
                    }
                }
                if !leading {
                    tokio::time::sleep(SWEEP_EVERY).await;
                    continue;
                }
            }
            // While the local quarantines migrate to the manager, their exits are the
            // manager's to apply: a message expiring here meanwhile could be sent there
            // and released or deleted here.
            if crate::core::cpq::migrate::running(&shared) {
                tokio::time::sleep(SWEEP_EVERY).await;
                continue;
            }
            let t = now();
            match shared.scan.local_quarantine.with(move |s| s.sweep(t)).await {
                Ok(reports) => {
                    let reports = with_node_mids(&shared, reports).await;
                    handle_reports(&shared, reports).await;
                }
                Err(e) => shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::SweepFailed { error: &e }),
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    });
}

/// How long a release made on one manager of a shared store may stay unqueued before
/// another takes it over (a live manager queues it within milliseconds).
const RELEASE_LEASE_SECS: u64 = 60;

/// Queues the releases that another manager of the deployment made and did not queue (it
/// stopped in between): each is claimed by one manager; one queued twice carries the same
/// release id, so its gateway delivers it once.
async fn take_over_releases(shared: &Deps) {
    loop {
        let t = now();
        let claimed = match shared
            .scan
            .local_quarantine
            .with(move |s| s.claim_stale_pending(t, RELEASE_LEASE_SECS))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::InterruptedReleasesUnlisted { error: &e });
                return;
            }
        };
        if claimed.is_empty() {
            return;
        }
        shared
            .mail
            .log
            .emit(crate::core::events::Event::ReleasesTakenOver {
                count: claimed.len(),
            });
        for p in claimed {
            deliver_released(shared, p.msg_id, p.gateway_mid, &p.early_release_actions).await;
        }
    }
}

/// Puts the MID this node logged in each report's `gateway_mid` (the field
/// every log line and answer uses): the manager's MID on a manager. Reports
/// of messages without one keep the gateway MID.
pub async fn with_node_mids(shared: &Deps, mut reports: Vec<ActionReport>) -> Vec<ActionReport> {
    if shared.config.current().role != crate::core::config::Role::Manager || reports.is_empty() {
        return reports;
    }
    let ids: Vec<MsgId> = reports.iter().map(|r| r.msg_id).collect();
    let mids: Vec<Option<u64>> = shared
        .scan
        .local_quarantine
        .with(move |s| {
            ids.iter()
                .map(|&id| {
                    s.message(id)
                        .ok()
                        .and_then(|m| m.meta.get("mid").and_then(|v| v.as_u64()))
                })
                .collect()
        })
        .await;
    for (r, m) in reports.iter_mut().zip(mids) {
        if let Some(m) = m {
            r.gateway_mid = m;
        }
    }
    reports
}

/// Logs what an action changed and delivers what was released from all
/// quarantines. Returns (old MID, new MID) for each message re-injected.
pub async fn handle_reports(shared: &Deps, reports: Vec<ActionReport>) -> Vec<(u64, u64)> {
    /// Releases handed to delivery at once: their spool writes share fsyncs.
    const AT_ONCE: usize = 128;
    let mut delivered = Vec::new();
    let mut pending = Vec::new();
    for r in reports {
        for e in crate::core::events::report_events(r.gateway_mid, &r) {
            shared.mail.log.emit(e);
        }
        if let Outcome::Deliver {
            msg_id,
            early_release_actions,
        } = r.outcome
        {
            pending.push((r.gateway_mid, msg_id, early_release_actions));
        }
    }
    if let Some(route) = &shared.cpq.release_route {
        for chunk in pending.chunks(AT_ONCE * 4) {
            delivered.extend(route.release_batch(chunk.to_vec()).await);
        }
        return delivered;
    }
    for chunk in pending.chunks(AT_ONCE) {
        let tasks: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(mid, msg_id, actions)| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    deliver_released(&shared, msg_id, mid, &actions)
                        .await
                        .map(|new| (mid, new))
                })
            })
            .collect();
        for t in tasks {
            if let Ok(Some(pair)) = t.await {
                delivered.push(pair);
            }
        }
    }
    delivered
}

/// Re-injects a released message with a new MID; returns it. A message that
/// was held in the Outbreak quarantine is scanned again with anti-virus on
/// its way (`pipeline::inject_for_rescan`); any other goes to delivery.
async fn deliver_released(
    shared: &Deps,
    msg_id: MsgId,
    old_mid: u64,
    actions: &[EarlyReleaseActions],
) -> Option<u64> {
    let q = shared.scan.local_quarantine.clone();
    let loaded = q
        .with(move |s| {
            Ok::<_, pvo_quarantine::QuarantineError>((s.message(msg_id)?, s.raw(msg_id)?))
        })
        .await;
    let (info, raw) = match loaded {
        Ok(x) => x,
        Err(e) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleasedUnreadable {
                    mid: old_mid,
                    error: &e,
                });
            return None;
        }
    };
    if let Some(route) = &shared.cpq.release_route {
        // On a manager, "delivered" means queued back to the gateway the
        // message came from, which applies the early-release actions.
        return match route.release(msg_id, &info, raw, actions).await {
            Ok(new_mid) => {
                let r = q
                    .with(move |s| s.confirm_delivery(msg_id, &new_mid.to_string(), now()))
                    .await;
                if let Err(e) = r {
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::QueuedToGatewayUnrecorded {
                            mid: new_mid,
                            error: &e,
                        });
                }
                Some(new_mid)
            }
            Err(e) => {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::ReleaseNotQueuedToGateway {
                        mid: crate::core::cpq::records::manager_mid(&info),
                        gateway: &info.gateway,
                        error: &e,
                    });
                None
            }
        };
    }
    let bytes = pvo_quarantine::apply_early_release(&raw, actions);
    // Decided from the stored memberships rather than from the action at
    // hand, so that a release handed over again after a restart
    // (`pending_deliveries`) is rescanned as well.
    let rescan = info.memberships.iter().any(|m| {
        m.quarantine.eq_ignore_ascii_case("Outbreak") && m.state == MembershipState::Released
    });
    // The quarantine that released it last, for `rewritten to ... by`.
    let by = info
        .memberships
        .iter()
        .filter(|m| m.state == MembershipState::Released)
        .max_by_key(|m| m.left_at.unwrap_or(0))
        .map(|m| m.quarantine.clone())
        .unwrap_or_else(|| "Policy".into());
    let env = Envelope {
        mid: 0,
        icid: info.meta.get("icid").and_then(|v| v.as_u64()).unwrap_or(0),
        sender: info.sender.clone(),
        recipients: info.recipients.clone(),
        received_at: now(),
        source_ip: info
            .meta
            .get("source_ip")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        listener: info
            .meta
            .get("listener")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        dsn: false,
        size: 0,
        outgoing: info
            .meta
            .get("outgoing")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        scanned: !rescan,
        cpq: None,
    };
    let injected = if rescan {
        crate::core::scanning::pipeline::inject_for_rescan(&shared.into(), &env, bytes).await
    } else {
        crate::core::scanning::pipeline::inject(&shared.into(), &env, bytes, true).await
    };
    match injected {
        Ok(new_mid) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::RewrittenByQuarantine {
                    mid: old_mid,
                    new_mid,
                    quarantine: &by,
                });
            let r = q
                .with(move |s| s.confirm_delivery(msg_id, &new_mid.to_string(), now()))
                .await;
            if let Err(e) = r {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::DeliveredUnrecorded {
                        mid: old_mid,
                        new_mid,
                        error: &e,
                    });
            }
            Some(new_mid)
        }
        Err(e) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleaseNotQueued {
                    mid: old_mid,
                    error: &e,
                });
            None
        }
    }
}
