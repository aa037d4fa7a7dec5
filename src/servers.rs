//! The management servers of a node, `[ssh]` (`crate::adapters::ssh`) and `[web]` (`crate::adapters::web`),
//! and moving them when a commit changes them.
//!
//! A commit that changes a server's section (enabled or removed, interface, port) first
//! binds the new address ([`Servers::prepare`], called by `node`'s `NodeControl::apply_config` before
//! it swaps anything), so a taken port refuses the commit, names the section, the
//! address and the OS error, and leaves the old server running. Only when the whole
//! commit can go ahead does [`Servers::switch`] start the new server and stop the old
//! one: its listening socket is shut down at once (new connections are refused), and
//! the connections it had are told to finish (`shutdown::closing`): an HTTP connection ends
//! after its current request, an SSH session may go on for `shutdown::GRACE`, then it is
//! disconnected. A section that did not change is left alone (port 0 in the
//! configuration keeps whatever port the system chose).
//!
//! The web server's sessions live in its router, so a restarted web server drops them:
//! people log in again. API tokens are in `users.json` and are not affected. The web
//! server's certificate is the node's inbound one, taken for each new connection, so a
//! commit that changes it is in force without a restart.
//!
//! Part of the composition root (it starts `ssh` and `web`); the commands and the
//! certificate renewal see it only through `state::ServerControl` on `Handles`, and the
//! servers themselves learn that they are stopping through `shutdown`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::config::Config;
use crate::core::state::Handles;

use crate::core::shutdown::GRACE;
pub use crate::core::state::ServerKind as Kind;

impl Kind {
    /// The configuration section.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Ssh => "[ssh]",
            Kind::Web => "[web]",
        }
    }

    /// The address the configuration asks for (port 0: any).
    pub fn wanted(self, cfg: &Config) -> Option<SocketAddr> {
        let (interface, port) = match self {
            Kind::Ssh => cfg.ssh.as_ref().map(|s| (s.interface, s.port))?,
            Kind::Web => cfg.web.as_ref().map(|s| (s.interface, s.port))?,
        };
        Some(SocketAddr::new(cfg.interfaces[interface].address, port))
    }

    fn index(self) -> usize {
        match self {
            Kind::Ssh => 0,
            Kind::Web => 1,
        }
    }

    fn server(self) -> crate::core::events::Server {
        match self {
            Kind::Ssh => crate::core::events::Server::Ssh,
            Kind::Web => crate::core::events::Server::Web,
        }
    }
}

struct Running {
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// A duplicate of the listening socket, to stop listening at once.
    sock: socket2::Socket,
    stop: watch::Sender<bool>,
}

impl Running {
    fn stop(self) {
        self.task.abort();
        if let Err(e) = self.sock.shutdown(std::net::Shutdown::Both) {
            tracing::debug!("shutdown of the listening socket on {}: {e}", self.addr);
        }
        self.stop.send_replace(true);
    }
}

/// A server bound for a commit, not serving yet.
pub struct Bound {
    kind: Kind,
    listener: TcpListener,
    sock: socket2::Socket,
    /// The SSH server's settings (host key loaded).
    ssh: Option<Arc<russh::server::Config>>,
}

/// What a commit does to the servers: the new ones bound, the ones to stop.
#[derive(Default)]
pub struct Prepared {
    start: Vec<Bound>,
    stop: Vec<Kind>,
}

/// The running `[ssh]` and `[web]` servers.
#[derive(Default)]
pub struct Servers {
    running: Mutex<[Option<Running>; 2]>,
}

impl Servers {
    /// The address a server listens on now.
    pub fn address(&self, kind: Kind) -> Option<SocketAddr> {
        self.running.lock().unwrap()[kind.index()]
            .as_ref()
            .map(|r| r.addr)
    }

    /// Binds the servers that `new` adds or moves; nothing changes yet. An error
    /// (a taken port, an address not on this host) leaves every server as it is.
    pub fn prepare(&self, new: &Config) -> Result<Prepared> {
        let mut p = Prepared::default();
        for kind in [Kind::Ssh, Kind::Web] {
            let current = self.address(kind);
            match (current, kind.wanted(new)) {
                (None, None) => {}
                (Some(_), None) => p.stop.push(kind),
                (Some(cur), Some(want))
                    if cur.ip() == want.ip() && (want.port() == 0 || cur.port() == want.port()) => {
                }
                (cur, Some(want)) => {
                    p.start.push(bind(kind, new, want)?);
                    if cur.is_some() {
                        p.stop.push(kind);
                    }
                }
            }
        }
        Ok(p)
    }

    /// Starts the servers bound by [`Servers::prepare`], then stops the ones they
    /// replace and the ones removed.
    pub fn switch(&self, shared: &Arc<Handles>, p: Prepared) {
        let mut started = Vec::new();
        for b in p.start {
            started.push((b.kind, serve(shared, b)));
        }
        let mut running = self.running.lock().unwrap();
        for kind in p.stop {
            if let Some(old) = running[kind.index()].take() {
                let addr = old.addr;
                old.stop();
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::ServerStopped {
                        server: kind.server(),
                        addr,
                        grace_secs: GRACE.as_secs(),
                    });
            }
        }
        for (kind, r) in started {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::ServerListening {
                    server: kind.server(),
                    addr: r.addr,
                });
            running[kind.index()] = Some(r);
        }
    }

    /// Starts the configured servers (node start); returns their addresses.
    pub fn start(&self, shared: &Arc<Handles>) -> Result<(Option<SocketAddr>, Option<SocketAddr>)> {
        let p = self.prepare(&shared.config.current())?;
        self.switch(shared, p);
        Ok((self.address(Kind::Ssh), self.address(Kind::Web)))
    }
}

/// Where the servers listen, for `status` and the certificate renewal.
impl crate::core::state::ServerControl for Servers {
    fn address(&self, kind: Kind) -> Option<SocketAddr> {
        Servers::address(self, kind)
    }
}

fn bind(kind: Kind, cfg: &Config, addr: SocketAddr) -> Result<Bound> {
    let ssh = match kind {
        Kind::Ssh => Some(crate::adapters::ssh::server_config(cfg)?),
        Kind::Web => None,
    };
    let listener = crate::listeners::bind(addr)
        .with_context(|| format!("{} cannot listen on {addr}", kind.section()))?;
    let sock = socket2::SockRef::from(&listener)
        .try_clone()
        .with_context(|| format!("{}: duplicating the listening socket", kind.section()))?;
    Ok(Bound {
        kind,
        listener,
        sock,
        ssh,
    })
}

fn serve(shared: &Arc<Handles>, b: Bound) -> Running {
    let addr = b
        .listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, rx) = watch::channel(false);
    let task = match (b.kind, b.ssh) {
        (Kind::Ssh, Some(config)) => tokio::spawn(crate::adapters::ssh::serve(
            shared.clone(),
            b.listener,
            config,
            rx,
        )),
        _ => tokio::spawn(crate::adapters::web::serve(shared.clone(), b.listener, rx)),
    };
    Running {
        addr,
        task,
        sock: b.sock,
        stop,
    }
}
