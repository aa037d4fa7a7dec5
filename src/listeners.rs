//! The running listeners of a node, and suspending/resuming them.
//!
//! A suspended listener has no listening socket at all, so a connection to
//! its port is refused by the kernel (the appliance's "Offline": nothing is
//! accepted). Sessions already running are separate tasks and go on; after
//! `suspend --delay S` they are told to close at their next command.
//!
//! Suspending takes effect before `suspend` returns. Aborting the accept task
//! alone would close the socket only when the runtime gets round to cancelling
//! the task, so a script that runs `suspendlisteners all` and then probes the
//! port could still be accepted, and a quick `resumelisteners` could find the
//! port still taken. Each running listener therefore keeps a duplicate of its
//! socket's descriptor and shuts the socket down through it: on Linux,
//! `shutdown` of a listening socket stops listening at once and resets the
//! connections waiting in its backlog.
//!
//! Listeners are listed in the order they were started, which is the order of
//! the configuration, as the appliance lists them
//! (`Receiving resumed for euq_listener, cpq_listener.`).
//!
//! Part of the composition root: it starts `smtp_server`'s accept loops with the handles
//! `node` wires into it once they are built ([`Listeners::wire`]), and the commands reach
//! it only through `state::ListenerControl` on `Handles`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::adapters::smtp_server::Deps;

/// An accept task and a duplicate of the socket it accepts on.
struct Accepting {
    task: JoinHandle<()>,
    sock: socket2::Socket,
}

struct Running {
    addr: SocketAddr,
    /// Place in the listing (start order).
    seq: u64,
    /// `None` while suspended.
    accepting: Option<Accepting>,
}

impl Running {
    /// Stops accepting at once; returns whether the listener was accepting.
    fn stop(&mut self) -> bool {
        let Some(a) = self.accepting.take() else {
            return false;
        };
        // Abort first, so the accept loop is not polled again to see the
        // error that the shutdown gives its pending `accept`.
        a.task.abort();
        if let Err(e) = a.sock.shutdown(std::net::Shutdown::Both) {
            tracing::debug!("shutdown of the listening socket on {}: {e}", self.addr);
        }
        true
    }
}

#[derive(Default)]
pub struct Listeners {
    inner: Mutex<Inner>,
    /// What the accept loops receive. The listeners live in the control handle, so they
    /// are wired after it is built; the SMTP server's handles do not hold it.
    deps: std::sync::OnceLock<Deps>,
}

#[derive(Default)]
struct Inner {
    by_name: BTreeMap<String, Running>,
    next_seq: u64,
}

impl Inner {
    /// The listeners in start order.
    fn ordered(&mut self) -> Vec<(&String, &mut Running)> {
        let mut v: Vec<(&String, &mut Running)> = self.by_name.iter_mut().collect();
        v.sort_by_key(|(_, r)| r.seq);
        v
    }

    /// Installs `name` accepting on `addr`, replacing (and stopping) a
    /// listener of the same name but keeping its place in the listing.
    fn install(&mut self, name: &str, addr: SocketAddr, accepting: Accepting) {
        let seq = match self.by_name.get_mut(name) {
            Some(old) => {
                old.stop();
                old.seq
            }
            None => {
                self.next_seq += 1;
                self.next_seq
            }
        };
        let running = Running {
            addr,
            seq,
            accepting: Some(accepting),
        };
        self.by_name.insert(name.to_string(), running);
    }
}

pub use crate::core::state::{ListenerState, Resumed};

/// Starts the accept loop of listener `name` on `sock`.
fn accept(shared: &Deps, name: &str, sock: TcpListener) -> Result<Accepting> {
    let dup = socket2::SockRef::from(&sock)
        .try_clone()
        .with_context(|| format!("listener {name}: duplicating the listening socket"))?;
    let task = tokio::spawn(crate::adapters::smtp_server::accept_loop(
        shared.clone(),
        name.to_string(),
        sock,
    ));
    Ok(Accepting { task, sock: dup })
}

impl Listeners {
    /// Hands the listeners the SMTP server's handles (once, by `node`, before any start).
    pub fn wire(&self, deps: Deps) {
        let _ = self.deps.set(deps);
    }

