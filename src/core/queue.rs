//! The queue manager: one task that owns the delivery schedule.
//!
//! Sessions hand it messages that are already on disk; it splits each message
//! into one job per recipient host (the appliance's "Recipient Host"
//! destinations that `tophosts` lists), starts delivery connections within
//! the per-host and global limits, feeds each connection up to
//! `max_messages_per_connection` jobs, and applies the results: delivered,
//! deferred with the bounce profile's back-off, or bounced with a DSN.
//!
//! It receives a closed set of [`Event`]s and never touches the network or
//! the disk itself, except through the spool handle's non-blocking calls:
//! delivery connections (see `delivery`) and the DSN tasks (see `bounce`) do the
//! IO. Because every state change happens here, in one task, there are no locks
//! around the schedule. It holds only the configuration and mail handles.
//!
//! Its event channel is bounded ([`CHANNEL_EVENTS`]). When it is full, a sender waits
//! for room ([`QueueHandle::send`]): no event is dropped (an enqueued message, a
//! delivery's outcome), and a flood of them slows their producers down instead of
//! growing memory.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::core::envelope::{domain_of, Envelope, RcptFinal, Update};
use crate::core::state::{ConfigHandle, MailHandle};

pub mod handle;

pub use handle::{
    channel, Event, Gauges, HostStatus, Job, QueuedRecipient, RcptOutcome, Removal, Selection,
};

/// Keep message bodies in memory up to this many bytes in total; beyond it
/// delivery reads them back from the spool (the page cache, usually).
const BODY_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// How long an idle delivery connection waits for another job to its host.
pub const IDLE_WAIT: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Host {
    ready: VecDeque<Job>,
    /// Jobs waiting for a retry (their count; the jobs sit in `retry`).
    deferred_rcpts: usize,
    active_conns: usize,
    idle: VecDeque<oneshot::Sender<Option<Job>>>,
    delivered: u64,
    soft: u64,
    hard: u64,
    down: bool,
    last_error: Option<String>,
}

impl Host {
    fn active_recipients(&self) -> usize {
        self.ready.iter().map(|j| j.rids.len()).sum::<usize>() + self.deferred_rcpts
    }
}

struct Msg {
    env: Arc<Envelope>,
    state: Vec<Option<RcptFinal>>,
    body_cached: usize,
    /// DSN tasks that still read this message's body from the spool: it is not finished
    /// (its spool records stay readable) until each has said so ([`Event::DsnRead`]).
    dsn_reads: usize,
}

/// How the queue manager starts an outbound connection for a job: the SMTP and CPQ
/// client of `delivery`, wired by `node`. The connection asks for more jobs to the same
/// host and reports every outcome back through [`Event`]s on the queue's handle, so the
/// schedule stays here while the network stays there. The implementation holds the
/// handles its connections use (`node` builds it).
pub trait Transport: Send + Sync {
    fn spawn_connection(&self, domain: String, job: Job);
}

pub struct Manager {
    config: Arc<ConfigHandle>,
    mail: Arc<MailHandle>,
    transport: Arc<dyn Transport>,
    rx: mpsc::Receiver<Event>,
    msgs: HashMap<u64, Msg>,
    hosts: HashMap<String, Host>,
    retry: BTreeMap<(Instant, u64), Job>,
    retry_seq: u64,
    dirty: HashSet<String>,
    total_conns: usize,
    cached_bytes: usize,
    stopping: bool,
    suspended: bool,
    /// Recipients handed to connections and not yet reported back.
    in_flight: HashMap<(u64, u32), String>,
}

