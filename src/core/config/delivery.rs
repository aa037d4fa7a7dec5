//! `[delivery]` (outbound connections and the bounce profile: retries, queue
//! lifetime, DSNs) and `[[destination]]` (per-domain concurrency and TLS mode).

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::interfaces::{self, Interface};
use crate::core::config::section::{ConfigError, Ctx, Section};
use crate::core::config::tls::{tls_mode, TlsMode};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Destination {
    pub domain: String,
    pub max_concurrency: usize,
    pub tls: TlsMode,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BounceProfile {
    pub initial_retry: u64,
    pub max_retry: u64,
    pub max_queue_lifetime: u64,
    pub max_retries: u32,
    pub send_dsn: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    /// `None` = Auto; otherwise index into `Config::interfaces`.
    pub default_interface: Option<usize>,
    pub max_concurrency: usize,
    pub max_messages_per_connection: usize,
    pub bounce: BounceProfile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub default_interface: Option<Spanned<String>>,
    pub max_concurrency: Option<Spanned<i64>>,
    pub max_messages_per_connection: Option<Spanned<i64>>,
    pub bounce: Option<RawBounce>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBounce {
    pub initial_retry: Option<Spanned<i64>>,
    pub max_retry: Option<Spanned<i64>>,
    pub max_queue_lifetime: Option<Spanned<i64>>,
    pub max_retries: Option<Spanned<i64>>,
    pub send_dsn: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub domain: Spanned<String>,
    pub max_concurrency: Option<Spanned<i64>>,
    pub tls: Option<Spanned<String>>,
}

impl Section for Delivery {
    const KEY: &'static str = "delivery";
    type Raw = Raw;
    type Needs<'a> = &'a [Interface];

    fn validate(
        raw: Option<Raw>,
        ctx: &Ctx<'_>,
        interfaces: &[Interface],
    ) -> Result<Delivery, ConfigError> {
        let d = raw.unwrap_or_default();
        let default_interface = match &d.default_interface {
            None => None,
            Some(s) if s.get_ref().eq_ignore_ascii_case("auto") => None,
            Some(s) => Some(interfaces::position(interfaces, s.get_ref()).map_or_else(
                || ctx.err(Some(s.span()), "delivery.default_interface", format!("unknown interface \"{}\"; allowed: \"Auto\" or the name of an [[interface]] ({})", s.get_ref(), interfaces::names(interfaces))),
                Ok,
            )?),
        };
        let b = d.bounce.unwrap_or_default();
        Ok(Delivery {
            default_interface,
            max_concurrency: ctx.int(
                &d.max_concurrency,
                "delivery.max_concurrency",
                1,
                10_000,
                500,
            )? as usize,
            max_messages_per_connection: ctx.int(
                &d.max_messages_per_connection,
                "delivery.max_messages_per_connection",
                1,
                1000,
                50,
            )? as usize,
            bounce: BounceProfile {
                initial_retry: ctx.int(
                    &b.initial_retry,
                    "delivery.bounce.initial_retry",
                    1,
                    86_400,
                    60,
                )? as u64,
                max_retry: ctx.int(
                    &b.max_retry,
                    "delivery.bounce.max_retry",
                    1,
                    86_400 * 7,
                    3600,
                )? as u64,
                max_queue_lifetime: ctx.int(
                    &b.max_queue_lifetime,
                    "delivery.bounce.max_queue_lifetime",
                    1,
                    86_400 * 30,
                    259_200,
                )? as u64,
                max_retries: ctx.int(
                    &b.max_retries,
                    "delivery.bounce.max_retries",
                    0,
                    10_000,
                    100,
                )? as u32,
                send_dsn: b.send_dsn.unwrap_or(true),
            },
        })
    }
}

impl Section for Vec<Destination> {
    const KEY: &'static str = "destination";
    type Raw = Vec<RawDestination>;
    /// `[tls.outbound] default`, the mode of a destination that names none.
    type Needs<'a> = TlsMode;

    fn validate(
        raw: Option<Vec<RawDestination>>,
        ctx: &Ctx<'_>,
        default_tls: TlsMode,
    ) -> Result<Vec<Destination>, ConfigError> {
        let mut destinations = Vec::new();
        for (i, r) in raw.unwrap_or_default().iter().enumerate() {
            let key = format!("destination[{i}]");
            destinations.push(Destination {
                domain: r
                    .domain
                    .get_ref()
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
                max_concurrency: ctx.int(
                    &r.max_concurrency,
                    &format!("{key}.max_concurrency"),
                    1,
                    10_000,
                    50,
                )? as usize,
                tls: match &r.tls {
                    None => default_tls,
                    Some(s) => tls_mode(ctx, s, &format!("{key}.tls"))?,
                },
            });
        }
        Ok(destinations)
    }
}
