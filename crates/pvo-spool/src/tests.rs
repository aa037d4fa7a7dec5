//! Tests of the spool through its public API, each in its own temporary directory.
//!
//! Most tests run with `fsync: false` because they test logic, not the disk; the batching and
//! throughput test runs with real fsyncs. Crashes are simulated by editing segment files
//! between a drop and the next open, which is what a crash leaves behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::dir::CORRUPT_DIR;
use crate::{Recovered, RecoveredMessage, Spool, SpoolConfig, SpoolError};

fn cfg(dir: &Path) -> SpoolConfig {
    let mut c = SpoolConfig::new(dir);
    c.fsync = false;
    c
}

fn open(c: &SpoolConfig) -> (Spool, Recovered) {
    // A child process that another test (`acknowledged_appends_survive_kill_9`) is spawning
    // holds a copy of every descriptor between its fork and exec, the lock's included, so
    // the lock can outlive its owner by a moment.
    for _ in 0..100 {
        match Spool::open(c.clone()) {
            Err(SpoolError::Locked { .. }) => std::thread::sleep(Duration::from_millis(10)),
            r => return r.expect("open spool"),
        }
    }
    Spool::open(c.clone()).expect("open spool")
}

/// Appends and waits for the callback.
fn append(spool: &Spool, mid: u64, meta: &[u8], body: &[u8]) -> Result<(), SpoolError> {
    let (tx, rx) = mpsc::channel();
    spool.append(
        mid,
        meta.to_vec(),
        body.to_vec(),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().expect("callback called")
}

fn body_of(mid: u64, len: usize) -> Vec<u8> {
    let tag = format!("body-{mid}-");
    tag.bytes().cycle().take(len).collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_in(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect()
}

fn mids(r: &Recovered) -> Vec<u64> {
    r.messages.iter().map(|m| m.mid).collect()
}

#[test]
fn append_then_read_body() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = SpoolConfig::new(tmp.path().join("spool"));
    c.fsync = true;
    let (spool, rec) = open(&c);
    assert!(rec.messages.is_empty() && rec.moved_aside.is_empty());
    assert_eq!(rec.max_mid, 0);

    append(&spool, 1, b"env-1", b"Subject: one\r\n\r\nhello\r\n").unwrap();
    append(&spool, 2, b"", b"").unwrap();
    assert_eq!(
        spool.read_body(1).unwrap(),
        b"Subject: one\r\n\r\nhello\r\n"
    );
    assert_eq!(spool.read_body(2).unwrap(), b"");
    assert!(matches!(
        spool.read_body(3),
        Err(SpoolError::UnknownMessage(3))
    ));
    let st = spool.stats();
    assert_eq!(st.live_messages, 2);
    assert_eq!(st.live_bytes, 5 + 23);
    assert_eq!(st.appends, 2);
    assert!(st.fsyncs >= 1);

    spool.finish(1);
    spool.sync().unwrap();
    assert!(matches!(
        spool.read_body(1),
        Err(SpoolError::UnknownMessage(1))
    ));
    assert_eq!(spool.stats().live_messages, 1);
}

#[test]
fn restart_returns_unfinished_messages_with_updates_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        for mid in 1..=3 {
            append(
                &spool,
                mid,
                format!("meta-{mid}").as_bytes(),
                &body_of(mid, 100),
            )
            .unwrap();
        }
        spool.update(1, b"rcpt 1 delivered".to_vec());
        spool.update(2, b"attempt 1".to_vec());
        spool.update(1, b"rcpt 2 deferred".to_vec());
        spool.finish(2);
        spool.update(2, b"after finish: ignored".to_vec());
        spool.update(9, b"unknown: ignored".to_vec());
        // No sync: dropping the last handle must flush updates and finishes.
    }
    let (spool, rec) = open(&c);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    assert_eq!(
        rec.messages,
        vec![
            RecoveredMessage {
                mid: 1,
                meta: b"meta-1".to_vec(),
                updates: vec![b"rcpt 1 delivered".to_vec(), b"rcpt 2 deferred".to_vec()],
            },
            RecoveredMessage {
                mid: 3,
                meta: b"meta-3".to_vec(),
                updates: vec![],
            },
        ]
    );
    assert_eq!(rec.max_mid, 3);
    assert_eq!(spool.read_body(1).unwrap(), body_of(1, 100));
    assert_eq!(spool.read_body(3).unwrap(), body_of(3, 100));
    assert!(spool.read_body(2).is_err());
    assert_eq!(spool.stats().live_messages, 2);
}

#[test]
fn max_mid_survives_when_every_message_is_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        append(&spool, 41, b"", b"x").unwrap();
        append(&spool, 40, b"", b"y").unwrap();
        spool.finish(40);
        spool.finish(41);
        spool.sync().unwrap();
    }
    for _ in 0..3 {
        // Each start deletes the dead segments of the previous run; the segment header keeps
        // the floor so ids never go backwards.
        let (_spool, rec) = open(&c);
        assert!(rec.messages.is_empty());
        assert_eq!(rec.max_mid, 41);
        assert_eq!(segments(&c.dir).len(), 1);
    }
}

