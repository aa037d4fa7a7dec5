//! PVO's message spool: an append-only log of segment files with group commit.
//!
//! The SMTP server may answer `250` after DATA only once the message is on stable storage.
//! Postfix writes one file per message and fsyncs it; this spool instead appends the messages
//! of all concurrent sessions to one log, written by one thread, so that they share one
//! `fdatasync` (group commit). The queue manager later appends progress (`update`) and
//! completion (`finish`) records; segments whose messages are all finished are deleted, and
//! mostly-dead ones compacted. On start the log is replayed, and anything that does not parse
//! is moved into `corrupt/` for a person to inspect, never deleted.
//!
//! The spool knows nothing about SMTP: a message is a `mid: u64` chosen by the caller, opaque
//! `meta` bytes (the envelope) and an opaque body; updates are opaque bytes.
//!
//! # Using it
//!
//! - [`Spool::open`] recovers the directory and returns the unfinished messages with their
//!   updates in order, and `max_mid`: continue numbering above it. Message ids must be unique
//!   for the life of the spool; `append` refuses an id that is still live.
//! - [`Spool::append`] never blocks: it checksums the record on the caller's thread and queues
//!   it for the writer. The callback runs exactly once, on the writer thread, after the record
//!   is fsynced (`Ok`) or has failed (`Err`; answer 452 if [`SpoolError::is_no_space`], else
//!   451). A callback must not block for long, since the next batch waits for it, and must not
//!   call [`Spool::sync`]. The queue is unbounded: limiting concurrent sessions is the caller's
//!   job.
//! - [`Spool::update`] and [`Spool::finish`] are fire-and-forget; the next batch writes and
//!   fsyncs them (one group commit after the call, shared with whatever else it holds). A
//!   crash before that loses them, so delivery is at-least-once: a message whose next hop
//!   answered 250 just before a crash may be delivered again.
//! - [`Spool::read_body`] is a blocking `pread` (use `spawn_blocking` from async code). It
//!   verifies the record's checksums and finds the message wherever compaction moved it.
//! - Dropping the last handle flushes pending updates and finishes and stops the writer.
//!
//! # On-disk format
//!
//! `dir/seg-<16 hex digit sequence>.log`, written strictly by appending. Integers are
//! little-endian. Each file starts with a 40-byte header:
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! | 0      | 8    | magic `PVOSPOOL`                                             |
//! | 8      | 4    | format version, 1                                            |
//! | 12     | 4    | flags, 0                                                     |
//! | 16     | 8    | sequence number (must match the file name)                   |
//! | 24     | 8    | `mid_floor`: highest message id seen when the file was made  |
//! | 32     | 4    | reserved, 0                                                  |
//! | 36     | 4    | CRC-32 of bytes 0..36                                        |
//!
//! Then records, each a 24-byte header and a payload:
//!
//! | offset | size | field                                            |
//! |-------:|-----:|--------------------------------------------------|
//! | 0      | 1    | magic `0xA7`                                     |
//! | 1      | 1    | type (below)                                     |
//! | 2      | 2    | reserved, 0                                      |
//! | 4      | 4    | payload length                                   |
//! | 8      | 8    | message id                                       |
//! | 16     | 4    | CRC-32 of the payload                            |
//! | 20     | 4    | CRC-32 of header bytes 0..20                     |
//!
//! | type | name      | payload                                                         |
//! |-----:|-----------|-----------------------------------------------------------------|
//! | 1    | Message   | `meta_len: u32`, meta, body                                     |
//! | 2    | Update    | opaque data                                                     |
//! | 3    | Finish    | empty                                                           |
//! | 4    | Relocated | `meta_len: u32`, meta, `n: u32`, n × (`len: u32`, data), body   |
//!
//! `Relocated` is a copy written by compaction (or by repair after a failed fsync) with the
//! updates so far. Replay, in segment order then file order: a `Message` or `Relocated`
//! record makes its copy current (the newest copy wins, including its update list), an
//! `Update` appends to the current copy, a `Finish` makes the message dead. The header has
//! its own checksum so that a damaged length field is recognised as damage instead of being
//! mistaken for a torn tail. Other files: `dir/lock` (held with `flock` while open) and
//! `dir/corrupt/` (files and torn tails moved aside, with a `.N` suffix on name clashes).
//!
//! # Modules
//!
//! # Failures and a full disk
//!
//! An append whose write or fsync failed is answered with an error and must never be
//! delivered: the writer truncates the segment back to its last good fsync, and if even that
//! cannot be made durable it writes a `Finish` for the append with the next batch that
//! succeeds (see `writer`). On a full file system the spool keeps working as far as it can:
//! appends fail with [`SpoolError::NoSpace`], but the node can still deliver and finish what
//! it holds; dead segments are deleted (or the newest one emptied for reuse) after failed
//! batches too, so the space comes back once the queue drains. [`Spool::open`] works on a full
//! file system as well: if there is no room for a new segment it starts without one, and a
//! torn tail or corrupt segment that cannot be moved aside yet stays in place, unread, until
//! there is space (see `recovery`); nothing that did not parse is ever deleted.
//!
//! With [`SpoolConfig::reserve`] set, a full disk is met with room to spare: the spool holds
//! that many bytes in `dir/reserve` and deletes the file when the disk fills up (or when it
//! starts on a full disk), so that finishes, and whatever else the node must write to drain
//! its queue, still fit; new appends get [`SpoolError::NoSpace`] until the reserve can be
//! made again with as much free beside it.
//!
//! # Modules
//!
//! - `format`: encoding and decoding, no IO.
//! - `recovery`: replaying segments at start, cutting torn tails, moving files aside.
//! - `writer`: the writer thread, group commit, rotation, compaction, failure repair.
//! - `state`: the in-memory picture both of them maintain.
//! - `dir`: names, the lock, directory fsync.
//! - `fsio`: writes, truncations and fsyncs, where tests inject failures.

