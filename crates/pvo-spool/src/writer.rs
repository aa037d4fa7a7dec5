//! The writer thread: the only code that writes to the spool directory once it is open.
//!
//! # Group commit
//!
//! The loop blocks for the first operation, then drains whatever else is queued (up to
//! `BATCH_BYTES`) into one buffer, writes it with one `pwrite`, makes it durable with one
//! `fdatasync`, and only then runs the completion callbacks. While it waits for the disk, new
//! operations queue up and form the next batch, so the number of fsyncs follows the disk's
//! latency, not the number of messages. Updates and finishes record a delivery's outcome,
//! and until that is on disk a crash delivers the message again; but an fsync of their own
//! would take the disk from the appends that wait for their `250` (a fifth of the relay
//! rate, measured). So they are written at once and ride along with the next batch that
//! fsyncs, which under load is the next group commit, and when no append comes they are
//! fsynced `OUTCOME_FLUSH` (5 ms) after they were written, not 200 ms later as before.
//! `FLUSH_INTERVAL` only paces the retries of repairs after a failed batch.
//!
//! # Failure
//!
//! Each batch is written at the end of the active segment and then fsynced; `synced_len` is
//! the segment's length at its last good fsync, and everything after it is in the page cache
//! only. When a write or an fsync fails, the appends of the batch get an error, which the SMTP
//! server turns into a 4xx: their records must never be delivered, whatever happens next. So
//! the writer *rolls back*: it truncates the segment to `synced_len` and fsyncs that.
//!
//! - If the rollback works, the disk holds exactly what it held at the last good fsync. The
//!   failed appends are gone for good, and the updates and finishes written since are written
//!   again, as they were, by the next batch (`Repair::updates`, `Repair::finishes`).
//! - If it fails, what is on disk after `synced_len` is unknown (the truncation may have
//!   happened in the page cache, which is all that a `kill -9` sees, but not on disk). Then
//!   `Repair` makes the state on disk match the state in memory with the next batch that
//!   succeeds: a `Finish` for each failed append (in case its record reaches the disk after
//!   all), a relocated copy of each message that had an unsynced update (so that no update
//!   is applied twice), and the unsynced finishes again. Until then a power failure could
//!   bring a failed append back; while the disk refuses both the fsync and the truncation no
//!   marker could be made durable either, so nothing better is possible.
//!
//! After a failed fsync the segment is abandoned, rolled back or not: Linux may have dropped
//! the dirty pages and cleared the error, so the file is not trusted with more writes, and
//! the next batch goes to a new segment. After a failed *write* that was rolled back
//! (typically `ENOSPC`, with part of the batch written) the kernel's view of the file is
//! known, and the writer goes on appending to the same segment: on a full disk the small
//! records that let the queue drain then need no new file.
//!
//! # A full disk
//!
//! Deleting needs no space, so dead segments are retired after failed batches as well as
//! after successful ones. While there is no active segment the newest one is kept, because
//! its header and records hold the highest message id (`max_mid`), which must never go
//! backwards. If a new segment cannot be created for lack of space and the newest segment is
//! dead, it is reused instead (`reuse_newest`): its header is rewritten with the current
//! `max_mid`, and it is truncated to that header, which frees its space with no moment in
//! which no segment holds `max_mid`. The active segment is emptied the same way when a batch
//! runs out of space while nothing in it is live (`empty_dead_active`): once the queue has
//! drained, the next append finds the space again. A dead newest segment that still holds a
//! torn tail that could not be copied aside at start-up is moved aside with
//! `recovery::set_aside_with_tail`, which also needs no space, and the new segment is created
//! in the space that frees; only a crash between the two could lose `max_mid`. A corrupt
//! segment is never reused: it is moved aside whole once there is an active segment.
//!
//! With a reserve (`SpoolConfig::reserve`) the first batch whose write runs out of space deletes
//! `dir/reserve`, and from then on appends are refused with `NoSpace` without being written,
//! so the freed space goes to finishes and updates (and to the node's other small files),
//! never to new mail. A refused append tries to make the reserve again, at most every
//! `RETRY_INTERVAL`, and only succeeds when twice its size fits: then mail is accepted again.
//!
//! # Deleting segments
//!
//! A sealed segment is deleted when none of its messages is live, or compacted (its live
//! messages copied forward, then deleted) when it is mostly dead. Either way it goes through
//! `retire`, which first copies forward whatever in it still matters to older segments: a
//! `Finish` for a message whose record survives in an older segment, and the updates of a
//! live message whose current copy is older. Without that, deleting a young segment could
//! resurrect a finished message on the next start.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::dir::{self, segment_name, RESERVE_FILE};
use crate::error::{io_error, SpoolError};
use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::fsio;
use crate::recovery;
use crate::state::{self, Loc, Seg, SegFile, State};
use crate::{MovedAside, RecoveredMessage, SpoolConfig};

