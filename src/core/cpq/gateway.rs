//! Central mode on a gateway.
//!
//! Out (`cpq::transfer`, which the pipeline calls): a message a scan quarantines is tagged with its transfer record
//! (`Update::Cpq` in the spool, so a restart sends it again with the same
//! transfer id) and queued to `the.cpq.host`, from where `delivery` sends it
//! to the manager. It is retried until the manager takes it, never bounced.
//! A copy of each outbreak message stays under `DATA_DIR/cpq/outbreak/` for
//! rescans when the outbreak rules change.
//!
//! In: a released message arrives on the `cpq_listener` with its release
//! record. The release id is checked against the ledger (a retry or a second
//! click is answered `250` and not delivered again), the early-release
//! actions are applied, and the message is injected with a new MID —
//! rescanned with anti-virus when the Outbreak quarantine released it.
//!
//! A crash must not make a release be delivered twice: the ledger first
//! records the release id as pending with the copy's new MID, then the copy
//! is spooled, then the id is recorded as taken, and only then may the copy
//! be delivered. At start a pending id whose MID is live in the spool was
//! spooled (and cannot have been delivered yet), so it counts as taken and
//! the manager's retry is answered "already received"; any other pending id
//! was never spooled and is forgotten, so the retry is taken.

use std::sync::Arc;

use pvo_proto::cpq::ReleaseRecord;

use crate::core::cpq::handles::Deps;
use crate::core::cpq::transfer::outbreak_dir;
use crate::core::envelope::{CpqTag, Envelope};

/// A released message from the manager, received on the cpq_listener.
/// Returns the SMTP reply.
#[allow(clippy::too_many_arguments)]
pub async fn receive_release(
    shared: &Deps,
    rec: ReleaseRecord,
    rx_mid: u64,
    sender: String,
    recipients: Vec<String>,
    body: Vec<u8>,
    icid: u64,
    peer: &str,
) -> String {
    let Some(ledger) = shared.cpq.state.ledger.get() else {
        return "451 4.3.0 this gateway cannot take releases now".into();
    };
    let _taking = match ledger.start_taking(&rec.release_id) {
        Ok(t) => t,
        Err(crate::core::cpq::ledger::NotNow::Busy) => {
            // The same release from another manager of the deployment, at this moment: the
            // first reception decides; this sender retries and then hears "already received".
            return format!(
                "451 4.3.0 release {} is being received on another connection; try again later",
                rec.release_id
            );
        }
        Err(crate::core::cpq::ledger::NotNow::Taken) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleaseRepeated {
                    icid,
                    release: &rec.release_id,
                    mid: rec.gateway_mid,
                });
            shared
                .mail
                .log
                .emit(crate::core::events::Event::Finished { mid: rx_mid });
            return format!("250 2.0.0 Ok: release {} already received", rec.release_id);
        }
    };
    let actions = crate::core::cpq::records::early_release(&rec.actions);
    let bytes = pvo_quarantine::apply_early_release(&body, &actions);
    let rescan = rec
        .released_by
        .iter()
        .any(|q| q.eq_ignore_ascii_case("Outbreak"));
    let mut env = Envelope {
        mid: 0,
        icid,
        sender,
        recipients,
        received_at: crate::core::clock::unix_now(),
        source_ip: peer.to_string(),
        listener: crate::core::config::CPQ_LISTENER.to_string(),
        dsn: false,
        size: 0,
        outgoing: false,
        scanned: !rescan,
        cpq: None,
    };
    // Pending, spooled, taken, and only then delivered (see the module documentation).
    env.mid = shared.mail.ids.next(crate::core::ids::Kind::Mid);
    env.size = bytes.len() as u64;
    let new_mid = env.mid;
    if let Err(e) = ledger.record_pending(&rec.release_id, new_mid).await {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::ReleaseNotPending {
                icid,
                release: &rec.release_id,
                error: &e,
            });
        return "451 4.3.0 Error: queue file write error".into();
    }
    let spooled = shared.mail.spool_message(&env, bytes).await;
    #[cfg(debug_assertions)]
    if spooled.is_ok()
        && shared
            .config
            .current()
            .run_dir()
            .join("fault-crash-after-release-spooled")
            .exists()
    {
        // Test fault point (debug builds only, tests/e2e_durable.rs): die as `kill -9`
        // would, between the copy's fsync and the ledger's.
        std::process::abort();
    }
    match spooled {
        Ok(body) => {
            let by = rec
                .released_by
                .iter()
                .map(|q| format!("\"{q}\""))
                .collect::<Vec<_>>()
                .join(", ");
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleaseReceived {
                    mid: new_mid,
                    icid,
                    by: &by,
                    peer: &peer,
                    original: rec.gateway_mid,
                    release: &rec.release_id,
                });
            shared
                .mail
                .log
                .emit(crate::core::events::Event::RewrittenCentralized {
                    mid: rec.gateway_mid,
                    new_mid,
                });
            // The MID of the CPQ reception itself is done: the message goes on as `new_mid`.
            shared
                .mail
                .log
                .emit(crate::core::events::Event::Finished { mid: rx_mid });
            if let Err(e) = ledger.record(&rec.release_id).await {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::ReleaseUnrecorded {
                        mid: new_mid,
                        release: &rec.release_id,
                        error: &e,
                    });
            }
            if rescan {
                crate::core::scanning::pipeline::submit_for_rescan(&shared.into(), env, body);
            } else {
                crate::core::scanning::pipeline::submit_injected(&shared.into(), env, body);
            }
            // The outbreak copy is no longer needed.
            let base = outbreak_dir(&shared.into()).join(rec.gateway_mid.to_string());
            let _ = std::fs::remove_file(base.with_extension("eml"));
            let _ = std::fs::remove_file(base.with_extension("json"));
            pvo_proto::cpq::accepted_reply(new_mid)
        }
        Err(e) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleaseNotSpooled {
                    icid,
                    release: &rec.release_id,
                    error: &e,
                });
            "451 4.3.0 Error: queue file write error".into()
        }
    }
}

