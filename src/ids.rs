//! MID, ICID, DCID and RID numbering.
//!
//! Administrators search `mail_logs` by these numbers, so a number must never
//! be handed out twice, even across a crash. Each counter reserves blocks: the
//! end of the current block is written (and fsynced) to `run/ids` before any
//! number of the block is used, and a restart continues after the reserved
//! end. A crash therefore skips at most one block of numbers and never reuses
//! one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};

const BLOCK: u64 = 100_000;

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
}

impl Ids {
    /// Opens the counters; `min_mid` is one past the highest MID found in the spool.
    pub fn open(run_dir: &Path, min_mid: u64) -> Result<Ids> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join("ids");
        let mut start = [1u64, 1, 1];
        if let Ok(text) = std::fs::read_to_string(&path) {
            for (i, part) in text.split_whitespace().take(3).enumerate() {
                if let Ok(n) = part.parse::<u64>() {
                    start[i] = n;
                }
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
        };
        // Reserve the first blocks now so allocation never waits at start.
        let mut r = ids.reserved.lock().unwrap();
        for (i, slot) in r.iter_mut().enumerate() {
            *slot = start[i] + BLOCK;
        }
        ids.persist(&r)?;
        drop(r);
        Ok(ids)
    }

    pub fn next(&self, kind: Kind) -> u64 {
        let i = kind as usize;
        let n = self.next[i].fetch_add(1, Ordering::Relaxed);
        let mut r = self.reserved.lock().unwrap();
        if n >= r[i] {
            r[i] = n + BLOCK;
            if let Err(e) = self.persist(&r) {
                // Numbers stay unique within this run; only a crash right now
                // could make the next run reuse some.
                tracing::error!("cannot persist id counters: {e:#}");
            }
        }
        n
    }

    fn persist(&self, r: &[u64; 3]) -> Result<()> {
        let line = format!("{} {} {}\n", r[0], r[1], r[2]);
        crate::atomic_file::write(&self.path, line.as_bytes())
    }
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
    }
}
