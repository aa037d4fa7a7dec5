//! The [`Inbox`]: the manager's group-committing writer of the central store, a thread
//! that commits whatever transfers arrived meanwhile in one transaction (one fsync for
//! many sessions). Held in `cpq::State`; `cpq::manager::receive_transfer` waits on it
//! before its `250`.

use std::sync::mpsc;
use std::sync::Arc;

use pvo_quarantine::{Inserted, NewMessage, Store};
use tokio::sync::oneshot;

/// Most messages committed in one transaction.
const MAX_BATCH: usize = 512;

type Job = (
    NewMessage,
    oneshot::Sender<pvo_quarantine::Result<Inserted>>,
);

/// The group-committing writer of the central store.
pub struct Inbox {
    tx: mpsc::Sender<Job>,
}

impl Inbox {
    pub fn start(store: Arc<Store>) -> Inbox {
        let (tx, rx) = mpsc::channel::<Job>();
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
                    let (msgs, replies): (Vec<NewMessage>, Vec<_>) = batch.into_iter().unzip();
                    let now = crate::core::clock::unix_now();
                    match store.quarantine_many(&msgs, now) {
                        Ok(results) => {
                            for (r, reply) in results.into_iter().zip(replies) {
                                let _ = reply.send(r);
                            }
                        }
                        Err(e) => {
                            let text = e.to_string();
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
        Inbox { tx }
    }

    pub async fn insert(&self, msg: NewMessage) -> pvo_quarantine::Result<Inserted> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send((msg, tx)).is_err() {
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
