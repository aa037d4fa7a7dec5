//! The [`Inbox`]: the manager's group-committing writer of the central store, a thread
//! that commits whatever transfers arrived meanwhile in one transaction (one fsync for
//! many sessions). Held in `cpq::State`; `cpq::manager::receive_transfer` waits on it
//! before its `250`.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvo_quarantine::{Inserted, NewMessage};

use crate::core::scanning::quarantine_store::SharedStore;
use tokio::sync::oneshot;

/// Most messages committed in one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<pvo_quarantine::Result<Inserted>>;

/// What the writer is asked: to store a transfer, or to say it is alive (`diagnose`).
enum Job {
    Insert(Box<NewMessage>, Reply),
    Ping(oneshot::Sender<()>),
}

/// How the writer's last transfers went, for `diagnose`: the last one stored and the
/// last one refused (with the store's words), each with its place in the order they
/// were written (`seq`) and its time (Unix seconds).
#[derive(Debug, Clone, Default)]
pub struct WriterState {
    seq: u64,
    pub stored: Option<(u64, u64)>,
    pub failed: Option<(u64, u64, String)>,
}

impl WriterState {
    fn record(&mut self, now: u64, outcome: Result<(), String>) {
        self.seq += 1;
        match outcome {
            Ok(()) => self.stored = Some((self.seq, now)),
            Err(why) => self.failed = Some((self.seq, now, why)),
        }
    }

    /// The store's words when the last transfer written was refused: when, and why.
    pub fn failing(&self) -> Option<(u64, &str)> {
        let (seq, at, why) = self.failed.as_ref()?;
        self.stored
            .is_none_or(|(s, _)| s < *seq)
            .then_some((*at, why.as_str()))
    }

    /// When a transfer was last stored.
    pub fn stored_at(&self) -> Option<u64> {
        self.stored.map(|(_, at)| at)
    }
}

/// The group-committing writer of the central store.
pub struct Inbox {
    tx: mpsc::Sender<Job>,
    state: Arc<Mutex<WriterState>>,
}

impl Inbox {
    pub fn start(store: Arc<SharedStore>) -> Inbox {
        let (tx, rx) = mpsc::channel::<Job>();
        let state = Arc::new(Mutex::new(WriterState::default()));
        let seen = state.clone();
        std::thread::Builder::new()
            .name("cpq-inbox".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let mut msgs = Vec::with_capacity(batch.len());
                    let mut replies = Vec::with_capacity(batch.len());
                    for job in batch {
                        match job {
                            Job::Insert(m, r) => {
                                msgs.push(*m);
                                replies.push(r);
                            }
                            Job::Ping(alive) => {
                                let _ = alive.send(());
                            }
                        }
                    }
                    if msgs.is_empty() {
                        continue;
                    }
                    let now = crate::core::clock::unix_now();
                    match store.quarantine_many(&msgs, now) {
                        Ok(results) => {
                            {
                                let mut state = seen.lock().unwrap();
                                for r in &results {
                                    state.record(
                                        now,
                                        r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                                    );
                                }
                            }
                            for (r, reply) in results.into_iter().zip(replies) {
                                let _ = reply.send(r);
                            }
                        }
                        Err(e) => {
                            let text = e.to_string();
                            seen.lock().unwrap().record(now, Err(text.clone()));
                            for reply in replies {
                                let _ = reply.send(Err(pvo_quarantine::QuarantineError::Invalid(
                                    text.clone(),
                                )));
                            }
                        }
                    }
                }
            })
            .expect("spawning the cpq inbox thread");
        Inbox { tx, state }
    }

    /// How the last batches went.
    pub fn state(&self) -> WriterState {
        self.state.lock().unwrap().clone()
    }

    /// Whether the writer thread answers within `within` (after the batch it is
    /// committing, if any): `Err` says whether it stopped or is stuck.
    pub async fn ping(&self, within: Duration) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Ping(tx)).is_err() {
            return Err("the central store writer (thread cpq-inbox) stopped".into());
        }
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the central store writer (thread cpq-inbox) stopped".into()),
            Err(_) => Err(format!(
                "the central store writer (thread cpq-inbox) has not answered for {} s: a commit of the store is stuck",
                within.as_secs()
            )),
        }
    }

    pub async fn insert(&self, msg: NewMessage) -> pvo_quarantine::Result<Inserted> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Insert(Box::new(msg), tx)).is_err() {
            return Err(pvo_quarantine::QuarantineError::Invalid(
                "the central store writer stopped".into(),
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(pvo_quarantine::QuarantineError::Invalid(
                "the central store writer stopped".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_is_failing_while_its_last_transfer_was_refused() {
        let mut s = WriterState::default();
        assert_eq!(s.failing(), None);
        s.record(10, Ok(()));
        assert_eq!((s.failing(), s.stored_at()), (None, Some(10)));
        s.record(11, Err("database or disk is full".into()));
        assert_eq!(s.failing(), Some((11, "database or disk is full")));
        // In the same second, the order decides.
        s.record(11, Ok(()));
        assert_eq!(s.failing(), None);
    }
}