#[test]
fn rotation_and_deletion_of_dead_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path());
    c.segment_size = 1024;
    let (spool, _) = open(&c);
    for mid in 1..=20 {
        append(&spool, mid, b"m", &body_of(mid, 300)).unwrap();
    }
    let before = spool.stats().segments;
    assert!(before >= 5, "expected rotation, have {before} segments");
    assert_eq!(segments(&c.dir).len() as u64, before);

    for mid in 1..=20 {
        if mid != 20 {
            spool.finish(mid);
        }
    }
    spool.sync().unwrap();
    // Only segments with a live message (or the active one) remain.
    let after = spool.stats().segments;
    assert!(after <= 2, "dead segments not deleted: {after} left");
    assert_eq!(segments(&c.dir).len() as u64, after);
    assert_eq!(spool.read_body(20).unwrap(), body_of(20, 300));
    assert!(files_in(&c.dir.join(CORRUPT_DIR)).is_empty());
    drop(spool);

    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![20]);
    assert_eq!(rec.max_mid, 20);
    assert_eq!(spool.read_body(20).unwrap(), body_of(20, 300));
}

#[test]
fn compaction_keeps_live_messages_readable_and_recoverable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path());
    c.segment_size = 2048;
    let (spool, _) = open(&c);
    let first_segment = segments(&c.dir)[0].clone();
    for mid in 1..=40 {
        append(
            &spool,
            mid,
            format!("meta-{mid}").as_bytes(),
            &body_of(mid, 300),
        )
        .unwrap();
        if mid == 1 {
            spool.update(1, b"early update".to_vec());
        }
    }
    let keep = [1u64, 13];
    for mid in 1..=40 {
        if !keep.contains(&mid) && mid < 35 {
            spool.finish(mid);
        }
    }
    spool.update(13, b"late update".to_vec());
    // Each pass compacts at most one segment; a few syncs give it the passes.
    for _ in 0..5 {
        spool.sync().unwrap();
    }
    let st = spool.stats();
    assert!(st.compactions >= 2, "{st:?}");
    assert!(!first_segment.exists(), "compacted segment still present");
    for mid in keep.iter().copied().chain(35..=40) {
        assert_eq!(
            spool.read_body(mid).unwrap(),
            body_of(mid, 300),
            "mid {mid}"
        );
    }
    assert_eq!(st.live_messages, 8);
    spool.update(1, b"after compaction".to_vec());
    drop(spool);

    let (spool, rec) = open(&c);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    let want: Vec<u64> = keep.iter().copied().chain(35..=40).collect();
    assert_eq!(mids(&rec), want);
    assert_eq!(
        rec.messages[0].updates,
        vec![b"early update".to_vec(), b"after compaction".to_vec()]
    );
    assert_eq!(rec.messages[0].meta, b"meta-1");
    assert_eq!(rec.messages[1].updates, vec![b"late update".to_vec()]);
    for mid in want {
        assert_eq!(
            spool.read_body(mid).unwrap(),
            body_of(mid, 300),
            "mid {mid}"
        );
    }
}

#[test]
fn torn_tail_is_cut_and_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        for mid in 1..=3 {
            append(&spool, mid, b"", &body_of(mid, 500)).unwrap();
        }
    }
    let seg = segments(&c.dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    let original = fs::read(&seg).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1, 2]);
    assert_eq!(rec.max_mid, 2);
    assert_eq!(rec.moved_aside.len(), 1, "{:?}", rec.moved_aside);
    let m = &rec.moved_aside[0];
    assert_eq!(m.from, seg);
    assert!(m.to.starts_with(c.dir.join(CORRUPT_DIR)));
    assert!(m.reason.contains("torn"), "{}", m.reason);
    // The tail file holds exactly the bytes that were cut, and the segment is still there.
    let tail = fs::read(&m.to).unwrap();
    let cut = fs::metadata(&seg).unwrap().len();
    assert!(m.reason.contains(&format!("offset {cut}")), "{}", m.reason);
    assert_eq!(tail, original[cut as usize..(len - 5) as usize]);
    assert_eq!(spool.read_body(2).unwrap(), body_of(2, 500));
    drop(spool);

    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1, 2]);
    assert!(rec.moved_aside.is_empty());
    assert!(seg.exists());
}

#[test]
fn zero_filled_tail_counts_as_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        append(&spool, 1, b"", b"one").unwrap();
    }
    let seg = segments(&c.dir).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &data).unwrap();
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1]);
    assert_eq!(rec.moved_aside.len(), 1);
    assert!(rec.moved_aside[0].reason.contains("zero bytes"));
    assert!(seg.exists());
}

