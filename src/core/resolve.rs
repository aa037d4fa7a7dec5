//! Name resolution as the core and the network adapters use it: [`Resolve`] on
//! `state::Handles` (verified reverse DNS for connecting hosts, next hops for delivery,
//! addresses), with its answers. `dns::Resolver` implements it; `node` wires it.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// The result of a reverse lookup as the appliance logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseDns {
    /// The PTR name, if any.
    pub host: Option<String>,
    /// The PTR name resolves back to the address.
    pub verified: bool,
}

/// A next hop for a domain, in preference order.
#[derive(Debug, Clone)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
}

/// A lookup in flight.
pub type Lookup<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A resolver.
pub trait Resolve: Send + Sync {
    /// Reverse DNS with forward confirmation.
    fn reverse(&self, ip: IpAddr) -> Lookup<'_, ReverseDns>;
    /// The next hops of a domain: its MX hosts in preference order, or the domain itself
    /// when it has none. `Err` means a temporary failure.
    fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Result<Vec<NextHop>, String>>;
    /// The addresses of a host. `Err` means it has none or the lookup failed.
    fn addresses<'a>(&'a self, host: &'a str) -> Lookup<'a, Result<Vec<IpAddr>, String>>;
}
