//! Migration of a gateway's local quarantines to the manager (docs/appliance.md,
//! "Quarantines": mail already in a gateway's local quarantines moves to the manager once
//! the gateway is enabled, asynchronously, with a notification when done).
//!
//! When a gateway is central ([`start`] runs at node start and after every commit) and its
//! local store still holds messages, one background task hands each held message to the
//! manager exactly as a central-mode quarantine travels: a spooled copy under a new MID
//! whose envelope carries a transfer tag ([`records::migration_tag`]: every quarantine the
//! message is held in, reason, threat level and the *same* scheduled exit; the record names
//! the original MID and reception time), queued to `the.cpq.host`, from where `delivery`
//! sends it with its `XPVO-META` record.
//!
//! Crash safety, per batch: the copies are spooled (fsynced) first, then the local messages
//! are marked migrated in one transaction (`Store::mark_migrated`: they leave their
//! quarantines without being released or deleted, bytes dropped), then the copies are
//! queued. A crash after the spool and before the mark leaves the copies in the spool (the
//! restart queues them) and the messages held (the resumed migration sends them again):
//! the transfer id is stable per local message (`<node>-migrate-<store id>`) and the
//! manager stores a transfer id once, so nothing is lost or doubled. A copy whose message
//! stopped being held meanwhile (an administrator released or deleted it) is dropped from
//! the spool instead of queued.
//!
//! Mail keeps flowing: the work is batched ([`BATCH`] messages per store read, store calls
//! on the blocking pool), and a batch starts only when `the.cpq.host` has fewer than
//! [`MAX_BACKLOG`] recipients waiting, so the migration never floods the queue (nor memory)
//! and pauses by itself while the manager is unreachable. The retention sweeper leaves the
//! local store alone while a migration runs (the manager applies the kept exits).
//!
//! Progress ([`progress`], for `pvoconfig status`) is kept in `DATA_DIR/cpq/migration.json`
//! so a restarted node resumes the same migration (same start time; the count of messages
//! already migrated comes from the store) and still shows the last one when it is done.
//! When every copy has been taken by the manager, the gateway logs `Migration of local
//! quarantines to the manager finished: N messages` and mails the `[cpq] notify` addresses.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pvo_quarantine::{MembershipState, MessageInfo, MsgId};

use crate::core::clock::unix_now;
use crate::core::config::{Role, CPQ_HOST};
use crate::core::cpq::handles::Deps;
use crate::core::cpq::records;
use crate::core::envelope::{CpqTag, Envelope};

pub use crate::core::cpq::migration::Progress;

/// Messages read from the store, spooled and marked together.
pub const BATCH: usize = 200;
/// A batch starts only while fewer recipients than this wait under `the.cpq.host`.
pub const MAX_BACKLOG: usize = 1_000;
/// How long to wait before trying again after an error.
const RETRY: Duration = Duration::from_secs(15);
/// How often the backlog and the delivery of the copies are looked at.
const POLL: Duration = Duration::from_millis(500);

/// What the node knows about the migration: the running one, or the last one (also from
/// before a restart), or an empty `Progress` when there never was one.
pub fn progress(shared: &Deps) -> Progress {
    let mut p = shared.cpq.state.migration.progress.lock().unwrap();
    let p = p.get_or_insert_with(|| load(shared).unwrap_or_default());
    let mut out = p.clone();
    out.running = shared.cpq.state.migration.running.load(Ordering::SeqCst);
    out
}

/// True while a migration task runs (the local sweeper pauses meanwhile).
pub fn running(shared: &Deps) -> bool {
    shared.cpq.state.migration.running.load(Ordering::SeqCst)
}

