//! Bulk actions as background jobs with progress, shared by the web UI (`ui::jobs`) and
//! the REST API (`api`): release, delete, delay or move of a selection of MIDs or of
//! every result of a search, and release, delete or delay of every Outbreak message of
//! one rule.
//!
//! A job works in batches of [`BATCH`] MIDs, each one `quarantine ACTION --mids ...`
//! through `commands::dispatch_as` with the caller's identity (looked up again before
//! each batch, so a user disabled meanwhile stops the job), so the roles, the access
//! lists and the audit trail are those of the CLI. "Every result" pages through
//! `quarantine search` in a stable order (oldest first, then store id), from a window
//! that starts at the receive time of the last message seen: the messages a batch
//! removed leave the result, those it did not (refused, or still matching after a
//! delay or a move) stay at the window's front and are skipped by offset; a last pass
//! from the start catches what shifted meanwhile. The record says the action, the total (from a
//! counting search first), done (messages handled), failed (of those, refused) with the
//! first refusal texts, start and end, and whether it was cancelled.
//!
//! The table is per node, in memory: a job belongs to its user (an Administrator sees
//! every job), and is kept for an hour after it ends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::commands::access;
use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::commands::replies::Job as Record;
use crate::core::clock::unix_now;
use crate::core::state::Handles;
use crate::core::users::{Builtin, Identity};

/// MIDs per `quarantine ACTION` call.
pub const BATCH: usize = 200;
/// At most this many MIDs named in one request.
pub const MAX_MIDS: usize = 100_000;
/// How long a finished job stays visible.
const KEEP_SECS: u64 = 3600;
/// The refusal texts kept per job.
const REFUSALS_KEPT: usize = 5;
/// Jobs one user may have running at a time.
pub const RUNNING_PER_USER: usize = 4;

/// What a job acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// These MIDs.
    Mids(Vec<u64>),
    /// Every result of this search (the `query` of `quarantine search`).
    Query(Map<String, Value>),
    /// Every message held in Outbreak because of this rule.
    Rule(String),
}

/// A job to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// release, delete, delay or move.
    pub verb: String,
    pub target: Target,
    /// delay: 8h, 24h, 48h, 1w.
    pub by: Option<String>,
    /// move: from and to quarantine.
    pub from: Option<String>,
    pub to: Option<String>,
    /// release, delete, delay: only in this quarantine.
    pub quarantine: Option<String>,
}

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The role (or the quarantine's access list) does not allow it.
    Forbidden(String),
    /// A quarantine that does not exist.
    NotFound(String),
    /// Invalid arguments.
    Invalid(String),
    /// The user has [`RUNNING_PER_USER`] jobs running already.
    Busy(String),
}

impl Refused {
    pub fn text(&self) -> &str {
        match self {
            Refused::Forbidden(t)
            | Refused::NotFound(t)
            | Refused::Invalid(t)
            | Refused::Busy(t) => t,
        }
    }
}

struct Job {
    id: String,
    user: String,
    verb: String,
    target: &'static str,
    description: String,
    /// Where the UI's links go back to.
    back: String,
    total: u64,
    total_exact: bool,
    done: u64,
    failed: u64,
    refusals: Vec<String>,
    started_at: u64,
    finished_at: Option<u64>,
    cancelled: bool,
    error: Option<String>,
    cancel: Arc<AtomicBool>,
    finished: tokio::sync::watch::Receiver<bool>,
}

impl Job {
    fn state(&self) -> &'static str {
        match (self.finished_at, self.cancelled, &self.error) {
            (None, _, _) => "running",
            (Some(_), true, _) => "cancelled",
            (Some(_), false, Some(_)) => "stopped",
            (Some(_), false, None) => "done",
        }
    }

    fn record(&self) -> Record {
        Record {
            id: self.id.clone(),
            user: self.user.clone(),
            action: self.verb.clone(),
            target: self.target.to_string(),
            description: self.description.clone(),
            state: self.state().to_string(),
            total: self.total,
            total_exact: self.total_exact,
            done: self.done,
            succeeded: self.done - self.failed,
            failed: self.failed,
            refusals: self.refusals.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            cancelled: self.cancelled,
            error: self.error.clone(),
        }
    }
}