/// After an outbreak rules update on a central gateway: rescans the kept
/// copies of outbreak messages and tells the manager (`XPVO-CONTROL release`)
/// to release those no longer at their policy's threshold. Returns (rescanned,
/// gateway MIDs the manager released, still held, error).
pub async fn rescan_outbreak_copies(
    shared: &Deps,
    rules: Arc<pvo_scan::outbreak::OutbreakRules>,
) -> (usize, Vec<u64>, usize, Option<String>) {
    let dir = outbreak_dir(&shared.into());
    let node_id = shared
        .config
        .current()
        .cpq
        .as_ref()
        .map(|c| c.node_id.clone())
        .unwrap_or_default();
    let scanner = shared.scan.scanner();
    // (gateway MID, control line) of the copies that are clean now.
    let (scanned, clean, kept) = tokio::task::spawn_blocking(move || {
        let mut scanned = 0;
        let mut kept = 0;
        let mut clean = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return (0, clean, 0);
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let (Ok(meta), Ok(raw)) = (std::fs::read(&p), std::fs::read(p.with_extension("eml")))
            else {
                continue;
            };
            let Ok(env) = Envelope::decode(&meta) else {
                continue;
            };
            let Some(CpqTag::Transfer(tag)) = &env.cpq else {
                continue;
            };
            scanned += 1;
            if scanner.outbreak_still_holds(
                env.outgoing,
                &env.sender,
                &env.recipients,
                &raw,
                &rules,
            ) {
                kept += 1;
                continue;
            }
            let line = pvo_proto::cpq::CpqCommand::Control(pvo_proto::cpq::ControlRecord {
                action: pvo_proto::cpq::ControlAction::Release,
                gateway_id: node_id.clone(),
                gateway_mid: tag.gateway_mid.unwrap_or(env.mid),
                transfer_id: tag.transfer_id.clone(),
            })
            .encode();
            if let Ok(line) = line {
                clean.push((env.mid, line));
            }
        }
        (scanned, clean, kept)
    })
    .await
    .unwrap_or((0, Vec::new(), 0));
    if clean.is_empty() {
        return (scanned, Vec::new(), kept, None);
    }
    let lines: Vec<String> = clean.iter().map(|(_, l)| l.clone()).collect();
    match shared.cpq.manager_link.control(&lines).await {
        Ok(replies) => {
            let mut released = Vec::new();
            let mut still = kept;
            for ((mid, _), reply) in clean.iter().zip(replies) {
                if reply.starts_with("250") {
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::RescannedClean { mid: *mid });
                    released.push(*mid);
                    let base = outbreak_dir(&shared.into()).join(mid.to_string());
                    let _ = std::fs::remove_file(base.with_extension("eml"));
                    let _ = std::fs::remove_file(base.with_extension("json"));
                } else {
                    // Not (yet) on the manager: kept for the next update.
                    still += 1;
                }
            }
            (scanned, released, still, None)
        }
        Err(e) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::RescanNotTold {
                    clean: clean.len(),
                    error: &e,
                });
            (scanned, Vec::new(), kept + clean.len(), Some(e))
        }
    }
}
