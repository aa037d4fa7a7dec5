//! The manager's side of CPQ.
//!
//! Transfers: every message that arrives on the cpq_listener with a transfer
//! record is stored in the central store (the same `pvo-quarantine` store a
//! gateway uses locally, under `DATA_DIR/quarantine/`) by the [`Inbox`], a
//! writer thread that commits whatever arrived meanwhile in one transaction
//! (one fsync for many sessions). The `250` goes out only after that commit
//! and carries the manager's own MID. The transfer id is the store's
//! idempotency key (`<gateway>:<transfer>`): a retry after a lost reply gets
//! the same MID back and stores nothing.
//!
//! Releases: a message released from all its quarantines becomes a queued
//! message (new MID) tagged with a release record for the gateway it came
//! from, under `the.cpq.release.host`; `delivery` sends it to that gateway's
//! cpq_listener, never to another.

use std::sync::Arc;

use pvo_proto::cpq::{ControlAction, ControlRecord, TransferRecord};
use pvo_quarantine::{
    Action, Actor, Cause, EarlyReleaseActions, MembershipState, MessageInfo, MsgId, NewMessage,
    Scope,
};
use serde_json::json;

use crate::core::cpq::handles::Deps;
use crate::core::cpq::records::manager_mid;
use crate::core::envelope::{CpqTag, Envelope};
use crate::core::state::{AccessHandle, ConfigHandle, CpqHandle, MailHandle, ScanHandle};

/// Stores a transferred message; returns the SMTP reply.
pub async fn receive_transfer(
    shared: &Deps,
    rec: TransferRecord,
    mid: u64,
    body: Vec<u8>,
    icid: u64,
    peer: &str,
) -> String {
    let Some(inbox) = shared.cpq.state.inbox.get() else {
        return "451 4.3.0 the central quarantine is not ready".into();
    };
    let (subject, attachments) = describe(&body);
    let mut holds = crate::core::cpq::records::holds_of(&rec);
    // The migration wizard: a gateway's local quarantine -> a central one (custom
    // mode; automatic keeps the name).
    if let Some(m) = shared
        .config
        .current()
        .cpq
        .as_ref()
        .and_then(|c| c.migration.clone())
    {
        for h in &mut holds {
            let central = m.central_for(&rec.gateway_id, &h.quarantine).to_string();
            h.quarantine = central;
        }
    }
    let msg = NewMessage {
        idempotency_key: format!("{}:{}", rec.gateway_id, rec.transfer_id),
        gateway: rec.gateway_id.clone(),
        gateway_mid: rec.gateway_mid,
        sender: rec.sender.clone(),
        recipients: rec.recipients.clone(),
        received: rec.received,
        subject,
        attachments,
        meta: json!({ "mid": mid, "icid": icid, "transfer": rec.transfer_id, "peer": peer }),
        raw: body,
        holds,
    };
    let len = msg.raw.len();
    match inbox.insert(msg).await {
        Ok(ins) if ins.created => {
            shared.cpq.state.stats.received(&rec.gateway_id);
            let log = &shared.mail.log;
            log.emit(crate::core::events::Event::TransferReceived {
                mid,
                icid,
                sender: &rec.sender,
                bytes: len,
                gateway: &rec.gateway_id,
                gateway_mid: rec.gateway_mid,
                transfer: &rec.transfer_id,
            });
            for h in &ins.held_in {
                log.emit(crate::core::events::Event::Quarantined {
                    mid,
                    quarantine: &h.quarantine,
                    reason: &h.reason,
                });
            }
            pvo_proto::cpq::accepted_reply(mid)
        }
        Ok(ins) => {
            // A retry of a transfer already stored: the same answer again.
            shared.cpq.state.stats.received(&rec.gateway_id);
            let store = shared.scan.local_quarantine.clone();
            let id = ins.msg_id;
            let first = store
                .with(move |s| s.message(id))
                .await
                .map(|i| manager_mid(&i))
                .unwrap_or(id);
            shared
                .mail
                .log
                .emit(crate::core::events::Event::TransferRepeated {
                    icid,
                    transfer: &rec.transfer_id,
                    gateway: &rec.gateway_id,
                    mid: first,
                });
            pvo_proto::cpq::accepted_reply(first)
        }
        Err(e) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::TransferNotStored {
                    icid,
                    transfer: &rec.transfer_id,
                    gateway: &rec.gateway_id,
                    error: &e,
                });
            "451 4.3.0 Error: the central quarantine could not store the message".into()
        }
    }
}

