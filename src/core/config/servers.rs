//! `[ssh]` and `[web]`: the appliance command set over SSH and the HTTPS server of
//! the web UI, REST API and `/metrics`. Both have the same keys: whether they run,
//! an interface and a port that no listener on that address uses.

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::interfaces::{self, Interface};
use crate::core::config::listeners::Listener;
use crate::core::config::section::{ConfigError, Ctx, Section};

/// `[web]`: the REST API and metrics over HTTPS (`crate::adapters::web`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Web {
    /// Index into `interfaces`.
    pub interface: usize,
    /// 0: a port chosen by the system (tests).
    pub port: u16,
}

/// `[ssh]`: the appliance command set over SSH (`crate::adapters::ssh`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ssh {
    /// Index into `interfaces`.
    pub interface: usize,
    /// 0: a port chosen by the system (tests).
    pub port: u16,
}

/// `[ssh]` and `[web]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub enabled: Option<bool>,
    pub interface: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
}

/// What a server's address is checked against.
pub struct ServerNeeds<'a> {
    pub interfaces: &'a [Interface],
    pub listeners: &'a [Listener],
}

impl Section for Option<Ssh> {
    const KEY: &'static str = "ssh";
    type Raw = Raw;
    type Needs<'a> = ServerNeeds<'a>;

    fn validate(
        raw: Option<Raw>,
        ctx: &Ctx<'_>,
        needs: ServerNeeds<'_>,
    ) -> Result<Option<Ssh>, ConfigError> {
        Ok(match raw {
            Some(s) if s.enabled != Some(false) => {
                let (interface, port) = server(ctx, "ssh", 2222, s, &needs)?;
                Some(Ssh { interface, port })
            }
            _ => None,
        })
    }
}

impl Section for Option<Web> {
    const KEY: &'static str = "web";
    type Raw = Raw;
    type Needs<'a> = ServerNeeds<'a>;

    fn validate(
        raw: Option<Raw>,
        ctx: &Ctx<'_>,
        needs: ServerNeeds<'_>,
    ) -> Result<Option<Web>, ConfigError> {
        Ok(match raw {
            Some(s) if s.enabled != Some(false) => {
                let (interface, port) = server(ctx, "web", 8443, s, &needs)?;
                Some(Web { interface, port })
            }
            _ => None,
        })
    }
}

/// Validates `[ssh]` or `[web]` (`section`): an interface (default the first) and a
/// port (default `default_port`) that no listener on that address uses.
fn server(
    ctx: &Ctx<'_>,
    section: &str,
    default_port: i64,
    s: Raw,
    needs: &ServerNeeds<'_>,
) -> Result<(usize, u16), ConfigError> {
    let ServerNeeds {
        interfaces,
        listeners,
    } = *needs;
    let interface = match &s.interface {
        Some(n) => interfaces::position(interfaces, n.get_ref()).map_or_else(
            || {
                ctx.err(
                    Some(n.span()),
                    format!("{section}.interface"),
                    format!(
                        "unknown interface \"{}\"; allowed: the name of an [[interface]]",
                        n.get_ref()
                    ),
                )
            },
            Ok,
        )?,
        None if interfaces.is_empty() => {
            return ctx.err(
                None,
                format!("{section}.interface"),
                format!("no [[interface]] for the [{section}] server; allowed: define one"),
            )
        }
        None => 0,
    };
    let port = ctx.int(&s.port, &format!("{section}.port"), 0, 65535, default_port)? as u16;
    if port != 0
        && listeners.iter().any(|l| {
            l.port == port && interfaces[l.interface].address == interfaces[interface].address
        })
    {
        return ctx.err(
            s.port.as_ref().map(|p| p.span()),
            format!("{section}.port"),
            format!(
                "a listener already uses {}:{port}; allowed: a free port (default {default_port})",
                interfaces[interface].address
            ),
        );
    }
    Ok((interface, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::tests::{parse, GOOD};

    #[test]
    fn web_section_defaults_and_port_clashes() {
        assert_eq!(parse(GOOD).unwrap().web, None);
        let c = parse(&format!("{GOOD}\n[web]\n")).unwrap();
        assert_eq!(
            c.web,
            Some(Web {
                interface: 0,
                port: 8443
            })
        );
        let off = format!("{GOOD}\n[web]\nenabled = false\n");
        assert_eq!(parse(&off).unwrap().web, None);
        let unknown = format!("{GOOD}\n[web]\ninterface = \"Data\"\n");
        assert_eq!(parse(&unknown).unwrap_err().key, "web.interface");
        let both = format!("{GOOD}\n[ssh]\nport = 2222\n[web]\nport = 2222\n");
        assert_eq!(parse(&both).unwrap_err().key, "web.port");
        let both_any = format!("{GOOD}\n[ssh]\nport = 0\n[web]\nport = 0\n");
        assert!(parse(&both_any).is_ok());
        let bad = format!("{GOOD}\n[web]\nport = 70000\n");
        assert_eq!(parse(&bad).unwrap_err().key, "web.port");
    }
}
