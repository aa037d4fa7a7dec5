//! The work queue: every accepted message passes the engines of its mail
//! policy before it reaches the delivery queue.
//!
//! A message is already on disk (and answered `250`) when it gets here, so
//! nothing in this stage can lose it: a scan engine that fails or times out
//! leaves the message in the spool and it is scanned again a minute later
//! (and after a restart), never passed unscanned. The outcome is one of:
//! deliver (marked `Scanned` in the spool first, so a restart does not scan
//! it twice), deliver a rewritten copy (new MID, `rewritten to`), drop,
//! bounce, or hold in one or more quarantines.
//!
//! A message released from the Outbreak quarantine comes back through
//! [`inject_for_rescan`]: it gets a new MID and passes the anti-virus stage
//! only, because the point of holding it was to wait for signatures, and
//! running the content filters and outbreak rules again would hold it a
//! second time for the reasons an administrator (or a rules update) just
//! cleared. After a crash before that scan ends, the recovered copy takes
//! the full pipeline: held again is safe, passed unscanned is not.

use std::sync::Arc;
use std::time::Duration;

use pvo_quarantine::{Attachment, Hold, NewMessage, Reason, ReasonKind};
use pvo_scan::mime::{Limits, ScannedMessage};
use pvo_scan::verdict::{Action, AttachmentSelector};
use serde_json::json;

use crate::core::envelope::{Envelope, Update};
use crate::core::feature_keys::Feature;
use crate::core::scanning::virus::VirusVerdict;
use crate::core::state::{ConfigHandle, MailHandle, ScanHandle};

/// The handles the pipeline uses: the configuration, the mail path (spool, ids, queue,
/// log, counters) and the scanner with its quarantine store.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    pub scan: Arc<ScanHandle>,
}

impl From<&Deps> for crate::core::cpq::transfer::Deps {
    fn from(d: &Deps) -> Self {
        crate::core::cpq::transfer::Deps {
            config: d.config.clone(),
            mail: d.mail.clone(),
        }
    }
}

impl From<&crate::core::cpq::handles::Deps> for Deps {
    fn from(d: &crate::core::cpq::handles::Deps) -> Deps {
        Deps {
            config: d.config.clone(),
            mail: d.mail.clone(),
            scan: d.scan.clone(),
        }
    }
}

/// How long a message waits after a scan engine failed before it is scanned
/// again: the first retry comes soon (a clamd restart takes seconds), then the
/// wait doubles up to the longest.
const RETRY_SCAN_FIRST: Duration = Duration::from_secs(5);
const RETRY_SCAN_MAX: Duration = Duration::from_secs(60);

/// Which engines a message still has to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stages {
    /// Every engine of its mail policy (a newly accepted message).
    All,
    /// Anti-virus only (a message released from the Outbreak quarantine).
    AntivirusOnly,
}

use crate::core::clock::unix_now as now;

/// Hands a freshly spooled message to scanning (or straight to delivery when
/// no mail policy applies).
pub fn submit(shared: &Deps, env: Arc<Envelope>, body: Arc<Vec<u8>>) {
    let scanner = shared.scan.scanner();
    if env.scanned
        || env.dsn
        || scanner
            .select(env.outgoing, &env.sender, &env.recipients)
            .is_none()
    {
        shared.mail.queue.enqueue(env, Some(body));
        return;
    }
    let shared = shared.clone();
    let span = tracing::debug_span!("message", mid = env.mid);
    tokio::spawn(tracing::Instrument::instrument(
        run(shared, env, body, Stages::All),
        span,
    ));
}

