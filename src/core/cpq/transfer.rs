//! Central mode on a gateway, the way out: a message a scan quarantines is tagged with
//! its transfer record (`Update::Cpq` in the spool, so a restart sends it again with the
//! same transfer id) and queued to `the.cpq.host`, from where `delivery` sends it to the
//! manager; a copy of each outbreak message stays under `DATA_DIR/cpq/outbreak/` for
//! rescans. The scanning pipeline and the migration call this; the way in (releases,
//! rescans, which go back through the pipeline) is `cpq::gateway`'s.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use pvo_quarantine::Hold;

use crate::core::envelope::{CpqTag, Envelope, Update};
use crate::core::state::{ConfigHandle, MailHandle};

/// The handles a transfer uses: the configuration and the mail path.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
}

impl From<&crate::core::cpq::handles::Deps> for Deps {
    fn from(d: &crate::core::cpq::handles::Deps) -> Deps {
        Deps {
            config: d.config.clone(),
            mail: d.mail.clone(),
        }
    }
}

/// Where outbreak copies are kept.
pub fn outbreak_dir(shared: &Deps) -> PathBuf {
    shared
        .config
        .current()
        .data_dir
        .join("cpq")
        .join("outbreak")
}

/// Sends a quarantined message to the manager: tags it and queues it to
/// `the.cpq.host`. `rewritten` is the body after header actions when a
/// filter changed it (it then travels under a new MID).
pub async fn send_to_manager(
    shared: &Deps,
    env: Arc<Envelope>,
    body: Arc<Vec<u8>>,
    rewritten: Option<Arc<Vec<u8>>>,
    holds: Vec<Hold>,
) {
    let cfg = shared.config.current();
    let node_id = cfg
        .cpq
        .as_ref()
        .map(|c| c.node_id.clone())
        .unwrap_or_default();
    let mid = env.mid;
    let outbreak = holds
        .iter()
        .any(|h| h.quarantine.eq_ignore_ascii_case("Outbreak"));
    let (env, body) =
        match rewritten {
            None => {
                let tag = crate::core::cpq::records::transfer_tag(&node_id, &env, &holds);
                let mut e = env.as_ref().clone();
                e.cpq = Some(CpqTag::Transfer(tag.clone()));
                e.scanned = true;
                shared
                    .mail
                    .spool
                    .update(mid, Update::Cpq(CpqTag::Transfer(tag)).encode());
                (Arc::new(e), body)
            }
            Some(new_body) => {
                let new_mid = shared.mail.ids.next(crate::core::ids::Kind::Mid);
                let mut e = env.as_ref().clone();
                e.mid = new_mid;
                e.size = new_body.len() as u64;
                e.scanned = true;
                let tag = crate::core::cpq::records::transfer_tag(&node_id, &e, &holds);
                e.cpq = Some(CpqTag::Transfer(tag));
                match shared
                    .mail
                    .spool_message(&e, new_body.as_ref().clone())
                    .await
                {
                    Ok(b) => {
                        shared.mail.log.emit(
                            crate::core::events::Event::RewrittenByContentFilter { mid, new_mid },
                        );
                        shared.mail.spool.finish(mid);
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::Finished { mid });
                        (Arc::new(e), b)
                    }
                    Err(e) => {
                        shared.mail.log.emit(
                            crate::core::events::Event::RewrittenNotSpooledRescan {
                                mid,
                                error: &e,
                            },
                        );
                        return;
                    }
                }
            }
        };
    let mid = env.mid;
    for h in &holds {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::QuarantinedCentralized {
                mid,
                quarantine: &h.quarantine,
                reason: &h.reason,
            });
    }
    if outbreak {
        if let Err(e) = keep_outbreak_copy(shared, &env, &body) {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::OutbreakCopyNotKept { mid, error: &e });
        }
    }
    shared
        .mail
        .log
        .emit(crate::core::events::Event::QueuedForCpq {
            mid,
            host: crate::core::config::CPQ_HOST,
        });
    shared.mail.queue.enqueue(env, Some(body));
}

/// Keeps a copy of an outbreak message sent to the manager (named by `env.mid`, the MID
/// the manager knows it by) for rescans after outbreak rule updates.
pub(crate) fn keep_outbreak_copy(shared: &Deps, env: &Envelope, body: &[u8]) -> Result<()> {
    let dir = outbreak_dir(shared);
    std::fs::create_dir_all(&dir)?;
    let base = dir.join(env.mid.to_string());
    crate::core::atomic_file::write(&base.with_extension("eml"), body)?;
    crate::core::atomic_file::write(&base.with_extension("json"), &env.encode())?;
    Ok(())
}
