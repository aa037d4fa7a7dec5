//! MID, ICID, DCID and RID numbering.
//!
//! Administrators search `mail_logs` by these numbers, so a number must never
//! be handed out twice, even across a crash. Each counter reserves blocks: the
//! end of the current block is written (and fsynced) to `run/ids` before any
//! number of the block is used, and a restart continues after the reserved
//! end. A crash therefore skips at most one block of numbers and never reuses
//! one.
//!
//! A full disk must not stop a node (delivering what it holds is what frees
//! the space), so when the file cannot be replaced whole (a temporary file
//! needs room) it is overwritten in place, which needs none; if even that
//! fails the node goes on with the numbers in memory, says so in `mail_logs`
//! (the file, the cause, and from which numbers on a crash could repeat
//! them), and tries again at most once a second until it works.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const BLOCK: u64 = 100_000;
/// How often a failing `run/ids` is tried again.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mid = 0,
    Icid = 1,
    Dcid = 2,
}

pub struct Ids {
    path: PathBuf,
    next: [AtomicU64; 3],
    reserved: Mutex<[u64; 3]>,
    /// While the reserved ends are not on disk: since when numbers are unreserved (the
    /// ends on disk), when to try again, and the news for `mail_logs` not yet taken.
    unsaved: Mutex<Unsaved>,
}

#[derive(Default)]
struct Unsaved {
    /// The ends on disk while newer ones could not be written.
    on_disk: Option<[u64; 3]>,
    retry_at: Option<Instant>,
    news: Vec<crate::core::events::Notice>,
}

impl Ids {
    /// Opens the counters; `min_mid` is one past the highest MID found in the spool.
    pub fn open(run_dir: &Path, min_mid: u64) -> Result<Ids> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join("ids");
        let mut start = [1u64, 1, 1];
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (i, part) in text.split_whitespace().take(3).enumerate() {
                    if let Ok(n) = part.parse::<u64>() {
                        start[i] = n;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        }
        start[0] = start[0].max(min_mid);
        let ids = Ids {
            path,
            next: [
                AtomicU64::new(start[0]),
                AtomicU64::new(start[1]),
                AtomicU64::new(start[2]),
            ],
            reserved: Mutex::new(start),
            unsaved: Mutex::default(),
        };
        // Reserve the first blocks now so allocation never waits at start.
        let mut r = ids.reserved.lock().unwrap();
        for (i, slot) in r.iter_mut().enumerate() {
            *slot = start[i] + BLOCK;
        }
        ids.save(&r, start);
        drop(r);
        Ok(ids)
    }

    /// What `mail_logs` should say about `run/ids` since the last call: a failure to
    /// write it (with the file and the cause) and its recovery.
    pub fn take_news(&self) -> Vec<crate::core::events::Notice> {
        std::mem::take(&mut self.unsaved.lock().unwrap().news)
    }