#[test]
fn garbage_in_the_middle_moves_the_segment_aside_and_keeps_the_good_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        append(&spool, 1, b"meta-1", &body_of(1, 500)).unwrap();
        spool.update(1, b"u1".to_vec());
        append(&spool, 2, b"meta-2", &body_of(2, 500)).unwrap();
        append(&spool, 3, b"meta-3", &body_of(3, 500)).unwrap();
    }
    let seg = segments(&c.dir).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let needle = b"body-2-body-2";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    data[at + 3] ^= 0x20;
    fs::write(&seg, &data).unwrap();

    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1]);
    assert_eq!(rec.messages[0].updates, vec![b"u1".to_vec()]);
    assert_eq!(rec.moved_aside.len(), 1, "{:?}", rec.moved_aside);
    let m = &rec.moved_aside[0];
    assert_eq!(m.from, seg);
    assert!(m.reason.contains("checksum"), "{}", m.reason);
    assert!(m.reason.contains("at offset"), "{}", m.reason);
    // Moved, not deleted: the whole file is in corrupt/ as it was.
    assert!(!seg.exists());
    assert_eq!(fs::read(&m.to).unwrap(), data);
    assert_eq!(spool.read_body(1).unwrap(), body_of(1, 500));
    drop(spool);

    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1]);
    assert_eq!(rec.messages[0].updates, vec![b"u1".to_vec()]);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    assert_eq!(spool.read_body(1).unwrap(), body_of(1, 500));
    assert_eq!(files_in(&c.dir.join(CORRUPT_DIR)).len(), 1);
}

#[test]
fn unknown_files_are_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    fs::create_dir_all(&c.dir).unwrap();
    fs::write(c.dir.join("notes.txt"), b"hello").unwrap();
    fs::write(c.dir.join("seg-00000000000000ff.log"), b"not a segment").unwrap();
    fs::write(c.dir.join("seg-00000000000000FF.log"), b"wrong spelling").unwrap();
    fs::create_dir(c.dir.join("subdir")).unwrap();

    let (spool, rec) = open(&c);
    let mut from: Vec<String> = rec
        .moved_aside
        .iter()
        .map(|m| m.from.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    from.sort();
    assert_eq!(
        from,
        vec![
            "notes.txt",
            "seg-00000000000000FF.log",
            "seg-00000000000000ff.log",
            "subdir"
        ]
    );
    let corrupt = c.dir.join(CORRUPT_DIR);
    assert_eq!(fs::read(corrupt.join("notes.txt")).unwrap(), b"hello");
    assert!(corrupt.join("subdir").is_dir());
    let bad = rec
        .moved_aside
        .iter()
        .find(|m| m.from.ends_with("seg-00000000000000ff.log"))
        .unwrap();
    assert!(bad.reason.contains("shorter"), "{}", bad.reason);
    // New segments sort after every name seen, even ones moved aside.
    assert_eq!(
        segments(&c.dir),
        vec![c.dir.join("seg-0000000000000100.log")]
    );
    append(&spool, 1, b"", b"x").unwrap();
}

#[test]
fn concurrent_appends_share_fsyncs() {
    const THREADS: u64 = 20;
    const PER_THREAD: u64 = 100;
    let tmp = tempfile::tempdir().unwrap();
    let c = SpoolConfig::new(tmp.path());
    assert!(c.fsync);
    let (spool, _) = open(&c);
    let body = vec![b'x'; 4096];
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let spool = spool.clone();
            let body = body.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let mid = t * PER_THREAD + i + 1;
                    append(&spool, mid, b"meta", &body).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let st = spool.stats();
    let total = THREADS * PER_THREAD;
    println!(
        "{total} appends of 4 KiB from {THREADS} threads with fsync: {:.0} appends/s, \
         {} fsyncs ({:.1} appends per fsync)",
        total as f64 / secs,
        st.fsyncs,
        total as f64 / st.fsyncs as f64
    );
    assert_eq!(st.appends, total);
    assert_eq!(st.live_messages, total);
    assert!(st.fsyncs < total, "no batching: {st:?}");
    assert_eq!(spool.read_body(total).unwrap(), body);
}