    fn deps(&self) -> Result<&Deps> {
        self.deps
            .get()
            .context("the listeners are not wired to the node's handles")
    }

    /// Binds and starts a listener. Port 0 binds any free port; the bound
    /// address is returned and kept, so a resume rebinds the same port.
    pub fn start(&self, name: &str, addr: SocketAddr) -> Result<SocketAddr> {
        let sock =
            bind(addr).with_context(|| format!("listener {name} cannot listen on {addr}"))?;
        self.adopt(name, sock)
    }

    /// Binds a socket for a listener without starting it (a commit binds
    /// every new socket first, so a failure leaves the running node as is).
    pub fn bind_only(addr: SocketAddr) -> Result<TcpListener> {
        Ok(bind(addr)?)
    }

    /// Starts a listener on a socket bound by [`Listeners::bind_only`].
    pub fn adopt(&self, name: &str, sock: TcpListener) -> Result<SocketAddr> {
        let bound = sock.local_addr()?;
        if name == crate::core::config::CPQ_LISTENER {
            // The appliance's cpq_listener has a listen queue of 50 (listen()
            // again on a listening socket only changes its backlog).
            socket2::SockRef::from(&sock).listen(50)?;
        }
        let accepting = accept(self.deps()?, name, sock)?;
        self.inner.lock().unwrap().install(name, bound, accepting);
        Ok(bound)
    }

    /// Stops and forgets a listener (removed by a commit).
    pub fn remove(&self, name: &str) {
        if let Some(mut old) = self.inner.lock().unwrap().by_name.remove(name) {
            old.stop();
        }
    }

    /// Suspends the named listeners (all when `names` is empty); returns
    /// those that were running. When it returns, their ports refuse
    /// connections.
    pub fn suspend(&self, names: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (name, r) in self.inner.lock().unwrap().ordered() {
            let selected = names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(name));
            if selected && r.stop() {
                out.push(name.clone());
            }
        }
        out
    }

    /// Resumes the named suspended listeners (all when empty). A listener
    /// whose address cannot be bound again (another program took the port
    /// meanwhile) stays suspended; the others resume all the same.
    pub fn resume(&self, names: &[String]) -> Resumed {
        let mut out = Resumed::default();
        let mut inner = self.inner.lock().unwrap();
        for (name, r) in inner.ordered() {
            if !(names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(name))) {
                continue;
            }
            if r.accepting.is_none() {
                let started = bind(r.addr)
                    .map_err(anyhow::Error::from)
                    .and_then(|sock| accept(self.deps()?, name, sock))
                    .with_context(|| format!("Listener {name} cannot listen on {} again", r.addr));
                match started {
                    Ok(a) => r.accepting = Some(a),
                    Err(e) => {
                        out.failed.push(format!("{e:#}"));
                        continue;
                    }
                }
            }
            out.receiving.push(name.clone());
        }
        out
    }

    /// Every listener, in configuration order.
    pub fn states(&self) -> Vec<ListenerState> {
        self.inner
            .lock()
            .unwrap()
            .ordered()
            .into_iter()
            .map(|(name, r)| ListenerState {
                name: name.clone(),
                address: r.addr,
                suspended: r.accepting.is_none(),
            })
            .collect()
    }

    /// The listener names, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .ordered()
            .into_iter()
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.inner.lock().unwrap().by_name.get(name).map(|r| r.addr)
    }
}

/// A listening TCP socket on `addr` (SO_REUSEADDR, backlog 1024, non-blocking): the
/// SMTP listeners' and the SSH and HTTPS servers' (`servers`).
/// The commands' view of the listeners (through `Handles`).
impl crate::core::state::ListenerControl for Listeners {
    fn address(&self, name: &str) -> Option<SocketAddr> {
        Listeners::address(self, name)
    }

    fn states(&self) -> Vec<ListenerState> {
        Listeners::states(self)
    }

    fn names(&self) -> Vec<String> {
        Listeners::names(self)
    }

    fn suspend(&self, names: &[String]) -> Vec<String> {
        Listeners::suspend(self, names)
    }

    fn resume(&self, names: &[String]) -> Resumed {
        Listeners::resume(self, names)
    }
}

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}
