//! Start-up recovery: rebuild the in-memory state from the segment files, and set aside
//! everything that does not parse.
//!
//! Segments are replayed in sequence order (see `state` for the replay rules). Reading a
//! segment stops at the first record that cannot be trusted: a bad magic byte, a header or
//! payload checksum mismatch, or a length that runs past the end of the file. What happens
//! next depends on what follows that point:
//!
//! - Nothing but the incomplete record, or only zero bytes: this is a *torn tail*, the normal
//!   result of a crash during a write that was never acknowledged. The tail is copied to
//!   `corrupt/<segment>.tail-<offset>` and the segment truncated to its last good record.
//! - More data: this is real corruption. The segment is kept for now; after the writer has
//!   started a new segment, the live messages of the good prefix are copied into it, fsynced,
//!   and the whole file is renamed into `corrupt/` (see `Writer::retire`).
//!
//! Any other entry in the directory (a wrong name, a bad segment header) is moved aside.
//! Nothing is ever deleted here.
//!
//! # A full file system
//!
//! Copying a torn tail aside needs free space, and a node whose spool file system is full must
//! still start, deliver what it holds and so free the space. If the copy fails, the partial
//! copy is removed (no empty or truncated files are left in `corrupt/`) and the tail stays
//! where it is: the segment's recorded length ends at its last good record, nothing reads or
//! writes past it (a recovered segment is never appended to), and the tail is copied aside
//! later, by the writer once a batch has succeeded (`Writer::retry_deferred`), by the next
//! start, or, when the segment dies first, by `set_aside_with_tail`, which needs no space.
//! Likewise a corrupt segment whose live messages cannot be copied forward yet stays in place
//! until they can (see `Spool::open`). Such deferrals are reported in `moved_aside` with `to`
//! equal to `from`.
//!
//! # Security
//!
//! This module reads files a crash may have torn and a disk may have corrupted. It trusts no
//! length before checking it against the file size, never allocates more than the bytes the
//! file actually has, and decodes payloads only after their checksum matched (the decoders in
//! `format` bound-check again). File names are matched against one exact pattern and never
//! used to build other paths beyond `corrupt/<name>`. The spool directory itself is trusted:
//! whoever can write there can already replace the queue.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dir::{self, parse_segment_name, segment_name, CORRUPT_DIR, LOCK_FILE, RESERVE_FILE};
use crate::error::{io_error, SpoolError};
use crate::format::{self, Payload, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::fsio;
use crate::state::{Loc, Seg, SegFile, State};
use crate::{MovedAside, SpoolConfig};

/// What recovery hands to the writer.
pub(crate) struct Recovery {
    pub state: State,
    pub moved_aside: Vec<MovedAside>,
    /// Segments with corruption before their end: (seq, what is wrong where). Their good
    /// prefix is in `state`; the writer copies its live messages forward and moves the file
    /// aside.
    pub corrupt: Vec<(u64, String)>,
    /// One more than the highest segment number seen, so that new segments sort last.
    pub next_seq: u64,
}

/// How reading a segment ended.
#[derive(Debug, PartialEq, Eq)]
enum ScanEnd {
    Clean,
    Torn { offset: u64, reason: String },
    Corrupt { offset: u64, reason: String },
}

pub(crate) fn recover(cfg: &SpoolConfig) -> Result<Recovery, SpoolError> {
    let mut out = Recovery {
        state: State::default(),
        moved_aside: Vec::new(),
        corrupt: Vec::new(),
        next_seq: 1,
    };
    let mut segments = Vec::new();
    let entries = fs::read_dir(&cfg.dir).map_err(|e| io_error("read directory", &cfg.dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("read directory", &cfg.dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_str();
        if matches!(
            name,
            Some(CORRUPT_DIR) | Some(LOCK_FILE) | Some(RESERVE_FILE)
        ) {
            continue;
        }
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        match name.and_then(parse_segment_name) {
            Some(seq) if is_file => segments.push((seq, path)),
            Some(seq) => {
                out.next_seq = out.next_seq.max(seq.saturating_add(1));
                set_aside(
                    cfg,
                    &mut out,
                    &path,
                    "has a segment name but is not a regular file",
                )?;
            }
            None => {
                set_aside(
                    cfg,
                    &mut out,
                    &path,
                    "unexpected entry in the spool directory",
                )?;
            }
        }
    }
    segments.sort();
    for (seq, path) in segments {
        out.next_seq = out.next_seq.max(seq.saturating_add(1));
        recover_segment(cfg, &mut out, seq, path)?;
    }
    Ok(out)
}

fn set_aside(
    cfg: &SpoolConfig,
    out: &mut Recovery,
    path: &Path,
    why: &str,
) -> Result<(), SpoolError> {
    let to = dir::move_aside(&cfg.dir, path, cfg.fsync)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    out.moved_aside.push(MovedAside {
        from: path.to_path_buf(),
        to,
        reason: format!("{name}: {why}"),
    });
    Ok(())
}

fn recover_segment(
    cfg: &SpoolConfig,
    out: &mut Recovery,
    seq: u64,
    path: PathBuf,
) -> Result<(), SpoolError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error("stat", &path, e))?
        .len();
    let mut header = vec![0u8; len.min(SEGMENT_HEADER_LEN) as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| io_error("read", &path, e))?;
    let header = match format::decode_segment_header(&header) {
        Ok(h) if h.seq == seq => h,
        Ok(h) => {
            let why = format!("header says segment {:016x}, the name says another", h.seq);
            return set_aside(cfg, out, &path, &why);
        }
        Err(why) => return set_aside(cfg, out, &path, &why),
    };
    out.state.note_mid(header.mid_floor);
    let file = Arc::new(SegFile { file, path });
    out.state.segs.insert(seq, Seg::new(file.clone(), len));

    let end = scan(&file, len, seq, &mut out.state).map_err(|e| io_error("read", &file.path, e))?;
    let name = segment_name(seq);
    match end {
        ScanEnd::Clean => {}
        ScanEnd::Torn { offset, reason } => {
            let n = len - offset;
            let what = format!(
                "{name} at offset {offset}: torn record ({reason}); this is expected after a \
                 crash"
            );
            let seg = out.state.segs.get_mut(&seq).expect("segment");
            // Either way nothing past the last good record is read again in this run.
            seg.len = offset;
            match cut_tail(cfg, &file, seq, offset, len) {
                Ok(to) => out.moved_aside.push(MovedAside {
                    from: file.path.clone(),
                    to,
                    reason: format!(
                        "{what}: the {n} bytes from this offset were copied aside and the \
                         segment truncated to its last good record"
                    ),
                }),
                Err(e) => {
                    seg.tail_end = Some(len);
                    out.moved_aside.push(MovedAside {
                        from: file.path.clone(),
                        to: file.path.clone(),
                        reason: format!(
                            "{what}; the {n} bytes from this offset could not be copied aside \
                             ({e}), so they stay at the end of the segment, unread, and are \
                             copied into {CORRUPT_DIR}/ as soon as there is space"
                        ),
                    });
                }
            }
        }
        ScanEnd::Corrupt { offset, reason } => {
            out.corrupt
                .push((seq, format!("{name} at offset {offset}: {reason}")));
        }
    }
    Ok(())
}

/// Replays the records of one segment into `state`, stopping at the first bad one.
fn scan(f: &SegFile, len: u64, seq: u64, state: &mut State) -> io::Result<ScanEnd> {
    let mut r = BufReader::with_capacity(1 << 20, &f.file);
    r.seek(SeekFrom::Start(SEGMENT_HEADER_LEN))?;
    let mut off = SEGMENT_HEADER_LEN;
    loop {
        let remaining = len - off;
        if remaining == 0 {
            return Ok(ScanEnd::Clean);
        }
        if remaining < RECORD_HEADER_LEN {
            return Ok(ScanEnd::Torn {
                offset: off,
                reason: format!("only {remaining} bytes of a record header at the end of the file"),
            });
        }
        let mut hb = [0u8; RECORD_HEADER_LEN as usize];
        r.read_exact(&mut hb)?;
        let after_header = off + RECORD_HEADER_LEN;
        let h = match format::decode_record_header(&hb) {
            Ok(h) => h,
            Err(why) => return classify(&mut r, off, after_header, len, why),
        };
        let end = after_header + u64::from(h.len);
        if end > len {
            // The header's own checksum matched, so the length is what was written: the
            // payload is simply not all there.
            return Ok(ScanEnd::Torn {
                offset: off,
                reason: format!(
                    "a {}-byte record runs past the end of the file, {} bytes present",
                    RECORD_HEADER_LEN + u64::from(h.len),
                    remaining
                ),
            });
        }
        let mut payload = vec![0u8; h.len as usize];
        r.read_exact(&mut payload)?;
        if !format::payload_crc_ok(&h, &payload) {
            return classify(
                &mut r,
                off,
                end,
                len,
                "payload checksum mismatch".to_string(),
            );
        }
        let rec = match format::decode_payload(&h, &payload) {
            Ok(rec) => rec,
            // The checksum matched, so this is not a torn write: never treat it as one.
            Err(why) => {
                return Ok(ScanEnd::Corrupt {
                    offset: off,
                    reason: format!("malformed record: {why}"),
                })
            }
        };
        let rec_len = end - off;
        let loc = |body_start: u64| Loc {
            seq,
            rec_off: off,
            rec_len,
            body_start: RECORD_HEADER_LEN + body_start,
        };
        match rec {
            Payload::Message { meta, body_start } => {
                state.add_message(h.mid, loc(body_start), meta.to_vec(), Vec::new());
            }
            Payload::Relocated {
                meta,
                updates,
                body_start,
            } => {
                let updates = updates.into_iter().map(<[u8]>::to_vec).collect();
                state.add_message(h.mid, loc(body_start), meta.to_vec(), updates);
            }
            Payload::Update { data } => {
                state.add_update(seq, h.mid, data.to_vec());
            }
            Payload::Finish => {
                state.add_finish(seq, h.mid);
            }
        }
        off = end;
    }
}

/// Decides whether a bad record at `off` is a torn tail or corruption. `after` is where the
/// bad record ends as far as we can tell, and the reader is positioned there. A crash leaves
/// either nothing after the record or, on file systems that extend the size before writing
/// the data, zero bytes; anything else means the file was damaged in place.
fn classify(r: &mut impl Read, off: u64, after: u64, len: u64, why: String) -> io::Result<ScanEnd> {
    let rest = len.saturating_sub(after);
    if rest == 0 {
        return Ok(ScanEnd::Torn {
            offset: off,
            reason: format!("{why} in the last record"),
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = rest;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(ScanEnd::Corrupt {
                offset: off,
                reason: format!("{why}, followed by {rest} more bytes of data"),
            });
        }
        left -= n as u64;
    }
    Ok(ScanEnd::Torn {
        offset: off,
        reason: format!("{why}, followed only by {rest} zero bytes"),
    })
}

/// Copies bytes `offset..len` of a segment into `corrupt/` and truncates the segment there.
/// The copy is made durable before the truncation, so a crash in between loses nothing. If
/// the copy cannot be made (typically for lack of space) or the truncation fails, the copy is
/// removed and the segment left as it was.
pub(crate) fn cut_tail(
    cfg: &SpoolConfig,
    f: &SegFile,
    seq: u64,
    offset: u64,
    len: u64,
) -> Result<PathBuf, SpoolError> {
    let corrupt = cfg.dir.join(CORRUPT_DIR);
    let to = dir::unique_path(&corrupt, &format!("{}.tail-{offset}", segment_name(seq)));
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&to)
        .map_err(|e| io_error("create", &to, e))?;
    let discard = |e: SpoolError| {
        // The tail is still in the segment: an empty or partial copy would only mislead.
        if fs::remove_file(&to).is_ok() {
            let _ = dir::sync_dir(&corrupt, cfg.fsync);
        }
        e
    };
    copy_range(cfg, &f.file, offset, len - offset, &out, 0)
        .map_err(|e| io_error("copy torn tail to", &to, e))
        .and_then(|()| fsio::sync_all(cfg, &out).map_err(|e| io_error("fsync", &to, e)))
        .and_then(|()| dir::sync_dir(&corrupt, cfg.fsync))
        .map_err(discard)?;
    fsio::set_len(cfg, &f.file, offset).map_err(|e| discard(io_error("truncate", &f.path, e)))?;
    // The truncation has happened, as far as this run can tell, even if it cannot be made
    // durable: the copy is kept, and at worst a later start finds the tail again and copies
    // it once more.
    let _ = fsio::sync_all(cfg, &f.file);
    Ok(to)
}

/// Copies `n` bytes at `from_off` of `from` to `to_off` of `to`, through `fsio` so that the
/// writes count against a test's quota.
fn copy_range(
    cfg: &SpoolConfig,
    from: &File,
    from_off: u64,
    n: u64,
    to: &File,
    to_off: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; n.min(64 << 10) as usize];
    let mut done = 0;
    while done < n {
        let k = buf.len().min((n - done) as usize);
        from.read_exact_at(&mut buf[..k], from_off + done)?;
        fsio::write_at(cfg, to, &buf[..k], to_off + done)?;
        done += k as u64;
    }
    Ok(())
}