impl Manager {
    pub fn new(
        config: Arc<ConfigHandle>,
        mail: Arc<MailHandle>,
        rx: mpsc::Receiver<Event>,
        transport: Arc<dyn Transport>,
    ) -> Manager {
        Manager {
            config,
            mail,
            transport,
            rx,
            msgs: HashMap::new(),
            hosts: HashMap::new(),
            retry: BTreeMap::new(),
            retry_seq: 0,
            dirty: HashSet::new(),
            total_conns: 0,
            cached_bytes: 0,
            stopping: false,
            suspended: false,
            in_flight: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        loop {
            let next_retry = self.retry.keys().next().map(|(t, _)| *t);
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => {
                        self.handle(ev);
                        // Drain what else is queued before dispatching, so a
                        // burst is scheduled in one pass.
                        while let Ok(ev) = self.rx.try_recv() {
                            self.handle(ev);
                        }
                    }
                    None => return,
                },
                _ = async { tokio::time::sleep_until(next_retry.unwrap()).await }, if next_retry.is_some() => {
                    self.release_due();
                }
            }
            self.dispatch();
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Enqueue {
                env,
                body,
                done,
                redirect,
            } => self.enqueue(env, body, done, redirect),
            Event::JobDone {
                job,
                dcid,
                outcomes,
                next,
            } => {
                for rid in &job.rids {
                    self.in_flight.remove(&(job.env.mid, *rid));
                }
                let domain = job.domain.clone();
                self.job_done(job, dcid, outcomes);
                if let Some(next) = next {
                    // Prefer keeping this connection busy over opening another.
                    self.give_or_park(&domain, next);
                }
            }
            Event::ConnFailed { job, error } => {
                for rid in &job.rids {
                    self.in_flight.remove(&(job.env.mid, *rid));
                }
                let host = self.hosts.entry(job.domain.clone()).or_default();
                host.down = true;
                host.last_error = Some(error.clone());
                // Every ready job of a host that cannot be reached waits for
                // the retry too: trying them one by one would only repeat the
                // same connection failure.
                let mut jobs: Vec<Job> = host.ready.drain(..).collect();
                jobs.push(job);
                for j in jobs {
                    let outcomes = vec![RcptOutcome::Temp(error.clone()); j.rids.len()];
                    self.apply_temp(j, 0, &outcomes);
                }
            }
            Event::ConnClosed { domain } => {
                if let Some(h) = self.hosts.get_mut(&domain) {
                    h.active_conns = h.active_conns.saturating_sub(1);
                }
                self.total_conns = self.total_conns.saturating_sub(1);
                self.dirty.insert(domain);
                // A global slot is free: any host with work may use it.
                let waiting: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|(_, h)| !h.ready.is_empty())
                    .map(|(d, _)| d.clone())
                    .collect();
                self.dirty.extend(waiting);
            }
            Event::Idle { domain, next } => self.give_or_park(&domain, next),
            Event::Hosts(reply) => {
                // Active Recip. counts the recipients being delivered right
                // now too, as the Active Recipients gauge of `status` does.
                let mut delivering: HashMap<&str, usize> = HashMap::new();
                for host in self.in_flight.values() {
                    *delivering.entry(host.as_str()).or_default() += 1;
                }
                let mut rows: Vec<HostStatus> = self
                    .hosts
                    .iter()
                    .map(|(d, h)| HostStatus {
                        host: d.clone(),
                        active_recipients: h.active_recipients()
                            + delivering.get(d.as_str()).copied().unwrap_or(0),
                        connections_out: h.active_conns,
                        delivered_recipients: h.delivered,
                        soft_bounced: h.soft,
                        hard_bounced: h.hard,
                        down: h.down,
                        last_error: h.last_error.clone(),
                    })
                    .collect();
                rows.sort_by(|a, b| {
                    b.active_recipients
                        .cmp(&a.active_recipients)
                        .then(a.host.cmp(&b.host))
                });
                let _ = reply.send(rows);
            }
            Event::SuspendDelivery(on, ack) => {
                let was = self.suspended;
                self.suspended = on;
                if !on {
                    self.dirty.extend(self.hosts.keys().cloned());
                }
                let _ = ack.send(was);
            }
            Event::Recipients(sel, reply) => {
                let _ = reply.send(self.select_rows(&sel));
            }
            Event::Remove(sel, how, reply) => {
                let _ = reply.send(self.remove(&sel, how));
            }
            Event::Redirect(host, port, reply) => {
                let _ = reply.send(self.redirect(&host, port));
            }
            Event::DeliverNow(host, reply) => {
                let _ = reply.send(self.deliver_now(host.as_deref()));
            }
            Event::Reconfigured => {
                for h in self.hosts.values_mut() {
                    for w in h.idle.drain(..) {
                        let _ = w.send(None);
                    }
                }
                self.dirty.extend(self.hosts.keys().cloned());
            }
            Event::Gauges(reply) => {
                let _ = reply.send(Gauges {
                    messages: self.msgs.len(),
                    active_recipients: self
                        .hosts
                        .values()
                        .map(Host::active_recipients)
                        .sum::<usize>()
                        + self.in_flight_rcpts(),
                    connections_out: self.total_conns,
                    delivery_suspended: self.suspended,
                    oldest_received_at: self.msgs.values().map(|m| m.env.received_at).min(),
                });
            }
            Event::DsnRead { mid } => {
                if let Some(m) = self.msgs.get_mut(&mid) {
                    m.dsn_reads = m.dsn_reads.saturating_sub(1);
                }
                self.check_finished(mid);
            }
            Event::Shutdown(ack) => {
                self.stopping = true;
                for h in self.hosts.values_mut() {
                    for w in h.idle.drain(..) {
                        let _ = w.send(None);
                    }
                }
                let _ = ack.send(());
            }
        }
    }

    fn enqueue(
        &mut self,
        env: Arc<Envelope>,
        body: Option<Arc<Vec<u8>>>,
        done: Vec<(u32, RcptFinal)>,
        redirect: Option<(String, u16)>,
    ) {
        let mut state = vec![None; env.recipients.len()];
        for (rid, f) in done {
            if let Some(s) = state.get_mut(rid as usize) {
                *s = Some(f);
            }
        }
        let body = match body {
            Some(b) if self.cached_bytes + b.len() <= BODY_CACHE_BYTES => Some(b),
            _ => None,
        };
        let body_len = body.as_ref().map_or(0, |b| b.len());
        // Group pending recipients by host, keeping RID order.
        let mut by_domain: Vec<(String, Vec<u32>)> = Vec::new();
        for (rid, rcpt) in env.recipients.iter().enumerate() {
            if state[rid].is_some() {
                continue;
            }
            let d = match (&redirect, env.fixed_destination()) {
                (_, Some(fixed)) => fixed.to_string(),
                (Some((host, _)), None) => host.to_ascii_lowercase(),
                (None, None) => domain_of(rcpt),
            };
            match by_domain.iter_mut().find(|(x, _)| *x == d) {
                Some((_, v)) => v.push(rid as u32),
                None => by_domain.push((d, vec![rid as u32])),
            }
        }
        if by_domain.is_empty() {
            self.finish(env.mid);
            return;
        }
        self.cached_bytes += body_len;
        let mid = env.mid;
        for (domain, rids) in by_domain {
            let job = Job {
                env: env.clone(),
                body: body.clone(),
                domain: domain.clone(),
                rids,
                attempts: 0,
                redirect: redirect.clone(),
            };
            self.hosts
                .entry(domain.clone())
                .or_default()
                .ready
                .push_back(job);
            self.dirty.insert(domain);
        }
        self.msgs.insert(
            mid,
            Msg {
                env,
                state,
                body_cached: body_len,
                dsn_reads: 0,
            },
        );
    }

    fn job_done(&mut self, job: Job, dcid: u64, outcomes: Vec<RcptOutcome>) {
        let log = self.mail.log.clone();
        let mid = job.env.mid;
        let mut delivered = Vec::new();
        let mut temp = false;
        let already_final = |m: &HashMap<u64, Msg>, rid: u32| {
            m.get(&mid)
                .is_none_or(|m| m.state.get(rid as usize).is_some_and(Option::is_some))
        };
        for (i, rid) in job.rids.iter().enumerate() {
            if already_final(&self.msgs, *rid)
                && !matches!(outcomes.get(i), Some(RcptOutcome::Delivered))
            {
                continue;
            }
            match outcomes
                .get(i)
                .cloned()
                .unwrap_or(RcptOutcome::Temp("no result".into()))
            {
                RcptOutcome::Delivered => delivered.push(*rid),
                RcptOutcome::Temp(_) => temp = true,
                // A CPQ transfer or release is never bounced to the sender:
                // a refusal is logged and retried until an administrator acts.
                RcptOutcome::Perm(_) if job.env.cpq.is_some() => temp = true,
                RcptOutcome::Perm(reason) => {
                    log.emit(crate::core::events::Event::BouncedByServer {
                        dcid,
                        mid,
                        rid: *rid,
                        reason: &reason,
                    });
                    self.hosts.entry(job.domain.clone()).or_default().hard += 1;
                    self.bounce_rcpt(&job.env, *rid, &reason, job.body.as_ref());
                }
            }
        }
        if !delivered.is_empty() {
            let h = self.hosts.entry(job.domain.clone()).or_default();
            h.delivered += delivered.len() as u64;
            h.down = false;
            self.mail
                .counters
                .delivered_rcpts
                .fetch_add(delivered.len() as u64, std::sync::atomic::Ordering::Relaxed);
            for rid in &delivered {
                self.set_final(mid, *rid, RcptFinal::Delivered);
            }
        }
        if temp {
            self.apply_temp(job, dcid, &outcomes);
        }
        self.check_finished(mid);
    }

    /// Defers the temporarily failed recipients of a job, or bounces them when
    /// the bounce profile's limits are reached.
    fn apply_temp(&mut self, mut job: Job, dcid: u64, outcomes: &[RcptOutcome]) {
        let mid = job.env.mid;
        let mut keep = Vec::new();
        let mut reason = String::new();
        for (i, rid) in job.rids.iter().enumerate() {
            let pending = self
                .msgs
                .get(&mid)
                .is_some_and(|m| m.state.get(*rid as usize).is_some_and(Option::is_none));
            if let (Some(RcptOutcome::Temp(r) | RcptOutcome::Perm(r)), true) =
                (outcomes.get(i), pending)
            {
                keep.push(*rid);
                if reason.is_empty() {
                    reason = r.clone();
                }
            }
        }
        if keep.is_empty() {
            return;
        }
        job.rids = keep;
        job.attempts += 1;
        let cfg = self.config.current();
        let profile = &cfg.delivery.bounce;
        let now = crate::core::clock::unix_now();
        let age = now.saturating_sub(job.env.received_at);
        let host = self.hosts.entry(job.domain.clone()).or_default();
        host.soft += job.rids.len() as u64;
        self.mail
            .counters
            .soft_bounced
            .fetch_add(job.rids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let cpq = job.env.cpq.is_some();
        if !cpq && (age >= profile.max_queue_lifetime || job.attempts > profile.max_retries) {
            let why = if age >= profile.max_queue_lifetime {
                format!(
                    "message exceeded the queue lifetime of {} hours",
                    profile.max_queue_lifetime / 3600
                )
            } else {
                format!(
                    "message exceeded the maximum of {} delivery attempts",
                    profile.max_retries
                )
            };
            for rid in job.rids.clone() {
                self.mail
                    .log
                    .emit(crate::core::events::Event::BouncedUndeliverable {
                        dcid,
                        mid,
                        rid,
                        why: &why,
                        reason: &reason,
                    });
                self.hosts.entry(job.domain.clone()).or_default().hard += 1;
                self.bounce_rcpt(
                    &job.env,
                    rid,
                    &format!("4.4.7 {why}; last error: {reason}"),
                    job.body.as_ref(),
                );
            }
            self.check_finished(mid);
            return;
        }
        self.mail.log.emit(crate::core::events::Event::Delayed {
            dcid,
            mid,
            rids: &job.rids,
            reason: &reason,
        });
        // The manager (or a gateway) coming back should not wait an hour:
        // CPQ retries start at 5 s and stay at most a minute apart.
        let (first, most) = if cpq {
            (profile.initial_retry.min(5), profile.max_retry.min(60))
        } else {
            (profile.initial_retry, profile.max_retry)
        };
        let backoff = first
            .saturating_mul(1u64 << (job.attempts - 1).min(20))
            .min(most);
        host.deferred_rcpts += job.rids.len();
        host.last_error = Some(reason);
        self.retry_seq += 1;
        self.retry.insert(
            (
                Instant::now() + Duration::from_secs(backoff),
                self.retry_seq,
            ),
            job,
        );
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.retry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            let host = self.hosts.entry(job.domain.clone()).or_default();
            host.deferred_rcpts = host.deferred_rcpts.saturating_sub(job.rids.len());
            self.dirty.insert(job.domain.clone());
            host.ready.push_back(job);
        }
    }

    fn give_or_park(&mut self, domain: &str, next: oneshot::Sender<Option<Job>>) {
        if self.stopping || self.suspended {
            let _ = next.send(None);
            return;
        }
        let host = self.hosts.entry(domain.to_string()).or_default();
        match host.ready.pop_front() {
            Some(job) => {
                for rid in &job.rids {
                    self.in_flight
                        .insert((job.env.mid, *rid), domain.to_string());
                }
                if let Err(Some(job)) = next.send(Some(job)) {
                    for rid in &job.rids {
                        self.in_flight.remove(&(job.env.mid, *rid));
                    }
                    // The connection is gone; the job waits for another one.
                    host.ready.push_front(job);
                    self.dirty.insert(domain.to_string());
                }
            }
            None => host.idle.push_back(next),
        }
    }

    fn in_flight_rcpts(&self) -> usize {
        self.in_flight.len()
    }

    fn matches(sel: &Selection, job: &Job) -> bool {
        match sel {
            Selection::All => true,
            Selection::Host(h) => job.domain.eq_ignore_ascii_case(h),
            Selection::Sender(s) => job.env.sender.eq_ignore_ascii_case(s),
        }
    }

    /// Every queued job: (job, "ready" | "deferred").
    fn all_jobs(&self) -> impl Iterator<Item = (&Job, &'static str)> {
        self.hosts
            .values()
            .flat_map(|h| h.ready.iter().map(|j| (j, "ready")))
            .chain(self.retry.values().map(|j| (j, "deferred")))
    }

    fn select_rows(&self, sel: &Selection) -> Vec<QueuedRecipient> {
        let mut rows: Vec<QueuedRecipient> = Vec::new();
        for (job, state) in self.all_jobs() {
            if !Self::matches(sel, job) {
                continue;
            }
            for rid in &job.rids {
                rows.push(QueuedRecipient {
                    mid: job.env.mid,
                    rid: *rid,
                    host: job.domain.clone(),
                    sender: job.env.sender.clone(),
                    recipient: job.env.recipients[*rid as usize].clone(),
                    size: job.env.size as usize,
                    received_at: job.env.received_at,
                    attempts: job.attempts,
                    state,
                });
            }
        }
        for ((mid, rid), host) in &self.in_flight {
            if let Some(m) = self.msgs.get(mid) {
                let keep = match sel {
                    Selection::All => true,
                    Selection::Host(h) => host.eq_ignore_ascii_case(h),
                    Selection::Sender(s) => m.env.sender.eq_ignore_ascii_case(s),
                };
                if keep {
                    rows.push(QueuedRecipient {
                        mid: *mid,
                        rid: *rid,
                        host: host.clone(),
                        sender: m.env.sender.clone(),
                        recipient: m.env.recipients[*rid as usize].clone(),
                        size: m.env.size as usize,
                        received_at: m.env.received_at,
                        attempts: 0,
                        state: "delivering",
                    });
                }
            }
        }
        rows.sort_by_key(|r| (r.mid, r.rid));
        rows
    }

    /// Takes the selected jobs out of the ready and retry queues.
    fn take_jobs(&mut self, sel: &Selection) -> Vec<Job> {
        let mut taken = Vec::new();
        for host in self.hosts.values_mut() {
            let mut keep = VecDeque::new();
            for j in host.ready.drain(..) {
                if Self::matches(sel, &j) {
                    taken.push(j);
                } else {
                    keep.push_back(j);
                }
            }
            host.ready = keep;
        }
        let keys: Vec<(Instant, u64)> = self
            .retry
            .iter()
            .filter(|(_, j)| Self::matches(sel, j))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(j) = self.retry.remove(&k) {
                if let Some(h) = self.hosts.get_mut(&j.domain) {
                    h.deferred_rcpts = h.deferred_rcpts.saturating_sub(j.rids.len());
                }
                taken.push(j);
            }
        }
        taken
    }

    fn remove(&mut self, sel: &Selection, how: Removal) -> (usize, usize) {
        let jobs = self.take_jobs(sel);
        let mut n = 0;
        let mut mids = Vec::new();
        for job in jobs {
            for rid in &job.rids {
                n += 1;
                match how {
                    Removal::Delete => {
                        self.mail
                            .log
                            .emit(crate::core::events::Event::DeletedByAdministrator {
                                mid: job.env.mid,
                                rid: *rid,
                            });
                        self.set_final(job.env.mid, *rid, RcptFinal::Deleted);
                    }
                    Removal::Bounce => {
                        self.mail
                            .log
                            .emit(crate::core::events::Event::BouncedByAdministrator {
                                mid: job.env.mid,
                                rid: *rid,
                            });
                        self.hosts.entry(job.domain.clone()).or_default().hard += 1;
                        self.bounce_rcpt(
                            &job.env,
                            *rid,
                            "5.3.0 message bounced by the administrator",
                            job.body.as_ref(),
                        );
                    }
                }
            }
            mids.push(job.env.mid);
        }
        for mid in mids {
            self.check_finished(mid);
        }
        let busy = self
            .in_flight
            .iter()
            .filter(|((mid, _), host)| {
                self.msgs.get(mid).is_some_and(|m| match sel {
                    Selection::All => true,
                    Selection::Host(h) => host.eq_ignore_ascii_case(h),
                    Selection::Sender(s) => m.env.sender.eq_ignore_ascii_case(s),
                })
            })
            .count();
        (n, busy)
    }

    fn redirect(&mut self, host: &str, port: u16) -> usize {
        // CPQ messages go only to their manager or gateway: never redirected.
        let (jobs, cpq): (Vec<Job>, Vec<Job>) = self
            .take_jobs(&Selection::All)
            .into_iter()
            .partition(|j| j.env.cpq.is_none());
        for job in cpq {
            self.dirty.insert(job.domain.clone());
            self.hosts
                .entry(job.domain.clone())
                .or_default()
                .ready
                .push_back(job);
        }
        let key = host.to_ascii_lowercase();
        let mut n = 0;
        let mut recorded = HashSet::new();
        for mut job in jobs {
            n += job.rids.len();
            // Recorded in the spool so the redirection survives a restart.
            if recorded.insert(job.env.mid) {
                self.mail.spool.update(
                    job.env.mid,
                    Update::Redirect {
                        host: host.to_string(),
                        port,
                    }
                    .encode(),
                );
            }
            job.redirect = Some((host.to_string(), port));
            job.domain = key.clone();
            self.hosts
                .entry(key.clone())
                .or_default()
                .ready
                .push_back(job);
        }
        self.dirty.insert(key);
        n
    }

    fn deliver_now(&mut self, host: Option<&str>) -> usize {
        let sel = host.map_or(Selection::All, |h| Selection::Host(h.to_string()));
        let keys: Vec<(Instant, u64)> = self
            .retry
            .iter()
            .filter(|(_, j)| Self::matches(&sel, j))
            .map(|(k, _)| *k)
            .collect();
        let mut n = 0;
        for k in keys {
            if let Some(j) = self.retry.remove(&k) {
                n += j.rids.len();
                let h = self.hosts.entry(j.domain.clone()).or_default();
                h.deferred_rcpts = h.deferred_rcpts.saturating_sub(j.rids.len());
                h.down = false;
                self.dirty.insert(j.domain.clone());
                h.ready.push_back(j);
            }
        }
        n
    }

    /// Starts connections (or wakes idle ones) for hosts with ready jobs.
    fn dispatch(&mut self) {
        // A gateway that talks to very many domains must not keep a row for
        // each forever: past MAX_HOSTS, rows with nothing queued, in flight or
        // connected are forgotten (their counters restart if they come back).
        if self.hosts.len() > MAX_HOSTS {
            let busy: HashSet<&String> = self.in_flight.values().collect();
            let keep: HashSet<String> = self
                .hosts
                .iter()
                .filter(|(d, h)| {
                    !h.ready.is_empty()
                        || h.deferred_rcpts > 0
                        || h.active_conns > 0
                        || !h.idle.is_empty()
                        || busy.contains(d)
                })
                .map(|(d, _)| d.clone())
                .collect();
            self.hosts.retain(|d, _| keep.contains(d));
        }
        if self.stopping || self.suspended || self.dirty.is_empty() {
            return;
        }
        let cfg = self.config.current();
        let global = cfg.delivery.max_concurrency;
        let dirty: Vec<String> = self.dirty.drain().collect();
        for domain in dirty {
            let Some(host) = self.hosts.get_mut(&domain) else {
                continue;
            };
            // Idle connections first.
            while !host.ready.is_empty() {
                let Some(w) = host.idle.pop_front() else {
                    break;
                };
                let job = host.ready.pop_front().unwrap();
                let keys: Vec<(u64, u32)> = job.rids.iter().map(|r| (job.env.mid, *r)).collect();
                match w.send(Some(job)) {
                    Ok(()) => {
                        for k in keys {
                            self.in_flight.insert(k, domain.clone());
                        }
                    }
                    Err(Some(job)) => host.ready.push_front(job),
                    Err(None) => {}
                }
            }
            let per_host = cfg
                .destination(&domain)
                .map_or(DEFAULT_HOST_CONCURRENCY, |d| d.max_concurrency);
            while !host.ready.is_empty()
                && host.active_conns < per_host
                && self.total_conns < global
            {
                // Each new connection takes a share of the ready jobs up front
                // only one at a time; the rest it asks for as it goes.
                let job = host.ready.pop_front().unwrap();
                for rid in &job.rids {
                    self.in_flight.insert((job.env.mid, *rid), domain.clone());
                }
                host.active_conns += 1;
                self.total_conns += 1;
                self.transport.spawn_connection(domain.clone(), job);
            }
        }
    }

    fn set_final(&mut self, mid: u64, rid: u32, state: RcptFinal) {
        if let Some(m) = self.msgs.get_mut(&mid) {
            if let Some(s) = m.state.get_mut(rid as usize) {
                if s.is_none() {
                    *s = Some(state);
                    self.mail
                        .spool
                        .update(mid, Update::Rcpt { rid, state }.encode());
                }
            }
        }
    }

    fn bounce_rcpt(
        &mut self,
        env: &Arc<Envelope>,
        rid: u32,
        reason: &str,
        body: Option<&Arc<Vec<u8>>>,
    ) {
        self.set_final(env.mid, rid, RcptFinal::Bounced);
        // `bounced_rcpts` is counted by the `Bounced:` event logged before each call.
        let cfg = self.config.current();
        if cfg.delivery.bounce.send_dsn && !env.dsn && !env.sender.is_empty() {
            let rcpt = env
                .recipients
                .get(rid as usize)
                .cloned()
                .unwrap_or_default();
            // The DSN quotes the original headers. A body not in memory (a message
            // recovered after a restart) the DSN task reads back from the spool itself,
            // off this task; until it says so the message is not finished, so its spool
            // records are still there when it reads them.
            let body = body.cloned();
            if body.is_none() {
                if let Some(m) = self.msgs.get_mut(&env.mid) {
                    m.dsn_reads += 1;
                }
            }
            crate::core::bounce::spawn_dsn(
                self.config.clone(),
                self.mail.clone(),
                env.clone(),
                rcpt,
                reason.to_string(),
                body,
            );
        }
    }

    fn check_finished(&mut self, mid: u64) {
        let done = self
            .msgs
            .get(&mid)
            .is_some_and(|m| m.dsn_reads == 0 && m.state.iter().all(Option::is_some));
        if done {
            self.finish(mid);
        }
    }

    fn finish(&mut self, mid: u64) {
        if let Some(m) = self.msgs.remove(&mid) {
            self.cached_bytes = self.cached_bytes.saturating_sub(m.body_cached);
        }
        self.mail.spool.finish(mid);
        self.mail
            .log
            .emit(crate::core::events::Event::Finished { mid });
    }
}