/// Sends a notification (a filter's `notify` action) about `orig` to `to`
/// (`bounce::notification`).
pub fn spawn_notification(shared: Deps, orig: Arc<Envelope>, to: String, why: String) {
    tokio::spawn(async move {
        let (env, text) =
            crate::core::bounce::notification(&shared.config.current(), &orig, to, &why);
        match inject(&shared, &env, text, true).await {
            Ok(mid) => shared
                .mail
                .log
                .emit(crate::core::events::Event::NotificationGenerated { mid, of: orig.mid }),
            Err(e) => shared
                .mail
                .log
                .emit(crate::core::events::Event::NotificationNotSpooled {
                    of: orig.mid,
                    error: &e,
                }),
        }
    });
}

/// Injects a message generated or released here: a new MID, spooled
/// (fsynced), then scanned or queued. Returns the new MID.
pub async fn inject(
    shared: &Deps,
    template: &Envelope,
    body: Vec<u8>,
    scanned: bool,
) -> anyhow::Result<u64> {
    let mid = shared.mail.ids.next(crate::core::ids::Kind::Mid);
    let mut env = template.clone();
    env.mid = mid;
    env.size = body.len() as u64;
    env.scanned = scanned;
    let body = shared
        .mail
        .spool_message(&env, body)
        .await
        .map_err(|e| anyhow::anyhow!("spool: {e}"))?;
    submit_injected(shared, env, body);
    Ok(mid)
}

/// The second half of [`inject`], for a message already spooled: logs it and
/// hands it to scanning or delivery.
pub fn submit_injected(shared: &Deps, env: Envelope, body: Arc<Vec<u8>>) {
    shared.mail.log.emit(crate::core::events::Event::Ready {
        mid: env.mid,
        bytes: body.len(),
        sender: &env.sender,
    });
    shared
        .mail
        .log
        .emit(crate::core::events::Event::Queued { mid: env.mid });
    submit(shared, Arc::new(env), body);
}

/// Spools a message released from the Outbreak quarantine under a new MID and
/// scans it with anti-virus only (see the module documentation). Returns the
/// new MID once the message is on disk.
pub async fn inject_for_rescan(
    shared: &Deps,
    template: &Envelope,
    body: Vec<u8>,
) -> anyhow::Result<u64> {
    let mid = shared.mail.ids.next(crate::core::ids::Kind::Mid);
    let mut env = template.clone();
    env.mid = mid;
    env.size = body.len() as u64;
    env.scanned = false;
    let body = shared
        .mail
        .spool_message(&env, body)
        .await
        .map_err(|e| anyhow::anyhow!("spool: {e}"))?;
    submit_for_rescan(shared, env, body);
    Ok(mid)
}

/// The second half of [`inject_for_rescan`], for a message already spooled (a release,
/// once its id is recorded): logs it and rescans it with anti-virus.
pub fn submit_for_rescan(shared: &Deps, env: Envelope, body: Arc<Vec<u8>>) {
    let mid = env.mid;
    shared.mail.log.emit(crate::core::events::Event::Ready {
        mid,
        bytes: body.len(),
        sender: &env.sender,
    });
    shared
        .mail
        .log
        .emit(crate::core::events::Event::Queued { mid });
    let env = Arc::new(env);
    if shared
        .scan
        .scanner()
        .select(env.outgoing, &env.sender, &env.recipients)
        .is_none()
    {
        shared.mail.spool.update(mid, Update::Scanned.encode());
        shared.mail.queue.enqueue(env, Some(body));
    } else {
        let shared = shared.clone();
        let span = tracing::debug_span!("message", mid = env.mid);
        tokio::spawn(tracing::Instrument::instrument(
            run(shared, env, body, Stages::AntivirusOnly),
            span,
        ));
    }
}

/// A recovered message that had not passed scanning before the restart.
pub fn submit_recovered(shared: &Deps, env: Arc<Envelope>) {
    let shared = shared.clone();
    tokio::spawn(async move {
        match shared.mail.read_body(env.mid).await {
            Ok(body) => submit(&shared, env, Arc::new(body)),
            Err(e) => shared
                .mail
                .log
                .emit(crate::core::events::Event::ScanReadFailed {
                    mid: env.mid,
                    error: &e,
                }),
        }
    });
}

