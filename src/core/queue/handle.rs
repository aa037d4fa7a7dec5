//! The queue manager's handle and the closed set of [`Event`]s it takes, with the
//! records they carry (jobs, outcomes, `tophosts` rows, queued recipients). Everything
//! that talks to the queue (sessions, delivery, commands, the CPQ services) needs only
//! this; the schedule itself is `queue::Manager`'s. This module names no other part of
//! the node but the envelope, so `state::Handles` can hold the handle.
//!
//! The event channel is bounded ([`CHANNEL_EVENTS`]). When it is full, a sender waits
//! for room ([`QueueHandle::send`]): no event is dropped (an enqueued message, a
//! delivery's outcome), and a flood of them slows their producers down instead of
//! growing memory.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::core::envelope::{Envelope, RcptFinal};

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
    /// A DSN task has read the body of the message `mid` from the spool (see
    /// `bounce::spawn_dsn`): the message may be finished now.
    DsnRead { mid: u64 },
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
    tx: mpsc::Sender<Event>,
}

impl QueueHandle {
    /// Hands `ev` to the manager. When the channel is full the caller waits for room:
    /// an event is never dropped (it may be a delivery's outcome).
    pub fn send(&self, ev: Event) {
        match self.tx.try_send(ev) {
            Ok(()) => {}
            // The manager only stops at shutdown, when nothing matters any more:
            // whatever is spooled is recovered at the next start.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(ev)) => wait_to_send(&self.tx, ev),
        }
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

/// Events the manager's channel holds before a sender waits: far more than a node
/// produces between two turns of the manager's loop. Memory is taken only as used.
pub const CHANNEL_EVENTS: usize = 65_536;

pub fn channel() -> (QueueHandle, mpsc::Receiver<Event>) {
    channel_of(CHANNEL_EVENTS)
}

pub(crate) fn channel_of(capacity: usize) -> (QueueHandle, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(capacity);
    (QueueHandle { tx }, rx)
}

/// Waits for room in a full channel. `send` is called from tasks and plain functions
/// alike, so the wait is a blocking one, outside the runtime's worker duty where there
/// is one: the manager task goes on draining on the other threads. The manager never
/// sends to itself, so the wait always ends. On a single-threaded runtime (unit tests,
/// where the manager would run on this very thread) the event waits in a task instead.
fn wait_to_send(tx: &mpsc::Sender<Event>, ev: Event) {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::CurrentThread) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(ev).await;
            });
        }
        Ok(_) => tokio::task::block_in_place(|| {
            let _ = tx.blocking_send(ev);
        }),
        Err(_) => {
            let _ = tx.blocking_send(ev);
        }
    }
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
