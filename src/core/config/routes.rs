//! `[[smtp_route]]`: where mail for a domain goes instead of its MX (next hops or a
//! local maildir), and the `host:port` form every next hop is written in.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum RouteTarget {
    /// Ordered next hops: (host, port).
    Hosts(Vec<(String, u16)>),
    /// Deliver into a local maildir (absolute path).
    Maildir(PathBuf),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SmtpRoute {
    pub domain: String,
    pub target: RouteTarget,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub domain: Spanned<String>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub maildir: Option<Spanned<String>>,
}

impl Section for Vec<SmtpRoute> {
    const KEY: &'static str = "smtp_route";
    type Raw = Vec<Raw>;
    type Needs<'a> = ();

    fn validate(
        raw: Option<Vec<Raw>>,
        ctx: &Ctx<'_>,
        (): (),
    ) -> Result<Vec<SmtpRoute>, ConfigError> {
        let mut routes = Vec::new();
        for (i, r) in raw.unwrap_or_default().iter().enumerate() {
            let key = format!("smtp_route[{i}]");
            let domain = r
                .domain
                .get_ref()
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let domain = if domain == "all" {
                "ALL".to_string()
            } else {
                domain
            };
            let target = match (&r.hosts, &r.maildir) {
                (Some(hosts), None) => {
                    if hosts.is_empty() {
                        return ctx.err(Some(r.domain.span()), format!("{key}.hosts"), "no hosts; allowed: one or more \"host\", \"host:port\" or \"[1.2.3.4]:port\"");
                    }
                    let mut list = Vec::new();
                    for h in hosts {
                        list.push(parse_host_port(h.get_ref()).map_or_else(
                            || ctx.err(Some(h.span()), format!("{key}.hosts"), format!("\"{}\" is not a next hop; allowed: \"host\", \"host:port\" or \"[1.2.3.4]:port\"", h.get_ref())),
                            Ok,
                        )?);
                    }
                    RouteTarget::Hosts(list)
                }
                (None, Some(dir)) => RouteTarget::Maildir(ctx.resolve(dir.get_ref())),
                _ => {
                    return ctx.err(
                        Some(r.domain.span()),
                        key,
                        "a route needs exactly one of hosts = [...] or maildir = \"dir\"",
                    )
                }
            };
            routes.push(SmtpRoute { domain, target });
        }
        Ok(routes)
    }
}

/// Parses "host", "host:port", "[1.2.3.4]" or "[1.2.3.4]:port" (default port 25).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip().to_string(), sa.port()));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        host.parse::<IpAddr>().ok()?;
        let port = match tail {
            "" => 25,
            t => t.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()?),
        Some(_) => return None,
        None => (s, 25),
    };
    if host.parse::<IpAddr>().is_err()
        && pvo_proto::address::parse_mailbox(&format!("x@{host}")).is_err()
    {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("mx.example.com"),
            Some(("mx.example.com".into(), 25))
        );
        assert_eq!(
            parse_host_port("mx.example.com:2525"),
            Some(("mx.example.com".into(), 2525))
        );
        assert_eq!(parse_host_port("[::1]:26"), Some(("::1".into(), 26)));
        assert_eq!(
            parse_host_port("127.0.0.1"),
            None.or(Some(("127.0.0.1".into(), 25)))
        );
        assert_eq!(parse_host_port("a b"), None);
    }
}