async fn run(shared: Deps, env: Arc<Envelope>, body: Arc<Vec<u8>>, stages: Stages) {
    let mut wait = RETRY_SCAN_FIRST;
    loop {
        let started = std::time::Instant::now();
        match scan(&shared, &env, &body, stages).await {
            Ok(decision) => {
                shared.mail.counters.scan_latency.observe(started.elapsed());
                apply(&shared, env, body, decision).await;
                return;
            }
            Err(e) => {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::ScanDeferred {
                        mid: env.mid,
                        error: &e,
                        retry_secs: wait.as_secs(),
                    });
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_SCAN_MAX);
            }
        }
    }
}

/// What the engines decided, before anything is done about it.
#[derive(Default)]
struct Decision {
    drop_by: Option<String>,
    bounce_by: Option<String>,
    holds: Vec<Hold>,
    header_actions: Vec<Action>,
    strip: Vec<AttachmentSelector>,
    notify: Vec<(String, String)>,
    view: Option<Arc<ScannedMessage>>,
    /// What changed the message, for `rewritten to ... by`.
    rewritten_by: Vec<String>,
}

impl Decision {
    fn apply_actions(&mut self, actions: &[Action], reason: &Reason, details: &serde_json::Value) {
        for a in actions {
            match a {
                Action::Deliver => {}
                Action::Drop => {
                    self.drop_by.get_or_insert_with(|| reason.to_string());
                }
                Action::Bounce => {
                    self.bounce_by.get_or_insert_with(|| reason.to_string());
                }
                Action::Quarantine(q) => {
                    if !self.holds.iter().any(|h| &h.quarantine == q) {
                        self.holds.push(Hold {
                            quarantine: q.clone(),
                            reason: reason.clone(),
                            details: details.clone(),
                            exit_at: None,
                        });
                    }
                }
                Action::AddHeader { .. } | Action::ModifyHeader { .. } => {
                    self.header_actions.push(a.clone());
                    self.rewritten_by.push(reason.to_string());
                }
                Action::StripAttachment(sel) => {
                    self.strip.push(sel.clone());
                    self.rewritten_by.push(reason.to_string());
                }
                Action::Notify(addr) => self.notify.push((addr.clone(), reason.to_string())),
            }
        }
    }
}

