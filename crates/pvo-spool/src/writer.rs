//! The writer thread: the only code that writes to the spool directory once it is open.
//!
//! # Group commit
//!
//! The loop blocks for the first operation, then drains whatever else is queued (up to
//! `BATCH_BYTES`) into one buffer, writes it with one `pwrite`, makes it durable with one
//! `fdatasync`, and only then runs the completion callbacks. While it waits for the disk, new
//! operations queue up and form the next batch, so the number of fsyncs follows the disk's
//! latency, not the number of messages. Updates and finishes do not need an fsync of their
//! own: they ride along with the next batch that has one, and are flushed after at most
//! `FLUSH_INTERVAL` when nothing else comes.
//!
//! # Failure
//!
//! After a failed write or fsync the kernel's view of the file is unknown (Linux may have
//! dropped the dirty pages and cleared the error), so the segment is abandoned: nothing more
//! is written to it and everything written since its last good fsync is treated as maybe
//! lost, maybe on disk. The appends of the batch get an error, and `Repair` makes the state
//! on disk match the state in memory again in the next segment: a `Finish` for each failed
//! append (in case its record reaches the disk after all, the client was told it failed), a
//! relocated copy of each message that had an unsynced update, and the unsynced finishes
//! again.
//!
//! # Deleting segments
//!
//! A sealed segment is deleted when none of its messages is live, or compacted (its live
//! messages copied forward, then deleted) when it is mostly dead. Either way it goes through
//! `retire`, which first copies forward whatever in it still matters to older segments: a
//! `Finish` for a message whose record survives in an older segment, and the updates of a
//! live message whose current copy is older. Without that, deleting a young segment could
//! resurrect a finished message on the next start.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::dir::{self, segment_name};
use crate::error::{io_error, SpoolError};
use crate::format::{self, RECORD_HEADER_LEN};
use crate::state::{self, Loc, Seg, SegFile, State};
use crate::{MovedAside, RecoveredMessage, SpoolConfig};

/// A batch stops taking more operations at this size; a larger batch only adds latency.
const BATCH_BYTES: usize = 8 << 20;
/// Unsynced updates and finishes are made durable at least this often.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The newest sealed segments are not compacted: their messages are likely to finish soon,
/// and copying them would be wasted work.
const KEEP_RECENT: u64 = 2;
/// A sealed segment with less than 1/COMPACT_RATIO of its bytes live is compacted.
const COMPACT_RATIO: u64 = 4;

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
    /// Test hook: the next fsync fails with this OS error code (0: none).
    #[cfg(test)]
    pub fail_next_sync: std::sync::atomic::AtomicI32,
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

/// What must be rewritten because a failed batch left the disk in an unknown state.
#[derive(Default)]
struct Repair {
    finishes: BTreeSet<u64>,
    relocate: BTreeSet<u64>,
}

