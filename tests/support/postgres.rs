//! A private PostgreSQL for one test: Debian's server binaries, a new database cluster
//! made by `initdb` in a temporary directory, listening only on a Unix socket in that
//! directory (no TCP port, so nothing to race for), stopped and deleted when dropped
//! (`stop` and `start_again` in between: the same data, the same socket).
//! Nothing of the system's PostgreSQL is used or touched.
//!
//! [`Postgres::start_tls_in`] starts one inside a network namespace instead ([`Namespace`],
//! its own address, so port 5432 there is nobody else's), speaking TLS with the
//! certificate given and refusing plaintext TCP sessions (`hostssl` only).
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

use super::Namespace;

/// The port number only names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const PORT: u16 = 5432;

pub struct Postgres {
    dir: tempfile::TempDir,
    child: Child,
    log: mpsc::Receiver<String>,
    /// The namespace address it listens on, when started in one.
    address: Option<String>,
    /// How it was started, to start it again after [`Postgres::stop`].
    user: Option<(u32, u32)>,
    settings: Vec<String>,
    netns: Option<String>,
    running: bool,
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

/// `bin` as `user`, inside the network namespace whose file is `netns` (opened here, in
/// the parent), dying with this thread. All of it happens in the child between fork and
/// exec, in this order because entering a namespace needs root: enter the namespace, drop
/// to the user, then ask for the death signal (a change of user would clear it).
fn command(bin: &Path, user: Option<(u32, u32)>, netns: Option<std::fs::File>) -> Command {
    use std::os::fd::AsRawFd;
    let mut cmd = Command::new(bin);
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    // SAFETY: setns, setgroups, setgid, setuid and prctl are async-signal-safe system
    // calls on values computed before the fork; the file stays open in the closure.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(ns) = &netns {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    cmd
}

impl Postgres {
    /// A server on a Unix socket only.
    pub fn start() -> Postgres {
        Postgres::start_with(None, None)
    }

    /// A server in `ns` on its inside address, port 5432, TLS with `cert_pem` and
    /// `key_pem` required for every TCP session.
    pub fn start_tls_in(ns: &Namespace, cert_pem: &str, key_pem: &str) -> Postgres {
        Postgres::start_with(Some(ns), Some((cert_pem, key_pem)))
    }

    fn start_with(ns: Option<&Namespace>, tls: Option<(&str, &str)>) -> Postgres {
        let bin = bin_dir();
        let user = run_as();
        let dir = tempfile::Builder::new()
            .prefix("pvo-pg-")
            .tempdir()
            .expect("a temporary directory");
        let own = |path: &Path| {
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
            }
        };
        own(dir.path());
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), user, None)
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
        let mut settings = vec![
            "max_connections=200".to_string(),
            "shared_buffers=16MB".to_string(),
            "logging_collector=off".to_string(),
        ];
        let address = ns.map(|ns| ns.inside());
        // In a namespace every address is the test's own (links to other namespaces too).
        settings.push(format!(
            "listen_addresses={}",
            if address.is_some() { "*" } else { "" }
        ));
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (name, text) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, text).expect("write a TLS file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
                own(&path);
            }
            settings.push("ssl=on".into());
            // Local sessions as before; over TCP only TLS ones (no `host` line).
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 0.0.0.0/0 trust\n",
            )
            .expect("write pg_hba.conf");
        }
        let (child, log) = spawn(dir.path(), user, &settings, ns.map(|ns| ns.name.as_str()));
        let pg = Postgres {
            dir,
            child,
            log,
            address,
            user,
            settings,
            netns: ns.map(|ns| ns.name.clone()),
            running: true,
        };
        pg.wait_for("database system is ready to accept connections");
        pg
    }

    /// Stops the server (fast shutdown: open sessions end), keeping its data for
    /// [`Postgres::start_again`].
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
        self.running = false;
    }

    /// Kills the server as a crash would (SIGQUIT, PostgreSQL's immediate shutdown: every
    /// session cut at once, no checkpoint; the next start recovers from its WAL), keeping
    /// its data for [`Postgres::start_again`].
    pub fn kill(&mut self) {
        if !self.running {
            return;
        }
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let _ = self.child.wait();
        self.running = false;
    }

    /// Starts the stopped server again on the same data and socket; returns once it
    /// accepts connections.
    pub fn start_again(&mut self) {
        assert!(!self.running, "PostgreSQL is running");
        let (child, log) = spawn(
            self.dir.path(),
            self.user,
            &self.settings,
            self.netns.as_deref(),
        );
        self.child = child;
        self.log = log;
        self.running = true;
        self.wait_for("database system is ready to accept connections");
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

    /// The TCP address of a server started in a namespace, TLS required.
    pub fn tcp_url(&self) -> String {
        let address = self.address.as_deref().expect("started with start_tls_in");
        format!("host={address} port={PORT} user=pvo dbname=postgres sslmode=require")
    }

    /// The TCP address at `address` (one of its namespace's links), TLS required.
    pub fn tcp_url_at(&self, address: &str) -> String {
        format!("host={address} port={PORT} user=pvo dbname=postgres sslmode=require")
    }

    /// The same server over TCP without TLS (which it refuses).
    pub fn plain_tcp_url(&self) -> String {
        self.tcp_url().replace("sslmode=require", "sslmode=disable")
    }

    /// The connection string of database `postgres` as the superuser `pvo`, over the
    /// server's Unix socket.
    pub fn url(&self) -> String {
        format!(
            "host={} port={PORT} user=pvo dbname=postgres",
            self.dir.path().display()
        )
    }
}