#![forbid(unsafe_code)]

mod crc;
mod dir;
mod error;
mod format;
mod fsio;
mod recovery;
mod state;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle, ThreadId};

pub use error::SpoolError;

use dir::CORRUPT_DIR;
use error::io_error;
use writer::{Done, Op, Retire, Shared, Writer};

/// Where the spool lives and how it writes.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Start a new segment when the active one exceeds this many bytes. Default 64 MiB.
    pub segment_size: u64,
    /// fsync data and directories. Default true; false only for tests of logic.
    pub fsync: bool,
    /// Bytes held back in `dir/reserve` for a full disk; 0 (the default): none. When an
    /// append finds the disk full the file is deleted, which leaves room for what must
    /// still be written (finish records, the node's small files and log lines), and new
    /// appends are refused with [`SpoolError::NoSpace`] until the reserve can be made again
    /// with as much room to spare. A start on a full disk releases it the same way.
    pub reserve: u64,
    /// Test hook: failures to inject, shared by the clones of this configuration.
    #[cfg(test)]
    pub(crate) faults: Arc<fsio::Faults>,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            segment_size: 64 << 20,
            fsync: true,
            reserve: 0,
            #[cfg(test)]
            faults: Arc::default(),
        }
    }
}

/// What `open` found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// Unfinished messages, in mid order.
    pub messages: Vec<RecoveredMessage>,
    /// Files and torn tails moved into `corrupt/`, and those that could not be moved yet.
    pub moved_aside: Vec<MovedAside>,
    /// The highest mid seen in any parsed record or segment header, 0 if none.
    pub max_mid: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub mid: u64,
    pub meta: Vec<u8>,
    /// In the order they were appended.
    pub updates: Vec<Vec<u8>>,
}

/// A file (or the tail of one) that recovery moved into `corrupt/`. If it could not be moved
/// yet, for lack of space, `to` equals `from` and the reason says so: it stays where it is,
/// unread, and is moved aside once there is space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedAside {
    pub from: PathBuf,
    pub to: PathBuf,
    /// Which file, which offset, what was wrong, and what was done about it.
    pub reason: String,
}