/// Subject and attachments for search.
fn describe(raw: &[u8]) -> (String, Vec<pvo_quarantine::Attachment>) {
    match pvo_scan::mime::scan(raw, &pvo_scan::mime::Limits::default()) {
        Ok(v) => (
            v.subject.clone(),
            v.attachments()
                .map(|p| pvo_quarantine::Attachment {
                    name: p.filename.clone().unwrap_or_default(),
                    size: p.size as u64,
                })
                .collect(),
        ),
        Err(_) => (String::new(), Vec::new()),
    }
}

/// Carries out an `XPVO-CONTROL` (the outcome of a gateway's outbreak
/// rescan); returns the SMTP reply.
pub async fn control(
    shared: &Deps,
    access: &AccessHandle,
    rec: ControlRecord,
    icid: u64,
) -> String {
    if rec.action == ControlAction::Ready {
        let answer = match readiness(&shared.config, access, &rec.gateway_id) {
            Ok(()) => "250 2.0.0 ready".to_string(),
            Err(why) => format!("550 5.7.1 not ready: {why}"),
        };
        shared.mail.log.emit(crate::core::events::Event::Preflight {
            icid,
            gateway: &rec.gateway_id,
            answer: &answer,
        });
        return answer;
    }
    let key = format!("{}:{}", rec.gateway_id, rec.transfer_id);
    let gateway = rec.gateway_id.clone();
    let q = shared.scan.local_quarantine.clone();
    let action = rec.action;
    let now = crate::core::clock::unix_now();
    let result = q
        .with(
            move |s| -> pvo_quarantine::Result<Option<pvo_quarantine::ActionReport>> {
                let Some(id) = s.message_by_key(&key)? else {
                    return Ok(None);
                };
                let info = s.message(id)?;
                if info.gateway_mid != rec.gateway_mid {
                    return Ok(None);
                }
                let act = match action {
                    ControlAction::Release => Action::Release,
                    // `ready` was answered above.
                    ControlAction::Expire | ControlAction::Ready => Action::Delete,
                };
                let cause = Cause::Rescan;
                let r = s.act(
                    id,
                    &Scope::Quarantine("Outbreak".into()),
                    &act,
                    &Actor::system(cause),
                    now,
                )?;
                Ok(Some(r))
            },
        )
        .await;
    match result {
        Ok(Some(report)) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ControlDone {
                    icid,
                    release: action == ControlAction::Release,
                    gateway: &gateway,
                    mid: report.gateway_mid,
                });
            let reports =
                crate::core::scanning::local_quarantine::with_node_mids(shared, vec![report]).await;
            crate::core::scanning::local_quarantine::handle_reports(shared, reports).await;
            pvo_proto::cpq::CONTROL_OK_REPLY.to_string()
        }
        Ok(None) => pvo_proto::cpq::CONTROL_UNKNOWN_REPLY.to_string(),
        Err(pvo_quarantine::QuarantineError::UnknownMessage(_))
        | Err(pvo_quarantine::QuarantineError::NotInQuarantine { .. }) => {
            pvo_proto::cpq::CONTROL_UNKNOWN_REPLY.to_string()
        }
        Err(e) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ControlFailed { icid, error: &e });
            "451 4.3.0 the central quarantine could not carry out the control".into()
        }
    }
}

/// The prefix of this manager's release ids: the deployment's id on a shared store (a
/// release queued by two of its managers is then one release to the gateway), else the
/// manager's node id. Asked of the store once (`local_quarantine::start` usually has), then
/// kept.
async fn release_prefix(shared: &Deps) -> String {
    if let Some(p) = shared.cpq.state.release_prefix.get() {
        return p.clone();
    }
    match shared
        .scan
        .local_quarantine
        .with(|s| s.deployment_id())
        .await
    {
        Ok(id) => {
            let prefix = id.unwrap_or_else(|| node_id(shared));
            shared
                .cpq
                .state
                .release_prefix
                .get_or_init(|| prefix)
                .clone()
        }
        // The store does not answer now: the node id this once, asked again next time.
        Err(_) => node_id(shared),
    }
}