/// Starts the server of the data under `dir`, its stderr read by a thread of its own.
fn spawn(
    dir: &Path,
    user: Option<(u32, u32)>,
    settings: &[String],
    netns: Option<&str>,
) -> (Child, mpsc::Receiver<String>) {
    let netns = netns
        .map(|name| std::fs::File::open(format!("/run/netns/{name}")).expect("open the namespace"));
    let mut cmd = command(&bin_dir().join("postgres"), user, netns);
    cmd.arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir)
        .args(["-p", &PORT.to_string()]);
    for setting in settings {
        cmd.args(["-c", setting]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start postgres");
    let stderr = child.stderr.take().expect("piped");
    let (tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end so the server never blocks on a full pipe; once nobody
        // waits for lines the sends fail and are ignored.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (child, log)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown: roll back open transactions, end sessions, checkpoint.
        self.stop();
    }
}

/// One of the store's advisory locks held from a connection of the test's own, so that a
/// commit, a join or a user change waits inside its transaction until it is released (or
/// the server goes away).
pub struct HeldLock {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    waiting: tokio_postgres::Statement,
    key: i64,
}

impl HeldLock {
    /// Takes the advisory lock `key` on the server at `url`.
    pub fn take(url: &str, key: i64) -> HeldLock {
        let rt = super::rt();
        let (client, waiting) = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("a connection of the test's own");
            tokio::spawn(connection);
            client
                .execute("SELECT pg_advisory_lock($1)", &[&key])
                .await
                .expect("take the lock");
            let waiting = client
                .prepare(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
                .await
                .expect("prepare");
            (client, waiting)
        });
        HeldLock {
            rt,
            client,
            waiting,
            key,
        }
    }

    /// Waits until at least `n` sessions wait for an advisory lock, within `within`.
    pub fn wait_for_waiters(&self, n: i64, within: Duration) {
        super::wait_until(
            within,
            || {
                let now: i64 = self
                    .rt
                    .block_on(self.client.query_one(&self.waiting, &[]))
                    .ok()?
                    .get(0);
                (now >= n).then_some(())
            },
            || {
                format!(
                    "{n} sessions did not wait for the advisory lock {:#x}",
                    self.key
                )
            },
        );
    }

    /// Releases the lock (the waiters go on).
    pub fn release(self) {
        self.rt
            .block_on(
                self.client
                    .execute("SELECT pg_advisory_unlock($1)", &[&self.key]),
            )
            .expect("release the lock");
    }
}
