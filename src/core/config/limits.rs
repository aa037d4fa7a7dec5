//! `[limits]`: what one SMTP session may do (line length, bad commands, messages,
//! commands) and how long it may take, including the shorter command timeout of a
//! policy under pressure.

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Limits {
    pub max_line_length: usize,
    pub max_bad_commands: usize,
    pub max_messages_per_session: usize,
    /// Commands of any kind in one session (NOOP/RSET loops included).
    pub max_commands_per_session: usize,
    pub command_timeout: u64,
    /// The command timeout of a session whose policy is under pressure.
    pub command_timeout_under_pressure: u64,
    /// A policy with more than this percentage of its `max_concurrency` open is
    /// under pressure.
    pub pressure_percent: usize,
    pub data_timeout: u64,
    pub session_timeout: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub max_line_length: Option<Spanned<i64>>,
    pub max_bad_commands: Option<Spanned<i64>>,
    pub max_messages_per_session: Option<Spanned<i64>>,
    pub max_commands_per_session: Option<Spanned<i64>>,
    pub command_timeout: Option<Spanned<i64>>,
    pub command_timeout_under_pressure: Option<Spanned<i64>>,
    pub pressure_percent: Option<Spanned<i64>>,
    pub data_timeout: Option<Spanned<i64>>,
    pub session_timeout: Option<Spanned<i64>>,
}

impl Section for Limits {
    const KEY: &'static str = "limits";
    type Raw = Raw;
    type Needs<'a> = ();

    fn validate(raw: Option<Raw>, ctx: &Ctx<'_>, (): ()) -> Result<Limits, ConfigError> {
        let m = raw.unwrap_or_default();
        Ok(Limits {
            max_line_length: ctx.int(
                &m.max_line_length,
                "limits.max_line_length",
                512,
                65_536,
                2048,
            )? as usize,
            max_bad_commands: ctx.int(
                &m.max_bad_commands,
                "limits.max_bad_commands",
                1,
                1000,
                10,
            )? as usize,
            max_messages_per_session: ctx.int(
                &m.max_messages_per_session,
                "limits.max_messages_per_session",
                1,
                1_000_000,
                1000,
            )? as usize,
            max_commands_per_session: ctx.int(
                &m.max_commands_per_session,
                "limits.max_commands_per_session",
                10,
                10_000_000,
                100_000,
            )? as usize,
            command_timeout: ctx.int(&m.command_timeout, "limits.command_timeout", 1, 3600, 300)?
                as u64,
            command_timeout_under_pressure: ctx.int(
                &m.command_timeout_under_pressure,
                "limits.command_timeout_under_pressure",
                1,
                3600,
                10,
            )? as u64,
            pressure_percent: ctx.int(&m.pressure_percent, "limits.pressure_percent", 1, 100, 80)?
                as usize,
            data_timeout: ctx.int(&m.data_timeout, "limits.data_timeout", 1, 7200, 600)? as u64,
            session_timeout: ctx.int(
                &m.session_timeout,
                "limits.session_timeout",
                1,
                86_400,
                1800,
            )? as u64,
        })
    }
}