#[test]
fn callbacks_are_called_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    let counters: Vec<Arc<AtomicUsize>> = (0..50).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    for (i, n) in counters.iter().enumerate() {
        let n = n.clone();
        let results = results.clone();
        // Every fifth append reuses the previous id, which must fail, not overwrite.
        let mid = if i % 5 == 4 { i as u64 - 1 } else { i as u64 };
        spool.append(
            mid,
            Vec::new(),
            vec![i as u8; 10],
            Box::new(move |r| {
                n.fetch_add(1, Ordering::SeqCst);
                results.lock().unwrap().push((i, r.is_ok()));
                if i == 7 {
                    panic!("a panicking callback must not stop the writer");
                }
            }),
        );
    }
    spool.sync().unwrap();
    // Appends still queued when the last handle is dropped are completed too.
    let late = Arc::new(AtomicUsize::new(0));
    for i in 0..10u64 {
        let late = late.clone();
        spool.append(
            1000 + i,
            Vec::new(),
            Vec::new(),
            Box::new(move |_| {
                late.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    drop(spool);
    for (i, n) in counters.iter().enumerate() {
        assert_eq!(n.load(Ordering::SeqCst), 1, "callback {i}");
    }
    assert_eq!(late.load(Ordering::SeqCst), 10);
    let results = results.lock().unwrap();
    for &(i, ok) in results.iter() {
        assert_eq!(ok, i % 5 != 4, "append {i}");
    }
}

#[test]
fn fsync_failure_fails_the_batch_and_the_next_batch_works() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        append(&spool, 1, b"m1", b"one").unwrap();
        spool.update(1, b"u1".to_vec());
        // The update is fsynced by a batch of its own; the failure below is the append's.
        spool.sync().unwrap();
        let seg_before = segments(&c.dir).pop().unwrap();

        spool.fail_next_sync(5);
        let err = append(&spool, 2, b"m2", b"two").unwrap_err();
        assert!(!err.is_no_space(), "{err}");
        assert!(matches!(err, SpoolError::Io { op: "fsync", .. }), "{err:?}");
        assert!(spool.read_body(2).is_err());

        // The next batch goes to a new segment and succeeds. (The abandoned one may be gone
        // already: once message 1 is copied forward, nothing in it is live.)
        append(&spool, 3, b"m3", b"three").unwrap();
        assert!(segments(&c.dir).pop().unwrap() > seg_before);
        assert_eq!(spool.read_body(1).unwrap(), b"one");
        assert_eq!(spool.read_body(3).unwrap(), b"three");

        spool.fail_next_sync(28);
        let err = append(&spool, 4, b"m4", b"four").unwrap_err();
        assert!(err.is_no_space(), "{err:?}");
        spool.sync().unwrap();
    }
    // The failed records were cut off again, and the update comes back exactly once.
    let (_spool, rec) = open(&c);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    assert_eq!(mids(&rec), vec![1, 3]);
    assert_eq!(rec.messages[0].updates, vec![b"u1".to_vec()]);
}

/// A delivery's outcome (an update, a finish) is fsynced within one group commit of the next
/// hop's 250 or `OUTCOME_FLUSH` after it was written when no append comes, never
/// `FLUSH_INTERVAL` (200 ms) later: that window is where a `kill -9` or a power failure makes
/// a delivered message be delivered again. The old writer could not fsync them sooner than
/// 200 ms after the call with nothing else queued, so this fails on it by construction.
#[test]
fn updates_and_finishes_are_fsynced_by_the_next_group_commit_or_within_5_ms() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = open(&cfg(tmp.path()));
    append(&spool, 1, b"", b"one").unwrap();
    append(&spool, 2, b"", b"two").unwrap();
    let before = spool.stats().fsyncs;
    let asked = Instant::now();
    spool.update(1, b"rcpt 0 delivered".to_vec());
    spool.finish(2);
    while spool.stats().fsyncs == before {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "the update and the finish were never fsynced"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = asked.elapsed();
    assert!(
        waited < super::writer::FLUSH_INTERVAL,
        "the update and the finish were fsynced {waited:?} after the call: they waited for \
         the 200 ms timer"
    );
    assert_eq!(spool.stats().live_messages, 1);

    // With appends streaming in, an outcome rides along with their group commit: no fsync
    // of its own.
    let before = spool.stats().fsyncs;
    for mid in 3..=22 {
        spool.finish(mid - 2);
        append(&spool, mid, b"", b"more").unwrap();
    }
    let used = spool.stats().fsyncs - before;
    assert!(used <= 30, "{used} fsyncs for 20 appends and 20 finishes");
}

#[test]
fn finish_in_a_deleted_segment_is_carried_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        append(&spool, 1, b"", b"long-lived").unwrap();
        append(&spool, 2, b"", b"short-lived").unwrap();
        spool.rotate();
        // Segment B: the only Finish of message 2, whose record is in segment A.
        spool.finish(2);
        append(&spool, 3, b"", b"three").unwrap();
        spool.rotate();
        // Segment B is now dead and gets deleted, while A lives on because of message 1.
        spool.finish(3);
        spool.sync().unwrap();
        assert_eq!(spool.stats().segments, 2);
    }
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1], "a finished message came back");
}

#[test]
fn update_in_a_deleted_segment_is_carried_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        append(&spool, 1, b"", b"long-lived").unwrap();
        spool.rotate();
        spool.update(1, b"u1".to_vec());
        append(&spool, 2, b"", b"two").unwrap();
        spool.rotate();
        spool.finish(2);
        spool.sync().unwrap();
        spool.update(1, b"u2".to_vec());
        assert_eq!(spool.read_body(1).unwrap(), b"long-lived");
    }
    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1]);
    assert_eq!(
        rec.messages[0].updates,
        vec![b"u1".to_vec(), b"u2".to_vec()]
    );
    assert_eq!(spool.read_body(1).unwrap(), b"long-lived");
}

#[test]
fn a_corrupted_body_is_not_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    append(&spool, 1, b"", b"pristine body").unwrap();
    let seg = segments(&c.dir).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let at = data.windows(8).position(|w| w == b"pristine").unwrap();
    data[at] = b'P';
    fs::write(&seg, &data).unwrap();
    assert!(matches!(
        spool.read_body(1),
        Err(SpoolError::Corrupt { .. })
    ));
}

#[test]
fn a_spool_cannot_be_opened_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    assert!(matches!(
        Spool::open(c.clone()),
        Err(SpoolError::Locked { .. })
    ));
    drop(spool);
    let _ = open(&c);
}

#[test]
fn sync_from_a_callback_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = open(&cfg(tmp.path()));
    let (tx, rx) = mpsc::channel();
    let inner = spool.clone();
    spool.append(
        1,
        Vec::new(),
        Vec::new(),
        Box::new(move |_| {
            let _ = tx.send(inner.sync());
        }),
    );
    assert!(matches!(rx.recv().unwrap(), Err(SpoolError::Reentrant)));
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Spool>();
}

