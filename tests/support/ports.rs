//! Port numbers for programs that must be told a port before they start, without the
//! race of "bind port 0, read the number, release it, hope".
//!
//! That old recipe lost under parallel tests because the released port went straight
//! back into the kernel's ephemeral range: the next `bind(…:0)` (a node with `port = 0`, a
//! sink) or the source port of the next outgoing `connect()` could take it before the
//! program the test had named it to bound it. So ports here come from outside that range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), which the kernel never hands out by itself,
//! and each one is reserved for the life of the test process with an exclusive `flock` on
//! `$TMPDIR/pvo-test-ports/PORT`: two test threads, or two test processes (parallel
//! `cargo test` runs of several work trees), never get the same number, and the lock goes
//! away with the process even after a crash. A port is also checked free (bound without
//! `SO_REUSEADDR`, so a port with a listener or a TIME_WAIT connection is skipped) on
//! every address it is for. What remains is a process outside the tests binding that
//! very number on purpose; callers whose program can report its port bind port 0 instead
//! ([`crate::support::Node`] reads the `listening on` lines), and the sink retries a
//! start on a fresh port if its bind fails anyway.
//!
//! A reserved port stays reserved until the test process exits (a test binary uses a few
//! hundred of the ~17,000 candidates), so a program restarted on "its" port gets it back:
//! nobody else was handed the number in between.

use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The lowest port handed out: above the well-known and most registered service ports.
const LOWEST: u16 = 20_000;

/// The locks of the ports this process reserved, held until it exits.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
/// Where in the candidate list the next search starts (advances by one per candidate
/// looked at, so threads of one process do not retry each other's ports).
static CURSOR: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The kernel's ephemeral range, inclusive (Linux's default if it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// Every port the kernel does not choose by itself, from [`LOWEST`] on.
fn candidates() -> Vec<u16> {
    let (lo, hi) = ephemeral_range();
    let below = LOWEST..lo.max(LOWEST);
    let above = hi.saturating_add(1).max(LOWEST)..=u16::MAX;
    let ports: Vec<u16> = below.chain(above).collect();
    assert!(
        ports.len() >= 1_000,
        "the ephemeral port range {lo}-{hi} leaves only {} ports from {LOWEST} up for tests",
        ports.len()
    );
    ports
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("pvo-test-ports");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Takes the lock of `port`, or `None` if another thread or process holds it.
fn lock(dir: &std::path::Path, port: u16) -> Option<File> {
    let path = dir.join(port.to_string());
    // Read-only is enough for flock: a lock file another user created is still usable.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|_| File::open(&path))
        .ok()?;
    file.try_lock().ok().map(|()| file)
}

/// Whether nothing is bound to `ip:port`: a bind without `SO_REUSEADDR` succeeds.
fn bindable(ip: IpAddr, port: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .and_then(|s| s.bind(&addr.into()))
        .is_ok()
}

/// A port reserved for this process (see the module comment) and free on every one of
/// `ips`. Panics if every candidate is taken.
pub fn reserve_port(ips: &[IpAddr]) -> u16 {
    let ports = candidates();
    let dir = lock_dir();
    // Start each process somewhere else, so parallel test runs do not queue for the same
    // first ports.
    let _ = CURSOR.compare_exchange(
        usize::MAX,
        std::process::id() as usize * 7919 % ports.len(),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..ports.len() {
        let port = ports[CURSOR.fetch_add(1, Ordering::SeqCst) % ports.len()];
        let Some(lock) = lock(&dir, port) else {
            continue;
        };
        if ips.iter().all(|ip| bindable(*ip, port)) {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
        // In use by something else: leave it (the lock goes with `lock`).
    }
    panic!(
        "no free port from {LOWEST} up outside the ephemeral range on {ips:?} ({} locks in {})",
        ports.len(),
        dir.display()
    );
}