/// Starts the migration in the background if this gateway is central and its local store
/// holds messages (or a migration was interrupted before it finished). A second call while
/// one runs does nothing. Called at node start and after every commit.
pub fn start(shared: &Deps) {
    // The manager's status checks of its gateways start at the same moments.
    crate::core::cpq::gateways::start(shared);
    if !is_central(shared) || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    if shared
        .cpq
        .state
        .migration
        .running
        .swap(true, Ordering::SeqCst)
    {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let held = shared
            .scan
            .local_quarantine
            .with(|s| s.usage().map(|u| u.total_messages))
            .await;
        let unfinished = progress(&shared)
            .started_at
            .is_some_and(|_| progress(&shared).finished_at.is_none());
        match held {
            Ok(0) if !unfinished => {}
            Ok(_) => run(&shared).await,
            Err(e) => shared
                .mail
                .log
                .emit(crate::core::events::Event::MigrationUnreadable { error: &e }),
        }
        shared
            .cpq
            .state
            .migration
            .running
            .store(false, Ordering::SeqCst);
    });
}

fn is_central(shared: &Deps) -> bool {
    let cfg = shared.config.current();
    cfg.role == Role::Gateway && cfg.cpq.as_ref().is_some_and(|c| c.central())
}

fn state_path(shared: &Deps) -> PathBuf {
    shared
        .config
        .current()
        .data_dir
        .join("cpq")
        .join("migration.json")
}

