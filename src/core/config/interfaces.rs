//! `[[interface]]`: the machine's named addresses, which listeners, delivery and the
//! servers refer to by name. Only the machine's own file may set them.

use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Interface {
    pub name: String,
    pub address: IpAddr,
    pub hostname: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub hostname: Option<String>,
}

/// The index of the interface called `name` (names are case-insensitive).
pub(super) fn position(interfaces: &[Interface], name: &str) -> Option<usize> {
    interfaces
        .iter()
        .position(|x| x.name.eq_ignore_ascii_case(name))
}

/// `"A", "B"`: the names an error offers.
pub(super) fn names(interfaces: &[Interface]) -> String {
    interfaces
        .iter()
        .map(|p| format!("\"{}\"", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Section for Vec<Interface> {
    const KEY: &'static str = "interface";
    const MACHINE_ONLY: bool = true;
    type Raw = Vec<Raw>;
    /// The node's host name, the default of each interface's.
    type Needs<'a> = &'a str;

    fn validate(
        raw: Option<Vec<Raw>>,
        ctx: &Ctx<'_>,
        hostname: &str,
    ) -> Result<Vec<Interface>, ConfigError> {
        let mut interfaces: Vec<Interface> = Vec::new();
        for (i, r) in raw.unwrap_or_default().iter().enumerate() {
            let key = format!("interface[{i}]");
            let address: IpAddr = r.address.get_ref().parse().or_else(|_| {
                ctx.err(Some(r.address.span()), format!("{key}.address"), format!("\"{}\" is not an IP address; allowed: an IPv4 or IPv6 address such as \"127.0.0.1\"", r.address.get_ref()))
            })?;
            if position(&interfaces, r.name.get_ref()).is_some() {
                return ctx.err(
                    Some(r.name.span()),
                    format!("{key}.name"),
                    format!(
                        "interface \"{}\" is defined twice; allowed: unique names",
                        r.name.get_ref()
                    ),
                );
            }
            if r.name.get_ref().eq_ignore_ascii_case("auto") || r.name.get_ref().is_empty() {
                return ctx.err(
                    Some(r.name.span()),
                    format!("{key}.name"),
                    "\"Auto\" and \"\" are reserved; allowed: any other name",
                );
            }
            interfaces.push(Interface {
                name: r.name.get_ref().clone(),
                address,
                hostname: r.hostname.clone().unwrap_or_else(|| hostname.to_string()),
            });
        }
        Ok(interfaces)
    }
}