/// Rows kept in the host table before idle ones are forgotten.
const MAX_HOSTS: usize = 10_000;

/// Connections to one host when no `[[destination]]` says otherwise.
pub const DEFAULT_HOST_CONCURRENCY: usize = 20;

#[cfg(test)]
mod channel_tests {
    use super::handle::channel_of;
    use super::*;

    /// A full channel: the sender waits until the manager takes an event, and both
    /// events arrive, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_channel_makes_the_sender_wait_and_loses_nothing() {
        let (q, mut rx) = channel_of(1);
        q.send(Event::Reconfigured);
        let (sent_tx, mut sent_rx) = oneshot::channel();
        let q2 = q.clone();
        tokio::spawn(async move {
            q2.send(Event::DeliverNow(
                Some("second".into()),
                oneshot::channel().0,
            ));
            let _ = sent_tx.send(());
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut sent_rx)
                .await
                .is_err(),
            "the second event went in while the channel was full"
        );
        assert!(matches!(rx.recv().await, Some(Event::Reconfigured)));
        sent_rx.await.unwrap();
        assert!(matches!(
            rx.recv().await,
            Some(Event::DeliverNow(Some(h), _)) if h == "second"
        ));
    }

    /// On a single-threaded runtime a full channel cannot block the only thread: the
    /// event waits in a task and still arrives after the earlier one.
    #[tokio::test]
    async fn a_full_channel_on_one_thread_delivers_the_event_later() {
        let (q, mut rx) = channel_of(1);
        q.send(Event::Reconfigured);
        q.send(Event::DeliverNow(None, oneshot::channel().0));
        assert!(matches!(rx.recv().await, Some(Event::Reconfigured)));
        assert!(matches!(rx.recv().await, Some(Event::DeliverNow(None, _))));
    }
}