/// A batch stops taking more operations at this size; a larger batch only adds latency.
const BATCH_BYTES: usize = 8 << 20;
/// Pending repairs (and any unsynced bytes) are retried at least this often.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Written but unsynced updates and finishes are fsynced at the latest this long after the
/// first of them was written, when no append's group commit has taken them along sooner.
pub(crate) const OUTCOME_FLUSH: Duration = Duration::from_millis(5);
/// The newest sealed segments are not compacted: their messages are likely to finish soon,
/// and copying them would be wasted work.
const KEEP_RECENT: u64 = 2;
/// A sealed segment with less than 1/COMPACT_RATIO of its bytes live is compacted.
const COMPACT_RATIO: u64 = 4;
/// How long to wait before trying again to move aside what start-up had no space for.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) type Callback = Box<dyn FnOnce(Result<(), SpoolError>) + Send>;

/// A completion callback that is called exactly once: explicitly, or with `Closed` when
/// dropped (the writer stopped, or the thread unwound). Panics in the callback are caught so
/// that one bad caller cannot stop the writer for everyone.
pub(crate) struct Done(Option<Callback>);

impl Done {
    pub(crate) fn new(f: Callback) -> Done {
        Done(Some(f))
    }

    pub(crate) fn call(mut self, result: Result<(), SpoolError>) {
        if let Some(f) = self.0.take() {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| f(result)));
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| f(Err(SpoolError::Closed))));
        }
    }
}

/// What callers send to the writer thread.
pub(crate) enum Op {
    Append {
        mid: u64,
        meta_len: usize,
        record: Vec<u8>,
        done: Done,
    },
    Update {
        mid: u64,
        record: Vec<u8>,
    },
    Finish {
        mid: u64,
        record: Vec<u8>,
    },
    /// An append refused before it reached the writer; answered from the writer thread so that
    /// callbacks always run there.
    Reject {
        done: Done,
        err: SpoolError,
    },
    Sync(Sender<Result<(), SpoolError>>),
    #[cfg(test)]
    Rotate(Sender<()>),
    /// Test hook: stop at once, writing nothing more, as `kill -9` would.
    #[cfg(test)]
    Crash(Sender<()>),
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Append { record, .. } | Op::Update { record, .. } | Op::Finish { record, .. } => {
                record.len()
            }
            _ => 0,
        }
    }
}

/// State shared between the writer and the `Spool` handles: what readers need to find a
/// body, and the counters behind `stats`.
#[derive(Default)]
pub(crate) struct Shared {
    pub index: Mutex<Index>,
    pub fsyncs: AtomicU64,
    pub appends: AtomicU64,
    pub compactions: AtomicU64,
    /// Test hook: the failures planned for this spool's files.
    #[cfg(test)]
    pub faults: Arc<fsio::Faults>,
}

impl Shared {
    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        // The index is only ever replaced field by field, so it is consistent even if a
        // holder panicked.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Durable locations of live messages. It lags the writer's `State`: a message appears here
/// only after its record is fsynced, and a relocated message moves only after its copy is.
#[derive(Default)]
pub(crate) struct Index {
    pub locs: HashMap<u64, Loc>,
    pub files: HashMap<u64, Arc<SegFile>>,
    pub live_bytes: u64,
}

/// What the next batch must write because earlier ones failed (see the module documentation).
#[derive(Default)]
struct Repair {
    finishes: BTreeSet<u64>,
    relocate: BTreeSet<u64>,
    /// Update records known not to be on disk, to be written again as they were, in order.
    /// Their data is already in the messages' update lists.
    updates: Vec<(u64, Vec<u8>)>,
}

impl Repair {
    fn is_empty(&self) -> bool {
        self.finishes.is_empty() && self.relocate.is_empty() && self.updates.is_empty()
    }
}

/// Which step of a batch failed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Write,
    Sync,
}

/// Records gathered for one write to the active segment.
struct Batch {
    seq: u64,
    /// The segment's length when the batch started: where `buf` will be written.
    base: u64,
    buf: Vec<u8>,
    appends: Vec<(u64, Done)>,
    relocations: Vec<(u64, Loc)>,
    /// Messages whose entry in the shared index must be refreshed once the batch is written.
    touched: Vec<u64>,
    /// The batch must be fsynced before it counts as written.
    durable: bool,
}

impl Batch {
    fn offset(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
}

/// What `retire` does with the file once its contents are safe elsewhere.
pub(crate) enum Retire {
    Delete,
    MoveAside(String),
}

pub(crate) struct Writer {
    cfg: SpoolConfig,
    state: State,
    shared: Arc<Shared>,
    active: Option<u64>,
    /// The active segment's length at its last successful fsync.
    synced_len: u64,
    next_seq: u64,
    repair: Repair,
    /// Written to the active segment since its last successful fsync: update records in
    /// order, and finished messages.
    unsynced_updates: Vec<(u64, Vec<u8>)>,
    unsynced_finishes: HashSet<u64>,
    /// When the active segment first had unsynced bytes.
    dirty_since: Option<Instant>,
    /// Segments whose file could not be removed; left alone until the next start.
    stuck: HashSet<u64>,
    /// Corrupt segments that start-up could not move aside yet, with the reason to give.
    /// They are moved aside, never deleted, once their live messages can be copied forward.
    aside: BTreeMap<u64, String>,
    /// When `retry_deferred` may try again.
    retry_at: Instant,
    /// `dir/reserve` holds `cfg.reserve` bytes; while it does not (the disk filled up),
    /// appends are refused.
    reserve_held: bool,
    /// When a refused append may try to make the reserve again.
    reserve_retry_at: Instant,
    /// The last batch could not be written (or its segment made) for lack of space.
    out_of_room: bool,
    /// Holds the directory lock for as long as the writer lives.
    _lock: File,
}

impl Writer {
    pub(crate) fn new(
        cfg: SpoolConfig,
        state: State,
        next_seq: u64,
        shared: Arc<Shared>,
        lock: File,
    ) -> Writer {
        Writer {
            cfg,
            state,
            shared,
            active: None,
            synced_len: 0,
            next_seq,
            repair: Repair::default(),
            unsynced_updates: Vec::new(),
            unsynced_finishes: HashSet::new(),
            dirty_since: None,
            stuck: HashSet::new(),
            aside: BTreeMap::new(),
            retry_at: Instant::now(),
            reserve_held: true,
            reserve_retry_at: Instant::now(),
            out_of_room: false,
            _lock: lock,
        }
    }

