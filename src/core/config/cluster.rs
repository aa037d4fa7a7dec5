//! `[cluster]`: the machine's membership of a cluster — the address of the cluster's
//! PostgreSQL, the CA its certificate is checked against over TCP, and the machine's name
//! in the cluster. Only the machine's own file may set it; `clusterconfig create` and
//! `clusterconfig join` write it, `clusterconfig removemachine` takes it out.

use std::path::PathBuf;

use pvo_cluster::Name;
use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Membership {
    /// `postgresql://USER@HOST:PORT/DB`, or PostgreSQL's `key=value` form
    /// (`host=/socket/dir port=5432 user=pvo dbname=pvo`).
    pub url: String,
    /// The CA that signed the store's certificate (TLS over TCP); `None`: no TLS.
    pub ca: Option<PathBuf>,
    /// This machine's name in the cluster.
    #[serde(serialize_with = "as_text")]
    pub machine: Name,
}

fn as_text<S: serde::Serializer>(n: &Name, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub url: Spanned<String>,
    pub ca: Option<String>,
    pub machine: Option<Spanned<String>>,
}

/// The name a machine takes in a cluster when `[cluster] machine` does not say: its host
/// name, or the host name's first label when the whole is longer than a name may be.
pub fn default_machine_name(hostname: &str) -> Option<Name> {
    Name::new(hostname)
        .or_else(|_| Name::new(hostname.split('.').next().unwrap_or("")))
        .ok()
}

impl Section for Option<Membership> {
    const KEY: &'static str = "cluster";
    const MACHINE_ONLY: bool = true;
    type Raw = Raw;
    /// The machine's host name.
    type Needs<'a> = &'a str;

    fn validate(
        raw: Option<Raw>,
        ctx: &Ctx<'_>,
        hostname: &str,
    ) -> Result<Option<Membership>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let url = raw.url.get_ref().trim().to_string();
        if !(url.starts_with("postgresql://")
            || url.starts_with("postgres://")
            || url.contains('='))
        {
            return ctx.err(
                Some(raw.url.span()),
                "cluster.url",
                format!("{url:?} is not a PostgreSQL address; allowed: \"postgresql://USER@HOST:PORT/DATABASE\" or \"host=HOST port=PORT user=USER dbname=DATABASE\""),
            );
        }
        let machine = match &raw.machine {
            Some(m) => Name::new(m.get_ref()).or_else(|e| {
                ctx.err(
                    Some(m.span()),
                    "cluster.machine",
                    format!("{e}; allowed: 1 to 63 letters, digits, '.', '-' and '_'"),
                )
            })?,
            None => match default_machine_name(hostname) {
                Some(n) => n,
                None => {
                    return ctx.err(
                        None,
                        "cluster.machine",
                        format!("the host name {hostname:?} is not a machine name; allowed: set cluster.machine to 1 to 63 letters, digits, '.', '-' and '_'"),
                    )
                }
            },
        };
        Ok(Some(Membership {
            url,
            ca: raw.ca.as_deref().map(|p| ctx.resolve(p)),
            machine,
        }))
    }
}
