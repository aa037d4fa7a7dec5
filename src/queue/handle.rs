//! The queue manager's handle and the closed set of [`Event`]s it takes, with the
//! records they carry (jobs, outcomes, `tophosts` rows, queued recipients). Everything
//! that talks to the queue (sessions, delivery, commands, the CPQ services) needs only
//! this; the schedule itself is `queue::Manager`'s. This module names no other part of
//! the node but the envelope, so `state::Shared` can hold the handle.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::envelope::{Envelope, RcptFinal};

/// One message to one recipient host.
#[derive(Debug)]
pub struct Job {
    pub env: Arc<Envelope>,
    pub body: Option<Arc<Vec<u8>>>,
    pub domain: String,
    pub rids: Vec<u32>,
    pub attempts: u32,
    /// Next hops set by `redirectrecipients`, overriding routes and MX.
    pub redirect: Option<(String, u16)>,
}

/// What happened to one recipient of a job.
#[derive(Debug, Clone)]
pub enum RcptOutcome {
    Delivered,
    /// Temporary failure (reply or reason), retried.
    Temp(String),
    /// Permanent failure, bounced.
    Perm(String),
}

/// The closed set of things the queue manager reacts to.
pub enum Event {
    /// A message is on disk and ready for delivery.
    Enqueue {
        env: Arc<Envelope>,
        body: Option<Arc<Vec<u8>>>,
        done: Vec<(u32, RcptFinal)>,
        /// Set by `redirectrecipients` before a restart.
        redirect: Option<(String, u16)>,
    },
    /// A connection finished a job. If `next` is given the connection can
    /// take another job to the same host.
    JobDone {
        job: Job,
        dcid: u64,
        outcomes: Vec<RcptOutcome>,
        next: Option<oneshot::Sender<Option<Job>>>,
    },
    /// A connection could not be opened (or broke before any job finished);
    /// `job` is deferred and the host is marked down.
    ConnFailed { job: Job, error: String },
    /// A delivery connection ended.
    ConnClosed { domain: String },
    /// A connection waits for more work (it has finished its last job).
    Idle {
        domain: String,
        next: oneshot::Sender<Option<Job>>,
    },
    /// Snapshot of the per-host table, for `tophosts` and friends.
    Hosts(oneshot::Sender<Vec<HostStatus>>),
    /// Stop delivering new jobs; running connections finish.
    Shutdown(oneshot::Sender<()>),
    /// `suspenddel` (true) / `resumedel` (false).
    SuspendDelivery(bool, oneshot::Sender<bool>),
    /// `showrecipients`.
    Recipients(Selection, oneshot::Sender<Vec<QueuedRecipient>>),
    /// `deleterecipients` / `bouncerecipients`: (recipients removed, recipients in delivery right now).
    Remove(Selection, Removal, oneshot::Sender<(usize, usize)>),
    /// `redirectrecipients`: every queued recipient goes to this next hop.
    Redirect(String, u16, oneshot::Sender<usize>),
    /// `delivernow`: retry deferred recipients (of one host, or all) now.
    DeliverNow(Option<String>, oneshot::Sender<usize>),
    /// A commit replaced the configuration: idle connections (opened under
    /// the old routes and TLS settings) are released instead of reused.
    Reconfigured,
    /// Counts for `status`: (messages in queue, active recipients, outbound connections, delivery suspended).
    Gauges(oneshot::Sender<Gauges>),
}

/// Which queued recipients a queue command works on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Selection {
    All,
    Host(String),
    Sender(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Delete,
    Bounce,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Gauges {
    pub messages: usize,
    pub active_recipients: usize,
    pub connections_out: usize,
    pub delivery_suspended: bool,
    pub oldest_received_at: Option<u64>,
}

/// One row of `showrecipients`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueuedRecipient {
    pub mid: u64,
    pub rid: u32,
    pub host: String,
    pub sender: String,
    pub recipient: String,
    pub size: usize,
    pub received_at: u64,
    pub attempts: u32,
    pub state: &'static str,
}

#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Event>,
}

impl QueueHandle {
    pub fn send(&self, ev: Event) {
        // The manager only stops at shutdown, when nothing matters any more:
        // whatever is spooled is recovered at the next start.
        let _ = self.tx.send(ev);
    }

    pub fn enqueue(&self, env: Arc<Envelope>, body: Option<Arc<Vec<u8>>>) {
        self.send(Event::Enqueue {
            env,
            body,
            done: Vec::new(),
            redirect: None,
        });
    }

    pub async fn hosts(&self) -> Vec<HostStatus> {
        let (tx, rx) = oneshot::channel();
        self.send(Event::Hosts(tx));
        rx.await.unwrap_or_default()
    }
}

pub fn channel() -> (QueueHandle, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (QueueHandle { tx }, rx)
}

/// One row of `tophosts`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostStatus {
    pub host: String,
    pub active_recipients: usize,
    pub connections_out: usize,
    pub delivered_recipients: u64,
    pub soft_bounced: u64,
    pub hard_bounced: u64,
    pub down: bool,
    pub last_error: Option<String>,
}