impl Repair {
    fn is_empty(&self) -> bool {
        self.finishes.is_empty() && self.relocate.is_empty()
    }
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
    next_seq: u64,
    repair: Repair,
    /// Written to the active segment since its last successful fsync.
    unsynced_updates: HashSet<u64>,
    unsynced_finishes: HashSet<u64>,
    /// When the active segment first had unsynced bytes.
    dirty_since: Option<Instant>,
    /// Segments whose file could not be removed; left alone until the next start.
    stuck: HashSet<u64>,
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
            next_seq,
            repair: Repair::default(),
            unsynced_updates: HashSet::new(),
            unsynced_finishes: HashSet::new(),
            dirty_since: None,
            stuck: HashSet::new(),
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
            .map(|t| FLUSH_INTERVAL.saturating_sub(t.elapsed()))
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
        let timer_due = !self.repair.is_empty()
            || self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL);
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
        if !self.repair.is_empty() {
            batch.durable = true;
            for mid in self.repair.finishes.clone() {
                self.encode_finish(&mut batch, mid);
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
                    self.unsynced_updates.insert(mid);
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
            Op::Rotate(_) => {}
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
        if let Err(e) = self.write_and_sync(&batch) {
            self.fail(batch, &e);
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

    fn write_and_sync(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let seg = self.state.segs.get_mut(&batch.seq).expect("active segment");
        if !batch.buf.is_empty() {
            seg.file
                .file
                .write_all_at(&batch.buf, batch.base)
                .map_err(|e| io_error("write", &seg.file.path, e))?;
            seg.len = batch.offset();
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        let due = self
            .dirty_since
            .is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL);
        if (batch.durable || due) && self.dirty_since.is_some() {
            let file = seg.file.clone();
            self.sync_file(&file)?;
            self.dirty_since = None;
            self.unsynced_updates.clear();
            self.unsynced_finishes.clear();
            // Every batch starts with the pending repairs, so they are now on disk.
            self.repair = Repair::default();
        }
        Ok(())
    }

    fn sync_file(&self, f: &SegFile) -> Result<(), SpoolError> {
        #[cfg(test)]
        {
            let code = self.shared.fail_next_sync.swap(0, Ordering::SeqCst);
            if code != 0 {
                return Err(io_error(
                    "fsync",
                    &f.path,
                    std::io::Error::from_raw_os_error(code),
                ));
            }
        }
        if self.cfg.fsync {
            f.file
                .sync_data()
                .map_err(|e| io_error("fsync", &f.path, e))?;
        }
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A batch could not be written or fsynced: abandon the segment, fail its appends, and
    /// remember what the next segment must repeat.
    fn fail(&mut self, batch: Batch, e: &SpoolError) {
        self.active = None;
        self.dirty_since = None;
        for (mid, done) in batch.appends {
            self.state.remove_live(mid);
            self.repair.finishes.insert(mid);
            done.call(Err(e.duplicate()));
        }
        for mid in self.unsynced_updates.drain() {
            if self.state.live.contains_key(&mid) {
                self.repair.relocate.insert(mid);
            }
        }
        self.repair.finishes.extend(self.unsynced_finishes.drain());
        let mut idx = self.shared.index();
        for mid in &batch.touched {
            if !self.state.live.contains_key(mid) {
                idx.locs.remove(mid);
            }
        }
        idx.live_bytes = self.state.live_bytes;
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
                        self.repair.relocate.insert(mid);
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
                Op::Rotate(_) => {}
            }
        }
    }

    /// The active segment, created if there is none.
    pub(crate) fn ensure_active(&mut self) -> Result<u64, SpoolError> {
        if let Some(seq) = self.active {
            return Ok(seq);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.cfg.dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        let header = format::encode_segment_header(seq, self.state.max_mid);
        let init = file
            .write_all_at(&header, 0)
            .and_then(|()| {
                if self.cfg.fsync {
                    file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|e| io_error("initialise", &path, e))
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
            .insert(seq, Seg::new(file.clone(), format::SEGMENT_HEADER_LEN));
        self.shared.index().files.insert(seq, file);
        self.active = Some(seq);
        Ok(seq)
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
    }

    /// Deletes every sealed segment without live messages, oldest first.
    pub(crate) fn retire_dead(&mut self) -> Result<(), SpoolError> {
        let dead: Vec<u64> = self
            .state
            .segs
            .iter()
            .filter(|(seq, s)| {
                Some(**seq) != self.active && s.live_count == 0 && !self.stuck.contains(seq)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in dead {
            self.retire(seq, Retire::Delete)?;
        }
        Ok(())
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

    /// Removes sealed segment `seq` from the spool after copying forward everything in it that
    /// still matters, and fsyncing that copy.
    pub(crate) fn retire(
        &mut self,
        seq: u64,
        action: Retire,
    ) -> Result<Option<MovedAside>, SpoolError> {
        debug_assert_ne!(Some(seq), self.active);
        let seg = &self.state.segs[&seq];
        let is_live_at = |mid: &u64, pred: &dyn Fn(u64) -> bool| {
            self.state.live.get(mid).is_some_and(|l| pred(l.loc.seq))
        };
        // Live messages whose current copy is here (compaction), or older with updates here.
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
        // Finishes of messages whose record survives in an older segment.
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

        let path = self.state.segs[&seq].file.path.clone();
        let moved = match action {
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
                Some(MovedAside {
                    from: path,
                    to,
                    reason,
                })
            }
        };
        self.state.segs.remove(&seq);
        self.shared.index().files.remove(&seq);
        Ok(moved)
    }
}