fn node_id(shared: &Deps) -> String {
    let cfg = shared.config.current();
    cfg.cpq
        .as_ref()
        .map(|c| c.node_id.clone())
        .unwrap_or_else(|| cfg.hostname.clone())
}

/// Queues a message released from all quarantines to its gateway. Returns
/// the new (queue) MID once the message is on disk.
pub async fn queue_release(
    shared: &Deps,
    msg_id: MsgId,
    info: &MessageInfo,
    raw: Vec<u8>,
    actions: &[EarlyReleaseActions],
) -> anyhow::Result<u64> {
    let manager_id = release_prefix(shared).await;
    let released_by: Vec<String> = info
        .memberships
        .iter()
        .filter(|m| m.state == MembershipState::Released)
        .map(|m| m.quarantine.clone())
        .collect();
    let released_by = if released_by.is_empty() {
        vec!["Policy".to_string()]
    } else {
        released_by
    };
    let tag = crate::core::cpq::records::release_tag(
        &manager_id,
        msg_id,
        &info.gateway,
        info.gateway_mid,
        released_by,
        actions,
    );
    let mid = shared.mail.ids.next(crate::core::ids::Kind::Mid);
    let env = Envelope {
        mid,
        icid: 0,
        sender: info.sender.clone(),
        recipients: info.recipients.clone(),
        received_at: crate::core::clock::unix_now(),
        source_ip: String::new(),
        listener: String::new(),
        dsn: false,
        size: raw.len() as u64,
        outgoing: false,
        scanned: true,
        cpq: Some(CpqTag::Release(tag)),
    };
    let body = shared
        .mail
        .spool_message(&env, raw)
        .await
        .map_err(|e| anyhow::anyhow!("spool: {e}"))?;
    shared
        .mail
        .log
        .emit(crate::core::events::Event::ReleaseQueued {
            mid,
            manager_mid: manager_mid(info),
            gateway: &info.gateway,
            gateway_mid: info.gateway_mid,
            host: crate::core::config::CPQ_RELEASE_HOST,
        });
    shared.cpq.state.stats.release_queued(mid, &info.gateway);
    shared.mail.queue.enqueue(Arc::new(env), Some(body));
    Ok(mid)
}

/// The manager's way out of its store: a message released from all its quarantines is
/// queued back to the gateway it came from. The quarantine service (`local_quarantine`)
/// reaches it through `CpqHandle::release_route`, which `node` wires on a manager. It
/// lives in the CPQ handle it uses, so it holds that one weakly.
pub struct ToGateways {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    pub scan: Arc<ScanHandle>,
    pub cpq: std::sync::Weak<CpqHandle>,
}

impl ToGateways {
    /// Its handles; `None` only while the node is being dropped.
    fn deps(&self) -> Option<Deps> {
        Some(Deps {
            config: self.config.clone(),
            mail: self.mail.clone(),
            scan: self.scan.clone(),
            cpq: self.cpq.upgrade()?,
        })
    }
}

impl crate::core::state::ReleaseRoute for ToGateways {
    fn release_batch<'a>(
        &'a self,
        items: Vec<(u64, MsgId, Vec<EarlyReleaseActions>)>,
    ) -> crate::core::state::BoxFuture<'a, Vec<(u64, u64)>> {
        Box::pin(async move {
            match self.deps() {
                Some(shared) => release_batch(&shared, items).await,
                None => Vec::new(),
            }
        })
    }

    fn release<'a>(
        &'a self,
        msg_id: MsgId,
        info: &'a MessageInfo,
        raw: Vec<u8>,
        actions: &'a [EarlyReleaseActions],
    ) -> crate::core::state::BoxFuture<'a, anyhow::Result<u64>> {
        Box::pin(async move {
            let shared = self
                .deps()
                .ok_or_else(|| anyhow::anyhow!("the node is stopping"))?;
            queue_release(&shared, msg_id, info, raw, actions).await
        })
    }
}

