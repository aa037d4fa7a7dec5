//! `[cpq]`: this node's part in the centralized quarantines — its id, the hidden
//! `cpq_listener` (added here with its HAT and the two policies it names), a
//! gateway's mode and manager, a manager's enrolled gateways, quota and migration
//! wizard settings.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::core::config::interfaces::{self, Interface};
use crate::core::config::listeners::{
    Behavior, HatEntry, Listener, ListenerType, Policy, RatAction, RatEntry, SenderPattern,
};
use crate::core::config::node::Role;
use crate::core::config::routes::parse_host_port;
use crate::core::config::section::{ConfigError, Ctx, Section};

pub use crate::core::envelope::{CPQ_HOST, CPQ_RELEASE_HOST};
/// The hidden listener of both roles.
pub const CPQ_LISTENER: &str = "cpq_listener";

/// Where a gateway keeps what its scans quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpqMode {
    /// In its own local quarantines.
    Local,
    /// On the manager (centralized PVO quarantines).
    Central,
}

/// A gateway enrolled on a manager: where released messages go.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnrolledGateway {
    pub id: String,
    pub address: IpAddr,
    pub port: u16,
    /// Added with `applianceconfig`: the gateway's SSH port, the user the
    /// manager logs in as (with its key) and the host key fingerprint seen.
    pub ssh_port: Option<u16>,
    pub ssh_user: String,
    pub ssh_host_key: Option<String>,
    /// The serial number (hex) of the CPQ certificate issued to it: the only one the
    /// manager accepts from it (`trust::PeerPolicy`). `None`: enrolled by an
    /// older version, any certificate with its id.
    pub serial: Option<String>,
}

/// `[cpq]`: this node's part in the centralized quarantines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cpq {
    /// This node's name in the deployment (the CN of its certificate): a gateway id.
    pub node_id: String,
    /// The cpq_listener's interface (index into `Config::interfaces`).
    pub interface: usize,
    pub port: u16,
    /// The deployment CA certificate, this node's certificate and key (`trust`).
    pub dir: PathBuf,
    /// Gateway: local or central quarantines.
    pub mode: CpqMode,
    /// Gateway: every manager of the deployment, in the order they are tried
    /// (`manager = ["m1:7025", "m2:7025"]`: several managers on one store).
    pub managers: Vec<(String, u16)>,
    /// Manager: the enrolled gateways.
    pub gateways: Vec<EnrolledGateway>,
    /// Manager: `cpq_quota`, the space the central quarantines may use (bytes).
    pub quota: Option<u64>,
    /// Manager: the migration wizard's settings (`pvoconfig migration`), once run.
    pub migration: Option<Migration>,
    /// Gateway: who is mailed when its local quarantines have migrated to the manager
    /// (`notify = ["admin@example.com"]`; empty: nobody).
    pub notify: Vec<String>,
    /// Manager: seconds between status checks of each gateway over SSH (hidden, 30).
    pub status_poll: u64,
}

/// How gateways' local quarantines map to central ones (the migration wizard).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    /// Automatic: by name. Custom: by `map`, by name for what it does not list.
    pub custom: bool,
    /// Who ran the wizard (its settings need an Administrator).
    pub set_by: String,
    /// Custom mappings: (gateway id, local quarantine, central quarantine).
    pub map: Vec<(String, String, String)>,
}

impl Migration {
    #[cfg(test)]
    fn with_set_by(mut self, who: &str) -> Migration {
        self.set_by = who.into();
        self
    }

    /// The central quarantine a gateway's local quarantine goes to.
    pub fn central_for<'a>(&'a self, gateway: &str, local: &'a str) -> &'a str {
        if self.custom {
            if let Some((_, _, c)) = self
                .map
                .iter()
                .find(|(g, l, _)| g == gateway && l.eq_ignore_ascii_case(local))
            {
                return c;
            }
        }
        local
    }
}

impl Cpq {
    pub fn central(&self) -> bool {
        self.mode == CpqMode::Central && !self.managers.is_empty()
    }

    /// Gateway: the first manager's cpq_listener (the one tried first).
    pub fn manager(&self) -> Option<&(String, u16)> {
        self.managers.first()
    }