#[test]
fn missing_parent_directories_are_created() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(&tmp.path().join("a/b/spool"));
    let (spool, _) = open(&c);
    append(&spool, 1, b"", b"x").unwrap();
    assert!(c.dir.join(CORRUPT_DIR).is_dir());
}

/// Set in the child process of `acknowledged_appends_survive_kill_9`.
const CHILD_DIR_ENV: &str = "PVO_SPOOL_TEST_CHILD_DIR";

/// The child half of `acknowledged_appends_survive_kill_9`: appends from four threads until
/// it is killed, printing each id once its callback reported success. Without the
/// environment variable (a normal test run) it does nothing.
#[test]
fn kill_9_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let (spool, rec) = Spool::open(cfg(Path::new(&dir))).unwrap();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(rec.max_mid + 1));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (spool, next) = (spool.clone(), next.clone());
            std::thread::spawn(move || loop {
                let mid = next.fetch_add(1, Ordering::SeqCst);
                append(&spool, mid, b"meta", &body_of(mid, 2000)).unwrap();
                println!("acked {mid}");
                if mid % 3 == 0 {
                    println!("finishing {mid}");
                    spool.finish(mid);
                } else {
                    spool.update(mid, b"progress".to_vec());
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let mut acked = BTreeSet::new();
    let mut finishing = BTreeSet::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::kill_9_child", "--nocapture"])
            .env(CHILD_DIR_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked_now = 0;
        let mut note = |line: String| {
            if let Some(mid) = line.strip_prefix("acked ") {
                acked.insert(mid.parse::<u64>().unwrap());
                return true;
            } else if let Some(mid) = line.strip_prefix("finishing ") {
                finishing.insert(mid.parse::<u64>().unwrap());
            }
            false
        };
        while acked_now < 300 {
            if note(lines.next().expect("child output").unwrap()) {
                acked_now += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // The child announces a finish before making it, so the announcement of any finish
        // that may have reached the spool is still in the pipe.
        for line in lines {
            note(line.unwrap());
        }

        let (spool, rec) = open(&cfg(tmp.path()));
        let recovered: BTreeSet<u64> = mids(&rec).into_iter().collect();
        for mid in acked.difference(&finishing) {
            assert!(recovered.contains(mid), "round {round}: acked {mid} lost");
            assert_eq!(spool.read_body(*mid).unwrap(), body_of(*mid, 2000));
        }
        // Only a torn tail may be set aside after a kill, never a whole segment.
        for m in &rec.moved_aside {
            assert!(m.reason.contains("torn"), "round {round}: {}", m.reason);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Failed appends, full disks
// ---------------------------------------------------------------------------------------

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Bytes of the files in the spool directory and `corrupt/`, as the test quota counts them.
fn usage(dir: &Path) -> u64 {
    files_in(dir)
        .into_iter()
        .chain(files_in(&dir.join(CORRUPT_DIR)))
        .filter(|p| p.is_file())
        .map(|p| file_len(&p))
        .sum()
}

/// Syncs until it works (a flush on a full disk may take a batch to find its space).
fn sync_eventually(spool: &Spool) {
    let mut last = None;
    for _ in 0..5 {
        match spool.sync() {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
    }
    panic!("sync keeps failing: {last:?}");
}

/// Bug A: fsync fails with EIO, the client is told 451, and the process dies before anything
/// else could be written. The record must not come back.
#[test]
fn a_refused_append_stays_refused_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    append(&spool, 1, b"m1", b"one").unwrap();
    // Every fsync fails, the one that would make the rollback durable too.
    c.faults.fail_syncs(5, u32::MAX);
    let err = append(&spool, 2, b"m2", &body_of(2, 1000)).unwrap_err();
    assert!(!err.is_no_space(), "{err}");
    // kill -9 with the disk still failing, then a healthy start.
    spool.crash();
    c.faults.fail_syncs(0, 0);
    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1], "a refused message came back");
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    assert!(matches!(
        spool.read_body(2),
        Err(SpoolError::UnknownMessage(2))
    ));
}

/// Bug A, the fallback: when even the truncation fails, the next successful batch records
/// the refused append as finished.
#[test]
fn a_refused_append_stays_refused_when_the_truncation_fails_too() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    append(&spool, 1, b"m1", b"one").unwrap();
    let seg = segments(&c.dir).pop().unwrap();
    let before = file_len(&seg);
    c.faults.fail_syncs(5, 1);
    c.faults.fail_truncates(5, 1);
    append(&spool, 2, b"m2", b"two").unwrap_err();
    assert!(file_len(&seg) > before, "the record was expected to stay");
    append(&spool, 3, b"m3", b"three").unwrap();
    spool.crash();
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1, 3]);
}

/// Bug A: a rolled-back batch is cut off the segment, and the updates it carried are written
/// again exactly once.
#[test]
fn a_failed_fsync_is_rolled_back_and_its_updates_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    append(&spool, 1, b"m1", b"one").unwrap();
    let seg = segments(&c.dir).pop().unwrap();
    let synced = file_len(&seg);
    // Every fsync fails until healed: the update's own batch (updates are fsynced by the
    // batch that writes them) and the append's, whichever of them carries the update.
    c.faults.fail_syncs(5, u32::MAX);
    spool.update(1, b"u1".to_vec());
    append(&spool, 2, b"m2", &body_of(2, 1000)).unwrap_err();
    c.faults.fail_syncs(5, 0);
    assert_eq!(
        file_len(&seg),
        synced,
        "the failed batch is still in the segment"
    );
    // After a failed fsync the segment is abandoned; the next batch starts a new one.
    append(&spool, 3, b"m3", b"three").unwrap();
    assert!(segments(&c.dir).pop().unwrap() > seg);
    spool.update(1, b"u2".to_vec());
    spool.sync().unwrap();
    spool.crash();
    let (spool, rec) = open(&c);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    assert_eq!(mids(&rec), vec![1, 3]);
    assert_eq!(
        rec.messages[0].updates,
        vec![b"u1".to_vec(), b"u2".to_vec()]
    );
    assert_eq!(spool.read_body(1).unwrap(), b"one");
}

/// A failed write (not fsync) that was rolled back leaves the kernel's view of the file
/// known: the writer goes on in the same segment, and writes again the updates it cut off.
#[test]
fn a_failed_write_is_rolled_back_and_the_segment_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    append(&spool, 1, b"m1", b"one").unwrap();
    let seg = segments(&c.dir).pop().unwrap();
    let synced = file_len(&seg);
    c.faults.fail_writes(5, 1);
    let err = append(&spool, 2, b"m2", &body_of(2, 1000)).unwrap_err();
    assert!(matches!(err, SpoolError::Io { op: "write", .. }), "{err:?}");
    assert_eq!(
        file_len(&seg),
        synced,
        "half a batch is still in the segment"
    );

    // The batch with the update fails, wherever the sync lands; the update is written
    // again by a later one.
    c.faults.fail_writes(5, 1);
    spool.update(1, b"u1".to_vec());
    let _ = spool.sync();
    sync_eventually(&spool);
    append(&spool, 3, b"m3", b"three").unwrap();
    assert_eq!(segments(&c.dir), vec![seg]);
    spool.crash();
    let (_spool, rec) = open(&c);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    assert_eq!(mids(&rec), vec![1, 3]);
    assert_eq!(rec.messages[0].updates, vec![b"u1".to_vec()]);
}

