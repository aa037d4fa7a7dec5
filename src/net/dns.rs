//! Name resolution: verified reverse DNS for connecting hosts, and next hops
//! (MX, then A/AAAA) for delivery.
//!
//! Loopback addresses are answered from `/etc/hosts` only, so tests and local
//! senders never cause a DNS query. Answers, including failures, are cached
//! for a few minutes: a busy listener sees the same senders again and again,
//! and a slow resolver must not slow every connection down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

const CACHE_TTL: Duration = Duration::from_secs(300);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

pub use crate::core::resolve::{NextHop, ReverseDns};

pub struct Resolver {
    inner: Option<TokioResolver>,
    hosts: HashMap<IpAddr, String>,
    cache: Mutex<HashMap<IpAddr, (Instant, ReverseDns)>>,
}

impl Resolver {
    pub fn new() -> Resolver {
        let inner = TokioResolver::builder_with_config(
            hickory_resolver::system_conf::read_system_conf()
                .map(|(c, _)| c)
                .unwrap_or_default(),
            TokioConnectionProvider::default(),
        )
        .with_options({
            let mut o = hickory_resolver::config::ResolverOpts::default();
            o.timeout = LOOKUP_TIMEOUT;
            o.attempts = 1;
            o
        })
        .build();
        Resolver {
            inner: Some(inner),
            hosts: read_hosts_file(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Reverse DNS with forward confirmation, cached.
    pub async fn reverse(&self, ip: IpAddr) -> ReverseDns {
        if let Some((at, r)) = self.cache.lock().unwrap().get(&ip) {
            if at.elapsed() < CACHE_TTL {
                return r.clone();
            }
        }
        let r = self.reverse_uncached(ip).await;
        self.cache
            .lock()
            .unwrap()
            .insert(ip, (Instant::now(), r.clone()));
        r
    }

    async fn reverse_uncached(&self, ip: IpAddr) -> ReverseDns {
        if ip.is_loopback() || ip.is_unspecified() {
            return match self.hosts.get(&ip) {
                Some(h) => ReverseDns {
                    host: Some(h.clone()),
                    verified: true,
                },
                None => ReverseDns {
                    host: None,
                    verified: false,
                },
            };
        }
        let Some(res) = &self.inner else {
            return ReverseDns {
                host: None,
                verified: false,
            };
        };
        let name = match tokio::time::timeout(LOOKUP_TIMEOUT, res.reverse_lookup(ip)).await {
            Ok(Ok(l)) => l
                .iter()
                .next()
                .map(|n| n.to_string().trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        };
        let Some(name) = name else {
            return ReverseDns {
                host: None,
                verified: false,
            };
        };
        let verified =
            match tokio::time::timeout(LOOKUP_TIMEOUT, res.lookup_ip(format!("{name}."))).await {
                Ok(Ok(l)) => l.iter().any(|a| a == ip),
                _ => false,
            };
        ReverseDns {
            host: Some(name),
            verified,
        }
    }

    /// MX hosts of a domain in preference order; the domain itself when it has
    /// no MX (RFC 5321 5.1 implicit MX). `Err` means a temporary failure.
    pub async fn mx(&self, domain: &str) -> Result<Vec<NextHop>, String> {
        let Some(res) = &self.inner else {
            return Err("no resolver".into());
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT * 2, res.mx_lookup(format!("{domain}."))).await {
            Ok(Ok(l)) => {
                let mut v: Vec<(u16, String)> = l
                    .iter()
                    .map(|mx| {
                        (
                            mx.preference(),
                            mx.exchange().to_string().trim_end_matches('.').to_string(),
                        )
                    })
                    .collect();
                v.sort();
                if v.iter().any(|(_, h)| h.is_empty()) {
                    // A null MX (RFC 7505): the domain accepts no mail.
                    return Ok(Vec::new());
                }
                Ok(v.into_iter()
                    .map(|(_, host)| NextHop { host, port: 25 })
                    .collect())
            }
            Ok(Err(e)) if e.is_no_records_found() => Ok(vec![NextHop {
                host: domain.to_string(),
                port: 25,
            }]),
            Ok(Err(e)) => Err(format!("DNS error looking up MX of {domain}: {e}")),
            Err(_) => Err(format!("DNS timeout looking up MX of {domain}")),
        }
    }

    /// Addresses of a host name (or the literal address).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(ip) = self
            .hosts
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(host))
            .map(|(ip, _)| *ip)
        {
            return Ok(vec![ip]);
        }
        let Some(res) = &self.inner else {
            return Err("no resolver".into());
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT * 2, res.lookup_ip(format!("{host}."))).await {
            Ok(Ok(l)) => Ok(l.iter().collect()),
            Ok(Err(e)) => Err(format!("DNS error looking up {host}: {e}")),
            Err(_) => Err(format!("DNS timeout looking up {host}")),
        }
    }
}

/// The node's [`crate::core::resolve::Resolve`] (wired by `node` into `Handles`).
impl crate::core::resolve::Resolve for Resolver {
    fn reverse(&self, ip: IpAddr) -> crate::core::resolve::Lookup<'_, ReverseDns> {
        Box::pin(Resolver::reverse(self, ip))
    }

    fn mx<'a>(
        &'a self,
        domain: &'a str,
    ) -> crate::core::resolve::Lookup<'a, Result<Vec<NextHop>, String>> {
        Box::pin(Resolver::mx(self, domain))
    }

    fn addresses<'a>(
        &'a self,
        host: &'a str,
    ) -> crate::core::resolve::Lookup<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(Resolver::addresses(self, host))
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

/// The first name of each address in `/etc/hosts`.
fn read_hosts_file() -> HashMap<IpAddr, String> {
    let mut map = HashMap::new();
    if let Ok(text) = std::fs::read_to_string("/etc/hosts") {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut it = line.split_whitespace();
            if let (Some(ip), Some(name)) = (it.next(), it.next()) {
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    map.entry(ip).or_insert_with(|| name.to_ascii_lowercase());
                }
            }
        }
    }
    map
}
