//! Listeners: accept connections, classify the peer with the host access
//! table (HAT), and run a session for it.
//!
//! The HAT decides everything a connecting host may do: its sender group maps
//! to a mail flow policy whose behaviour (ACCEPT, RELAY, REJECT, TCPREFUSE)
//! and limits the session enforces. Sessions never deliver: they spool and
//! hand the message to the queue manager.
//!
//! # Security
//! Everything a peer sends is untrusted. The session parses commands with
//! `smtp-proto` after framing lines itself (bounded length), and reads DATA
//! with `pvo_proto::data::DataDecoder`, whose only end of data is a raw
//! CRLF.CRLF; relay decisions never trust the local part of an address.

mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

use crate::config::{Config, HatEntry, SenderPattern};
use crate::dns::ReverseDns;
use crate::node::Shared;

pub use session::Session;

/// Connection counts per mail flow policy, for `max_concurrency`.
#[derive(Default)]
pub struct Concurrency {
    counts: Mutex<HashMap<(usize, usize), usize>>,
}

/// Releases a connection slot when the session ends.
pub struct Slot<'a> {
    owner: &'a Concurrency,
    key: (usize, usize),
}

impl Concurrency {
    fn try_take(&self, key: (usize, usize), max: usize) -> Option<Slot<'_>> {
        let mut c = self.counts.lock().unwrap();
        let n = c.entry(key).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { owner: self, key })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.owner.counts.lock().unwrap();
        if let Some(n) = c.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Accepts connections for the listener named `name` until the task is