    /// Writes the reserved ends; on failure keeps going in memory and reports it once.
    /// `on_disk` is what the file holds now.
    fn save(&self, r: &[u64; 3], on_disk: [u64; 3]) {
        let mut u = self.unsaved.lock().unwrap();
        match self.persist(r) {
            Ok(()) => {
                if u.on_disk.take().is_some() {
                    u.news.push(crate::core::events::Notice::IdsWrittenAgain {
                        path: self.path.clone(),
                    });
                }
                u.retry_at = None;
            }
            Err(e) => {
                if u.on_disk.is_none() {
                    let d = on_disk;
                    u.news.push(crate::core::events::Notice::IdsNotWritten {
                        path: self.path.clone(),
                        error: format!("{e:#}"),
                        on_disk: d,
                    });
                    tracing::error!("{}", u.news.last().unwrap());
                    u.on_disk = Some(on_disk);
                }
                u.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    /// Moves the counter of `kind` up to `floor` (not down): a manager on a store shared by
    /// several numbers its messages in a range of its own (`Store::mid_floor`).
    pub fn raise_floor(&self, kind: Kind, floor: u64) {
        let i = kind as usize;
        let mut r = self.reserved.lock().unwrap();
        if self.next[i].load(Ordering::Relaxed) >= floor {
            return;
        }
        self.next[i].fetch_max(floor, Ordering::Relaxed);
        let on_disk = self.unsaved.lock().unwrap().on_disk.unwrap_or(*r);
        r[i] = r[i].max(floor + BLOCK);
        self.save(&r, on_disk);
    }

    pub fn next(&self, kind: Kind) -> u64 {
        let i = kind as usize;
        let n = self.next[i].fetch_add(1, Ordering::Relaxed);
        let mut r = self.reserved.lock().unwrap();
        let due = {
            let u = self.unsaved.lock().unwrap();
            u.retry_at.is_some_and(|t| Instant::now() >= t)
        };
        if n >= r[i] || due {
            let on_disk = self.unsaved.lock().unwrap().on_disk.unwrap_or(*r);
            if n >= r[i] {
                r[i] = n + BLOCK;
            }
            // Numbers stay unique within this run; a failure is reported (once) and
            // retried, since only a crash before it works could reuse some.
            self.save(&r, on_disk);
        }
        n
    }

    fn persist(&self, r: &[u64; 3]) -> Result<()> {
        let line = format!("{} {} {}\n", r[0], r[1], r[2]);
        match crate::core::atomic_file::write(&self.path, line.as_bytes()) {
            Ok(()) => Ok(()),
            // Most likely a full disk, which has no room for the temporary file:
            // overwriting the existing one needs no new space.
            Err(whole) => overwrite_in_place(&self.path, &line)
                .map_err(|e| whole.context(format!("and overwriting it in place failed too: {e}"))),
        }
    }
}

/// Overwrites `path` (which must exist) with `line`, padded with spaces to the file's
/// length so that no byte of an older, longer line is left, and fsyncs it. A line of
/// three numbers fits in one disk sector, so a crash leaves the old or the new one.
fn overwrite_in_place(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len() as usize;
    let mut text = line.trim_end().to_string();
    while text.len() + 1 < len {
        text.push(' ');
    }
    text.push('\n');
    f.seek(std::io::SeekFrom::Start(0))?;
    f.write_all(text.as_bytes())?;
    f.set_len(text.len() as u64)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ids::open(dir.path(), 1).unwrap();
        let first: Vec<u64> = (0..5).map(|_| a.next(Kind::Mid)).collect();
        assert_eq!(first, vec![1, 2, 3, 4, 5]);
        drop(a);
        let b = Ids::open(dir.path(), 1).unwrap();
        assert!(b.next(Kind::Mid) > 5);
        let c = Ids::open(dir.path(), 10_000_000).unwrap();
        assert_eq!(c.next(Kind::Mid), 10_000_000);
        assert_eq!(c.next(Kind::Icid), 1 + 2 * BLOCK);
        // A manager's own range on a shared store: up, never down, and kept on restart.
        c.raise_floor(Kind::Mid, 2_000_000_000_000);
        assert_eq!(c.next(Kind::Mid), 2_000_000_000_000);
        c.raise_floor(Kind::Mid, 5);
        assert_eq!(c.next(Kind::Mid), 2_000_000_000_001);
        drop(c);
        let d = Ids::open(dir.path(), 1).unwrap();
        assert!(d.next(Kind::Mid) > 2_000_000_000_001);
    }

    /// The temporary file `atomic_file` needs cannot be made (on a full disk; here its
    /// name is taken by a directory): the counters are overwritten in place, so the node
    /// starts and the numbers stay reserved.
    #[test]
    fn a_run_ids_that_cannot_be_replaced_whole_is_overwritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ids::open(dir.path(), 1).unwrap();
        assert_eq!(a.next(Kind::Mid), 1);
        drop(a);
        let blocker = dir.path().join(format!(".ids.tmp{}", std::process::id()));
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("x"), b"x").unwrap();
        let b = Ids::open(dir.path(), 1).unwrap();
        assert!(b.take_news().is_empty());
        assert_eq!(b.next(Kind::Mid), 1 + BLOCK);
        drop(b);
        let c = Ids::open(dir.path(), 1).unwrap();
        assert_eq!(
            c.next(Kind::Mid),
            1 + 2 * BLOCK,
            "the in-place write was lost"
        );
    }

    /// Neither way works (no file to overwrite, no temporary file possible): the node
    /// still starts, says which file and why and from which numbers a crash could repeat
    /// them, and writes the file as soon as it can.
    #[test]
    fn a_run_ids_that_cannot_be_written_is_reported_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join(format!(".ids.tmp{}", std::process::id()));
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("x"), b"x").unwrap();
        let ids = Ids::open(dir.path(), 7).unwrap();
        let news = ids.take_news();
        assert_eq!(news.len(), 1, "{news:?}");
        let path = dir.path().join("ids");
        assert!(
            news[0]
                .to_string()
                .contains(&format!("could not be written to {}", path.display()))
                && news[0].to_string().contains("MIDs from 7"),
            "{news:?}"
        );
        assert_eq!(ids.next(Kind::Mid), 7);
        std::fs::remove_dir_all(&blocker).unwrap();
        let start = Instant::now();
        while !path.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never written again"
            );
            ids.next(Kind::Dcid);
            std::thread::sleep(Duration::from_millis(20));
        }
        let news = ids.take_news();
        assert!(
            news.iter().any(|n| n.to_string().ends_with(" again")),
            "{news:?}"
        );
        drop(ids);
        let again = Ids::open(dir.path(), 1).unwrap();
        assert_eq!(again.next(Kind::Mid), 7 + BLOCK);
    }
}