/// The jobs of one node.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Job>>,
    seq: AtomicU64,
}

/// One table per running node (several nodes may share a process: `pvo quickstart`).
static TABLES: Mutex<Vec<(Weak<Handles>, Arc<Jobs>)>> = Mutex::new(Vec::new());

/// The job table of the node of `shared`.
pub fn of(shared: &Arc<Handles>) -> Arc<Jobs> {
    let mut t = TABLES.lock().unwrap();
    t.retain(|(w, _)| w.strong_count() > 0);
    if let Some((_, j)) = t
        .iter()
        .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(shared)))
    {
        return j.clone();
    }
    let j = Arc::new(Jobs::default());
    t.push((Arc::downgrade(shared), j.clone()));
    j
}

fn is_admin(id: &Identity) -> bool {
    id.role.eq_ignore_ascii_case(Builtin::Administrator.name())
}

impl Jobs {
    fn prune(map: &mut HashMap<String, Job>) {
        let now = unix_now();
        map.retain(|_, j| {
            j.finished_at
                .is_none_or(|f| now.saturating_sub(f) < KEEP_SECS)
        });
    }

    /// The record of job `jid` if `id` may see it (its owner, or an Administrator).
    pub fn record(&self, jid: &str, id: &Identity) -> Option<Record> {
        let mut m = self.jobs.lock().unwrap();
        Self::prune(&mut m);
        m.get(jid)
            .filter(|j| j.user.eq_ignore_ascii_case(&id.user) || is_admin(id))
            .map(Job::record)
    }

    /// [`Jobs::record`] as JSON.
    pub fn get(&self, jid: &str, id: &Identity) -> Option<Value> {
        self.record(jid, id)
            .map(|r| crate::commands::replies::data(&r))
    }

    /// Where the UI links back to from job `jid`.
    pub fn back(&self, jid: &str) -> Option<String> {
        self.jobs.lock().unwrap().get(jid).map(|j| j.back.clone())
    }

    /// The records `id` may see, newest first, as JSON.
    pub fn list(&self, id: &Identity) -> Vec<Value> {
        self.records(id)
            .iter()
            .map(crate::commands::replies::data)
            .collect()
    }

    /// The records `id` may see, newest first.
    pub fn records(&self, id: &Identity) -> Vec<Record> {
        let mut m = self.jobs.lock().unwrap();
        Self::prune(&mut m);
        let mut v: Vec<(u64, u64, Record)> = m
            .values()
            .filter(|j| j.user.eq_ignore_ascii_case(&id.user) || is_admin(id))
            .map(|j| (j.started_at, seq_of(&j.id), j.record()))
            .collect();
        v.sort_by_key(|x| std::cmp::Reverse((x.0, x.1)));
        v.into_iter().map(|(_, _, r)| r).collect()
    }

    /// Asks job `jid` to stop after the batch under way. `Ok(false)`: it had ended.
    pub fn cancel(&self, jid: &str, id: &Identity) -> Result<bool, String> {
        let m = self.jobs.lock().unwrap();
        let Some(j) = m
            .get(jid)
            .filter(|j| j.user.eq_ignore_ascii_case(&id.user) || is_admin(id))
        else {
            return Err(format!(
                "There is no job {jid:?} of yours (jobs are kept for an hour after they end)."
            ));
        };
        if j.finished_at.is_some() {
            return Ok(false);
        }
        j.cancel.store(true, Ordering::SeqCst);
        Ok(true)
    }

    /// Waits up to `limit` for job `jid` to end (a small job ends at once: its page then
    /// shows 100%). True when it has ended.
    pub async fn wait(&self, jid: &str, limit: Duration) -> bool {
        let rx = self
            .jobs
            .lock()
            .unwrap()
            .get(jid)
            .map(|j| j.finished.clone());
        let Some(mut rx) = rx else {
            return false;
        };
        let ended = tokio::time::timeout(limit, rx.wait_for(|d| *d))
            .await
            .is_ok_and(|r| r.is_ok());
        ended
    }

    fn update(&self, jid: &str, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs.lock().unwrap().get_mut(jid) {
            f(j);
        }
    }

    fn cancelled(&self, jid: &str) -> bool {
        self.jobs
            .lock()
            .unwrap()
            .get(jid)
            .is_none_or(|j| j.cancel.load(Ordering::SeqCst))
    }
}