/// Takes a dead segment whose torn tail (`offset..len`) is still in it out of the spool
/// without needing free space, keeping the tail: the file is renamed into `corrupt/`, the
/// tail copied over the dead records at its start, the rest cut off, and the result renamed
/// to `corrupt/<segment>.tail-<offset>`, as if the tail had been copied aside at start-up.
/// The caller has already carried forward whatever older segments need from it, so the first
/// rename is as good as deleting it.
///
/// The tail is shifted only if it is no longer than the records before it, so that the copy
/// never overwrites tail bytes it has not read yet; if it is longer, or any step after the
/// first rename fails, the whole file stays in `corrupt/` under the segment's name, with the
/// tail still at `offset`: nothing is lost, only less space is freed. Returns where it went.
pub(crate) fn set_aside_with_tail(
    cfg: &SpoolConfig,
    f: &SegFile,
    seq: u64,
    offset: u64,
    len: u64,
) -> Result<PathBuf, SpoolError> {
    let whole = dir::move_aside(&cfg.dir, &f.path, cfg.fsync)?;
    let tail_len = len - offset;
    if tail_len > offset {
        return Ok(whole);
    }
    let shifted = copy_range(cfg, &f.file, offset, tail_len, &f.file, 0)
        .and_then(|()| fsio::set_len(cfg, &f.file, tail_len));
    if shifted.is_err() {
        return Ok(whole);
    }
    // Now only the tail is left, whether or not this makes it durable; a crash before it may
    // leave the file at its old length, with the tail also still at `offset`.
    let _ = fsio::sync_all(cfg, &f.file);
    let corrupt = cfg.dir.join(CORRUPT_DIR);
    let to = dir::unique_path(&corrupt, &format!("{}.tail-{offset}", segment_name(seq)));
    if fs::rename(&whole, &to).is_err() {
        return Ok(whole);
    }
    // Only the name is at stake if this fails.
    let _ = dir::sync_dir(&corrupt, cfg.fsync);
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn classify_bytes(rest: &[u8]) -> ScanEnd {
        let mut r = Cursor::new(rest.to_vec());
        classify(&mut r, 100, 124, 124 + rest.len() as u64, "bad".into()).unwrap()
    }

    #[test]
    fn torn_versus_corrupt() {
        assert!(matches!(
            classify_bytes(b""),
            ScanEnd::Torn { offset: 100, .. }
        ));
        assert!(matches!(classify_bytes(&[0; 5000]), ScanEnd::Torn { .. }));
        let mut data = vec![0; 5000];
        data[4999] = 1;
        assert!(matches!(
            classify_bytes(&data),
            ScanEnd::Corrupt { offset: 100, .. }
        ));
    }
}