    /// Publishes every recovered segment and live message to the shared index.
    pub(crate) fn publish_all(&self) {
        let mut idx = self.shared.index();
        idx.files = self
            .state
            .segs
            .iter()
            .map(|(seq, s)| (*seq, s.file.clone()))
            .collect();
        idx.locs = self.state.live.iter().map(|(m, l)| (*m, l.loc)).collect();
        idx.live_bytes = self.state.live_bytes;
    }

    pub(crate) fn recovered(&self) -> (Vec<RecoveredMessage>, u64) {
        let mut messages: Vec<_> = self
            .state
            .live
            .iter()
            .map(|(mid, l)| RecoveredMessage {
                mid: *mid,
                meta: l.meta.clone(),
                updates: l.updates.clone(),
            })
            .collect();
        messages.sort_by_key(|m| m.mid);
        (messages, self.state.max_mid)
    }

    pub(crate) fn run(mut self, rx: Receiver<Op>) {
        loop {
            let first = match self.idle_timeout() {
                None => match rx.recv() {
                    Ok(op) => Some(op),
                    Err(_) => break,
                },
                Some(timeout) => match rx.recv_timeout(timeout) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut ops = Vec::new();
            if let Some(op) = first {
                let mut bytes = op.bytes();
                ops.push(op);
                while bytes < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(op) => {
                            bytes += op.bytes();
                            ops.push(op);
                        }
                        Err(_) => break,
                    }
                }
            }
            #[cfg(test)]
            if let Some(i) = ops.iter().position(|op| matches!(op, Op::Crash(_))) {
                let Op::Crash(tx) = ops.swap_remove(i) else {
                    unreachable!()
                };
                // Whatever is queued is lost, as in a crash; the lock goes with the writer.
                drop(ops);
                drop(rx);
                drop(self);
                let _ = tx.send(());
                return;
            }
            self.process(ops);
        }
        // Every handle is gone: make the last updates and finishes durable before the lock
        // is released. There is nobody left to report a failure to; the next start recovers.
        if self.dirty_since.is_some() || !self.repair.is_empty() {
            let _ = self.write_batch(Vec::new(), true);
        }
    }

    /// How long to wait for work before flushing; `None` when nothing is pending.
    fn idle_timeout(&self) -> Option<Duration> {
        if !self.repair.is_empty() {
            return Some(FLUSH_INTERVAL);
        }
        self.dirty_since
            .map(|t| OUTCOME_FLUSH.saturating_sub(t.elapsed()))
    }

