//! The running listeners of a node, and suspending/resuming them.
//!
//! A suspended listener has no listening socket at all, so a connection to
//! its port is refused by the kernel (the appliance's "Offline": nothing is
//! accepted). Sessions already running are separate tasks and go on; after
//! `suspend --delay S` they are told to close at their next command.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::node::Shared;

struct Running {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

#[derive(Default)]
pub struct Listeners {
    inner: Mutex<BTreeMap<String, Running>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerState {
    pub name: String,
    pub address: SocketAddr,
    pub suspended: bool,
}

impl Listeners {
    /// Binds and starts a listener. Port 0 binds any free port; the bound
    /// address is returned and kept, so a resume rebinds the same port.
    pub fn start(&self, shared: &Arc<Shared>, name: &str, addr: SocketAddr) -> Result<SocketAddr> {
        let sock =
            bind(addr).with_context(|| format!("listener {name} cannot listen on {addr}"))?;
        let bound = sock.local_addr()?;
        let task = tokio::spawn(crate::smtp_server::accept_loop(
            shared.clone(),
            name.to_string(),
            sock,
        ));
        if let Some(old) = self.inner.lock().unwrap().insert(
            name.to_string(),
            Running {
                addr: bound,
                task: Some(task),
            },
        ) {
            if let Some(t) = old.task {
                t.abort();
            }
        }
        Ok(bound)
    }

    /// Binds a socket for a listener without starting it (a commit binds
    /// every new socket first, so a failure leaves the running node as is).
    pub fn bind_only(addr: SocketAddr) -> Result<TcpListener> {
        bind(addr)
    }

    /// Starts a listener on a socket bound by [`Listeners::bind_only`].
    pub fn adopt(&self, shared: &Arc<Shared>, name: &str, sock: TcpListener) -> Result<SocketAddr> {
        let bound = sock.local_addr()?;
        let task = tokio::spawn(crate::smtp_server::accept_loop(
            shared.clone(),
            name.to_string(),
            sock,
        ));
        if let Some(old) = self.inner.lock().unwrap().insert(
            name.to_string(),
            Running {
                addr: bound,
                task: Some(task),
            },
        ) {
            if let Some(t) = old.task {
                t.abort();
            }
        }
        Ok(bound)
    }

    /// Stops and forgets a listener (removed by a commit).
    pub fn remove(&self, name: &str) {
        if let Some(old) = self.inner.lock().unwrap().remove(name) {
            if let Some(t) = old.task {
                t.abort();
            }
        }
    }

    /// Suspends the named listeners (all when `names` is empty); returns
    /// those that were running.
    pub fn suspend(&self, names: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (name, r) in self.inner.lock().unwrap().iter_mut() {
            if names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                if let Some(t) = r.task.take() {
                    t.abort();
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// Resumes the named suspended listeners (all when empty); returns the
    /// names now receiving.
    pub fn resume(&self, shared: &Arc<Shared>, names: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut inner = self.inner.lock().unwrap();
        for (name, r) in inner.iter_mut() {
            if names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                if r.task.is_none() {
                    let sock = bind(r.addr).with_context(|| {
                        format!("listener {name} cannot listen on {} again", r.addr)
                    })?;
                    r.task = Some(tokio::spawn(crate::smtp_server::accept_loop(
                        shared.clone(),
                        name.clone(),
                        sock,
                    )));
                }
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    pub fn states(&self) -> Vec<ListenerState> {
        self.inner
            .lock()
            .unwrap()
            .iter()
            .map(|(name, r)| ListenerState {
                name: name.clone(),
                address: r.addr,
                suspended: r.task.is_none(),
            })
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.inner.lock().unwrap().keys().cloned().collect()
    }

    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.inner.lock().unwrap().get(name).map(|r| r.addr)
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(TcpListener::from_std(sock.into())?)
}
