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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::core::config::{Config, HatEntry, SenderPattern};
use crate::core::resolve::ReverseDns;
use crate::core::state::{
    AccessHandle, ConfigHandle, CpqHandle, MailHandle, ScanHandle, TlsHandle,
};

/// The handles the SMTP server uses: the configuration, the mail path, the resolver
/// (reverse DNS of a client), the inbound and CPQ TLS configurations, the idle-session
/// disconnect of `suspend` (a receiver of the control handle's), and what a received message goes to: the scanning pipeline (scan) and, on
/// the CPQ listener, the CPQ services (cpq; access for the role behind a preflight).
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    pub resolver: Arc<dyn crate::core::resolve::Resolve>,
    pub tls: Arc<TlsHandle>,
    pub scan: Arc<ScanHandle>,
    pub cpq: Arc<CpqHandle>,
    pub access: Arc<AccessHandle>,
    pub disconnect: tokio::sync::watch::Receiver<bool>,
}

impl From<&Deps> for crate::core::cpq::handles::Deps {
    fn from(d: &Deps) -> Self {
        crate::core::cpq::handles::Deps {
            config: d.config.clone(),
            mail: d.mail.clone(),
            scan: d.scan.clone(),
            cpq: d.cpq.clone(),
        }
    }
}

impl From<&Deps> for crate::core::scanning::pipeline::Deps {
    fn from(d: &Deps) -> Self {
        crate::core::scanning::pipeline::Deps {
            config: d.config.clone(),
            mail: d.mail.clone(),
            scan: d.scan.clone(),
        }
    }
}

pub use session::Session;

/// Connection counts per mail flow policy (`max_concurrency`) and per client
/// address within it (`max_concurrency_per_ip`), and each address's recent
/// connections (`max_connections_per_ip_per_minute`), for one listener.
#[derive(Default)]
pub struct Concurrency {
    inner: Mutex<Counts>,
}

/// (listener, policy) indices.
type PolicyKey = (usize, usize);

#[derive(Default)]
struct Counts {
    policies: HashMap<PolicyKey, Arc<Load>>,
    /// Open connections per client address; an entry goes when its last one ends.
    addresses: HashMap<(PolicyKey, IpAddr), usize>,
    rates: HashMap<(PolicyKey, IpAddr), Bucket>,
}

/// The open connections of one policy, and whether that is above its pressure
/// threshold (sessions waiting for a command watch this to shorten their wait).
pub struct Load {
    open: AtomicUsize,
    pressure: watch::Sender<bool>,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            open: AtomicUsize::new(0),
            pressure: watch::Sender::new(false),
        }
    }
}

/// What a session needs to know of its policy's load.
pub struct Pressure {
    load: Arc<Load>,
    rx: watch::Receiver<bool>,
    pub max: usize,
    pub policy: String,
}

impl Pressure {
    /// True while the policy is above its pressure threshold; marks the state seen.
    pub fn high(&mut self) -> bool {
        *self.rx.borrow_and_update()
    }

    /// Resolves when the pressure state changes (never, if it cannot).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn open(&self) -> usize {
        self.load.open.load(Ordering::Relaxed)
    }
}

/// A token bucket: `limit` connections at once, refilled at `limit` per minute.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a connection was not given a slot.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Policy,
    Address,
    Rate,
}

/// Releases a connection slot when the session ends.
pub struct Slot<'a> {
    owner: &'a Concurrency,
    key: PolicyKey,
    client: IpAddr,
    load: Arc<Load>,
    threshold: usize,
}

/// The address limits count: IPv4 addresses (also IPv4-mapped IPv6) as they
/// are, IPv6 addresses by /64, since one host or customer usually holds a
/// whole /64 and could otherwise spread its connections over it.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Above this many remembered addresses, buckets that have refilled are dropped.
const MAX_RATE_ENTRIES: usize = 4096;

/// The policy's limits, as the configuration current at the connection says.
struct Limits {
    max: usize,
    per_ip: usize,
    per_minute: usize,
    /// Open connections above which the policy is under pressure.
    threshold: usize,
}

impl Limits {
    fn of(cfg: &Config, policy: &crate::core::config::Policy) -> Limits {
        Limits {
            max: policy.max_concurrency,
            per_ip: policy.max_concurrency_per_ip,
            per_minute: policy.max_connections_per_ip_per_minute,
            threshold: policy.max_concurrency * cfg.limits.pressure_percent / 100,
        }
    }
}