/// Runs the engines. `Err` is a temporary failure (engine unreachable).
async fn scan(
    shared: &Deps,
    env: &Envelope,
    body: &Arc<Vec<u8>>,
    stages: Stages,
) -> Result<Decision, String> {
    let scanner = shared.scan.scanner();
    let Some(p) = scanner.select(env.outgoing, &env.sender, &env.recipients) else {
        return Ok(Decision::default());
    };
    let mid = env.mid;
    let mut d = Decision::default();
    shared
        .mail
        .log
        .emit(crate::core::events::Event::PolicyMatched {
            mid,
            policy: &p.policy.name,
            outgoing: p.policy.direction == super::Direction::Outgoing,
        });

    // A feature without an active key is off on this machine: its engine is skipped
    // (`feature_keys`; one atomic load each).
    let keys = &shared.scan.features;
    let skipped = |feature: Feature| {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::FeatureSkipped {
                mid,
                feature: feature.title(),
            });
    };
    let on = Engines {
        dlp: keys.is_active(&Feature::Dlp),
        outbreak: keys.is_active(&Feature::Outbreak),
    };

    // 1. Anti-virus.
    if p.policy.antivirus && scanner.clamd.is_some() && !keys.is_active(&Feature::Antivirus) {
        skipped(Feature::Antivirus);
    } else if p.policy.antivirus {
        if let Some(clamd) = &scanner.clamd {
            let started = std::time::Instant::now();
            match clamd.scan(body).await {
                Ok(VirusVerdict::Clean) => shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::AntivirusNegative { mid }),
                Ok(VirusVerdict::Infected(sig)) => {
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::AntivirusPositive {
                            mid,
                            signature: &sig,
                        });
                    let reason = Reason::new(ReasonKind::Virus, sig.clone());
                    d.apply_actions(&p.policy.on_virus, &reason, &json!({ "virus": sig }));
                }
                Ok(VirusVerdict::Unscannable(u)) => {
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::AntivirusUnscannable { mid, what: &u });
                    let reason = Reason::new(ReasonKind::Virus, "unscannable");
                    d.apply_actions(
                        &p.policy.on_unscannable,
                        &reason,
                        &json!({ "unscannable": format!("{u:?}") }),
                    );
                }
                Err(e) => return Err(format!("anti-virus: {e}")),
            }
            tracing::debug!(mid, elapsed = ?started.elapsed(), "clamd scan");
        }
    }

    // 2. Content filters and DLP, 3. outbreak filters: on the bounded MIME view.
    if stages == Stages::All {
        if !on.dlp && !p.dlp.is_empty() {
            skipped(Feature::Dlp);
        }
        if !on.outbreak && p.policy.outbreak.is_some() {
            skipped(Feature::Outbreak);
        }
    }
    let outbreak = shared.scan.outbreak_rules();
    let report = if body.len() <= INLINE_SCAN_MAX {
        // A panic in an engine is a failed scan (retried later), as it is
        // on the blocking pool, not a lost task.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_engines(
                p,
                on,
                outbreak.as_deref(),
                &env.sender,
                &env.recipients,
                body,
                stages,
            )
        }))
        .map_err(|_| "scan engine panicked".to_string())?
    } else {
        let index = scanner
            .policies
            .iter()
            .position(|x| std::ptr::eq(x, p))
            .ok_or("mail policy vanished")?;
        let scanner = scanner.clone();
        let (sender, recipients) = (env.sender.clone(), env.recipients.clone());
        let raw = body.clone();
        tokio::task::spawn_blocking(move || {
            run_engines(
                &scanner.policies[index],
                on,
                outbreak.as_deref(),
                &sender,
                &recipients,
                &raw,
                stages,
            )
        })
        .await
        .map_err(|e| e.to_string())?
    };
    if stages == Stages::AntivirusOnly {
        // Released from Outbreak: the other engines already ran; the view
        // only gives the quarantine its subject and attachment names.
        d.view = report.view.ok().map(Arc::new);
        return Ok(d);
    }
    match report.view {
        Err(u) => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::Unscannable {
                    mid,
                    why: &u.reason,
                });
            let reason = Reason::new(ReasonKind::Other, "unscannable");
            d.apply_actions(
                &p.policy.on_unscannable,
                &reason,
                &json!({ "unscannable": u.reason }),
            );
        }
        Ok(msg) => {
            // Archive structure the view cannot see into (nested archives,
            // too many entries, encrypted members) is unscannable too, never
            // clean; the other engines still run on what is visible.
            if let Some(problem) = report.archive_problem {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::Unscannable { mid, why: &problem });
                let reason = Reason::new(ReasonKind::Other, "unscannable");
                d.apply_actions(
                    &p.policy.on_unscannable,
                    &reason,
                    &json!({ "unscannable": problem }),
                );
            }
            for m in report.filters {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::ContentFilterMatched {
                        mid,
                        filter: &m.filter,
                    });
                let reason = Reason::new(ReasonKind::ContentFilter, m.filter.clone());
                d.apply_actions(&m.actions, &reason, &json!({ "evidence": m.evidence }));
            }
            for r in report.dlp {
                if let Some(sev) = r.severity {
                    shared
                        .mail
                        .log
                        .emit(crate::core::events::Event::DlpViolation {
                            mid,
                            severity: &sev,
                            risk: &r.total,
                            policy: &r.policy,
                        });
                    let reason = Reason::new(ReasonKind::Dlp, r.policy.clone());
                    d.apply_actions(&r.actions.clone(), &reason, &json!(r));
                }
            }
            if let Some(op) = p.policy.outbreak.as_ref().filter(|_| on.outbreak) {
                if let Some(r) = report.outbreak {
                    if let Some(hold) = op.hold_for(&r) {
                        let level = r.level.map(|l| l.get()).unwrap_or(0);
                        let rule = r.rules.first().cloned().unwrap_or_default();
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::OutbreakPositive {
                                mid,
                                level: &level,
                                rule: &rule,
                            });
                        d.holds.push(Hold {
                            quarantine: "Outbreak".into(),
                            reason: Reason::new(ReasonKind::Outbreak, rule),
                            details: json!({ "threat_level": level, "rules": r.rules, "rules_version": r.version }),
                            exit_at: Some(now() + hold.as_secs()),
                        });
                    } else {
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::OutbreakNegative { mid });
                    }
                }
            }
            d.view = Some(Arc::new(msg));
        }
    }
    Ok(d)
}

