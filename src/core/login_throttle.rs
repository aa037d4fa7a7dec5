//! Login throttling, one table per node shared by every channel that checks a password
//! (the web UI, SSH and `pvo --user` on the admin socket), so a guesser gains nothing
//! by switching channel.
//!
//! Failures are counted twice, independently: per account (from any address) and per
//! source address (for any account). Either count reaching its limit within its window
//! refuses further attempts, without checking the password, until the oldest counted
//! failure leaves the window. A success resets nothing but the failures of that same
//! account from that same address: a guesser who also knows a Guest password cannot
//! clear the address's count for `admin` by logging in as Guest, and a success from one
//! address does not clear what other addresses tried against the account. A refused
//! (throttled) attempt is not counted, so waiting out the window always works. Public
//! key logins are not throttled: a key cannot be guessed.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::core::users::Origin;

/// Failed logins allowed from one address (any account) within [`ADDRESS_WINDOW`].
pub const ADDRESS_MAX: usize = 5;
pub const ADDRESS_WINDOW: Duration = Duration::from_secs(60);
/// Failed logins allowed for one account (from any address) within [`ACCOUNT_WINDOW`].
pub const ACCOUNT_MAX: usize = 10;
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Beyond this many accounts or addresses in the table, stale ones are dropped, so a
/// spray of invented user names cannot grow it without bound.
const MAX_KEYS: usize = 10_000;

/// Where a login attempt came from: an address, or the node's own admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Ip(IpAddr),
    Local,
}

impl From<&Origin> for Source {
    fn from(o: &Origin) -> Source {
        match o {
            Origin::Local => Source::Local,
            Origin::Ssh(a) | Origin::Api(a) | Origin::Web(a) => Source::Ip(a.ip()),
            Origin::JoinToken { peer, .. } => Source::Ip(peer.ip()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ip(ip) => write!(f, "{ip}"),
            Source::Local => f.write_str("the local admin socket"),
        }
    }
}

/// Which count refused the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Account,
    Address,
}

/// A login refused before its password was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Too many failed logins for this {}; try again in {wait_secs} s", match .scope { Scope::Account => "account", Scope::Address => "address" })]
pub struct Throttled {
    pub scope: Scope,
    /// Seconds until an attempt is allowed again (at least 1).
    pub wait_secs: u64,
}

#[derive(Default)]
struct Inner {
    /// Account (lower case) -> its recent failures, oldest first.
    accounts: HashMap<String, VecDeque<(Source, Instant)>>,
    /// Address -> its recent failures, oldest first.
    addresses: HashMap<Source, VecDeque<(String, Instant)>>,
}

/// The failure table of one node.
#[derive(Default)]
pub struct LoginThrottle {
    inner: Mutex<Inner>,
}

/// User names are matched without regard to case (as `Users` does), so `Admin` and
/// `admin` are one account here too.
fn key(account: &str) -> String {
    account.to_ascii_lowercase()
}

/// Drops what left the window; when `max` failures remain, the wait until one more
/// attempt is allowed.
fn wait<T>(
    q: &mut VecDeque<(T, Instant)>,
    max: usize,
    window: Duration,
    now: Instant,
) -> Option<u64> {
    while q
        .front()
        .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= window)
    {
        q.pop_front();
    }
    if q.len() < max {
        return None;
    }
    // Allowed again once all but max - 1 of the counted failures have expired.
    let (_, t) = q[q.len() - max];
    let left = window.saturating_sub(now.saturating_duration_since(t));
    Some(left.as_secs_f64().ceil().max(1.0) as u64)
}

impl LoginThrottle {
    /// `Err` when `account` or `source` has failed too often lately.
    pub fn check(&self, account: &str, source: Source) -> Result<(), Throttled> {
        self.check_at(account, source, Instant::now())
    }

    pub fn check_at(&self, account: &str, source: Source, now: Instant) -> Result<(), Throttled> {
        let mut g = self.inner.lock().unwrap();
        let address = g
            .addresses
            .get_mut(&source)
            .and_then(|q| wait(q, ADDRESS_MAX, ADDRESS_WINDOW, now));
        let acct = g
            .accounts
            .get_mut(&key(account))
            .and_then(|q| wait(q, ACCOUNT_MAX, ACCOUNT_WINDOW, now));
        // When both apply, say the longer wait: that is when a login can work again.
        match (acct, address) {
            (Some(a), Some(b)) if b > a => Err(Throttled {
                scope: Scope::Address,
                wait_secs: b,
            }),
            (Some(a), _) => Err(Throttled {
                scope: Scope::Account,
                wait_secs: a,
            }),
            (None, Some(b)) => Err(Throttled {
                scope: Scope::Address,
                wait_secs: b,
            }),
            (None, None) => Ok(()),
        }
    }

    /// Counts a wrong password (or unknown or disabled user) for both counts.
    pub fn failed(&self, account: &str, source: Source) {
        self.failed_at(account, source, Instant::now())
    }