    fn process(&mut self, ops: Vec<Op>) {
        let mut syncs = Vec::new();
        #[cfg(test)]
        let mut rotations = Vec::new();
        let mut writes = Vec::new();
        for op in ops {
            match op {
                Op::Sync(tx) => syncs.push(tx),
                Op::Reject { done, err } => done.call(Err(err)),
                #[cfg(test)]
                Op::Rotate(tx) => rotations.push(tx),
                op => writes.push(op),
            }
        }
        let appending = writes.iter().any(|op| matches!(op, Op::Append { .. }));
        self.out_of_room = false;
        if appending
            && !self.reserve_held
            && Instant::now() >= self.reserve_retry_at
            && !self.hold_reserve()
        {
            // A drained queue leaves its dead records in the active segment: free them.
            self.empty_dead_active();
            let _ = self.retire_dead();
            self.hold_reserve();
        }
        let timer_due = !self.repair.is_empty()
            || self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= OUTCOME_FLUSH);
        let pending = self.dirty_since.is_some() || !self.repair.is_empty();
        let result = if writes.is_empty() && !(pending && (timer_due || !syncs.is_empty())) {
            Ok(())
        } else {
            self.write_batch(writes, timer_due || !syncs.is_empty())
        };
        #[cfg(test)]
        if !rotations.is_empty() {
            let _ = self.seal();
        }
        if result.is_ok() {
            self.maintain();
        } else {
            // Freeing space needs none, and may be what lets the next batch work.
            if result.as_ref().is_err_and(SpoolError::is_no_space) {
                self.empty_dead_active();
                if self.cfg.reserve > 0 && self.reserve_held && self.out_of_room {
                    self.release_reserve();
                }
            }
            let _ = self.retire_dead();
        }
        for tx in syncs {
            let _ = tx.send(result.as_ref().map(|_| ()).map_err(SpoolError::duplicate));
        }
        #[cfg(test)]
        for tx in rotations {
            let _ = tx.send(());
        }
    }

    /// Writes one batch of operations (possibly none, to flush) to the active segment.
    fn write_batch(&mut self, ops: Vec<Op>, force_sync: bool) -> Result<(), SpoolError> {
        let mut batch = match self.start_batch() {
            Ok(b) => b,
            Err(e) => {
                self.fail_unwritten(ops, &e);
                return Err(e);
            }
        };
        batch.buf.reserve(ops.iter().map(Op::bytes).sum());
        for op in ops {
            self.encode_op(&mut batch, op);
        }
        batch.durable |= force_sync;
        self.commit(batch)
    }

    /// Opens a batch on the active segment (creating one if needed), starting with whatever
    /// an earlier failure left to repair.
    fn start_batch(&mut self) -> Result<Batch, SpoolError> {
        let seq = self.ensure_active()?;
        let mut batch = Batch {
            seq,
            base: self.state.segs[&seq].len,
            buf: Vec::new(),
            appends: Vec::new(),
            relocations: Vec::new(),
            touched: Vec::new(),
            durable: false,
        };
        self.prune_repair();
        if !self.repair.is_empty() {
            batch.durable = true;
            for mid in self.repair.finishes.clone() {
                self.encode_finish(&mut batch, mid);
            }
            // Before any relocated copy, which carries these updates and so must follow them.
            // They stay in `repair` (not `unsynced_updates`) until an fsync covers them.
            for (mid, record) in &self.repair.updates {
                batch.buf.extend_from_slice(record);
                if let Some(seg) = self.state.segs.get_mut(&seq) {
                    seg.refs.insert(*mid);
                }
            }
            for mid in self.repair.relocate.clone() {
                if self.state.live.contains_key(&mid)
                    && self.encode_relocation(&mut batch, mid).is_err()
                {
                    // Its durable copy cannot be read back, so it cannot be copied either.
                    // Retrying would fail every later batch; the update stays in memory and
                    // in the record that may or may not have reached the disk.
                    self.repair.relocate.remove(&mid);
                }
            }
        }
        Ok(batch)
    }

    fn encode_op(&mut self, batch: &mut Batch, op: Op) {
        let h = RECORD_HEADER_LEN;
        match op {
            Op::Append {
                mid,
                meta_len,
                record,
                done,
            } => {
                if self.state.live.contains_key(&mid) {
                    done.call(Err(SpoolError::DuplicateMessage(mid)));
                    return;
                }
                if !self.reserve_held {
                    // The disk filled up: what is left is for draining the queue.
                    done.call(Err(SpoolError::NoSpace {
                        op: "append a new message to",
                        path: self.cfg.dir.clone(),
                    }));
                    return;
                }
                let loc = Loc {
                    seq: batch.seq,
                    rec_off: batch.offset(),
                    rec_len: record.len() as u64,
                    body_start: h + 4 + meta_len as u64,
                };
                let meta = record[(h + 4) as usize..loc.body_start as usize].to_vec();
                self.state.add_message(mid, loc, meta, Vec::new());
                batch.buf.extend_from_slice(&record);
                batch.appends.push((mid, done));
                batch.touched.push(mid);
                batch.durable = true;
            }
            Op::Update { mid, record } => {
                let data = record[h as usize..].to_vec();
                // Updates for messages that are not live are dropped: a late update after a
                // finish would otherwise keep a dead segment alive.
                if self.state.add_update(batch.seq, mid, data) {
                    batch.buf.extend_from_slice(&record);
                    self.unsynced_updates.push((mid, record));
                }
            }
            Op::Finish { mid, record } => {
                if self.state.add_finish(batch.seq, mid) {
                    batch.buf.extend_from_slice(&record);
                    batch.touched.push(mid);
                    self.unsynced_finishes.insert(mid);
                }
            }
            Op::Reject { done, err } => done.call(Err(err)),
            Op::Sync(_) => {}
            #[cfg(test)]
            Op::Rotate(_) | Op::Crash(_) => {}
        }
    }

    /// A `Finish` written for repair or carried forward from a retired segment. These are
    /// always part of a durable batch, so they are not tracked as unsynced.
    fn encode_finish(&mut self, batch: &mut Batch, mid: u64) {
        batch.buf.extend_from_slice(&format::finish(mid));
        batch.touched.push(mid);
        if let Some(seg) = self.state.segs.get_mut(&batch.seq) {
            seg.finishes.insert(mid);
        }
    }

    /// Copies a live message (meta, updates so far, body) into the batch. The message keeps
    /// pointing at its old copy until the batch is fsynced.
    fn encode_relocation(&mut self, batch: &mut Batch, mid: u64) -> Result<(), SpoolError> {
        let live = &self.state.live[&mid];
        let seg = &self.state.segs[&live.loc.seq];
        let body = state::read_body(&seg.file, live.loc)?;
        let enc = format::relocated(mid, &live.meta, &live.updates, &body)
            .map_err(|len| SpoolError::TooLarge { mid, len })?;
        let loc = Loc {
            seq: batch.seq,
            rec_off: batch.offset(),
            rec_len: enc.bytes.len() as u64,
            body_start: enc.body_start,
        };
        batch.buf.extend_from_slice(&enc.bytes);
        batch.relocations.push((mid, loc));
        batch.touched.push(mid);
        batch.durable = true;
        // Recorded now, not on success: if the batch fails, the copy may still reach the
        // disk, and `retire` must know this segment mentions the message.
        if let Some(seg) = self.state.segs.get_mut(&batch.seq) {
            seg.msgs.insert(mid);
        }
        Ok(())
    }

    /// Writes and (if needed) fsyncs a batch, then completes it or fails it.
    fn commit(&mut self, mut batch: Batch) -> Result<(), SpoolError> {
        if let Err((e, stage)) = self.write_and_sync(&batch) {
            self.fail(batch, &e, stage);
            return Err(e);
        }
        for (mid, loc) in batch.relocations.drain(..) {
            self.state.move_home(mid, loc);
        }
        {
            let mut idx = self.shared.index();
            for mid in &batch.touched {
                match self.state.live.get(mid) {
                    Some(l) => idx.locs.insert(*mid, l.loc),
                    None => idx.locs.remove(mid),
                };
            }
            idx.live_bytes = self.state.live_bytes;
        }
        self.shared
            .appends
            .fetch_add(batch.appends.len() as u64, Ordering::Relaxed);
        for (_, done) in batch.appends {
            done.call(Ok(()));
        }
        Ok(())
    }

    fn write_and_sync(&mut self, batch: &Batch) -> Result<(), (SpoolError, Stage)> {
        let seg = self.state.segs.get_mut(&batch.seq).expect("active segment");
        if !batch.buf.is_empty() {
            fsio::write_at(&self.cfg, &seg.file.file, &batch.buf, batch.base)
                .map_err(|e| (io_error("write", &seg.file.path, e), Stage::Write))?;
            seg.len = batch.offset();
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        let due = self
            .dirty_since
            .is_some_and(|t| t.elapsed() >= OUTCOME_FLUSH);
        if (batch.durable || due) && self.dirty_since.is_some() {
            let (file, len) = (seg.file.clone(), seg.len);
            self.sync_file(&file).map_err(|e| (e, Stage::Sync))?;
            self.synced_len = len;
            self.dirty_since = None;
            self.unsynced_updates.clear();
            self.unsynced_finishes.clear();
            // Every batch starts with the pending repairs, so they are now on disk.
            self.repair = Repair::default();
        }
        Ok(())
    }

    fn sync_file(&self, f: &SegFile) -> Result<(), SpoolError> {
        fsio::sync_data(&self.cfg, &f.file).map_err(|e| io_error("fsync", &f.path, e))?;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A batch could not be written or fsynced: roll the segment back to its last good fsync,
    /// fail the appends, and remember what the next batch must write (see the module
    /// documentation).
    fn fail(&mut self, batch: Batch, e: &SpoolError, stage: Stage) {
        debug_assert_eq!(Some(batch.seq), self.active);
        // Only a write proves that there is no room (an fsync's ENOSPC, from thin
        // provisioning or NFS, says the data did not make it, and a retry may well work).
        self.out_of_room |= stage == Stage::Write && e.is_no_space();
        let rolled_back = self.roll_back(batch.seq);
        self.dirty_since = None;
        for (mid, _) in &batch.appends {
            self.state.remove_live(*mid);
            if !rolled_back {
                self.repair.finishes.insert(*mid);
            }
        }
        // All update records since the last fsync, in order: the repaired ones, which start
        // every batch, and then the others (while repairs are pending every batch is fsynced,
        // so those are all from this batch).
        let mut updates = mem::take(&mut self.repair.updates);
        updates.append(&mut self.unsynced_updates);
        updates.retain(|(mid, _)| self.state.live.contains_key(mid));
        if rolled_back {
            self.repair.updates = updates;
        } else {
            self.repair
                .relocate
                .extend(updates.into_iter().map(|(mid, _)| mid));
        }
        self.repair.finishes.extend(self.unsynced_finishes.drain());
        if !rolled_back || stage == Stage::Sync {
            self.active = None;
        }
        {
            let mut idx = self.shared.index();
            for mid in &batch.touched {
                if !self.state.live.contains_key(mid) {
                    idx.locs.remove(mid);
                }
            }
            idx.live_bytes = self.state.live_bytes;
        }
        for (_, done) in batch.appends {
            done.call(Err(e.duplicate()));
        }
    }

    /// Truncates segment `seq` to its length at its last good fsync, and fsyncs that; true if
    /// both worked, so that the disk holds nothing written to it since.
    fn roll_back(&mut self, seq: u64) -> bool {
        let len = self.synced_len;
        let Some(seg) = self.state.segs.get_mut(&seq) else {
            return false;
        };
        seg.len = len;
        let file = seg.file.clone();
        fsio::set_len(&self.cfg, &file.file, len).is_ok()
            && fsio::sync_all(&self.cfg, &file.file).is_ok()
    }

    /// No segment could be opened: fail the appends and keep updates and finishes in memory
    /// until a later batch can write them.
    fn fail_unwritten(&mut self, ops: Vec<Op>, e: &SpoolError) {
        for op in ops {
            match op {
                Op::Append { done, .. } => done.call(Err(e.duplicate())),
                Op::Update { mid, record } => {
                    if let Some(live) = self.state.live.get_mut(&mid) {
                        live.updates
                            .push(record[RECORD_HEADER_LEN as usize..].to_vec());
                        self.repair.updates.push((mid, record));
                    }
                }
                Op::Finish { mid, .. } => {
                    if self.state.remove_live(mid).is_some() {
                        self.repair.finishes.insert(mid);
                        let mut idx = self.shared.index();
                        idx.locs.remove(&mid);
                        idx.live_bytes = self.state.live_bytes;
                    }
                }
                Op::Reject { done, err } => done.call(Err(err)),
                Op::Sync(_) => {}
                #[cfg(test)]
                Op::Rotate(_) | Op::Crash(_) => {}
            }
        }
    }

    /// At open: holds the reserve if there is room for it and as much again, and releases it
    /// otherwise, so that a start on a full disk has room for its segment, its finishes and
    /// the node's own small files.
    pub(crate) fn open_reserve(&mut self) {
        if self.cfg.reserve > 0 {
            self.hold_reserve();
        }
    }

    /// Makes `dir/reserve` hold `cfg.reserve` bytes, after proving that twice as much fits
    /// (zeros written and fsynced, then the file cut back), so that accepting mail again
    /// leaves a reserve's worth of room for new mail rather than filling the disk at once.
    /// On failure the file is deleted (which needs no space) and appends stay refused.
    fn hold_reserve(&mut self) -> bool {
        let size = self.cfg.reserve;
        let path = self.cfg.dir.join(RESERVE_FILE);
        let made = (|| -> std::io::Result<()> {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let zeros = vec![0u8; 64 << 10];
            let mut off = 0;
            while off < 2 * size {
                let n = (2 * size - off).min(zeros.len() as u64) as usize;
                fsio::write_at(&self.cfg, &file, &zeros[..n], off)?;
                off += n as u64;
            }
            fsio::sync_data(&self.cfg, &file)?;
            fsio::set_len(&self.cfg, &file, size)?;
            fsio::sync_all(&self.cfg, &file)
        })();
        match made {
            Ok(()) => {
                self.reserve_held = true;
                true
            }
            Err(_) => {
                self.release_reserve();
                false
            }
        }
    }

    /// Deletes the reserve: its space is for finishing what the spool holds.
    fn release_reserve(&mut self) {
        let _ = fs::remove_file(self.cfg.dir.join(RESERVE_FILE));
        let _ = dir::sync_dir(&self.cfg.dir, self.cfg.fsync);
        self.reserve_held = false;
        self.reserve_retry_at = Instant::now() + RETRY_INTERVAL;
    }

    /// Forgets repairs that no longer matter: finishes of messages that no segment holds a
    /// record of any more, and updates and copies of messages that are not live.
    fn prune_repair(&mut self) {
        let segs = &self.state.segs;
        self.repair
            .finishes
            .retain(|m| segs.values().any(|s| s.msgs.contains(m)));
        let live = &self.state.live;
        self.repair.relocate.retain(|m| live.contains_key(m));
        self.repair.updates.retain(|(m, _)| live.contains_key(m));
    }

    /// The active segment: a new one if there is none, or on a full disk the newest one if it
    /// is dead (see `reuse_newest`).
    pub(crate) fn ensure_active(&mut self) -> Result<u64, SpoolError> {
        if let Some(seq) = self.active {
            return Ok(seq);
        }
        let seq = match self.create_segment() {
            Ok(seq) => seq,
            Err(e) if e.is_no_space() => match self.reuse_newest() {
                Ok(Some(seq)) => seq,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        self.active = Some(seq);
        self.synced_len = self.state.segs[&seq].len;
        Ok(seq)
    }

    fn create_segment(&mut self) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.cfg.dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))
            .inspect_err(|e| self.out_of_room |= e.is_no_space())?;
        let header = format::encode_segment_header(seq, self.state.max_mid);
        let init = fsio::write_at(&self.cfg, &file, &header, 0)
            .map_err(|e| io_error("initialise", &path, e))
            .inspect_err(|e| self.out_of_room |= e.is_no_space())
            .and_then(|()| {
                fsio::sync_data(&self.cfg, &file).map_err(|e| io_error("initialise", &path, e))
            })
            .and_then(|()| dir::sync_dir(&self.cfg.dir, self.cfg.fsync));
        if let Err(e) = init {
            // The file holds no record, so removing it loses nothing; leaving it would make
            // the next start move a headerless file aside.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let file = Arc::new(SegFile { file, path });
        self.state
            .segs
            .insert(seq, Seg::new(file.clone(), SEGMENT_HEADER_LEN));
        self.shared.index().files.insert(seq, file);
        Ok(seq)
    }

    /// There is no space for a new segment: if the newest segment is dead and nothing in it
    /// must be carried forward, empty it to be the active one; `None` if it cannot be.
    fn reuse_newest(&mut self) -> Result<Option<u64>, SpoolError> {
        let Some((&seq, seg)) = self.state.segs.iter().next_back() else {
            return Ok(None);
        };
        if seg.live_count > 0 || self.stuck.contains(&seq) {
            return Ok(None);
        }
        let (relocate, carry) = self.forward_sets(seq);
        if !relocate.is_empty() || !carry.is_empty() {
            return Ok(None);
        }
        if self.aside.contains_key(&seq) {
            // A corrupt file is moved aside whole, which frees nothing.
            return Ok(None);
        }
        if seg.tail_end.is_some() {
            // Bytes that must be kept: move them aside, which frees the rest of the file,
            // and try again in that space. Until the new segment is there no segment holds
            // `max_mid`; that is the one exception to the rule in `retire`, for a moment in
            // which only a crash matters.
            self.remove_segment(seq, Retire::Delete)?;
            return self.create_segment().map(Some);
        }
        self.empty_segment(seq)?;
        Ok(Some(seq))
    }

    /// After running out of space: if the active segment is dead and nothing in it must be
    /// carried forward, empty it, so that its space is free for the next batch.
    fn empty_dead_active(&mut self) {
        let Some(seq) = self.active else {
            return;
        };
        let seg = &self.state.segs[&seq];
        if seg.live_count > 0 || seg.len <= SEGMENT_HEADER_LEN || self.dirty_since.is_some() {
            return;
        }
        let (relocate, carry) = self.forward_sets(seq);
        if relocate.is_empty() && carry.is_empty() && self.empty_segment(seq).is_ok() {
            self.synced_len = SEGMENT_HEADER_LEN;
        }
    }

    /// Truncates dead segment `seq`, the newest, to a header holding the current `max_mid`.
    /// Only for a segment from which nothing must be carried forward: it is as good as
    /// deleting it and creating a new one, without needing space.
    fn empty_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        let file = self.state.segs[&seq].file.clone();
        let header = format::encode_segment_header(seq, self.state.max_mid);
        // The new header first: until the truncation the old records follow it, still valid,
        // and from then on the header alone holds `max_mid`.
        fsio::write_at(&self.cfg, &file.file, &header, 0)
            .and_then(|()| fsio::sync_data(&self.cfg, &file.file))
            .and_then(|()| fsio::set_len(&self.cfg, &file.file, SEGMENT_HEADER_LEN))
            .and_then(|()| fsio::sync_all(&self.cfg, &file.file))
            .map_err(|e| io_error("empty", &file.path, e))?;
        self.state
            .segs
            .insert(seq, Seg::new(file, SEGMENT_HEADER_LEN));
        self.prune_repair();
        Ok(())
    }

    /// Closes the active segment for writing after making it durable.
    fn seal(&mut self) -> Result<(), SpoolError> {
        if self.active.is_none() {
            return Ok(());
        }
        if self.dirty_since.is_some() {
            self.write_batch(Vec::new(), true)?;
        }
        self.active = None;
        Ok(())
    }

    /// Rotation, compaction and deletion of dead segments, run between batches.
    fn maintain(&mut self) {
        if let Some(seq) = self.active {
            if self.state.segs[&seq].len > self.cfg.segment_size && self.seal().is_err() {
                return;
            }
        }
        // Compaction first: deleting an old segment makes the finishes that refer to it in
        // younger segments unnecessary, so they need not be carried forward when those die.
        if let Some(seq) = self.compaction_candidate() {
            if self.retire(seq, Retire::Delete).is_err() {
                return;
            }
            self.shared.compactions.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.retire_dead();
        self.retry_deferred();
    }

    /// Deletes every sealed segment without live messages, oldest first; returns the first
    /// error, after trying the others. Without an active segment the newest one is kept,
    /// since it may be all that holds `max_mid` (see `reuse_newest`).
    pub(crate) fn retire_dead(&mut self) -> Result<(), SpoolError> {
        let newest = self.state.segs.keys().next_back().copied();
        let dead: Vec<u64> = self
            .state
            .segs
            .iter()
            .filter(|(seq, s)| {
                Some(**seq) != self.active
                    && !(self.active.is_none() && Some(**seq) == newest)
                    && s.live_count == 0
                    && !self.stuck.contains(seq)
            })
            .map(|(seq, _)| *seq)
            .collect();
        let mut result = Ok(());
        for seq in dead {
            if let Err(e) = self.retire(seq, Retire::Delete) {
                result = result.and(Err(e));
            }
        }
        result
    }

    pub(crate) fn segment_path(&self, seq: u64) -> std::path::PathBuf {
        self.state.segs[&seq].file.path.clone()
    }

    /// Start-up could not move corrupt segment `seq` aside: do it once its live messages can
    /// be copied forward, and never delete it meanwhile.
    pub(crate) fn defer_aside(&mut self, seq: u64, reason: String) {
        self.aside.insert(seq, reason);
    }

    /// Tries again to copy aside the torn tails and to move aside the corrupt segments that
    /// start-up had no space for. Run after successful batches; after a failure, not again
    /// for `RETRY_INTERVAL`.
    fn retry_deferred(&mut self) {
        if Instant::now() < self.retry_at {
            return;
        }
        let mut failed = false;
        let tails: Vec<(u64, u64, u64)> = self
            .state
            .segs
            .iter()
            .filter_map(|(seq, s)| Some((*seq, s.len, s.tail_end?)))
            .collect();
        for (seq, len, end) in tails {
            let file = self.state.segs[&seq].file.clone();
            match recovery::cut_tail(&self.cfg, &file, seq, len, end) {
                Ok(_) => {
                    if let Some(s) = self.state.segs.get_mut(&seq) {
                        s.tail_end = None;
                    }
                }
                Err(_) => failed = true,
            }
        }
        let aside: Vec<(u64, String)> = self
            .aside
            .iter()
            .filter(|(seq, _)| !self.stuck.contains(seq))
            .map(|(seq, r)| (*seq, r.clone()))
            .collect();
        for (seq, reason) in aside {
            if self.retire(seq, Retire::MoveAside(reason)).is_err() {
                failed = true;
            }
        }
        if failed {
            self.retry_at = Instant::now() + RETRY_INTERVAL;
        }
    }

    fn compaction_candidate(&self) -> Option<u64> {
        // Age is counted in segments created since, not in segments still present: after
        // their neighbours die, two old segments must not shelter each other forever.
        let newest = self.next_seq.saturating_sub(1);
        self.state
            .segs
            .iter()
            .find(|(seq, s)| {
                newest - **seq > KEEP_RECENT
                    && Some(**seq) != self.active
                    && s.live_count > 0
                    && s.live_bytes * COMPACT_RATIO < s.len
                    && !self.stuck.contains(*seq)
            })
            .map(|(seq, _)| *seq)
    }

    /// What must be copied forward before segment `seq` can go: live messages whose current
    /// copy is here (compaction) or older with updates here, and finishes of messages whose
    /// record survives in an older segment.
    fn forward_sets(&self, seq: u64) -> (BTreeSet<u64>, Vec<u64>) {
        let seg = &self.state.segs[&seq];
        let is_live_at = |mid: &u64, pred: &dyn Fn(u64) -> bool| {
            self.state.live.get(mid).is_some_and(|l| pred(l.loc.seq))
        };
        let mut relocate: BTreeSet<u64> = seg
            .msgs
            .iter()
            .filter(|m| is_live_at(m, &|home| home == seq))
            .copied()
            .collect();
        relocate.extend(
            seg.refs
                .iter()
                .filter(|m| is_live_at(m, &|home| home < seq)),
        );
        let carry: Vec<u64> = seg
            .finishes
            .iter()
            .filter(|m| {
                !self.state.live.contains_key(m)
                    && self
                        .state
                        .segs
                        .range(..seq)
                        .any(|(_, s)| s.msgs.contains(m))
            })
            .copied()
            .collect();
        (relocate, carry)
    }

    /// Removes sealed segment `seq` from the spool after copying forward everything in it that
    /// still matters, and fsyncing that copy. A corrupt segment waiting to be moved aside is
    /// moved aside even when asked to delete it, and a torn tail still in the file is kept.
    /// The newest segment stays while there is no active one, which needs space to be
    /// created: it may be all that holds `max_mid`.
    pub(crate) fn retire(
        &mut self,
        seq: u64,
        action: Retire,
    ) -> Result<Option<MovedAside>, SpoolError> {
        if self.active.is_none() && self.state.segs.keys().next_back() == Some(&seq) {
            return Err(SpoolError::NoSpace {
                op: "create a new segment in",
                path: self.cfg.dir.clone(),
            });
        }
        self.remove_segment(seq, action)
    }

    fn remove_segment(
        &mut self,
        seq: u64,
        action: Retire,
    ) -> Result<Option<MovedAside>, SpoolError> {
        debug_assert_ne!(Some(seq), self.active);
        let action = match (action, self.aside.get(&seq)) {
            (Retire::Delete, Some(reason)) => Retire::MoveAside(reason.clone()),
            (action, _) => action,
        };
        let (relocate, carry) = self.forward_sets(seq);
        if !relocate.is_empty() || !carry.is_empty() {
            let mut batch = self.start_batch()?;
            for mid in carry {
                self.encode_finish(&mut batch, mid);
            }
            for mid in relocate {
                if let Err(e) = self.encode_relocation(&mut batch, mid) {
                    // A body that cannot be read back now will not be readable on the next
                    // pass either: leave the segment until the next start, whose recovery
                    // scan will find the damage and move the file aside.
                    self.stuck.insert(seq);
                    return Err(e);
                }
            }
            batch.durable = true;
            self.commit(batch)?;
        }

        let seg = &self.state.segs[&seq];
        let (file, len, tail_end) = (seg.file.clone(), seg.len, seg.tail_end);
        let path = file.path.clone();
        let moved = match action {
            Retire::Delete if tail_end.is_some() => {
                let end = tail_end.unwrap_or(len);
                if let Err(e) = recovery::set_aside_with_tail(&self.cfg, &file, seq, len, end) {
                    self.stuck.insert(seq);
                    return Err(e);
                }
                None
            }
            Retire::Delete => {
                if let Err(e) = fs::remove_file(&path) {
                    // Keep it in the state so that finishes referring to it are still
                    // carried forward; the next start will find it dead and try again.
                    self.stuck.insert(seq);
                    return Err(io_error("remove", &path, e));
                }
                dir::sync_dir(&self.cfg.dir, self.cfg.fsync)?;
                None
            }
            Retire::MoveAside(reason) => {
                let to = match dir::move_aside(&self.cfg.dir, &path, self.cfg.fsync) {
                    Ok(to) => to,
                    Err(e) => {
                        self.stuck.insert(seq);
                        return Err(e);
                    }
                };
                self.aside.remove(&seq);
                Some(MovedAside {
                    from: path,
                    to,
                    reason,
                })
            }
        };
        self.state.segs.remove(&seq);
        self.shared.index().files.remove(&seq);
        self.prune_repair();
        Ok(moved)
    }
}