/// Messages up to this size are scanned on the worker thread that runs
/// their task; larger ones on the blocking pool. The engines cost about a
/// microsecond per kilobyte of text (tens of microseconds for a typical
/// message, a fraction of a millisecond at this bound), while handing a
/// message to a blocking thread and back costs two thread wake-ups and
/// context switches, measured at more CPU than the engines themselves for
/// messages of a few kilobytes. Above the bound a scan could hold a worker
/// long enough to delay the SMTP sessions sharing it, so it moves off.
const INLINE_SCAN_MAX: usize = 256 << 10;

/// Which licensable engines after anti-virus are on on this machine (their feature keys,
/// read once per message).
#[derive(Debug, Clone, Copy)]
struct Engines {
    dlp: bool,
    outbreak: bool,
}

/// What the engines after anti-virus found in one message.
struct EngineReport {
    view: Result<ScannedMessage, pvo_scan::mime::Unscannable>,
    /// The rest is filled only for a scannable message passing all stages.
    archive_problem: Option<String>,
    filters: Vec<pvo_scan::filter::FilterMatch>,
    dlp: Vec<pvo_scan::dlp::DlpResult>,
    /// `Some` when the policy has outbreak filtering and rules are loaded.
    outbreak: Option<pvo_scan::outbreak::OutbreakResult>,
}

/// Builds the bounded MIME view and runs the content filters, DLP and
/// outbreak rules of policy `p` on it: CPU only, no IO, no logging, so it
/// runs on whichever thread [`scan`] chooses. [`scan`] logs and decides.
fn run_engines(
    p: &super::CompiledPolicy,
    on: Engines,
    outbreak: Option<&pvo_scan::outbreak::OutbreakRules>,
    sender: &str,
    recipients: &[String],
    raw: &[u8],
    stages: Stages,
) -> EngineReport {
    let view = pvo_scan::mime::scan(raw, &Limits::default());
    let mut report = EngineReport {
        view,
        archive_problem: None,
        filters: Vec::new(),
        dlp: Vec::new(),
        outbreak: None,
    };
    if stages == Stages::AntivirusOnly {
        return report;
    }
    let Ok(msg) = &report.view else {
        return report;
    };
    report.archive_problem = msg.archive_problem();
    let envelope = pvo_scan::filter::Envelope { sender, recipients };
    report.filters = p.filters.evaluate(&envelope, msg).matches;
    if on.dlp {
        report.dlp = p.dlp.iter().map(|engine| engine.scan(msg)).collect();
    }
    if on.outbreak && p.policy.outbreak.is_some() {
        report.outbreak = outbreak.map(|rules| rules.evaluate(msg));
    }
    report
}

