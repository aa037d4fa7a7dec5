//! The release-id ledger of a central gateway (`DATA_DIR/cpq/releases-received`): which
//! releases it has taken, so a retry or a second click is answered `250` and not
//! delivered again. The order that keeps a crash from delivering a release twice (pending
//! with the copy's MID, spooled, taken, delivered) is `cpq::gateway`'s; this module is the
//! file and its writer thread, held in `cpq::State`.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// The release ids this gateway has taken: an append-only file, fsynced
/// before the `250`, loaded at start. Concurrent receptions share fsyncs: a
/// writer thread appends whatever lines arrived meanwhile and syncs once. A
/// line is a taken release id, or `~ ID MID` for one whose copy MID is being
/// spooled (see the module documentation).
pub struct ReleaseLedger {
    seen: Arc<Mutex<HashSet<String>>>,
    /// Release ids being received right now (two managers of one deployment may send the
    /// same release at once when one takes over the other's interrupted releases).
    taking: Arc<Mutex<HashSet<String>>>,
    tx: std::sync::mpsc::Sender<(String, tokio::sync::oneshot::Sender<std::io::Result<()>>)>,
}

/// Why a release cannot be taken now.
#[derive(Debug, PartialEq, Eq)]
pub enum NotNow {
    /// It was taken before (a retry, or the same release from another manager).
    Taken,
    /// Another connection is receiving it at this moment.
    Busy,
}

/// A release being received; dropping it ends the reception.
pub struct Taking {
    taking: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for Taking {
    fn drop(&mut self) {
        self.taking.lock().unwrap().remove(&self.id);
    }
}

/// The prefix of a pending line; release ids never contain a space.
const PENDING: &str = "~ ";

impl ReleaseLedger {
    /// Loads the ledger and settles the ids left pending by a crash: taken if their copy
    /// is live in `spool`, forgotten if not. Returns the ledger and the ids it took so.
    pub fn open(dir: &Path, spool: &pvo_spool::Spool) -> Result<(ReleaseLedger, Vec<String>)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("releases-received");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut seen = HashSet::new();
        let mut pending = Vec::new();
        for line in text.lines() {
            match line.strip_prefix(PENDING) {
                Some(rest) => {
                    if let Some((id, mid)) = rest.split_once(' ') {
                        if let Ok(mid) = mid.trim().parse::<u64>() {
                            pending.push((id.to_string(), mid));
                        }
                    }
                }
                None => {
                    seen.insert(line.to_string());
                }
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut settled = Vec::new();
        for (id, mid) in pending {
            if !seen.contains(&id) && spool.read_body(mid).is_ok() {
                seen.insert(id.clone());
                settled.push(id);
            }
        }
        if !settled.is_empty() {
            let lines: String = settled.iter().map(|id| format!("{id}\n")).collect();
            file.write_all(lines.as_bytes())
                .and_then(|()| file.sync_data())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let (tx, rx) = std::sync::mpsc::channel::<(
            String,
            tokio::sync::oneshot::Sender<std::io::Result<()>>,
        )>();
        std::thread::Builder::new()
            .name("cpq-release-ledger".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let mut text = String::new();
                    for (id, _) in &batch {
                        text.push_str(id);
                        text.push('\n');
                    }
                    let r = file
                        .write_all(text.as_bytes())
                        .and_then(|()| file.sync_data());
                    for (_, reply) in batch {
                        let _ = reply.send(match &r {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })
            .context("starting the release ledger writer")?;
        Ok((
            ReleaseLedger {
                seen: Arc::new(Mutex::new(seen)),
                taking: Arc::new(Mutex::new(HashSet::new())),
                tx,
            },
            settled,
        ))
    }

    /// Starts taking release `id`: refused if it was taken already or another connection
    /// is taking it now. The guard ends the reception (taken or not) when dropped.
    pub fn start_taking(&self, id: &str) -> Result<Taking, NotNow> {
        let seen = self.seen.lock().unwrap();
        if seen.contains(id) {
            return Err(NotNow::Taken);
        }
        if !self.taking.lock().unwrap().insert(id.to_string()) {
            return Err(NotNow::Busy);
        }
        Ok(Taking {
            taking: self.taking.clone(),
            id: id.to_string(),
        })
    }

    /// Records `id` durably (returns once it is fsynced).
    pub async fn record(&self, id: &str) -> std::io::Result<()> {
        if !self.seen.lock().unwrap().insert(id.to_string()) {
            return Ok(());
        }
        self.write_line(id.to_string()).await
    }

    /// Records durably that the copy of release `id` is about to be spooled as `mid`.
    pub async fn record_pending(&self, id: &str, mid: u64) -> std::io::Result<()> {
        self.write_line(format!("{PENDING}{id} {mid}")).await
    }

    async fn write_line(&self, line: String) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send((line, tx)).is_err() {
            return Err(std::io::Error::other("the release ledger writer stopped"));
        }
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the release ledger writer stopped")))
    }
}

/// One `mail_logs` line per release id that start-up found spooled but not yet recorded.
pub fn log_settled(log: &crate::core::mail_log::MailLog, settled: &[String]) {
    for id in settled {
        log.emit(crate::core::events::Event::ReleaseSettled { release: id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_reception_of_a_release_at_a_time_and_none_after_it_is_taken() {
        let dir = tempfile::TempDir::new().unwrap();
        let (spool, _) =
            pvo_spool::Spool::open(pvo_spool::SpoolConfig::new(dir.path().join("spool"))).unwrap();
        let (ledger, settled) = ReleaseLedger::open(&dir.path().join("cpq"), &spool).unwrap();
        assert!(settled.is_empty());
        let first = ledger.start_taking("dep-release-7").unwrap();
        // The same release from a second manager while the first is being received.
        assert_eq!(
            ledger.start_taking("dep-release-7").err(),
            Some(NotNow::Busy)
        );
        assert!(ledger.start_taking("dep-release-8").is_ok());
        // A reception that fails (nothing recorded) lets the next attempt in.
        drop(first);
        let again = ledger.start_taking("dep-release-7").unwrap();
        ledger.record("dep-release-7").await.unwrap();
        drop(again);
        assert_eq!(
            ledger.start_taking("dep-release-7").err(),
            Some(NotNow::Taken)
        );
        // Taken survives a restart.
        drop(ledger);
        let (ledger, _) = ReleaseLedger::open(&dir.path().join("cpq"), &spool).unwrap();
        assert_eq!(
            ledger.start_taking("dep-release-7").err(),
            Some(NotNow::Taken)
        );
    }
}