    /// The managers as `host:port, host:port` (`-` for none).
    pub fn managers_text(&self) -> String {
        if self.managers.is_empty() {
            return "-".into();
        }
        self.managers
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The ids of the added gateways the manager can reach over SSH.
    pub fn ssh_gateway_ids(&self) -> Vec<String> {
        self.gateways
            .iter()
            .filter(|g| g.ssh_port.is_some())
            .map(|g| g.id.clone())
            .collect()
    }
}

/// Whether `s` is a certificate serial as `trust` writes them (1-40 bytes of
/// hex): what an enrolled gateway's `serial` must be.
pub fn is_serial(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.len().is_multiple_of(2)
        && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub node_id: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub dir: Option<String>,
    pub mode: Option<Spanned<String>>,
    pub manager: Option<Spanned<Managers>>,
    pub quota: Option<Spanned<i64>>,
    #[serde(default)]
    pub gateway: Vec<RawGateway>,
    pub migration: Option<RawMigration>,
    #[serde(default)]
    pub notify: Vec<Spanned<String>>,
    /// Hidden: seconds between the manager's status checks of its gateways.
    pub status_poll: Option<Spanned<i64>>,
}

/// `manager = "HOST:PORT"` or, for several managers on one store, a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Managers {
    One(String),
    Many(Vec<String>),
}