/// Gauges and counters for status pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub live_messages: u64,
    /// Meta plus body bytes of the live messages.
    pub live_bytes: u64,
    /// Segment files in the spool directory, the active one included.
    pub segments: u64,
    /// fsyncs of segment data since open (counted even with `fsync: false`).
    pub fsyncs: u64,
    /// Appends completed successfully since open.
    pub appends: u64,
    /// Segments compacted since open.
    pub compactions: u64,
}

/// A handle to an open spool; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<mpsc::Sender<Op>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    writer_id: ThreadId,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel tells the writer to flush and stop; waiting for it releases the
        // directory lock before this returns, so the spool can be reopened at once. A callback
        // dropping the last handle runs on the writer thread and must not wait for itself.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            if thread::current().id() != self.writer_id {
                let _ = handle.join();
            }
        }
    }
}

impl Spool {
    /// Creates `dir` (and `dir/corrupt`) if needed, recovers existing segments, starts the
    /// writer thread.
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, Recovered), SpoolError> {
        let corrupt = cfg.dir.join(CORRUPT_DIR);
        let created = !cfg.dir.exists();
        std::fs::create_dir_all(&corrupt).map_err(|e| io_error("create", &corrupt, e))?;
        if created {
            // Without this a crash could lose the directory entry, and with it every
            // message fsynced inside.
            let parent = match cfg.dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            dir::sync_dir(parent, cfg.fsync)?;
        }
        dir::sync_dir(&cfg.dir, cfg.fsync)?;
        let lock = dir::lock(&cfg.dir)?;

        let rec = recovery::recover(&cfg)?;
        #[cfg(test)]
        let shared = Arc::new(Shared {
            faults: cfg.faults.clone(),
            ..Shared::default()
        });
        #[cfg(not(test))]
        let shared = Arc::new(Shared::default());
        let mut moved_aside = rec.moved_aside;
        let mut writer = Writer::new(cfg, rec.state, rec.next_seq, shared.clone(), lock);
        let damaged: Vec<(u64, String, String)> = rec
            .corrupt
            .into_iter()
            .map(|(seq, what)| {
                let reason = format!(
                    "{what}; nothing from this offset on can be trusted, so the live messages \
                     before it were copied into a new segment and the whole file was moved aside"
                );
                // Marked before anything else can touch them: such a file is only ever
                // moved aside, never emptied or deleted.
                writer.defer_aside(seq, reason.clone());
                (seq, what, reason)
            })
            .collect();
        // Before the segment: on a full disk, releasing the reserve is what makes room for it.
        writer.open_reserve();
        // Every run writes to a fresh segment if it can, so recovery never has to append to a
        // file it has just repaired, and corrupt segments have somewhere to copy their
        // messages to. On a full file system it starts without one (the first batch tries
        // again): refusing to start would keep the queued mail, and with it the space, from
        // ever leaving.
        match writer.ensure_active() {
            Ok(_) => {}
            Err(e) if e.is_no_space() => {}
            Err(e) => return Err(e),
        }
        for (seq, what, reason) in damaged {
            let path = writer.segment_path(seq);
            match writer.retire(seq, Retire::MoveAside(reason)) {
                Ok(moved) => moved_aside.extend(moved),
                Err(e) => {
                    // Its good prefix is in the index like any segment's; the writer moves it
                    // aside once it can copy the live messages forward.
                    moved_aside.push(MovedAside {
                        from: path.clone(),
                        to: path,
                        reason: format!(
                            "{what}; nothing from this offset on can be trusted, but the live \
                             messages before it could not be copied forward yet ({e}), so the \
                             file stays in the spool, read only up to this offset, and is \
                             moved aside once they have been"
                        ),
                    });
                }
            }
        }
        // Not fatal: a dead segment that cannot be deleted now is retried by the writer, and
        // refusing to start would keep the live messages from being delivered.
        let _ = writer.retire_dead();
        writer.publish_all();
        let (messages, max_mid) = writer.recovered();

        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("pvo-spool-writer".to_string())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error("start writer thread for", &corrupt, e))?;
        let spool = Spool {
            inner: Arc::new(Inner {
                tx: Some(tx),
                shared,
                writer_id: handle.thread().id(),
                writer: Some(handle),
            }),
        };
        let recovered = Recovered {
            messages,
            moved_aside,
            max_mid,
        };
        Ok((spool, recovered))
    }

    fn send(&self, op: Op) {
        if let Some(tx) = &self.inner.tx {
            // If the writer is gone the op comes back and is dropped here, which completes an
            // append's callback with `Closed` on this thread: there is no writer to run it.
            let _ = tx.send(op);
        }
    }

    /// Queues a new message. `done` is called exactly once, from the writer thread, after the
    /// record is written and fsynced (`Ok`) or failed (`Err`). Only if the writer thread has
    /// stopped is `done(Err(Closed))` called on this thread instead.
    pub fn append(
        &self,
        mid: u64,
        meta: Vec<u8>,
        body: Vec<u8>,
        done: Box<dyn FnOnce(Result<(), SpoolError>) + Send>,
    ) {
        let done = Done::new(done);
        let op = match format::message(mid, &meta, &body) {
            Ok(enc) => Op::Append {
                mid,
                meta_len: meta.len(),
                record: enc.bytes,
                done,
            },
            Err(len) => Op::Reject {
                done,
                err: SpoolError::TooLarge { mid, len },
            },
        };
        self.send(op);
    }

    /// Records progress of a message. Written and fsynced by the next batch. Ignored if the
    /// message is not live (or the update is over 4 GiB).
    pub fn update(&self, mid: u64, data: Vec<u8>) {
        if let Ok(record) = format::update(mid, &data) {
            self.send(Op::Update { mid, record });
        }
    }

    /// The message is finished (delivered, bounced or deleted): its records become dead.
    /// Written and fsynced by the next batch. Ignored if the message is not live.
    pub fn finish(&self, mid: u64) {
        self.send(Op::Finish {
            mid,
            record: format::finish(mid),
        });
    }

    /// Reads a live message's body with a blocking `pread`, verifying its checksums.
    pub fn read_body(&self, mid: u64) -> Result<Vec<u8>, SpoolError> {
        let (loc, file) = {
            let idx = self.inner.shared.index();
            let loc = *idx.locs.get(&mid).ok_or(SpoolError::UnknownMessage(mid))?;
            let file = idx
                .files
                .get(&loc.seq)
                .cloned()
                .ok_or(SpoolError::UnknownMessage(mid))?;
            (loc, file)
        };
        // Outside the lock: the Arc keeps the file readable even if compaction deletes it.
        state::read_body(&file, loc)
    }

    /// Number of live messages and bytes, and counters.
    pub fn stats(&self) -> SpoolStats {
        let shared = &self.inner.shared;
        let idx = shared.index();
        SpoolStats {
            live_messages: idx.locs.len() as u64,
            live_bytes: idx.live_bytes,
            segments: idx.files.len() as u64,
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            appends: shared.appends.load(Ordering::Relaxed),
            compactions: shared.compactions.load(Ordering::Relaxed),
        }
    }

    /// Writes pending updates and finishes and fsyncs; blocks until done. Used at clean
    /// shutdown and by tests. Must not be called from an `append` callback.
    pub fn sync(&self) -> Result<(), SpoolError> {
        if thread::current().id() == self.inner.writer_id {
            return Err(SpoolError::Reentrant);
        }
        let (tx, rx) = mpsc::channel();
        self.send(Op::Sync(tx));
        rx.recv().unwrap_or(Err(SpoolError::Closed))
    }

    /// Test hook: the next fsync fails with OS error `code` (e.g. 5 for EIO, 28 for ENOSPC).
    #[cfg(test)]
    pub(crate) fn fail_next_sync(&self, code: i32) {
        self.inner.shared.faults.fail_syncs(code, 1);
    }

    /// Test hook: seal the active segment so that the next record starts a new one.
    #[cfg(test)]
    pub(crate) fn rotate(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Op::Rotate(tx));
        let _ = rx.recv();
    }

    /// Test hook: the writer stops at once without writing anything more, as if the process
    /// had been killed; the directory can then be opened again.
    #[cfg(test)]
    pub(crate) fn crash(self) {
        let (tx, rx) = mpsc::channel();
        self.send(Op::Crash(tx));
        let _ = rx.recv();
    }
}