async fn apply(shared: &Deps, env: Arc<Envelope>, body: Arc<Vec<u8>>, d: Decision) {
    let mid = env.mid;
    for (addr, why) in &d.notify {
        spawn_notification(shared.clone(), env.clone(), addr.clone(), why.clone());
    }
    if let Some(by) = &d.drop_by {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::Dropped { mid, by });
        finish(shared, mid);
        return;
    }
    if let Some(by) = &d.bounce_by {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::BouncedBy { mid, by });
        if !env.sender.is_empty() {
            for rcpt in &env.recipients {
                crate::core::bounce::spawn_dsn(
                    shared.config.clone(),
                    shared.mail.clone(),
                    env.clone(),
                    rcpt.clone(),
                    format!("5.7.1 message refused by policy ({by})"),
                    Some(body.clone()),
                );
            }
        }
        finish(shared, mid);
        return;
    }
    let rewritten = if d.header_actions.is_empty() && d.strip.is_empty() {
        None
    } else {
        Some(Arc::new(rewrite(
            &body,
            &d.header_actions,
            &d.strip,
            d.view.as_deref(),
        )))
    };
    if !d.holds.is_empty()
        && shared
            .config
            .current()
            .cpq
            .as_ref()
            .is_some_and(|c| c.central())
    {
        crate::core::cpq::transfer::send_to_manager(&shared.into(), env, body, rewritten, d.holds)
            .await;
        return;
    }
    if !d.holds.is_empty() {
        let raw = rewritten.clone().unwrap_or_else(|| body.clone());
        let attachments = d
            .view
            .as_ref()
            .map(|v| {
                v.parts
                    .iter()
                    .filter(|p| p.attachment)
                    .map(|p| Attachment {
                        name: p.filename.clone().unwrap_or_default(),
                        size: p.size as u64,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let subject = d
            .view
            .as_ref()
            .map(|v| v.subject.clone())
            .unwrap_or_default();
        let msg = NewMessage {
            idempotency_key: format!("local-{mid}"),
            gateway: shared.config.current().hostname.clone(),
            gateway_mid: mid,
            sender: env.sender.clone(),
            recipients: env.recipients.clone(),
            received: env.received_at,
            subject,
            attachments,
            meta: json!({ "mid": mid, "icid": env.icid, "source_ip": env.source_ip, "listener": env.listener, "outgoing": env.outgoing }),
            raw: raw.as_ref().clone(),
            holds: d.holds,
        };
        match shared.scan.local_quarantine.quarantine(msg).await {
            Ok(ins) => {
                if ins.created {
                    for h in &ins.held_in {
                        shared
                            .mail
                            .log
                            .emit(crate::core::events::Event::Quarantined {
                                mid,
                                quarantine: &h.quarantine,
                                reason: &h.reason,
                            });
                    }
                }
                finish(shared, mid);
            }
            Err(e) => {
                // The message stays in the spool: scanned again after a
                // restart, never delivered unheld.
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::QuarantineFailed { mid, error: &e });
            }
        }
        return;
    }
    match rewritten {
        None => {
            shared.mail.spool.update(mid, Update::Scanned.encode());
            shared.mail.queue.enqueue(env, Some(body));
        }
        Some(new_body) => {
            let by = d.rewritten_by.first().cloned().unwrap_or_default();
            match inject(shared, &env, new_body.as_ref().clone(), true).await {
                Ok(new_mid) => {
                    shared.mail.log.emit(crate::core::events::Event::Rewritten {
                        mid,
                        new_mid,
                        by: &by,
                    });
                    finish(shared, mid);
                }
                Err(e) => shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::RewrittenNotSpooled { mid, error: &e }),
            }
        }
    }
}

fn finish(shared: &Deps, mid: u64) {
    shared.mail.spool.finish(mid);
    shared
        .mail
        .log
        .emit(crate::core::events::Event::Finished { mid });
}

/// Applies header actions and attachment stripping to the raw message.
pub fn rewrite(
    raw: &[u8],
    headers: &[Action],
    strip: &[AttachmentSelector],
    view: Option<&ScannedMessage>,
) -> Vec<u8> {
    let mut out = raw.to_vec();
    // Strip first, from the end, so earlier spans stay valid.
    if let Some(v) = view {
        let mut spans: Vec<(usize, usize, String)> = v
            .parts
            .iter()
            .filter(|p| p.attachment && strip.iter().any(|s| s.matches(p)))
            .filter_map(|p| {
                p.raw_span.map(|(a, b)| {
                    (
                        a,
                        b,
                        p.filename.clone().unwrap_or_else(|| "attachment".into()),
                    )
                })
            })
            .collect();
        spans.sort_by_key(|s| std::cmp::Reverse(s.0));
        for (a, b, name) in spans {
            if a <= b && b <= out.len() {
                let clean: String = name.chars().filter(|c| !c.is_control()).collect();
                let note = format!("Content-Type: text/plain; charset=utf-8\r\n\r\nThe attachment \"{clean}\" was removed by PVO.\r\n");
                out.splice(a..b, note.into_bytes());
            }
        }
    }
    for h in headers {
        let (name, value, replace) = match h {
            Action::AddHeader { name, value } => (name, value, false),
            Action::ModifyHeader { name, value } => (name, value, true),
            _ => continue,
        };
        if replace {
            out = remove_header(&out, name);
        }
        // After the first header field (our Received), so the trace stays on top.
        let at = first_field_end(&out);
        let line = format!("{name}: {value}\r\n");
        out.splice(at..at, line.into_bytes());
    }
    out
}

/// Offset just after the first header field (with its continuation lines).
fn first_field_end(raw: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match raw[i..].windows(2).position(|w| w == b"\r\n") {
            Some(p) => {
                i += p + 2;
                if !matches!(raw.get(i), Some(b' ') | Some(b'\t')) {
                    return i;
                }
            }
            None => return raw.len(),
        }
    }
}