/// Bug B: after the disk filled up, the spool must give the space of finished messages back
/// and accept appends again, without a restart.
#[test]
fn a_full_disk_accepts_appends_again_once_the_queue_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let (spool, _) = open(&c);
    c.faults.set_quota(Some(64 << 10));
    let mut accepted = Vec::new();
    let seg = segments(&c.dir).pop().unwrap();
    let err = loop {
        let mid = accepted.len() as u64 + 1;
        let before = file_len(&seg);
        match append(&spool, mid, b"meta", &body_of(mid, 8000)) {
            Ok(()) => {
                accepted.push(mid);
                spool.update(mid, b"scanned".to_vec());
                // Updates are fsynced by a batch of their own: let it land before `before`.
                let _ = spool.sync();
            }
            Err(e) => {
                // The part of the record that fitted was cut off again (and so was the last
                // update, not yet fsynced: it is written again later).
                assert!(file_len(&seg) <= before);
                break e;
            }
        }
    };
    assert!(err.is_no_space(), "{err:?}");
    assert!(accepted.len() >= 5, "{accepted:?}");
    for mid in &accepted {
        assert_eq!(spool.read_body(*mid).unwrap(), body_of(*mid, 8000));
        spool.finish(*mid);
    }
    let _ = spool.sync();
    // Once every message is finished, the next append or the one after finds space.
    let fresh = (100..105)
        .find(|mid| append(&spool, *mid, b"meta", &body_of(*mid, 8000)).is_ok())
        .expect("still no space after the queue drained");
    assert!(usage(&c.dir) < 20 << 10, "{:?}", files_in(&c.dir));
    spool.crash();
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![fresh]);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
}