    pub fn failed_at(&self, account: &str, source: Source, now: Instant) {
        let k = key(account);
        let mut g = self.inner.lock().unwrap();
        if g.accounts.len() > MAX_KEYS || g.addresses.len() > MAX_KEYS {
            g.accounts.retain(|_, q| {
                q.back()
                    .is_some_and(|(_, t)| now.saturating_duration_since(*t) < ACCOUNT_WINDOW)
            });
            g.addresses.retain(|_, q| {
                q.back()
                    .is_some_and(|(_, t)| now.saturating_duration_since(*t) < ADDRESS_WINDOW)
            });
        }
        // Only the newest failures can matter for a limit; more than that are dropped.
        let a = g.accounts.entry(k.clone()).or_default();
        a.push_back((source, now));
        if a.len() > 4 * ACCOUNT_MAX {
            a.pop_front();
        }
        let s = g.addresses.entry(source).or_default();
        s.push_back((k, now));
        if s.len() > 4 * ADDRESS_MAX {
            s.pop_front();
        }
    }

    /// A correct password: forgets the failures of this account from this address only.
    pub fn succeeded(&self, account: &str, source: Source) {
        let k = key(account);
        let mut g = self.inner.lock().unwrap();
        if let Some(q) = g.accounts.get_mut(&k) {
            q.retain(|(s, _)| *s != source);
            if q.is_empty() {
                g.accounts.remove(&k);
            }
        }
        if let Some(q) = g.addresses.get_mut(&source) {
            q.retain(|(a, _)| *a != k);
            if q.is_empty() {
                g.addresses.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Source {
        Source::Ip(s.parse().unwrap())
    }

    #[test]
    fn another_accounts_success_does_not_reset_the_address() {
        // The finding: four admin guesses and a good Guest login, repeated.
        let t = LoginThrottle::default();
        let (a, now) = (ip("192.0.2.1"), Instant::now());
        let mut guesses = 0;
        for round in 0..5 {
            for _ in 0..4 {
                if t.check_at("admin", a, now).is_err() {
                    break;
                }
                t.failed_at("admin", a, now);
                guesses += 1;
            }
            if t.check_at("guest", a, now).is_ok() {
                t.succeeded("guest", a);
            }
            assert!(round < 2 || t.check_at("admin", a, now).is_err());
        }
        assert_eq!(guesses, ADDRESS_MAX);
        let e = t.check_at("admin", a, now).unwrap_err();
        assert_eq!(e.scope, Scope::Address);
        assert_eq!(e.wait_secs, ADDRESS_WINDOW.as_secs());
        assert_eq!(
            e.to_string(),
            "Too many failed logins for this address; try again in 60 s"
        );
        // Another address is not concerned.
        assert!(t.check_at("admin", ip("192.0.2.2"), now).is_ok());
    }

    #[test]
    fn a_success_resets_only_that_account_from_that_address() {
        let t = LoginThrottle::default();
        let (a, now) = (ip("192.0.2.1"), Instant::now());
        for _ in 0..3 {
            t.failed_at("admin", a, now);
        }
        t.failed_at("bob", a, now);
        t.failed_at("bob", ip("192.0.2.9"), now);
        t.succeeded("Admin", a);
        // admin's own failures from a are gone, bob's stay in both counts: bob's one
        // and eve's four make the address's five.
        for _ in 0..4 {
            t.failed_at("eve", a, now);
        }
        assert_eq!(t.check_at("x", a, now).unwrap_err().scope, Scope::Address);
        let g = t.inner.lock().unwrap();
        assert!(!g.accounts.contains_key("admin"));
        assert_eq!(g.accounts["bob"].len(), 2);
    }

    #[test]
    fn an_account_is_locked_whatever_the_addresses() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..ACCOUNT_MAX {
            let a = ip(&format!("198.51.100.{i}"));
            assert!(t.check_at("admin", a, now).is_ok());
            t.failed_at("admin", a, now);
        }
        let e = t.check_at("ADMIN", ip("203.0.113.7"), now).unwrap_err();
        assert_eq!(e.scope, Scope::Account);
        assert_eq!(
            e.to_string(),
            "Too many failed logins for this account; try again in 900 s"
        );
        // Other accounts from those addresses are fine; a success of bob frees nothing.
        t.succeeded("bob", ip("198.51.100.1"));
        assert!(t.check_at("bob", ip("198.51.100.1"), now).is_ok());
        assert!(t.check_at("admin", ip("198.51.100.1"), now).is_err());
        // The local socket counts as one address of its own.
        assert!(t.check_at("bob", Source::Local, now).is_ok());
    }

    #[test]
    fn the_window_slides() {
        let t = LoginThrottle::default();
        let (a, start) = (ip("192.0.2.1"), Instant::now());
        for i in 0..ADDRESS_MAX as u64 {
            t.failed_at(&format!("u{i}"), a, start + Duration::from_secs(10 * i));
        }
        let at = start + Duration::from_secs(45);
        assert_eq!(t.check_at("v", a, at).unwrap_err().wait_secs, 15);
        // Once the first failure is older than the window, one more attempt is allowed.
        assert!(t.check_at("v", a, start + ADDRESS_WINDOW).is_ok());
        t.failed_at("v", a, start + ADDRESS_WINDOW);
        let e = t.check_at("v", a, start + ADDRESS_WINDOW).unwrap_err();
        assert_eq!(e.wait_secs, 10);
    }
}