#[cfg(test)]
mod dsn_tests {
    use super::handle::channel_of;
    use super::*;

    struct NoTransport;

    impl Transport for NoTransport {
        fn spawn_connection(&self, _domain: String, _job: Job) {}
    }

    /// A recipient of a message recovered after a restart (no body in memory) bounces:
    /// the queue task reads nothing, the message stays (its spool records with it) until
    /// the DSN task has read the body, and the DSN quotes the original headers.
    #[tokio::test]
    async fn a_recovered_message_waits_for_its_dsn_to_read_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[node]\nhostname = \"gw.example.com\"\ndata_dir = \"{}\"\n\
             [[interface]]\nname = \"Management\"\naddress = \"127.0.0.1\"\n\
             hostname = \"gw.example.com\"\n",
            dir.path().display()
        );
        let cfg =
            crate::core::config::Config::parse(&text, std::path::Path::new("t.toml"), dir.path())
                .unwrap();
        std::fs::create_dir_all(cfg.run_dir()).unwrap();
        let (spool, _) =
            pvo_spool::Spool::open(pvo_spool::SpoolConfig::new(cfg.spool_dir())).unwrap();
        let log = crate::core::mail_log::MailLog::discard();
        let (queue, rx) = channel_of(16);
        let mail = Arc::new(MailHandle {
            spool,
            ids: crate::core::ids::Ids::open(&cfg.run_dir(), 100).unwrap(),
            counters: crate::core::state::Counters::open(&cfg.run_dir(), log.tally()),
            log,
            queue,
        });
        let config = Arc::new(ConfigHandle::new(Arc::new(cfg), dir.path().join("t.toml")));
        let env = Arc::new(Envelope {
            mid: 7,
            icid: 0,
            sender: "a@example.org".into(),
            recipients: vec!["b@example.net".into()],
            received_at: crate::core::clock::unix_now(),
            source_ip: String::new(),
            listener: String::new(),
            dsn: false,
            size: 0,
            outgoing: false,
            scanned: true,
            cpq: None,
        });
        mail.spool_message(&env, b"Subject: recovered\r\n\r\nbody\r\n".to_vec())
            .await
            .unwrap();
        let mut m = Manager::new(config, mail, rx, Arc::new(NoTransport));
        m.handle(Event::Enqueue {
            env: env.clone(),
            body: None,
            done: Vec::new(),
            redirect: None,
        });
        let job = m
            .hosts
            .get_mut("example.net")
            .and_then(|h| h.ready.pop_front())
            .unwrap();
        assert!(job.body.is_none());
        m.handle(Event::JobDone {
            job,
            dcid: 0,
            outcomes: vec![RcptOutcome::Perm("550 5.1.1 no such user".into())],
            next: None,
        });
        assert!(
            m.msgs.contains_key(&7),
            "finished before the DSN task read its body"
        );
        // The DSN task reads the body, says so, and queues the DSN.
        let read = m.rx.recv().await.unwrap();
        assert!(matches!(read, Event::DsnRead { mid: 7 }));
        m.handle(read);
        assert!(!m.msgs.contains_key(&7), "not finished once read");
        match m.rx.recv().await.unwrap() {
            Event::Enqueue {
                env: dsn,
                body: Some(body),
                ..
            } => {
                assert!(dsn.dsn);
                let text = String::from_utf8_lossy(&body);
                assert!(text.contains("Subject: recovered"), "{text}");
            }
            _ => panic!("the DSN was not queued"),
        }
    }
}
