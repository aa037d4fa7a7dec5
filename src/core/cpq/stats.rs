//! The CPQ counters of a running node (`cpq::State::stats`, rendered by `/metrics` and
//! `applianceconfig status`): transfers and their failures by reason on a gateway;
//! releases, refusals by reason and what the manager saw of each gateway (its own
//! counters and the cache of its SSH checks) on a manager. Counted in memory where things
//! happen; nothing here is persisted, and nothing here does IO.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::Value;

/// Why a gateway's attempt to hand a message to the manager failed
/// (`pvo_cpq_transfer_failures_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransferFailure {
    /// No connection (refused, timed out, no route), or it broke.
    Connect,
    /// STARTTLS refused or the handshake failed (no verified certificate).
    Tls,
    /// The manager answered 5xx (a refused record or message).
    Refused,
    /// The manager answered 4xx (or the record could not be sent yet).
    Deferred,
}

impl TransferFailure {
    pub const ALL: [TransferFailure; 4] = [
        TransferFailure::Connect,
        TransferFailure::Tls,
        TransferFailure::Refused,
        TransferFailure::Deferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferFailure::Connect => "connect",
            TransferFailure::Tls => "tls",
            TransferFailure::Refused => "refused",
            TransferFailure::Deferred => "deferred",
        }
    }

    /// The failure a connection-level error of `delivery` stands for.
    pub fn of_connection_error(e: &str) -> TransferFailure {
        if e.contains("TLS") {
            TransferFailure::Tls
        } else if e.starts_with("banner:") || e.starts_with("HELO refused") {
            TransferFailure::Refused
        } else {
            TransferFailure::Connect
        }
    }
}

/// What the manager saw of one gateway (by id) or source address.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) transfers: u64,
    pub(crate) last_transfer_at: Option<u64>,
    pub(crate) last_refusal: Option<(u64, String)>,
    pub(crate) last_release_error: Option<String>,
}

/// The gateway's own view, from the last SSH checks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Check {
    /// When the last check (successful or not) ended.
    pub(crate) attempted_at: Option<u64>,
    /// When the last successful one ended.
    pub(crate) checked_at: Option<u64>,
    pub(crate) mode: Option<String>,
    pub(crate) backlog: Option<u64>,
    pub(crate) migration: Option<Value>,
    /// The gateway's cluster, when it is in one: its name, the level of its PVO
    /// settings and the machines they cover (`pvoconfig status`).
    pub(crate) cluster: Option<Value>,
    /// Why the last check failed (`None` after a success).
    pub(crate) error: Option<String>,
    pub(crate) running: bool,
}

/// The CPQ counters and the gateway cache (`cpq::State::stats`).
#[derive(Default)]
pub struct Stats {
    /// Gateway: messages the manager accepted.
    pub transfers: AtomicU64,
    /// Gateway: failed attempts by reason.
    pub(crate) transfer_failures: Mutex<BTreeMap<TransferFailure, u64>>,
    /// Manager: releases its gateways accepted.
    pub releases: AtomicU64,
    /// Manager: release attempts that failed.
    pub release_failures: AtomicU64,
    /// Manager: refusals by reason.
    pub(crate) refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Manager: by gateway id, or by source address when no id was known.
    pub(crate) seen: Mutex<HashMap<String, Seen>>,
    /// Manager: the SSH checks, by gateway id.
    pub(crate) checks: Mutex<HashMap<String, Check>>,
    /// Manager: the gateway of each queued release (queue MID), to count what waits
    /// for each gateway.
    pub(crate) release_mids: Mutex<HashMap<u64, String>>,
    pub(crate) checked: tokio::sync::Notify,
    pub(crate) poller: AtomicBool,
}

pub(crate) fn now() -> u64 {
    crate::core::clock::unix_now()
}

impl Stats {
    pub fn transfer_failed(&self, why: TransferFailure) {
        *self
            .transfer_failures
            .lock()
            .unwrap()
            .entry(why)
            .or_default() += 1;
    }

    pub fn transfer_failures(&self) -> BTreeMap<TransferFailure, u64> {
        self.transfer_failures.lock().unwrap().clone()
    }

    /// A transfer from `gateway` was stored (or recognised as already stored).
    pub fn received(&self, gateway: &str) {
        let mut seen = self.seen.lock().unwrap();
        let s = seen.entry(gateway.to_string()).or_default();
        s.transfers += 1;
        s.last_transfer_at = Some(now());
    }

    /// Transfers received per gateway id, since this node started.
    pub fn received_by_gateway(&self) -> BTreeMap<String, u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.transfers > 0)
            .map(|(k, s)| (k.clone(), s.transfers))
            .collect()
    }

    /// The manager refused a CPQ connection or record from `who` (a gateway id, or the
    /// source address when the id is not known) for `reason`, explained by `text`.
    pub fn refused(&self, who: &str, reason: &'static str, text: impl Into<String>) {
        *self.refused.lock().unwrap().entry(reason).or_default() += 1;
        self.seen
            .lock()
            .unwrap()
            .entry(who.to_string())
            .or_default()
            .last_refusal = Some((now(), text.into()));
    }

    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refused.lock().unwrap().clone()
    }

    /// A release was queued for `gateway` under queue MID `mid` (or an attempt to
    /// deliver one was made: a recovered release is learnt then).
    pub fn release_queued(&self, mid: u64, gateway: &str) {
        self.release_mids
            .lock()
            .unwrap()
            .insert(mid, gateway.to_string());
    }

    /// The outcome of delivering released message `mid` to `gateway`: `Ok(done)` with
    /// `done` true once nothing of it is left to deliver, or the reason it failed.
    pub fn release_outcome(&self, mid: u64, gateway: &str, r: Result<bool, String>) {
        let mut seen = self.seen.lock().unwrap();
        let s = seen.entry(gateway.to_string()).or_default();
        match r {
            Ok(done) => {
                self.releases.fetch_add(1, Ordering::Relaxed);
                s.last_release_error = None;
                if done {
                    self.release_mids.lock().unwrap().remove(&mid);
                }
            }
            Err(e) => {
                self.release_failures.fetch_add(1, Ordering::Relaxed);
                s.last_release_error = Some(e);
            }
        }
    }

    /// The last known backlog of each gateway (`pvo_cpq_gateway_backlog`).
    pub fn backlogs(&self) -> BTreeMap<String, u64> {
        self.checks
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(id, c)| c.backlog.map(|b| (id.clone(), b)))
            .collect()
    }
}