/// The sequence number in a job id (`SEQ-RANDOM`), for a stable order.
fn seq_of(jid: &str) -> u64 {
    jid.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Runs one command as `id`.
async fn run(shared: &Arc<Handles>, id: &Identity, command: &str, args: Value) -> Response {
    match crate::commands::command::Command::from_parts(command, args) {
        Ok(c) => crate::commands::dispatch_as(shared, Request::new(c), id).await,
        Err(e) => Response::from(e),
    }
}

fn role_refuses(shared: &Handles, id: &Identity, command: &str, args: &Value) -> bool {
    let Ok(c) = crate::commands::command::Command::from_parts(command, args.clone()) else {
        return false;
    };
    let need = access::required(&c, &id.user);
    access::check(need, id, shared.access.users.role(&id.role).as_ref()).is_err()
}

/// A failed command's answer as a [`Refused`], by its kind.
fn refused_of(r: &Response) -> Refused {
    let text = r.text.trim_end().to_string();
    match r.kind {
        Some(ErrorKind::Forbidden) => Refused::Forbidden(text),
        Some(ErrorKind::NotFound) => Refused::NotFound(text),
        Some(ErrorKind::Busy) => Refused::Busy(text),
        _ => Refused::Invalid(text),
    }
}

/// The arguments of one `quarantine ACTION` call on `mids`.
fn action_args(spec: &Spec, mids: &[u64]) -> Value {
    let mut a = json!({ "action": spec.verb, "mids": mids });
    if let Some(by) = &spec.by {
        a["by"] = json!(by);
    }
    if spec.verb == "move" {
        a["from"] = json!(spec.from);
        a["to"] = json!(spec.to);
    } else if let Target::Rule(_) = spec.target {
        a["quarantine"] = json!("Outbreak");
    } else if let Some(q) = &spec.quarantine {
        a["quarantine"] = json!(q);
    }
    a
}

/// The search a job pages through (`None` for a selection).
fn search_of(spec: &Spec) -> Option<Map<String, Value>> {
    let mut q = match &spec.target {
        Target::Mids(_) => return None,
        Target::Query(q) => q.clone(),
        Target::Rule(rule) => {
            let mut q = Map::new();
            q.insert("quarantine".into(), json!("Outbreak"));
            q.insert("reason".into(), json!(rule));
            q.insert("reason_kind".into(), json!("outbreak rule"));
            q
        }
    };
    // A stable order that acting does not change (a delay changes the exit).
    q.insert("order".into(), json!("oldest"));
    Some(q)
}

fn describe(spec: &Spec) -> String {
    let what = match spec.verb.as_str() {
        "delay" => format!("Delay by {}", spec.by.as_deref().unwrap_or("")),
        "move" => format!(
            "Move from \"{}\" to \"{}\"",
            spec.from.as_deref().unwrap_or(""),
            spec.to.as_deref().unwrap_or("")
        ),
        "release" => "Release".to_string(),
        _ => "Delete".to_string(),
    };
    let within = match (&spec.quarantine, spec.verb.as_str()) {
        (Some(q), "release" | "delete" | "delay") if !matches!(spec.target, Target::Rule(_)) => {
            format!(" (in \"{q}\" only)")
        }
        _ => String::new(),
    };
    let on = match &spec.target {
        Target::Mids(m) => format!(
            "{} selected message{}",
            m.len(),
            if m.len() == 1 { "" } else { "s" }
        ),
        Target::Query(q) => {
            let filters: Vec<String> = q
                .iter()
                .filter(|(k, _)| *k != "order")
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{} {v}", k.replace('_', " "))
                })
                .collect();
            if filters.is_empty() {
                "every held message".to_string()
            } else {
                format!("every result of the search {}", filters.join(", "))
            }
        }
        Target::Rule(r) => format!("every message held in Outbreak by rule {r}"),
    };
    format!("{what}{within}: {on}")
}

