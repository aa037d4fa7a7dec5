//! The spool's in-memory picture of its segments and live messages.
//!
//! Recovery rebuilds it by replaying records in log order and the writer keeps it current as
//! it writes, so both apply records through the same few methods. Replay rules: a `Message`
//! or `Relocated` record makes its copy the current one (the newest copy wins); an `Update`
//! appends to the current copy; a `Finish` anywhere after the copy makes the message dead.
//!
//! Besides live messages, each segment remembers which message ids it holds records for.
//! That is what makes deleting segments safe: a segment may hold the only `Finish` or
//! `Update` for a message whose `Message` record lives in an older segment that still exists,
//! and the writer must copy that information forward before deleting it (see
//! `Writer::retire`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{io_error, SpoolError};
use crate::format::{self, RECORD_HEADER_LEN};

/// An open segment file, shared with readers so that a reader can finish a `pread` even if
/// the writer deletes the segment meanwhile (the inode lives until the last handle closes).
pub(crate) struct SegFile {
    pub file: File,
    pub path: PathBuf,
}

/// Where a message's current record is. Offsets are absolute within the segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seq: u64,
    pub rec_off: u64,
    pub rec_len: u64,
    /// Offset of the body from the start of the record.
    pub body_start: u64,
}

impl Loc {
    pub(crate) fn body_len(&self) -> u64 {
        self.rec_len - self.body_start
    }
}

/// Reads a record back, verifies both checksums, and returns the body. Reads are verified
/// because a body is about to be delivered or copied forward, and a bit flipped on disk must
/// not travel silently.
pub(crate) fn read_body(f: &SegFile, loc: Loc) -> Result<Vec<u8>, SpoolError> {
    let corrupt = |reason: &str| SpoolError::Corrupt {
        path: f.path.clone(),
        offset: loc.rec_off,
        reason: reason.to_string(),
    };
    let mut buf = vec![0u8; loc.rec_len as usize];
    f.file.read_exact_at(&mut buf, loc.rec_off).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt("segment file is shorter than the record")
        } else {
            io_error("read", &f.path, e)
        }
    })?;
    let h = RECORD_HEADER_LEN as usize;
    let hb: &[u8; RECORD_HEADER_LEN as usize] = buf[..h].try_into().expect("record header");
    let header = format::decode_record_header(hb).map_err(|r| corrupt(&r))?;
    if u64::from(header.len) + RECORD_HEADER_LEN != loc.rec_len
        || !format::payload_crc_ok(&header, &buf[h..])
    {
        return Err(corrupt("record does not match its checksum"));
    }
    buf.drain(..loc.body_start as usize);
    Ok(buf)
}

/// One segment file and what it holds.
pub(crate) struct Seg {
    pub file: Arc<SegFile>,
    /// Bytes written so far: the file length, for sealed segments, unless a torn tail that
    /// could not be copied aside yet follows (see `tail_end`).
    pub len: u64,
    /// The file length, if a torn tail from `len` on is still in the file because there was no
    /// space to copy it into `corrupt/`. Such a segment is never written to, and never
    /// deleted before the tail is safe (see `Writer::retire`).
    pub tail_end: Option<u64>,
    /// Ids with a `Message` or `Relocated` record here, live or not.
    pub msgs: HashSet<u64>,
    /// Ids with an `Update` record here.
    pub refs: HashSet<u64>,
    /// Ids with a `Finish` record here.
    pub finishes: HashSet<u64>,
    /// Live messages whose current copy is here, and the bytes of those records.
    pub live_count: u64,
    pub live_bytes: u64,
}

impl Seg {
    pub(crate) fn new(file: Arc<SegFile>, len: u64) -> Seg {
        Seg {
            file,
            len,
            tail_end: None,
            msgs: HashSet::new(),
            refs: HashSet::new(),
            finishes: HashSet::new(),
            live_count: 0,
            live_bytes: 0,
        }
    }
}

/// A live message: where its current copy is, and what a copy needs besides the body.
pub(crate) struct Live {
    pub loc: Loc,
    pub meta: Vec<u8>,
    pub updates: Vec<Vec<u8>>,
}

#[derive(Default)]
pub(crate) struct State {
    pub segs: BTreeMap<u64, Seg>,
    pub live: HashMap<u64, Live>,
    pub max_mid: u64,
    /// Sum of meta and body lengths of live messages, for the status gauge.
    pub live_bytes: u64,
}

impl State {
    pub(crate) fn note_mid(&mut self, mid: u64) {
        self.max_mid = self.max_mid.max(mid);
    }

    /// Makes `loc` the current copy of `mid`, replacing any older copy.
    pub(crate) fn add_message(&mut self, mid: u64, loc: Loc, meta: Vec<u8>, updates: Vec<Vec<u8>>) {
        self.note_mid(mid);
        self.remove_live(mid);
        let seg = self
            .segs
            .get_mut(&loc.seq)
            .expect("segment of a new record");
        seg.msgs.insert(mid);
        seg.live_count += 1;
        seg.live_bytes += loc.rec_len;
        self.live_bytes += meta.len() as u64 + loc.body_len();
        self.live.insert(mid, Live { loc, meta, updates });
    }

    /// Applies an update recorded in segment `seq`; false if the message is not live.
    pub(crate) fn add_update(&mut self, seq: u64, mid: u64, data: Vec<u8>) -> bool {
        self.note_mid(mid);
        let Some(live) = self.live.get_mut(&mid) else {
            // Either the message is finished, or its record was superseded by a relocated
            // copy later in the log, which carries this update.
            return false;
        };
        live.updates.push(data);
        if let Some(seg) = self.segs.get_mut(&seq) {
            seg.refs.insert(mid);
        }
        true
    }

    /// Applies a finish recorded in segment `seq`; false if the message was not live.
    pub(crate) fn add_finish(&mut self, seq: u64, mid: u64) -> bool {
        self.note_mid(mid);
        if let Some(seg) = self.segs.get_mut(&seq) {
            seg.finishes.insert(mid);
        }
        self.remove_live(mid).is_some()
    }

    pub(crate) fn remove_live(&mut self, mid: u64) -> Option<Live> {
        let live = self.live.remove(&mid)?;
        if let Some(seg) = self.segs.get_mut(&live.loc.seq) {
            seg.live_count -= 1;
            seg.live_bytes -= live.loc.rec_len;
        }
        self.live_bytes -= live.meta.len() as u64 + live.loc.body_len();
        Some(live)
    }

    /// Points a live message at a new durable copy (after relocation).
    pub(crate) fn move_home(&mut self, mid: u64, loc: Loc) {
        let Some(live) = self.live.get_mut(&mid) else {
            return;
        };
        let old = std::mem::replace(&mut live.loc, loc);
        if let Some(seg) = self.segs.get_mut(&old.seq) {
            seg.live_count -= 1;
            seg.live_bytes -= old.rec_len;
        }
        let seg = self
            .segs
            .get_mut(&loc.seq)
            .expect("segment of a relocated copy");
        seg.msgs.insert(mid);
        seg.live_count += 1;
        seg.live_bytes += loc.rec_len;
    }
}