fn load(shared: &Deps) -> Option<Progress> {
    let bytes = std::fs::read(state_path(shared)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Sets the progress (and writes it down).
fn set(shared: &Deps, f: impl FnOnce(&mut Progress)) {
    let snapshot = {
        let mut guard = shared.cpq.state.migration.progress.lock().unwrap();
        let p = guard.get_or_insert_with(Progress::default);
        f(p);
        p.running = true;
        p.clone()
    };
    let path = state_path(shared);
    let mut stored = snapshot;
    stored.running = false;
    if let Ok(bytes) = serde_json::to_vec_pretty(&stored) {
        if let Err(e) = crate::core::atomic_file::write(&path, &bytes) {
            tracing::warn!("cannot write {}: {e:#}", path.display());
        }
    }
}

fn error(shared: &Deps, text: String) {
    shared
        .mail
        .log
        .emit(crate::core::events::Event::MigrationError { why: &text });
    set(shared, |p| p.last_error = Some(text));
}

async fn run(shared: &Deps) {
    let store = shared.scan.local_quarantine.clone();
    let before = load(shared);
    let resumed = before
        .as_ref()
        .and_then(|p| p.started_at.filter(|_| p.finished_at.is_none()));
    let started_at = resumed.unwrap_or_else(unix_now);
    // What is held now, and what an interrupted run already handed over.
    let counts = store
        .with(move |s| {
            Ok::<_, pvo_quarantine::QuarantineError>((
                s.usage()?.total_messages,
                if resumed.is_some() {
                    s.migrated_since(started_at)?
                } else {
                    0
                },
            ))
        })
        .await;
    let (held, done) = match counts {
        Ok(c) => c,
        Err(e) => {
            error(shared, format!("cannot read the local store: {e}"));
            return;
        }
    };
    set(shared, |p| {
        *p = Progress {
            running: true,
            total: held + done,
            migrated: done,
            started_at: Some(started_at),
            finished_at: None,
            last_error: None,
        }
    });
    if resumed.is_some() {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::MigrationResumed {
                done,
                total: held + done,
            });
    } else {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::MigrationStarted { messages: held });
    }

    // The copies spooled by this run, until the manager has taken them. After a restart,
    // copies spooled before it are queued again from the spool: wait for whatever is
    // queued to the manager now as well.
    let mut copies: HashSet<u64> = HashSet::new();
    if resumed.is_some() {
        copies.extend(queued_to_manager(shared).await);
    }
    loop {
        let mut cursor: MsgId = 0;
        let mut moved = 0u64;
        loop {
            if !is_central(shared) {
                error(
                    shared,
                    "stopped: the gateway is not central any more (its remaining local messages stay in its local quarantines)".into(),
                );
                return;
            }
            wait_for_room(shared).await;
            let ids = match store.with(move |s| s.held_ids(cursor, BATCH)).await {
                Ok(ids) => ids,
                Err(e) => {
                    error(shared, format!("cannot list the held messages: {e}"));
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let Some(&last) = ids.last() else { break };
            cursor = last;
            let n = migrate_batch(shared, ids, &mut copies).await;
            moved += n;
            if n > 0 {
                set(shared, |p| {
                    p.migrated += n;
                    p.total = p.total.max(p.migrated);
                    p.last_error = None;
                });
            }
        }
        // A pass over everything held: done when nothing is held any more; otherwise
        // some messages failed (their errors are logged) and are tried again.
        let held = store
            .with(|s| s.usage().map(|u| u.total_messages))
            .await
            .unwrap_or(1);
        if held == 0 {
            break;
        }
        set(shared, |p| p.total = p.migrated + held);
        if moved == 0 {
            tokio::time::sleep(RETRY).await;
        }
    }

    wait_until_taken(shared, &copies).await;
    let finished_at = unix_now();
    set(shared, |p| {
        p.finished_at = Some(finished_at);
        p.total = p.migrated;
        p.last_error = None;
    });
    let p = progress(shared);
    shared
        .mail
        .log
        .emit(crate::core::events::Event::MigrationFinished {
            messages: p.migrated,
        });
    notify(shared, &p).await;
}

/// Waits until `the.cpq.host` has room for another batch.
async fn wait_for_room(shared: &Deps) {
    let mut waited = false;
    loop {
        let hosts = shared.mail.queue.hosts().await;
        let host = hosts.iter().find(|h| h.host == CPQ_HOST);
        let backlog = host.map_or(0, |h| h.active_recipients);
        if backlog < MAX_BACKLOG {
            return;
        }
        if let Some(e) = host.and_then(|h| h.last_error.clone()).filter(|_| !waited) {
            set(shared, |p| {
                p.last_error = Some(format!(
                    "waiting for the manager ({backlog} messages queued to {CPQ_HOST}): {e}"
                ))
            });
            waited = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The MIDs queued to `the.cpq.host`.
async fn queued_to_manager(shared: &Deps) -> Vec<u64> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared
        .mail
        .queue
        .send(crate::core::queue::Event::Recipients(
            crate::core::queue::Selection::Host(CPQ_HOST.to_string()),
            tx,
        ));
    rx.await
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.mid)
        .collect()
}

/// Waits until none of `copies` is queued any more (the manager took them all).
async fn wait_until_taken(shared: &Deps, copies: &HashSet<u64>) {
    let mut noted = false;
    loop {
        let left = queued_to_manager(shared)
            .await
            .into_iter()
            .filter(|m| copies.contains(m))
            .collect::<HashSet<_>>()
            .len();
        if left == 0 {
            return;
        }
        if !noted {
            let why = shared
                .mail
                .queue
                .hosts()
                .await
                .into_iter()
                .find(|h| h.host == CPQ_HOST)
                .and_then(|h| h.last_error);
            if let Some(why) = why {
                set(shared, |p| {
                    p.last_error = Some(format!(
                        "waiting for the manager to take the last {left} messages: {why}"
                    ))
                });
                noted = true;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One batch: read, spool the copies (their fsyncs shared), mark, queue. Returns how many
/// messages were handed over.
async fn migrate_batch(shared: &Deps, ids: Vec<MsgId>, copies: &mut HashSet<u64>) -> u64 {
    let loaded = shared
        .scan
        .local_quarantine
        .with(move |s| {
            ids.into_iter()
                .map(|id| (id, s.message(id).and_then(|m| Ok((m, s.raw(id)?)))))
                .collect::<Vec<_>>()
        })
        .await;
    let cfg = shared.config.current();
    let node_id = cfg
        .cpq
        .as_ref()
        .map(|c| c.node_id.clone())
        .unwrap_or_else(|| cfg.hostname.clone());
    let mut tasks = Vec::new();
    for (id, l) in loaded {
        let (info, raw) = match l {
            Ok(x) => x,
            Err(e) => {
                error(
                    shared,
                    format!("message {id} of the local store cannot be read: {e}"),
                );
                continue;
            }
        };
        // Held when listed; an administrator may have acted on it since.
        if info.state != pvo_quarantine::MessageState::Held {
            continue;
        }
        let env = copy_envelope(shared, &node_id, &info, raw.len());
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let r = shared.mail.spool_message(&env, raw).await;
            (info, env, r)
        }));
    }
    let mut spooled = Vec::new();
    for t in tasks {
        let Ok((info, env, r)) = t.await else {
            continue;
        };
        match r {
            Ok(body) => spooled.push((info, env, body)),
            Err(e) => error(
                shared,
                format!(
                    "MID {} could not be spooled for the manager: {e}; tried again later",
                    info.gateway_mid
                ),
            ),
        }
    }
    if spooled.is_empty() {
        return 0;
    }
    let items: Vec<(MsgId, String)> = spooled
        .iter()
        .map(|(info, env, _)| (info.msg_id, transfer_id(env)))
        .collect();
    let now = unix_now();
    let marked = match shared
        .scan
        .local_quarantine
        .with(move |s| s.mark_migrated(&items, now))
        .await
    {
        Ok(m) => m,
        Err(e) => {
            // Nothing was marked: drop the copies; the messages are sent again later.
            for (_, env, _) in &spooled {
                shared.mail.spool.finish(env.mid);
            }
            error(shared, format!("cannot mark messages migrated: {e}"));
            return 0;
        }
    };
    let mut n = 0;
    for ((info, env, body), marked) in spooled.into_iter().zip(marked) {
        let (orig, new) = (info.gateway_mid, env.mid);
        if !marked {
            shared.mail.spool.finish(new);
            shared
                .mail
                .log
                .emit(crate::core::events::Event::MigrationLeft {
                    mid: orig,
                    copy: new,
                });
            shared
                .mail
                .log
                .emit(crate::core::events::Event::Finished { mid: new });
            continue;
        }
        let held: Vec<&str> = info
            .memberships
            .iter()
            .filter(|m| m.state == MembershipState::Held)
            .map(|m| m.quarantine.as_str())
            .collect();
        shared.mail.log.emit(crate::core::events::Event::Migrating {
            mid: orig,
            quarantines: &held,
            copy: new,
            transfer: &transfer_id(&env),
        });
        if held.iter().any(|q| q.eq_ignore_ascii_case("Outbreak")) {
            // Kept under the original MID, which the manager knows it by, for rescans
            // after outbreak rule updates.
            let mut keep = env.clone();
            keep.mid = orig;
            if let Err(e) =
                crate::core::cpq::transfer::keep_outbreak_copy(&shared.into(), &keep, &body)
            {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::OutbreakCopyNotKept {
                        mid: orig,
                        error: &e,
                    });
            }
        }
        copies.insert(new);
        shared.mail.queue.enqueue(Arc::new(env), Some(body));
        n += 1;
    }
    n
}

fn transfer_id(env: &Envelope) -> String {
    match &env.cpq {
        Some(CpqTag::Transfer(t)) => t.transfer_id.clone(),
        _ => String::new(),
    }
}

/// The envelope of the copy of a held local message: a new MID, the original envelope,
/// and the transfer tag.
fn copy_envelope(shared: &Deps, node_id: &str, info: &MessageInfo, size: usize) -> Envelope {
    let meta = |k: &str| info.meta.get(k);
    Envelope {
        mid: shared.mail.ids.next(crate::core::ids::Kind::Mid),
        icid: meta("icid").and_then(|v| v.as_u64()).unwrap_or(0),
        sender: info.sender.clone(),
        recipients: info.recipients.clone(),
        received_at: unix_now(),
        source_ip: meta("source_ip")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        listener: meta("listener")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        dsn: false,
        size: size as u64,
        outgoing: meta("outgoing").and_then(|v| v.as_bool()).unwrap_or(false),
        scanned: true,
        cpq: Some(CpqTag::Transfer(records::migration_tag(node_id, info))),
    }
}

/// Mails the `[cpq] notify` addresses that the migration is done.
async fn notify(shared: &Deps, p: &Progress) {
    let cfg = shared.config.current();
    let Some(c) = cfg.cpq.as_ref() else { return };
    if c.notify.is_empty() {
        return;
    }
    let text = notification(&cfg.hostname, &c.node_id, &c.managers_text(), &c.notify, p);
    let env = Envelope::from_mailer_daemon(c.notify.clone());
    match crate::core::scanning::pipeline::inject(&shared.into(), &env, text, true).await {
        Ok(mid) => shared
            .mail
            .log
            .emit(crate::core::events::Event::MigrationNotified { mid }),
        Err(e) => shared
            .mail
            .log
            .emit(crate::core::events::Event::MigrationNotificationFailed { error: &e }),
    }
}

/// The notification mail (RFC 5322, plain text, CRLF line ends).
fn notification(host: &str, node_id: &str, manager: &str, to: &[String], p: &Progress) -> Vec<u8> {
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let when = |t: Option<u64>| {
        t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc2822)
                    .ok()
            })
            .unwrap_or_else(|| "-".into())
    };
    let to = to
        .iter()
        .map(|a| format!("<{a}>"))
        .collect::<Vec<_>>()
        .join(", ");
    let id = format!(
        "<migration-{}-{}@{host}>",
        p.finished_at.unwrap_or(0),
        node_id.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
            "-"
        )
    );
    format!(
        "From: PVO <MAILER-DAEMON@{host}>\r\n\
         To: {to}\r\n\
         Subject: PVO migration to the manager finished: {node_id}, {} messages\r\n\
         Date: {date}\r\n\
         Message-ID: {id}\r\n\
         Auto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         The local quarantines of gateway {node_id} ({host})\r\n\
         have migrated to the Centralized Policy, Virus and Outbreak Quarantines\r\n\
         on the manager {manager}.\r\n\
         \r\n\
         Messages migrated: {}\r\n\
         Started:           {}\r\n\
         Finished:          {}\r\n\
         \r\n\
         Each message kept its quarantines, reasons and scheduled exits. Search,\r\n\
         release and delete them on the manager.\r\n",
        p.migrated,
        p.migrated,
        when(p.started_at),
        when(p.finished_at),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notification_is_a_plain_rfc5322_message() {
        let p = Progress {
            running: false,
            total: 10_000,
            migrated: 10_000,
            started_at: Some(1_700_000_000),
            finished_at: Some(1_700_000_600),
            last_error: None,
        };
        let m = notification(
            "gw1.example.com",
            "gw1",
            "10.0.0.2:7025",
            &["admin@example.com".into(), "ops@example.com".into()],
            &p,
        );
        let t = String::from_utf8(m).unwrap();
        let (head, body) = t.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("To: <admin@example.com>, <ops@example.com>\r\n"));
        assert!(head
            .contains("Subject: PVO migration to the manager finished: gw1, 10000 messages\r\n"));
        assert!(head.contains("Date: "));
        assert!(head.contains("Message-ID: <migration-1700000600-gw1@gw1.example.com>"));
        assert!(body.contains("Messages migrated: 10000\r\n"));
        assert!(body.contains("Started:           Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
        // CRLF only, no bare CR or LF, no line over 78 characters.
        assert!(!t.replace("\r\n", "").contains(['\r', '\n']));
        assert!(t.split("\r\n").all(|l| l.len() <= 78), "{t}");
    }
}