/// aborted (suspend, or a commit that moves the listener). Each connection
/// looks the listener up in the configuration current at that moment.
pub async fn accept_loop(shared: Arc<Shared>, name: String, sock: TcpListener) {
    let conc = Arc::new(Concurrency::default());
    loop {
        let (stream, peer) = match sock.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let conc = conc.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let cfg = shared.config();
            if let Some(listener) = cfg.listeners.iter().position(|l| l.name == name) {
                handle(shared, cfg, listener, stream, peer, &conc).await;
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    listener_idx: usize,
    stream: TcpStream,
    peer: SocketAddr,
    conc: &Concurrency,
) {
    let listener = &cfg.listeners[listener_idx];
    let iface = &cfg.interfaces[listener.interface];
    let icid = shared.ids.next(crate::ids::Kind::Icid);
    shared
        .counters
        .connections_in
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared
        .counters
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = OpenGauge(&shared);
    let rdns = shared.resolver.reverse(peer.ip()).await;
    let proto = if listener.kind == crate::config::ListenerType::Cpq {
        "CPQ"
    } else {
        "SMTP"
    };
    shared.log.info(format!(
        "New {proto} ICID {icid} interface {} ({}) address {} reverse dns host {} verified {}",
        iface.name,
        iface.address,
        peer.ip(),
        rdns.host.as_deref().unwrap_or("unknown"),
        if rdns.verified { "yes" } else { "no" }
    ));
    let (entry, matched) = match hat_match(&listener.hat, peer.ip(), &rdns) {
        Some(x) => x,
        None => {
            shared
                .log
                .info(format!("ICID {icid} REJECT SG None match none SBRS None"));
            let s = Session::new(
                shared.clone(),
                cfg.clone(),
                listener_idx,
                icid,
                peer,
                rdns,
                None,
            );
            s.run_rejected(Box::new(stream)).await;
            shared.log.info(format!("ICID {icid} close"));
            return;
        }
    };
    let policy = &cfg.policies[entry.policy];
    shared.log.info(format!(
        "ICID {icid} {} SG {} match {} SBRS None",
        policy.behavior.as_str(),
        entry.group,
        matched
    ));
    if policy.behavior == crate::config::Behavior::Tcprefuse {
        drop(stream);
        shared.log.info(format!("ICID {icid} close"));
        return;
    }
    let slot = conc.try_take((listener_idx, entry.policy), policy.max_concurrency);
    let session = Session::new(
        shared.clone(),
        cfg.clone(),
        listener_idx,
        icid,
        peer,
        rdns,
        Some(entry.policy),
    );
    if slot.is_none() {
        shared.log.info(format!(
            "ICID {icid} refused: concurrency limit {} of policy {} reached",
            policy.max_concurrency, policy.name
        ));
        session
            .run_refused(
                Box::new(stream),
                "421 4.7.0 Too many concurrent connections, try again later\r\n",
            )
            .await;
    } else if policy.behavior == crate::config::Behavior::Reject {
        session.run_rejected(Box::new(stream)).await;
    } else {
        session.run(Box::new(stream)).await;
    }
    drop(slot);
    shared.log.info(format!("ICID {icid} close"));
}

/// Decrements the open-connections gauge however the session ends.
struct OpenGauge<'a>(&'a Shared);

impl Drop for OpenGauge<'_> {
    fn drop(&mut self) {
        self.0
            .counters
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The first HAT entry matching the peer, and the sender pattern that matched.
pub fn hat_match<'a>(
    hat: &'a [HatEntry],
    ip: IpAddr,
    rdns: &ReverseDns,
) -> Option<(&'a HatEntry, String)> {
    let host = rdns.host.as_deref().filter(|_| rdns.verified);
    for e in hat {
        for s in &e.senders {
            let hit = match s {
                SenderPattern::All => true,
                SenderPattern::Net(n) => n.contains(&ip),
                SenderPattern::Host(h) => host.is_some_and(|x| x.eq_ignore_ascii_case(h)),
                SenderPattern::Suffix(sfx) => {
                    host.is_some_and(|x| x.to_ascii_lowercase().ends_with(sfx.as_str()))
                }
            };
            if hit {
                return Some((e, s.to_string()));
            }
        }
    }
    None
}

/// True when a recipient may be accepted from a non-relaying sender.
pub fn rat_accepts(cfg: &Config, listener: usize, rcpt: &pvo_proto::address::Mailbox) -> bool {
    for entry in &cfg.listeners[listener].rat {
        if entry
            .recipients
            .iter()
            .any(|p| pvo_proto::address::recipient_matches(p, rcpt))
        {
            return entry.action == crate::config::RatAction::Accept;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    #[test]
    fn first_matching_group_wins() {
        let hat = vec![
            HatEntry {
                group: "RELAYLIST".into(),
                senders: vec![SenderPattern::Net("127.0.0.1/32".parse::<IpNet>().unwrap())],
                policy: 0,
            },
            HatEntry {
                group: "TRUSTED".into(),
                senders: vec![SenderPattern::Suffix(".example.org".into())],
                policy: 1,
            },
            HatEntry {
                group: "ALL".into(),
                senders: vec![SenderPattern::All],
                policy: 2,
            },
        ];
        let none = ReverseDns {
            host: None,
            verified: false,
        };
        assert_eq!(
            hat_match(&hat, "127.0.0.1".parse().unwrap(), &none)
                .unwrap()
                .0
                .group,
            "RELAYLIST"
        );
        assert_eq!(
            hat_match(&hat, "127.0.0.2".parse().unwrap(), &none)
                .unwrap()
                .0
                .group,
            "ALL"
        );
        let verified = ReverseDns {
            host: Some("mx.example.org".into()),
            verified: true,
        };
        assert_eq!(
            hat_match(&hat, "10.1.1.1".parse().unwrap(), &verified)
                .unwrap()
                .0
                .group,
            "TRUSTED"
        );
        let unverified = ReverseDns {
            host: Some("mx.example.org".into()),
            verified: false,
        };
        assert_eq!(
            hat_match(&hat, "10.1.1.1".parse().unwrap(), &unverified)
                .unwrap()
                .0
                .group,
            "ALL"
        );
    }
}
