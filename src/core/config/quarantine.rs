//! `[quarantines]`: the space a gateway's local quarantines may use before
//! free-up-space applies.

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

/// `[quarantines]`, validated.
#[derive(Debug, Clone, Default)]
pub struct Quarantines {
    /// Bytes; `None`: no limit.
    pub quota: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub quota: Option<Spanned<i64>>,
}

impl Section for Quarantines {
    const KEY: &'static str = "quarantines";
    type Raw = Raw;
    type Needs<'a> = ();

    fn validate(raw: Option<Raw>, ctx: &Ctx<'_>, (): ()) -> Result<Quarantines, ConfigError> {
        let quota = match raw.and_then(|q| q.quota) {
            Some(q) => {
                Some(ctx.int(&Some(q), "quarantines.quota", 1 << 20, 1 << 50, 1 << 30)? as u64)
            }
            None => None,
        };
        Ok(Quarantines { quota })
    }
}