/// Removes every top-level header field `name` (case-insensitive).
fn remove_header(raw: &[u8], name: &str) -> Vec<u8> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 2);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let mut skipping = false;
    while i < end {
        let line_end = raw[i..end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(end, |p| i + p + 2);
        let line = &raw[i..line_end];
        let continuation = matches!(line.first(), Some(b' ') | Some(b'\t'));
        if !continuation {
            let field = line.split(|&b| b == b':').next().unwrap_or(b"");
            skipping = field.eq_ignore_ascii_case(name.as_bytes());
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        i = line_end;
    }
    out.extend_from_slice(&raw[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_actions_keep_the_trace_on_top_and_crlf() {
        let raw = b"Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Old: 1\r\n\r\nbody\r\n";
        let out = rewrite(
            raw,
            &[
                Action::AddHeader {
                    name: "X-PVO".into(),
                    value: "yes".into(),
                },
                Action::ModifyHeader {
                    name: "X-Old".into(),
                    value: "2".into(),
                },
            ],
            &[],
            None,
        );
        let t = String::from_utf8(out).unwrap();
        assert!(t.starts_with("Received: from a\r\n\tby b\r\nX-Old: 2\r\nX-PVO: yes\r\nSubject: hi\r\n\r\nbody\r\n"), "{t}");
        assert!(!t.contains("X-Old: 1"));
    }

    #[test]
    fn stripped_attachment_is_replaced_by_a_note() {
        let raw = b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=run.exe\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n--b--\r\n";
        let view = pvo_scan::mime::scan(raw, &Limits::default()).unwrap();
        let out = rewrite(
            raw,
            &[],
            &[AttachmentSelector::Glob("*.exe".into())],
            Some(&view),
        );
        let t = String::from_utf8(out).unwrap();
        assert!(
            t.contains("The attachment \"run.exe\" was removed by PVO."),
            "{t}"
        );
        assert!(!t.contains("TVqQ"), "{t}");
        assert!(t.contains("hello"));
        assert!(pvo_scan::mime::scan(t.as_bytes(), &Limits::default()).is_ok());
    }
}
