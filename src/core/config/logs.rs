//! `[logs]`: the size at which `mail_logs` is rotated and how many old files are kept.

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Logs {
    pub max_size: u64,
    pub keep: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub max_size: Option<Spanned<i64>>,
    pub keep: Option<Spanned<i64>>,
}

impl Section for Logs {
    const KEY: &'static str = "logs";
    type Raw = Raw;
    type Needs<'a> = ();

    fn validate(raw: Option<Raw>, ctx: &Ctx<'_>, (): ()) -> Result<Logs, ConfigError> {
        let l = raw.unwrap_or_default();
        Ok(Logs {
            max_size: ctx.int(
                &l.max_size,
                "logs.max_size",
                4096,
                1 << 40,
                10 * 1024 * 1024,
            )? as u64,
            keep: ctx.int(&l.keep, "logs.keep", 1, 1000, 10)? as usize,
        })
    }
}