impl Concurrency {
    fn try_take(&self, key: PolicyKey, ip: IpAddr, limits: &Limits) -> Result<Slot<'_>, Refusal> {
        let client = client_key(ip);
        let mut c = self.inner.lock().unwrap();
        // Every attempt counts against the rate, refused or not: a host that
        // keeps reconnecting into a full policy is the one to slow down.
        if limits.per_minute > 0 && !c.admit(key, client, limits.per_minute) {
            return Err(Refusal::Rate);
        }
        let load = c.policies.entry(key).or_default().clone();
        let open = load.open.load(Ordering::Relaxed);
        if open >= limits.max {
            return Err(Refusal::Policy);
        }
        let mine = c.addresses.entry((key, client)).or_default();
        if *mine >= limits.per_ip {
            return Err(Refusal::Address);
        }
        *mine += 1;
        load.open.store(open + 1, Ordering::Relaxed);
        load.pressure
            .send_if_modified(|p| std::mem::replace(p, open + 1 > limits.threshold) != *p);
        Ok(Slot {
            owner: self,
            key,
            client,
            load,
            threshold: limits.threshold,
        })
    }
}

impl Counts {
    /// Takes a token from the address's bucket; false when it is empty.
    fn admit(&mut self, key: PolicyKey, client: IpAddr, per_minute: usize) -> bool {
        let now = Instant::now();
        let cap = per_minute as f64;
        let refill =
            |b: &Bucket| (b.tokens + now.duration_since(b.at).as_secs_f64() * cap / 60.0).min(cap);
        if self.rates.len() >= MAX_RATE_ENTRIES && !self.rates.contains_key(&(key, client)) {
            self.rates.retain(|_, b| refill(b) < cap);
        }
        let b = self.rates.entry((key, client)).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = refill(b);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }
}

impl Slot<'_> {
    fn pressure(&self, policy: &crate::core::config::Policy) -> Pressure {
        Pressure {
            rx: self.load.pressure.subscribe(),
            load: self.load.clone(),
            max: policy.max_concurrency,
            policy: policy.name.clone(),
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.owner.inner.lock().unwrap();
        let open = self.load.open.load(Ordering::Relaxed).saturating_sub(1);
        self.load.open.store(open, Ordering::Relaxed);
        let threshold = self.threshold;
        self.load
            .pressure
            .send_if_modified(|p| std::mem::replace(p, open > threshold) != *p);
        if let Some(n) = c.addresses.get_mut(&(self.key, self.client)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.addresses.remove(&(self.key, self.client));
            }
        }
    }
}

/// Accepts connections for the listener named `name` until the task is
/// aborted (suspend, or a commit that moves the listener). Each connection
/// looks the listener up in the configuration current at that moment.
pub async fn accept_loop(shared: Deps, name: String, sock: TcpListener) {
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
        // One span per connection, carrying its ICID once it has one.
        let span = tracing::debug_span!("connection", %peer, icid = tracing::field::Empty);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let cfg = shared.config.current();
                if let Some(listener) = cfg.listeners.iter().position(|l| l.name == name) {
                    handle(shared, cfg, listener, stream, peer, &conc).await;
                }
            },
            span,
        ));
    }
}