impl Managers {
    fn items(&self) -> Vec<&str> {
        match self {
            Managers::One(s) => vec![s.as_str()],
            Managers::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigration {
    pub mode: Spanned<String>,
    pub set_by: Option<String>,
    #[serde(default)]
    pub map: Vec<RawMap>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMap {
    pub gateway: Spanned<String>,
    pub local: Spanned<String>,
    pub central: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub id: Spanned<String>,
    pub address: Spanned<String>,
    pub port: Option<Spanned<i64>>,
    pub ssh_port: Option<Spanned<i64>>,
    pub ssh_user: Option<String>,
    pub ssh_host_key: Option<String>,
    pub serial: Option<Spanned<String>>,
}

/// What `[cpq]` resolves against, and the policies and listeners it adds the
/// hidden `cpq_listener` (and its two policies) to.
pub struct CpqNeeds<'a> {
    pub role: Role,
    pub hostname: &'a str,
    pub data_dir: &'a Path,
    pub interfaces: &'a [Interface],
    pub policies: &'a mut Vec<Policy>,
    pub listeners: &'a mut Vec<Listener>,
}

impl Section for Option<Cpq> {
    const KEY: &'static str = "cpq";
    type Raw = Raw;
    type Needs<'a> = CpqNeeds<'a>;

    fn validate(
        raw: Option<Raw>,
        ctx: &Ctx<'_>,
        needs: CpqNeeds<'_>,
    ) -> Result<Option<Cpq>, ConfigError> {
        raw.map(|c| cpq(ctx, c, needs)).transpose()
    }
}

/// Validates `[cpq]` and adds the hidden `cpq_listener` (HAT: RELAYLIST of
/// the peers -> $RELAYED, ALL -> $BLOCKED; RAT: ALL -> ACCEPT).
fn cpq(ctx: &Ctx<'_>, c: Raw, needs: CpqNeeds<'_>) -> Result<Cpq, ConfigError> {
    let CpqNeeds {
        role,
        hostname,
        data_dir,
        interfaces,
        policies,
        listeners,
    } = needs;
    let node_id = match &c.node_id {
        Some(n) => {
            if !pvo_proto::cpq::is_identifier(n.get_ref()) {
                return ctx.err(
                    Some(n.span()),
                    "cpq.node_id",
                    format!(
                        "\"{}\" is not a node id; allowed: 1-128 of A-Z a-z 0-9 . - _ :",
                        n.get_ref()
                    ),
                );
            }
            n.get_ref().clone()
        }
        None => hostname.to_string(),
    };
    let interface = match &c.interface {
        Some(s) => interfaces::position(interfaces, s.get_ref()).map_or_else(
            || {
                ctx.err(
                    Some(s.span()),
                    "cpq.interface",
                    format!(
                        "unknown interface \"{}\"; allowed: the name of an [[interface]]",
                        s.get_ref()
                    ),
                )
            },
            Ok,
        )?,
        None if interfaces.is_empty() => {
            return ctx.err(
                None,
                "cpq.interface",
                "no [[interface]] for the cpq_listener; allowed: define one",
            )
        }
        None => 0,
    };
    let port = ctx.int(&c.port, "cpq.port", 0, 65535, 7025)? as u16;
    if port != 0
        && listeners.iter().any(|l| {
            l.port == port && interfaces[l.interface].address == interfaces[interface].address
        })
    {
        return ctx.err(
            c.port.as_ref().map(|p| p.span()),
            "cpq.port",
            format!(
                "another listener already uses {}:{port}; allowed: a free port (default 7025)",
                interfaces[interface].address
            ),
        );
    }
    let mode = match c.mode.as_ref().map(|m| m.get_ref().to_ascii_lowercase()) {
        None => CpqMode::Local,
        Some(m) if m == "local" => CpqMode::Local,
        Some(m) if m == "central" => CpqMode::Central,
        Some(other) => {
            return ctx.err(
                c.mode.as_ref().map(|m| m.span()),
                "cpq.mode",
                format!("\"{other}\" is not a mode; allowed: \"local\", \"central\""),
            )
        }
    };
    let mut managers: Vec<(String, u16)> = Vec::new();
    if let Some(m) = &c.manager {
        let items = m.get_ref().items();
        if items.is_empty() {
            return ctx.err(Some(m.span()), "cpq.manager", "an empty list names no manager; allowed: manager = \"HOST:PORT\" or a list of the deployment's managers such as [\"10.10.10.1:7025\", \"10.10.10.2:7025\"]");
        }
        for item in items {
            let Some(hp) = parse_host_port(item) else {
                return ctx.err(Some(m.span()), "cpq.manager", format!("\"{item}\" is not HOST:PORT; allowed: the manager's cpq_listener such as \"10.10.10.1:7025\" (or a list of them)"));
            };
            if managers.contains(&hp) {
                return ctx.err(
                    Some(m.span()),
                    "cpq.manager",
                    format!("\"{item}\" is listed twice; allowed: each manager once"),
                );
            }
            managers.push(hp);
        }
    }
    if role == Role::Gateway && mode == CpqMode::Central && managers.is_empty() {
        return ctx.err(
            c.mode.as_ref().map(|m| m.span()),
            "cpq.manager",
            "central mode needs the manager's address; allowed: manager = \"HOST:PORT\"",
        );
    }
    if role == Role::Manager && (mode == CpqMode::Central || !managers.is_empty()) {
        return ctx.err(
            c.mode
                .as_ref()
                .map(|m| m.span())
                .or(c.manager.as_ref().map(|m| m.span())),
            "cpq.mode",
            "mode and manager are gateway settings; allowed: remove them on a manager",
        );
    }
    let mut gateways: Vec<EnrolledGateway> = Vec::new();
    for (i, g) in c.gateway.iter().enumerate() {
        let key = format!("cpq.gateway[{i}]");
        if role != Role::Manager {
            return ctx.err(Some(g.id.span()), key, "enrolled gateways belong in a manager's configuration; allowed: remove [[cpq.gateway]] on a gateway");
        }
        if !pvo_proto::cpq::is_identifier(g.id.get_ref()) {
            return ctx.err(
                Some(g.id.span()),
                format!("{key}.id"),
                format!(
                    "\"{}\" is not a gateway id; allowed: 1-128 of A-Z a-z 0-9 . - _ :",
                    g.id.get_ref()
                ),
            );
        }
        if gateways.iter().any(|x| x.id == *g.id.get_ref()) {
            return ctx.err(
                Some(g.id.span()),
                format!("{key}.id"),
                format!(
                    "gateway \"{}\" is enrolled twice; allowed: unique ids",
                    g.id.get_ref()
                ),
            );
        }
        let address: IpAddr = g.address.get_ref().parse().or_else(|_| {
            ctx.err(Some(g.address.span()), format!("{key}.address"), format!("\"{}\" is not an IP address; allowed: the gateway's cpq_listener address such as \"10.10.20.1\"", g.address.get_ref()))
        })?;
        let port = ctx.int(&g.port, &format!("{key}.port"), 1, 65535, 7025)? as u16;
        let ssh_port = match &g.ssh_port {
            Some(_) => Some(ctx.int(&g.ssh_port, &format!("{key}.ssh_port"), 1, 65535, 22)? as u16),
            None => None,
        };
        let serial = match &g.serial {
            Some(s) if is_serial(s.get_ref()) => Some(s.get_ref().to_ascii_lowercase()),
            Some(s) => return ctx.err(Some(s.span()), format!("{key}.serial"), format!("\"{}\" is not a certificate serial number; allowed: the hex digits `pvo manager enroll` wrote (or remove the line to accept any certificate of this gateway)", s.get_ref())),
            None => None,
        };
        gateways.push(EnrolledGateway {
            id: g.id.get_ref().clone(),
            address,
            port,
            ssh_port,
            ssh_user: g.ssh_user.clone().unwrap_or_else(|| "admin".into()),
            ssh_host_key: g.ssh_host_key.clone(),
            serial,
        });
    }
    let quota = match &c.quota {
        Some(_) => Some(ctx.int(&c.quota, "cpq.quota", 1 << 20, 1 << 50, 1 << 30)? as u64),
        None => None,
    };
    let migration = match &c.migration {
        None => None,
        Some(m) => {
            if role != Role::Manager {
                return ctx.err(Some(m.mode.span()), "cpq.migration", "the migration wizard is a manager setting; allowed: remove [cpq.migration] on a gateway");
            }
            let custom = match m.mode.get_ref().to_ascii_lowercase().as_str() {
                "automatic" => false,
                "custom" => true,
                other => {
                    return ctx.err(Some(m.mode.span()), "cpq.migration.mode", format!("\"{other}\" is not a migration mode; allowed: \"automatic\" (local quarantines map to central ones by name), \"custom\""))
                }
            };
            let mut map = Vec::new();
            for (i, x) in m.map.iter().enumerate() {
                if !custom {
                    return ctx.err(Some(x.gateway.span()), format!("cpq.migration.map[{i}]"), "mappings apply to the custom mode; allowed: mode = \"custom\", or remove the [[cpq.migration.map]] tables");
                }
                if !gateways.iter().any(|g| g.id == *x.gateway.get_ref()) {
                    return ctx.err(
                        Some(x.gateway.span()),
                        format!("cpq.migration.map[{i}].gateway"),
                        format!(
                            "gateway \"{}\" is not enrolled; allowed: the id of a [[cpq.gateway]]",
                            x.gateway.get_ref()
                        ),
                    );
                }
                map.push((
                    x.gateway.get_ref().clone(),
                    x.local.get_ref().clone(),
                    x.central.get_ref().clone(),
                ));
            }
            Some(Migration {
                custom,
                set_by: m.set_by.clone().unwrap_or_else(|| "admin".into()),
                map,
            })
        }
    };
    let mut notify = Vec::new();
    for (i, a) in c.notify.iter().enumerate() {
        let v = a.get_ref().trim();
        let ok = !v.is_empty()
            && v.len() <= 254
            && !v.contains(['<', '>', ' ', ','])
            && pvo_proto::address::parse_mailbox(v)
                .is_ok_and(|m| !m.has_routing() && !m.local.is_empty());
        if !ok {
            return ctx.err(
                Some(a.span()),
                format!("cpq.notify[{i}]"),
                format!("\"{}\" is not an email address; allowed: addresses such as \"admin@example.com\", mailed when the local quarantines have migrated to the manager", a.get_ref()),
            );
        }
        if notify.iter().any(|n: &String| n.eq_ignore_ascii_case(v)) {
            return ctx.err(
                Some(a.span()),
                format!("cpq.notify[{i}]"),
                format!("\"{v}\" is listed twice; allowed: each address once"),
            );
        }
        notify.push(v.to_string());
    }
    let dir = c
        .dir
        .as_deref()
        .map(|p| ctx.resolve(p))
        .unwrap_or_else(|| data_dir.join("cpq"));

    // The hidden listener and the two policies its HAT names.
    let mut policy = |name: &str, behavior: Behavior| -> Result<usize, ConfigError> {
        if let Some(i) = policies
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(name))
        {
            if policies[i].behavior != behavior {
                return ctx.err(None, format!("policy {name}"), format!("the cpq_listener needs policy ${name} with behavior \"{}\"; allowed: rename your policy {name}", behavior.as_str()));
            }
            return Ok(i);
        }
        policies.push(Policy {
            name: name.to_string(),
            behavior,
            max_message_size: 1 << 30,
            max_recipients: 100_000,
            max_concurrency: 1000,
            // Gateways and the manager open many connections from one address.
            max_concurrency_per_ip: 1000,
            max_connections_per_ip_per_minute: 0,
        });
        Ok(policies.len() - 1)
    };
    let relayed = policy("RELAYED", Behavior::Relay)?;
    let blocked = policy("BLOCKED", Behavior::Reject)?;
    if listeners
        .iter()
        .any(|l| l.name.eq_ignore_ascii_case(CPQ_LISTENER))
    {
        return ctx.err(None, "listener", "\"cpq_listener\" is reserved for the hidden CPQ listener; allowed: any other name ([cpq] configures it)");
    }
    let peers: Vec<SenderPattern> = match role {
        Role::Manager => gateways
            .iter()
            .map(|g| SenderPattern::Net(IpNet::from(g.address)))
            .collect(),
        Role::Gateway => {
            // The managers by address, or by name once resolved at connect time.
            managers
                .iter()
                .filter_map(|(h, _)| h.parse::<IpAddr>().ok())
                .map(|ip| SenderPattern::Net(IpNet::from(ip)))
                .collect()
        }
    };
    let mut hat = Vec::new();
    if !peers.is_empty() {
        hat.push(HatEntry {
            group: "RELAYLIST".into(),
            senders: peers,
            policy: relayed,
        });
    }
    hat.push(HatEntry {
        group: "ALL".into(),
        senders: vec![SenderPattern::All],
        policy: blocked,
    });
    listeners.push(Listener {
        name: CPQ_LISTENER.to_string(),
        interface,
        port,
        kind: ListenerType::Cpq,
        hat,
        rat: vec![RatEntry {
            recipients: vec!["ALL".into()],
            action: RatAction::Accept,
        }],
    });
    Ok(Cpq {
        node_id,
        interface,
        port,
        dir,
        mode,
        managers,
        gateways,
        quota,
        migration,
        notify,
        status_poll: ctx.int(&c.status_poll, "cpq.status_poll", 1, 3600, 30)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::tests::{parse, GOOD};

    #[test]
    fn a_gateway_lists_the_managers_of_a_deployment_in_order() {
        let gw = |m: &str| {
            format!("{GOOD}\n[cpq]\nnode_id = \"gw1\"\nmode = \"central\"\nmanager = {m}\n")
        };
        let c = parse(&gw("[\"127.0.0.2:7025\", \"m2.example:7026\"]")).unwrap();
        let cpq = c.cpq.as_ref().unwrap();
        assert_eq!(
            cpq.managers,
            vec![
                ("127.0.0.2".to_string(), 7025),
                ("m2.example".to_string(), 7026)
            ]
        );
        assert_eq!(
            cpq.manager().cloned(),
            Some(("127.0.0.2".to_string(), 7025))
        );
        // Both addresses may connect to the cpq_listener; a name is resolved at connect time.
        let l = c.listeners.iter().find(|l| l.name == CPQ_LISTENER).unwrap();
        assert_eq!(l.hat[0].senders.len(), 1);
        let one = parse(&gw("\"127.0.0.2:7025\"")).unwrap();
        assert_eq!(one.cpq.unwrap().managers.len(), 1);
        for (bad, says) in [
            ("[]", "names no manager"),
            ("[\"127.0.0.2:7025\", \"127.0.0.2:7025\"]", "listed twice"),
            (
                "[\"127.0.0.2:7025\", \"m2:port\"]",
                "\"m2:port\" is not HOST:PORT",
            ),
        ] {
            let e = parse(&gw(bad)).unwrap_err();
            assert_eq!(e.key, "cpq.manager", "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn cpq_section_adds_the_hidden_listener_and_checks_roles() {
        let gw = format!(
            "{GOOD}\n[cpq]\nnode_id = \"gw1\"\nmode = \"central\"\nmanager = \"127.0.0.2:7025\"\n"
        );
        let c = parse(&gw).unwrap();
        let cpq = c.cpq.as_ref().unwrap();
        assert!(cpq.central());
        assert_eq!(cpq.port, 7025);
        let l = c.listeners.iter().find(|l| l.name == CPQ_LISTENER).unwrap();
        assert_eq!(l.kind, ListenerType::Cpq);
        assert_eq!(l.hat[0].group, "RELAYLIST");
        assert_eq!(c.policies[l.hat[0].policy].behavior, Behavior::Relay);
        assert_eq!(l.hat[1].group, "ALL");
        assert_eq!(c.policies[l.hat[1].policy].name, "BLOCKED");
        assert_eq!(c.policies[l.hat[1].policy].behavior, Behavior::Reject);
        assert_eq!(l.rat[0].recipients, ["ALL"]);

        let no_manager = format!("{GOOD}\n[cpq]\nmode = \"central\"\n");
        assert_eq!(parse(&no_manager).unwrap_err().key, "cpq.manager");
        let manager_no_cpq =
            "[node]\nrole = \"manager\"\n[[interface]]\nname = \"M\"\naddress = \"127.0.0.2\"\n";
        assert_eq!(parse(manager_no_cpq).unwrap_err().key, "cpq");
        let bad_role = "[node]\nrole = \"hub\"\n";
        let e = parse(bad_role).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("node.role", Some(2)));
        let gw_on_gateway =
            format!("{GOOD}\n[cpq]\n[[cpq.gateway]]\nid = \"gw2\"\naddress = \"127.0.0.3\"\n");
        assert_eq!(parse(&gw_on_gateway).unwrap_err().key, "cpq.gateway[0]");
    }

    #[test]
    fn an_enrolled_gateway_may_carry_its_certificate_serial() {
        let manager = |serial: &str| {
            format!("[node]\nrole = \"manager\"\n[[interface]]\nname = \"M\"\naddress = \"127.0.0.2\"\n[cpq]\n[[cpq.gateway]]\nid = \"gw1\"\naddress = \"127.0.0.1\"\n{serial}")
        };
        let c = parse(&manager("serial = \"4F0a\"\n")).unwrap();
        assert_eq!(c.cpq.unwrap().gateways[0].serial.as_deref(), Some("4f0a"));
        assert_eq!(
            parse(&manager("")).unwrap().cpq.unwrap().gateways[0].serial,
            None
        );
        let e = parse(&manager("serial = \"zz\"\n")).unwrap_err();
        assert_eq!(e.key, "cpq.gateway[0].serial");
        assert!(e.to_string().contains("not a certificate serial"), "{e}");
    }

    #[test]
    fn serials_are_even_runs_of_hex_up_to_40_bytes() {
        let (longest, too_long) = ("00".repeat(40), "00".repeat(41));
        for (s, ok) in [
            ("4f0a", true),
            ("4F0A", true),
            (longest.as_str(), true),
            ("", false),
            ("0", false),
            ("xyz1", false),
            (too_long.as_str(), false),
        ] {
            assert_eq!(is_serial(s), ok, "{s:?}");
        }
    }

    #[test]
    fn cpq_notify_lists_addresses() {
        let base = format!(
            "{GOOD}\n[cpq]\nnode_id = \"gw1\"\nmode = \"central\"\nmanager = \"127.0.0.2:7025\"\n"
        );
        assert!(parse(&base).unwrap().cpq.unwrap().notify.is_empty());
        let two = format!("{base}notify = [\"admin@example.com\", \"Ops@Example.org\"]\n");
        assert_eq!(
            parse(&two).unwrap().cpq.unwrap().notify,
            vec!["admin@example.com", "Ops@Example.org"]
        );
        for bad in [
            "admin",
            "<admin@example.com>",
            "a@b@example.com",
            "a b@example.com",
            "",
        ] {
            let e =
                parse(&format!("{base}notify = [\"ok@example.com\", \"{bad}\"]\n")).unwrap_err();
            assert_eq!(e.key, "cpq.notify[1]", "{bad:?}: {e}");
            assert!(e.to_string().contains("allowed: addresses"), "{e}");
        }
        let twice = format!("{base}notify = [\"a@example.com\", \"A@example.com\"]\n");
        assert_eq!(parse(&twice).unwrap_err().key, "cpq.notify[1]");
    }

    #[test]
    fn the_migration_wizard_maps_local_quarantines() {
        let m = Migration {
            custom: true,
            set_by: "admin".into(),
            map: vec![("gw1".into(), "Policy".into(), "Legal".into())],
        };
        assert_eq!(m.central_for("gw1", "policy"), "Legal");
        assert_eq!(m.central_for("gw1", "Virus"), "Virus");
        assert_eq!(m.central_for("gw2", "Policy"), "Policy");
        let auto = Migration {
            custom: false,
            ..m.clone()
        };
        assert_eq!(auto.central_for("gw1", "Policy"), "Policy");
        let text = "[node]\nrole = \"manager\"\n[[interface]]\nname = \"M\"\naddress = \"127.0.0.2\"\n[cpq]\n[[cpq.gateway]]\nid = \"gw1\"\naddress = \"127.0.0.1\"\n[cpq.migration]\nmode = \"custom\"\nset_by = \"ann\"\n[[cpq.migration.map]]\ngateway = \"gw1\"\nlocal = \"Policy\"\ncentral = \"Legal\"\n";
        let c = parse(text).unwrap();
        assert_eq!(
            c.cpq.unwrap().migration.unwrap(),
            m.clone().with_set_by("ann")
        );
        let unknown = text.replace("gateway = \"gw1\"\nlocal", "gateway = \"gw9\"\nlocal");
        assert_eq!(
            parse(&unknown).unwrap_err().key,
            "cpq.migration.map[0].gateway"
        );
    }
}
