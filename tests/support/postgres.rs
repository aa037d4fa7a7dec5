//! A private PostgreSQL for one test: Debian's server binaries, a new database cluster
//! made by `initdb` in a temporary directory, listening only on a Unix socket in that
//! directory (no TCP port, so nothing to race for), stopped and deleted when dropped.
//! Nothing of the system's PostgreSQL is used or touched.
//!
//! As root (CI) the server runs as the `postgres` user that Debian's package creates
//! (PostgreSQL refuses to run as root); as anybody else, as that user. The server is
//! also told to die with the thread that started it (`PR_SET_PDEATHSIG`), so a test
//! that panics or is killed leaves no server behind. Readiness is the server's own
//! "ready to accept connections" line, not a sleep.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The port number only names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const PORT: u16 = 5432;

pub struct Postgres {
    dir: tempfile::TempDir,
    child: Child,
    log: mpsc::Receiver<String>,
}

/// The newest server of Debian's `postgresql` package.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "this test needs PostgreSQL's server (/usr/lib/postgresql/N/bin/postgres): \
             install Debian's postgresql package (scripts/install-test-deps does)"
        ),
    }
}

/// The uid and gid to run the server as: `postgres` when we are root, else ourselves.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam is given a NUL-terminated name and
    // its result is read at once, on this thread, before any other getpw* call here.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            panic!(
                "this test runs as root and needs the `postgres` user to run PostgreSQL as: \
                 install Debian's postgresql package (scripts/install-test-deps does)"
            );
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn command(bin: &Path, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    cmd
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let user = run_as();
        let dir = tempfile::Builder::new()
            .prefix("pvo-pg-")
            .tempdir()
            .expect("a temporary directory");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), user)
            .args([
                "--auth=trust",
                "--username=pvo",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = command(&bin.join("postgres"), user);
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-p", &PORT.to_string()])
            .args(["-c", "listen_addresses=", "-c", "max_connections=200"])
            .args(["-c", "shared_buffers=16MB", "-c", "logging_collector=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start postgres");
        let stderr = child.stderr.take().expect("piped");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end so the server never blocks on a full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody waits any more; keep draining.
                    continue;
                }
            }
        });
        let pg = Postgres { dir, child, log };
        pg.wait_for("database system is ready to accept connections");
        pg
    }

    /// Waits for a line of the server's log containing `needle`.
    fn wait_for(&self, needle: &str) {
        let mut seen = Vec::new();
        loop {
            match self.log.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains(needle) => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "PostgreSQL did not log {needle:?} within 30 s; its log:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// The connection string of database `postgres` as the superuser `pvo`.
    pub fn url(&self) -> String {
        format!(
            "host={} port={PORT} user=pvo dbname=postgres",
            self.dir.path().display()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown: roll back open transactions, end sessions, checkpoint.
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}