/// Checks `spec`, counts what it acts on, and starts the job as `id`; the job id.
pub async fn start(
    shared: &Arc<Handles>,
    id: &Identity,
    mut spec: Spec,
    back: String,
) -> Result<String, Refused> {
    // The arguments, before anything runs.
    if !["release", "delete", "delay", "move"].contains(&spec.verb.as_str()) {
        return Err(Refused::Invalid(format!(
            "{:?} is not a bulk action; allowed: release, delete, delay, move",
            spec.verb
        )));
    }
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    spec.by = nonempty(&spec.by);
    spec.from = nonempty(&spec.from);
    spec.to = nonempty(&spec.to);
    spec.quarantine = nonempty(&spec.quarantine);
    if spec.verb == "delay"
        && !["8h", "24h", "48h", "1w"].contains(&spec.by.as_deref().unwrap_or(""))
    {
        return Err(Refused::Invalid(format!(
            "delay by {:?}: allowed: 8h, 24h, 48h, 1w",
            spec.by.as_deref().unwrap_or("")
        )));
    }
    if spec.verb != "delay" {
        spec.by = None;
    }
    if spec.verb == "move" {
        if matches!(spec.target, Target::Rule(_)) {
            return Err(Refused::Invalid(
                "Outbreak manage-by-rule releases, deletes or delays; move the messages by MID"
                    .into(),
            ));
        }
        if spec.from.is_none() || spec.to.is_none() {
            return Err(Refused::Invalid(
                "move: say from which quarantine (from) and to which (to)".into(),
            ));
        }
    } else {
        spec.from = None;
        spec.to = None;
    }
    match &mut spec.target {
        Target::Mids(m) => {
            let mut seen = HashSet::new();
            m.retain(|x| seen.insert(*x));
            if m.is_empty() {
                return Err(Refused::Invalid(
                    "Select at least one message (no MID given).".into(),
                ));
            }
            if m.len() > MAX_MIDS {
                return Err(Refused::Invalid(format!(
                    "At most {MAX_MIDS} MIDs at a time; act on every result of a search instead."
                )));
            }
        }
        Target::Rule(r) => {
            if r.trim().is_empty() {
                return Err(Refused::Invalid("Give the Outbreak rule.".into()));
            }
        }
        Target::Query(_) => {}
    }

    // The role: a refusal is one audited call of the command, as from the CLI.
    let probe = action_args(&spec, &[]);
    if role_refuses(shared, id, "quarantine", &probe) {
        let args = match &spec.target {
            Target::Mids(m) => action_args(&spec, &m[..m.len().min(BATCH)]),
            Target::Query(q) => {
                let mut a = action_args(&spec, &[]);
                a["all_results"] = json!(true);
                a["query"] = Value::Object(q.clone());
                if let Some(o) = a.as_object_mut() {
                    o.remove("mids");
                }
                a
            }
            Target::Rule(r) => {
                json!({ "action": "manage-by-rule", "rule": r, "what": spec.verb, "by": spec.by })
            }
        };
        let r = run(shared, id, "quarantine", args).await;
        return Err(Refused::Forbidden(r.text.trim_end().to_string()));
    }

    // The total.
    let (total, total_exact) = match (&spec.target, search_of(&spec)) {
        (Target::Mids(m), _) => (m.len() as u64, true),
        (_, Some(q)) => {
            let args = json!({ "action": "search", "query": q, "limit": 1 });
            let r = run(shared, id, "quarantine", args).await;
            if !r.ok {
                return Err(refused_of(&r));
            }
            (
                r.data["total"].as_u64().unwrap_or(0),
                r.data["total_exact"].as_bool().unwrap_or(true),
            )
        }
        (_, None) => (0, true),
    };

    let jobs = of(shared);
    let mut rnd = [0u8; 8];
    crate::core::users::random_bytes(&mut rnd);
    let jid = format!(
        "{}-{}",
        jobs.seq.fetch_add(1, Ordering::SeqCst) + 1,
        hex::encode(rnd)
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut m = jobs.jobs.lock().unwrap();
        Jobs::prune(&mut m);
        let running = m
            .values()
            .filter(|j| j.finished_at.is_none() && j.user.eq_ignore_ascii_case(&id.user))
            .count();
        if running >= RUNNING_PER_USER {
            return Err(Refused::Busy(format!(
                "You have {running} bulk actions running; wait for one to end (or cancel one) and try again."
            )));
        }
        m.insert(
            jid.clone(),
            Job {
                id: jid.clone(),
                user: id.user.clone(),
                verb: spec.verb.clone(),
                target: match spec.target {
                    Target::Mids(_) => "selection",
                    Target::Query(_) => "search",
                    Target::Rule(_) => "rule",
                },
                description: describe(&spec),
                back,
                total,
                total_exact,
                done: 0,
                failed: 0,
                refusals: Vec::new(),
                started_at: unix_now(),
                finished_at: None,
                cancelled: false,
                error: None,
                cancel,
                finished: rx,
            },
        );
    }
    let (shared, id, j) = (shared.clone(), id.clone(), jid.clone());
    tokio::spawn(async move {
        let worker = Worker {
            shared,
            jobs: jobs.clone(),
            jid: j.clone(),
            user: id.user.clone(),
            from: id.from.clone(),
            spec,
        };
        let end = worker.work().await;
        jobs.update(&j, |job| {
            job.finished_at = Some(unix_now());
            match end {
                End::Done => {
                    // Everything found was handled: the total is what was done.
                    job.total = job.done;
                    job.total_exact = true;
                }
                End::Cancelled => job.cancelled = true,
                End::Stopped(e) => job.error = Some(e),
            }
        });
        let _ = tx.send(true);
    });
    Ok(jid)
}

