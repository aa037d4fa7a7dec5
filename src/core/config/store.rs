//! `[store]`: where a manager keeps the central quarantines. Without it, the embedded
//! SQLite store under `DATA_DIR/quarantine/` (what quickstart uses); with `url`, a
//! PostgreSQL database (`pvo_quarantine::Store::Postgres`), reached over its Unix socket or
//! loopback as is, and over TCP to another host with TLS checked against `ca`. Only a
//! manager has central quarantines: a gateway refuses the section.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::node::Role;
use crate::core::config::section::{ConfigError, Ctx, Section};

/// `[store]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreConfig {
    /// `postgresql://USER@HOST:PORT/DB`, or PostgreSQL's `key=value` form.
    pub url: String,
    /// The CA that signed the server's certificate (TLS over TCP to another host).
    pub ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub url: Spanned<String>,
    pub ca: Option<String>,
}

impl Section for Option<StoreConfig> {
    const KEY: &'static str = "store";
    type Raw = Raw;
    /// The node's role.
    type Needs<'a> = Role;

    fn validate(
        raw: Option<Raw>,
        ctx: &Ctx<'_>,
        role: Role,
    ) -> Result<Option<StoreConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        if role != Role::Manager {
            return ctx.err(
                Some(raw.url.span()),
                "store.url",
                "a gateway keeps its local quarantines in its own data directory; allowed: [store] on a manager only (remove the section)",
            );
        }
        let url = raw.url.get_ref().trim().to_string();
        if !(url.starts_with("postgresql://")
            || url.starts_with("postgres://")
            || url.contains('='))
        {
            return ctx.err(
                Some(raw.url.span()),
                "store.url",
                format!("{url:?} is not a PostgreSQL address; allowed: \"postgresql://USER@HOST:PORT/DATABASE\" or \"host=HOST port=PORT user=USER dbname=DATABASE\" (leave [store] out for the embedded store)"),
            );
        }
        Ok(Some(StoreConfig {
            url,
            ca: raw.ca.as_deref().map(|p| ctx.resolve(p)),
        }))
    }
}