async fn handle(
    shared: Deps,
    cfg: Arc<Config>,
    listener_idx: usize,
    stream: TcpStream,
    peer: SocketAddr,
    conc: &Concurrency,
) {
    let listener = &cfg.listeners[listener_idx];
    let iface = &cfg.interfaces[listener.interface];
    let icid = shared.mail.ids.next(crate::core::ids::Kind::Icid);
    tracing::Span::current().record("icid", icid);
    // `connections_in` is counted by the `New SMTP ICID` event below.
    shared
        .mail
        .counters
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = OpenGauge(&shared);
    let rdns = shared.resolver.reverse(peer.ip()).await;
    shared
        .mail
        .log
        .emit(crate::core::events::Event::Connection {
            icid,
            cpq: listener.kind == crate::core::config::ListenerType::Cpq,
            interface: &iface.name,
            interface_address: iface.address,
            address: peer.ip(),
            rdns_host: rdns.host.as_deref(),
            verified: rdns.verified,
        });
    let (entry, matched) = match hat_match(&listener.hat, peer.ip(), &rdns) {
        Some(x) => x,
        None => {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::HatNoMatch { icid });
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
            shared
                .mail
                .log
                .emit(crate::core::events::Event::Close { icid });
            return;
        }
    };
    let policy = &cfg.policies[entry.policy];
    shared.mail.log.emit(crate::core::events::Event::HatMatch {
        icid,
        behavior: policy.behavior.as_str(),
        group: &entry.group,
        matched: &matched,
    });
    if policy.behavior == crate::core::config::Behavior::Tcprefuse {
        drop(stream);
        shared
            .mail
            .log
            .emit(crate::core::events::Event::Close { icid });
        return;
    }
    let limits = Limits::of(&cfg, policy);
    let slot = conc.try_take((listener_idx, entry.policy), peer.ip(), &limits);
    let mut session = Session::new(
        shared.clone(),
        cfg.clone(),
        listener_idx,
        icid,
        peer,
        rdns,
        Some(entry.policy),
    );
    let refusal = match &slot {
        Ok(_) => None,
        Err(Refusal::Policy) => Some((
            format!(
                "concurrency limit {} of policy {} reached",
                limits.max, policy.name
            ),
            "421 4.7.0 Too many concurrent connections, try again later\r\n",
        )),
        Err(Refusal::Address) => Some((
            format!(
                "concurrency limit {} per address of policy {} reached for {}",
                limits.per_ip,
                policy.name,
                peer.ip()
            ),
            "421 4.7.0 Too many concurrent connections from your address, try again later\r\n",
        )),
        Err(Refusal::Rate) => Some((
            format!(
                "connection rate limit {} per minute per address of policy {} reached for {}",
                limits.per_minute,
                policy.name,
                peer.ip()
            ),
            "421 4.7.0 Too many connections from your address, try again later\r\n",
        )),
    };
    if let Some((why, reply)) = refusal {
        shared
            .mail
            .log
            .emit(crate::core::events::Event::Refused { icid, why: &why });
        session.run_refused(Box::new(stream), reply).await;
    } else if policy.behavior == crate::core::config::Behavior::Reject {
        session.run_rejected(Box::new(stream)).await;
    } else {
        if let Ok(s) = &slot {
            session.set_pressure(s.pressure(policy));
        }
        session.run(Box::new(stream)).await;
    }
    drop(slot);
    shared
        .mail
        .log
        .emit(crate::core::events::Event::Close { icid });
}

/// Decrements the open-connections gauge however the session ends.
struct OpenGauge<'a>(&'a Deps);

impl Drop for OpenGauge<'_> {
    fn drop(&mut self) {
        self.0
            .mail
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
            return entry.action == crate::core::config::RatAction::Accept;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    #[test]
    fn addresses_count_by_ipv4_address_and_ipv6_64() {
        let k = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:ffff::9"), k("2001:db8:1:2::1"));
        assert_ne!(k("2001:db8:1:3::1"), k("2001:db8:1:2::1"));
    }

    #[test]
    fn slots_are_limited_per_policy_address_and_rate() {
        let c = Concurrency::default();
        let limits = Limits {
            max: 4,
            per_ip: 2,
            per_minute: 0,
            threshold: 2,
        };
        let (a, b, d): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let a1 = c.try_take((0, 0), a, &limits).unwrap();
        let mut p = a1.pressure(&test_policy());
        let _a2 = c.try_take((0, 0), a, &limits).unwrap();
        assert!(!p.high(), "2 of 4 is not above the threshold of 2");
        assert_eq!(c.try_take((0, 0), a, &limits).err(), Some(Refusal::Address));
        // Another policy of the same listener counts on its own.
        let _other = c.try_take((0, 1), a, &limits).unwrap();
        let _b1 = c.try_take((0, 0), b, &limits).unwrap();
        assert!(p.high());
        assert_eq!(p.open(), 3);
        let _b2 = c.try_take((0, 0), b, &limits).unwrap();
        assert_eq!(c.try_take((0, 0), d, &limits).err(), Some(Refusal::Policy));
        drop(a1);
        assert!(p.high(), "3 of 4");
        let _d1 = c.try_take((0, 0), d, &limits).unwrap();

        let rated = Limits {
            per_minute: 3,
            ..limits
        };
        let e: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..3 {
            drop(c.try_take((1, 0), e, &rated).unwrap());
        }
        assert_eq!(c.try_take((1, 0), e, &rated).err(), Some(Refusal::Rate));
        assert!(c.try_take((1, 0), a, &rated).is_ok(), "per address");
    }

    fn test_policy() -> crate::core::config::Policy {
        crate::core::config::Policy {
            name: "ACCEPTED".into(),
            behavior: crate::core::config::Behavior::Accept,
            max_message_size: 1 << 20,
            max_recipients: 10,
            max_concurrency: 4,
            max_concurrency_per_ip: 2,
            max_connections_per_ip_per_minute: 0,
        }
    }

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