/// With a reserve, the first batch that meets a full disk deletes it: the space goes to the
/// finishes of what the spool holds, new appends are refused (naming the spool) even though
/// one would fit now, and appends are taken again once the reserve fits twice over.
#[test]
fn a_full_disk_releases_the_reserve_for_finishes_and_refuses_appends_until_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path());
    c.reserve = 16 << 10;
    let (spool, _) = open(&c);
    let reserve = c.dir.join("reserve");
    assert_eq!(file_len(&reserve), 16 << 10);
    c.faults.set_quota(Some(usage(&c.dir) + 40_000));
    let mut accepted = Vec::new();
    let err = loop {
        let mid = accepted.len() as u64 + 1;
        match append(&spool, mid, b"meta", &body_of(mid, 8000)) {
            Ok(()) => accepted.push(mid),
            Err(e) => break e,
        }
    };
    assert!(err.is_no_space(), "{err:?}");
    assert!(!accepted.is_empty());
    let refused = append(&spool, 100, b"meta", &body_of(100, 1000)).unwrap_err();
    assert!(refused.is_no_space(), "{refused:?}");
    // Released after the failed batch's callbacks ran, so looked at only now.
    assert!(!reserve.exists(), "the reserve was not released");
    assert!(
        refused.to_string().contains(&c.dir.display().to_string()),
        "{refused}"
    );

    // The freed space takes the finishes (nothing is lost to the full disk)...
    for mid in &accepted {
        spool.finish(*mid);
    }
    spool.sync().unwrap();
    spool.crash();
    let (spool, rec) = open(&c);
    assert!(rec.messages.is_empty(), "{:?}", mids(&rec));
    // ...and once the queue has drained, mail is taken again, with the reserve back.
    let start = Instant::now();
    let mut mid = 200;
    loop {
        mid += 1;
        match append(&spool, mid, b"meta", &body_of(mid, 1000)) {
            Ok(()) => break,
            Err(e) => assert!(e.is_no_space(), "{e:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still refused with the queue drained; files {:?}",
            files_in(&c.dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(file_len(&reserve), 16 << 10);
}

/// Bug B: a node that runs out of space with its queue full, and drains it while the disk is
/// still full, must not keep refusing: the dead segments go even though no batch succeeds.
#[test]
fn dead_segments_are_deleted_after_failed_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path());
    c.segment_size = 4096;
    let (spool, _) = open(&c);
    for mid in 1..=6 {
        append(&spool, mid, b"meta", &body_of(mid, 3000)).unwrap();
    }
    assert!(segments(&c.dir).len() >= 3);
    // Not even a new segment's header fits any more.
    c.faults.set_quota(Some(usage(&c.dir)));
    assert!(append(&spool, 7, b"meta", b"x").unwrap_err().is_no_space());
    for mid in 1..=6 {
        spool.finish(mid);
    }
    // These fail (the finishes cannot be written), but they delete what is dead.
    for _ in 0..3 {
        let _ = spool.sync();
    }
    sync_eventually(&spool);
    append(&spool, 8, b"meta", b"eight").unwrap();
    assert!(usage(&c.dir) < 1024, "{:?}", files_in(&c.dir));
    drop(spool);
    for _ in 0..2 {
        let (_spool, rec) = open(&c);
        assert_eq!(mids(&rec), vec![8]);
        assert_eq!(rec.max_mid, 8);
    }
}

/// Fills a spool with messages 1..=3, then kills it.
fn three_messages_then_crash(c: &SpoolConfig) -> PathBuf {
    let (spool, _) = open(c);
    for mid in 1..=3 {
        append(&spool, mid, b"meta", &body_of(mid, 2000)).unwrap();
    }
    spool.crash();
    segments(&c.dir).pop().unwrap()
}

/// Bug C: a spool on a full file system opens (without a new segment), delivers, frees the
/// space and takes appends again, and the highest id survives.
#[test]
fn a_full_spool_opens_and_frees_its_space_once_drained() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let seg = three_messages_then_crash(&c);
    c.faults.set_quota(Some(usage(&c.dir)));

    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1, 2, 3]);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
    assert_eq!(segments(&c.dir), vec![seg.clone()]);
    assert!(append(&spool, 4, b"", b"four").unwrap_err().is_no_space());
    for mid in 1..=3 {
        assert_eq!(spool.read_body(mid).unwrap(), body_of(mid, 2000));
        spool.finish(mid);
    }
    sync_eventually(&spool);
    // The dead segment was emptied for reuse: only its header is left.
    assert_eq!(segments(&c.dir), vec![seg.clone()]);
    assert_eq!(file_len(&seg), 40);
    append(&spool, 5, b"", b"five").unwrap();
    spool.finish(5);
    drop(spool);
    let (_spool, rec) = open(&c);
    assert!(rec.messages.is_empty());
    assert_eq!(rec.max_mid, 5);
}

/// Bug C: a torn tail that cannot be copied aside for lack of space stays in the segment,
/// unread; no empty or partial copy is left behind; and when the segment dies, the tail goes
/// to `corrupt/` and the rest of the space is freed, without needing any.
#[test]
fn a_full_spool_keeps_its_torn_tail_until_it_can_be_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let seg = three_messages_then_crash(&c);
    let offset = file_len(&seg);
    let record = crate::format::message(4, b"meta", &body_of(4, 2000))
        .unwrap()
        .bytes;
    let torn = &record[..record.len() / 2];
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(torn);
    fs::write(&seg, &data).unwrap();
    // Room for a few bytes of the copy, but not all of it, nor a new segment.
    c.faults.set_quota(Some(usage(&c.dir) + 30));

    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1, 2, 3]);
    assert_eq!(rec.moved_aside.len(), 1, "{:?}", rec.moved_aside);
    let m = &rec.moved_aside[0];
    assert_eq!((&m.from, &m.to), (&seg, &seg));
    assert!(m.reason.contains("torn record"), "{}", m.reason);
    assert!(m.reason.contains("no space"), "{}", m.reason);
    assert!(files_in(&c.dir.join(CORRUPT_DIR)).is_empty());
    assert_eq!(fs::read(&seg).unwrap(), data, "the torn bytes are gone");
    assert_eq!(spool.read_body(3).unwrap(), body_of(3, 2000));

    for mid in 1..=3 {
        spool.finish(mid);
    }
    sync_eventually(&spool);
    let corrupt = files_in(&c.dir.join(CORRUPT_DIR));
    let name = format!(
        "{}.tail-{offset}",
        seg.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(corrupt, vec![c.dir.join(CORRUPT_DIR).join(name)]);
    assert_eq!(fs::read(&corrupt[0]).unwrap(), torn);
    assert!(!seg.exists());
    append(&spool, 5, b"", b"five").unwrap();
    assert!(usage(&c.dir) < 2048, "{:?}", files_in(&c.dir));
    drop(spool);
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![5]);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
}

