//! Measures group-commit throughput: 20 threads appending 4 KiB messages, fsync on, each
//! thread waiting for its append to be durable before sending the next (as SMTP sessions do).
//!
//! `cargo run --release -p pvo-spool --example throughput -- [DIR] [SECONDS]`
//!
//! DIR defaults to a temporary directory under the current one, so that the disk measured is
//! the one the command runs on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use pvo_spool::{Spool, SpoolConfig};

const THREADS: u64 = 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let tmp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir_in(".").expect("temporary directory");
            tmp.path().to_path_buf()
        }
    };
    let secs: u64 = args.next().map_or(3, |s| s.parse().expect("SECONDS"));
    let (spool, rec) = Spool::open(SpoolConfig::new(&dir)).expect("open spool");
    let next_mid = Arc::new(AtomicU64::new(rec.max_mid + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (spool, next_mid, stop) = (spool.clone(), next_mid.clone(), stop.clone());
            std::thread::spawn(move || {
                let body = vec![b'x'; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let mid = next_mid.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = mpsc::channel();
                    spool.append(
                        mid,
                        b"meta".to_vec(),
                        body.clone(),
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    );
                    rx.recv().expect("callback").expect("append");
                    // Finish at once so that segments are deleted and the run can be long.
                    spool.finish(mid);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let st = spool.stats();
    println!(
        "{THREADS} threads x 4 KiB, fsync on, {elapsed:.1} s: {:.0} appends/s, {:.0} fsyncs/s, \
         {:.1} appends per fsync",
        st.appends as f64 / elapsed,
        st.fsyncs as f64 / elapsed,
        st.appends as f64 / st.fsyncs.max(1) as f64
    );
}