/// Releases a batch on the manager: reads the messages in one store call,
/// spools and queues their release copies concurrently (their fsyncs are
/// shared), and confirms them in one transaction. Returns (manager MID,
/// queued MID) per message queued. A crash before the confirmation leaves
/// them in `pending_deliveries`, handed over again at start (the release id
/// is the same, so the gateway delivers each once).
pub async fn release_batch(
    shared: &Deps,
    items: Vec<(u64, MsgId, Vec<EarlyReleaseActions>)>,
) -> Vec<(u64, u64)> {
    let ids: Vec<MsgId> = items.iter().map(|(_, id, _)| *id).collect();
    let loaded = shared
        .scan
        .local_quarantine
        .with(move |s| {
            ids.iter()
                .map(|&id| Ok::<_, pvo_quarantine::QuarantineError>((s.message(id)?, s.raw(id)?)))
                .collect::<Vec<_>>()
        })
        .await;
    let mut tasks = Vec::new();
    for ((mid, msg_id, actions), l) in items.into_iter().zip(loaded) {
        match l {
            Ok((info, raw)) => {
                let shared = shared.clone();
                tasks.push(tokio::spawn(async move {
                    let r = queue_release(&shared, msg_id, &info, raw, &actions).await;
                    (mid, msg_id, info.gateway.clone(), r)
                }));
            }
            Err(e) => shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleasedUnreadable { mid, error: &e }),
        }
    }
    let mut done = Vec::new();
    let mut confirm = Vec::new();
    for t in tasks {
        let Ok((mid, msg_id, gateway, r)) = t.await else {
            continue;
        };
        match r {
            Ok(new_mid) => {
                done.push((mid, new_mid));
                confirm.push((msg_id, new_mid.to_string()));
            }
            Err(e) => shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleaseNotQueuedToGateway {
                    mid,
                    gateway: &gateway,
                    error: &e,
                }),
        }
    }
    if !confirm.is_empty() {
        let now = crate::core::clock::unix_now();
        let r = shared
            .scan
            .local_quarantine
            .with(move |s| s.confirm_deliveries(&confirm, now))
            .await;
        if let Err(e) = r {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ReleasesUnrecorded { error: &e });
        }
    }
    done
}

/// Whether this manager can centralize `gateway` (the enable preflight,
/// docs/appliance.md scenario 2): it is enrolled, the migration wizard has run, its settings are
/// committed, and an Administrator made them. `Err` names what is missing and
/// what to do.
pub fn readiness(
    config: &ConfigHandle,
    access: &AccessHandle,
    gateway: &str,
) -> Result<(), String> {
    let cfg = config.current();
    let Some(c) = cfg.cpq.as_ref() else {
        return Err("the centralized PVO service is not configured on the manager ([cpq])".into());
    };
    if !c.gateways.iter().any(|g| g.id == gateway) {
        return Err(format!(
            "gateway {gateway} is not added to the manager (applianceconfig / pvo manager enroll, then commit)"
        ));
    }
    // The wizard's settings as committed, and as they would be after a commit.
    let store = crate::core::config_store::Store::new(&cfg.data_dir, &config.path);
    let pending = store
        .pending()
        .ok()
        .flatten()
        .and_then(|p| store.parse(&p.text, &store.pending_path()).ok())
        .map(|pc| pc.cpq.and_then(|x| x.migration));
    match (&c.migration, pending) {
        (None, Some(Some(_))) | (Some(_), Some(None)) => Err(
            "the migration wizard's changes are not committed on the manager (run `commit` there)"
                .into(),
        ),
        (Some(m), Some(Some(p))) if *m != p => Err(
            "the migration wizard's changes are not committed on the manager (run `commit` there)"
                .into(),
        ),
        (None, _) => Err(
            "the migration wizard has not been run on the manager (`pvoconfig migration automatic`, then `commit`)"
                .into(),
        ),
        (Some(m), _) => match role_of(access, &m.set_by) {
            Some(r) if r == "Administrator" => Ok(()),
            Some(r) => Err(format!(
                "the migration wizard was run by {} whose role is {r}, not Administrator (an Administrator must run `pvoconfig migration` and commit)",
                m.set_by
            )),
            None => Err(format!(
                "the migration wizard was run by {}, who is not a user of this manager (an Administrator must run `pvoconfig migration` and commit)",
                m.set_by
            )),
        },
    }
}

/// The role of a user of this node, by name (`None`: no such user).
fn role_of(access: &AccessHandle, user: &str) -> Option<String> {
    access.users.user(user).map(|u| u.role)
}