enum End {
    Done,
    Cancelled,
    Stopped(String),
}

struct Worker {
    shared: Arc<Handles>,
    jobs: Arc<Jobs>,
    jid: String,
    user: String,
    from: crate::core::users::Origin,
    spec: Spec,
}

impl Worker {
    async fn work(&self) -> End {
        match (&self.spec.target, search_of(&self.spec)) {
            (Target::Mids(m), _) => {
                for chunk in m.chunks(BATCH) {
                    if self.jobs.cancelled(&self.jid) {
                        return End::Cancelled;
                    }
                    if let Err(e) = self.batch(chunk).await {
                        return End::Stopped(e);
                    }
                }
                End::Done
            }
            (_, Some(q)) => self.every_result(q).await,
            (_, None) => End::Done,
        }
    }

    /// The caller as they are now (disabled or deleted: the job stops).
    fn identity(&self) -> Result<Identity, String> {
        self.shared
            .access
            .users
            .identity(&self.user, self.from.clone())
            .ok_or_else(|| {
                format!(
                    "User \"{}\" was disabled or deleted; the job stopped.",
                    self.user
                )
            })
    }

    /// Pages through the search oldest first. The page is read from a window that
    /// starts at the receive time of the last message seen (everything older was
    /// handled), and within it from an offset past the messages handled that stayed
    /// (refused, or still matching after a delay or a move): no deep offsets over
    /// millions of results.
    async fn every_result(&self, query: Map<String, Value>) -> End {
        let mut attempted: HashSet<u64> = HashSet::new();
        let first = query.get("from").and_then(Value::as_u64);
        let mut since = first;
        let mut offset: u64 = 0;
        let mut last_pass = false;
        loop {
            if self.jobs.cancelled(&self.jid) {
                return End::Cancelled;
            }
            let id = match self.identity() {
                Ok(id) => id,
                Err(e) => return End::Stopped(e),
            };
            let mut window = query.clone();
            if let Some(t) = since {
                window.insert("from".into(), json!(t));
            }
            let r = run(
                &self.shared,
                &id,
                "quarantine",
                json!({ "action": "search", "query": window, "offset": offset, "limit": BATCH }),
            )
            .await;
            if !r.ok {
                return End::Stopped(r.text.trim_end().to_string());
            }
            let page: Vec<(u64, u64)> = r.data["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| Some((m["mid"].as_u64()?, m["received"].as_u64().unwrap_or(0))))
                .collect();
            let Some(&(_, last_received)) = page.last() else {
                // What stayed may have shifted meanwhile (another user acting): one
                // more pass from the start, acting only on what was not seen.
                if (offset > 0 || since != first) && !last_pass {
                    last_pass = true;
                    since = first;
                    offset = 0;
                    continue;
                }
                return End::Done;
            };
            let fresh: Vec<u64> = page
                .iter()
                .map(|(m, _)| *m)
                .filter(|m| !attempted.contains(m))
                .collect();
            if fresh.is_empty() {
                offset += page.len() as u64;
            } else {
                // The messages handled before that are still there come first.
                offset += page
                    .iter()
                    .take_while(|(m, _)| attempted.contains(m))
                    .count() as u64;
                attempted.extend(fresh.iter().copied());
                if let Err(e) = self.batch(&fresh).await {
                    return End::Stopped(e);
                }
            }
            // Everything received before the page's last second has been handled.
            if since.is_none_or(|t| last_received > t) {
                since = Some(last_received);
                offset = 0;
            }
        }
    }

    /// One `quarantine ACTION` call; `Err` stops the job (the whole call was refused).
    async fn batch(&self, mids: &[u64]) -> Result<(), String> {
        let id = self.identity()?;
        let r = run(
            &self.shared,
            &id,
            "quarantine",
            action_args(&self.spec, mids),
        )
        .await;
        let n = mids.len() as u64;
        match r.data.get("results").and_then(Value::as_array) {
            Some(items) => {
                let errors: Vec<String> = items
                    .iter()
                    .filter_map(|i| i.get("error").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect();
                self.jobs.update(&self.jid, |j| {
                    j.done += n;
                    j.failed += (errors.len() as u64).min(n);
                    for e in errors {
                        if j.refusals.len() < REFUSALS_KEPT {
                            j.refusals.push(e);
                        }
                    }
                    if j.done > j.total {
                        j.total = j.done;
                    }
                });
                Ok(())
            }
            None if !r.ok => {
                let text = r.text.trim_end().to_string();
                self.jobs.update(&self.jid, |j| {
                    j.done += n;
                    j.failed += n;
                    if j.refusals.len() < REFUSALS_KEPT {
                        j.refusals.push(text.clone());
                    }
                });
                Err(text)
            }
            None => {
                self.jobs.update(&self.jid, |j| j.done += n);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(verb: &str, target: Target) -> Spec {
        Spec {
            verb: verb.into(),
            target,
            by: Some("24h".into()),
            from: Some("A".into()),
            to: Some("B".into()),
            quarantine: Some("Policy".into()),
        }
    }

    #[test]
    fn batch_arguments_and_the_paged_search() {
        let s = spec("move", Target::Mids(vec![1, 2]));
        assert_eq!(
            action_args(&s, &[1, 2]),
            json!({ "action": "move", "mids": [1, 2], "by": "24h", "from": "A", "to": "B" })
        );
        let s = spec("release", Target::Rule("OUTBREAK_1".into()));
        let a = action_args(&s, &[7]);
        assert_eq!(a["quarantine"], "Outbreak");
        let q = search_of(&s).unwrap();
        assert_eq!(q["reason"], "OUTBREAK_1");
        assert_eq!(q["reason_kind"], "outbreak rule");
        assert_eq!(q["order"], "oldest");
        let mut m = Map::new();
        m.insert("subject".into(), json!("x"));
        m.insert("order".into(), json!("exit_soonest"));
        let s = spec("delete", Target::Query(m));
        assert_eq!(search_of(&s).unwrap()["order"], "oldest");
        assert_eq!(action_args(&s, &[3])["quarantine"], "Policy");
        assert!(describe(&s).contains("subject x"), "{}", describe(&s));
        assert!(search_of(&spec("delete", Target::Mids(vec![1]))).is_none());
    }

    #[test]
    fn refusals_are_classified() {
        let fail = |kind, text: &str| refused_of(&Response::fail(kind, text));
        assert_eq!(
            fail(
                ErrorKind::Forbidden,
                "Role \"Guest\" has no access to quarantine \"X\"\n"
            ),
            Refused::Forbidden("Role \"Guest\" has no access to quarantine \"X\"".into())
        );
        assert!(matches!(
            fail(ErrorKind::NotFound, "no quarantine named \"X\""),
            Refused::NotFound(_)
        ));
        assert!(matches!(fail(ErrorKind::Busy, "later"), Refused::Busy(_)));
        for kind in [
            ErrorKind::Invalid,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
        ] {
            assert!(matches!(
                fail(kind, "order \"x\": allowed: newest"),
                Refused::Invalid(_)
            ));
        }
        assert_eq!(seq_of("12-abcdef"), 12);
    }
}