/// Bug C: once there is space again, a torn tail left in place is copied aside and cut off
/// after the next successful batch.
#[test]
fn a_torn_tail_left_in_place_is_cut_once_there_is_space() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let seg = three_messages_then_crash(&c);
    let offset = file_len(&seg);
    let torn = vec![0xA7, 1, 0, 0, 9, 9];
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&torn);
    fs::write(&seg, &data).unwrap();
    c.faults.set_quota(Some(usage(&c.dir)));
    let (spool, rec) = open(&c);
    assert_eq!(rec.moved_aside[0].to, seg);
    assert!(files_in(&c.dir.join(CORRUPT_DIR)).is_empty());

    c.faults.set_quota(None);
    append(&spool, 4, b"", b"four").unwrap();
    spool.sync().unwrap();
    assert_eq!(file_len(&seg), offset);
    let corrupt = files_in(&c.dir.join(CORRUPT_DIR));
    assert_eq!(corrupt.len(), 1);
    assert_eq!(fs::read(&corrupt[0]).unwrap(), torn);
    drop(spool);
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1, 2, 3, 4]);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
}

/// Bug C: a corrupt segment whose live messages cannot be copied forward for lack of space
/// does not stop the spool from opening; it is moved aside, whole, once they can be.
#[test]
fn a_full_spool_opens_with_a_corrupt_segment_and_moves_it_aside_later() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    let seg = three_messages_then_crash(&c);
    let mut data = fs::read(&seg).unwrap();
    let at = data
        .windows(13)
        .position(|w| w == b"body-2-body-2")
        .unwrap();
    data[at] ^= 0x20;
    fs::write(&seg, &data).unwrap();
    c.faults.set_quota(Some(usage(&c.dir)));

    let (spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1]);
    assert_eq!(rec.moved_aside.len(), 1, "{:?}", rec.moved_aside);
    let m = &rec.moved_aside[0];
    assert_eq!((&m.from, &m.to), (&seg, &seg));
    assert!(m.reason.contains("checksum"), "{}", m.reason);
    assert_eq!(spool.read_body(1).unwrap(), body_of(1, 2000));

    c.faults.set_quota(None);
    append(&spool, 4, b"", b"four").unwrap();
    spool.sync().unwrap();
    assert!(!seg.exists());
    let corrupt = files_in(&c.dir.join(CORRUPT_DIR));
    assert_eq!(corrupt.len(), 1);
    assert_eq!(fs::read(&corrupt[0]).unwrap(), data);
    assert_eq!(spool.read_body(1).unwrap(), body_of(1, 2000));
    drop(spool);
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![1, 4]);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
}

/// A corrupt segment with nothing live in it, on a full disk: it is neither emptied for reuse
/// nor moved aside while it is all that holds the highest id; once a new segment exists it
/// goes to `corrupt/` whole.
#[test]
fn a_dead_corrupt_segment_on_a_full_disk_is_kept_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path());
    {
        let (spool, _) = open(&c);
        append(&spool, 6, b"meta", b"six").unwrap();
        spool.finish(6);
        append(&spool, 7, b"meta", &body_of(7, 2000)).unwrap();
        spool.crash();
    }
    let seg = segments(&c.dir).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let at = data.windows(7).position(|w| w == b"body-7-").unwrap();
    data[at] ^= 0x20;
    data.extend_from_slice(b"more data after the damage");
    fs::write(&seg, &data).unwrap();
    c.faults.set_quota(Some(usage(&c.dir)));

    let (spool, rec) = open(&c);
    assert!(rec.messages.is_empty());
    assert_eq!(rec.max_mid, 6);
    assert_eq!(rec.moved_aside.len(), 1, "{:?}", rec.moved_aside);
    assert_eq!(rec.moved_aside[0].to, seg);
    assert!(append(&spool, 8, b"", b"x").unwrap_err().is_no_space());
    let _ = spool.sync();
    assert_eq!(fs::read(&seg).unwrap(), data);

    c.faults.set_quota(None);
    append(&spool, 8, b"", b"eight").unwrap();
    spool.sync().unwrap();
    assert!(!seg.exists());
    let corrupt = files_in(&c.dir.join(CORRUPT_DIR));
    assert_eq!(corrupt.len(), 1);
    assert_eq!(fs::read(&corrupt[0]).unwrap(), data);
    drop(spool);
    let (_spool, rec) = open(&c);
    assert_eq!(mids(&rec), vec![8]);
    assert!(rec.moved_aside.is_empty(), "{:?}", rec.moved_aside);
}
