//! `[[policy]]` and `[[listener]]`: the mail flow policies and the listeners whose
//! host access table (HAT) picks one per connection and whose recipient access table
//! (RAT) decides per recipient.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::core::config::interfaces::{self, Interface};
use crate::core::config::section::{ConfigError, Ctx, Section};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    Accept,
    Relay,
    Reject,
    Tcprefuse,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Accept => "ACCEPT",
            Behavior::Relay => "RELAY",
            Behavior::Reject => "REJECT",
            Behavior::Tcprefuse => "TCPREFUSE",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Policy {
    pub name: String,
    pub behavior: Behavior,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_concurrency: usize,
    /// Concurrent connections from one client address (an IPv6 /64 counts as one
    /// address), so that one host cannot take all of `max_concurrency`.
    pub max_concurrency_per_ip: usize,
    /// New connections per minute from one client address; 0: no limit.
    pub max_connections_per_ip_per_minute: usize,
}

/// One entry of a listener's host access table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HatEntry {
    pub group: String,
    pub senders: Vec<SenderPattern>,
    /// Index into `Config::policies`.
    pub policy: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SenderPattern {
    All,
    Net(IpNet),
    /// Exact verified host name.
    Host(String),
    /// ".example.com": any verified host name under that domain.
    Suffix(String),
}

impl fmt::Display for SenderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderPattern::All => f.write_str("ALL"),
            SenderPattern::Net(n) if n.prefix_len() == n.max_prefix_len() => {
                write!(f, "{}", n.addr())
            }
            SenderPattern::Net(n) => write!(f, "{n}"),
            SenderPattern::Host(h) => f.write_str(h),
            SenderPattern::Suffix(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RatAction {
    Accept,
    Reject,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RatEntry {
    pub recipients: Vec<String>,
    pub action: RatAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerType {
    Public,
    Private,
    /// The hidden `cpq_listener`: CPQ (SMTP plus the XPVO commands) over mutual TLS.
    Cpq,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Listener {
    pub name: String,
    /// Index into `Config::interfaces`.
    pub interface: usize,
    pub port: u16,
    pub kind: ListenerType,
    pub hat: Vec<HatEntry>,
    pub rat: Vec<RatEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: Spanned<String>,
    pub behavior: Spanned<String>,
    pub max_message_size: Option<Spanned<i64>>,
    pub max_recipients: Option<Spanned<i64>>,
    pub max_concurrency: Option<Spanned<i64>>,
    pub max_concurrency_per_ip: Option<Spanned<i64>>,
    pub max_connections_per_ip_per_minute: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub interface: Spanned<String>,
    pub port: Spanned<i64>,
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    #[serde(default)]
    pub hat: Vec<RawHat>,
    #[serde(default)]
    pub rat: Vec<RawRat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHat {
    pub group: String,
    pub senders: Vec<Spanned<String>>,
    pub policy: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRat {
    pub recipients: Vec<Spanned<String>>,
    pub action: Spanned<String>,
}

impl Section for Vec<Policy> {
    const KEY: &'static str = "policy";
    type Raw = Vec<RawPolicy>;
    type Needs<'a> = ();

    fn validate(
        raw: Option<Vec<RawPolicy>>,
        ctx: &Ctx<'_>,
        (): (),
    ) -> Result<Vec<Policy>, ConfigError> {
        let mut policies: Vec<Policy> = Vec::new();
        for (i, r) in raw.unwrap_or_default().iter().enumerate() {
            let key = format!("policy[{i}]");
            let name = r.name.get_ref().trim_start_matches('$').to_string();
            if policies.iter().any(|p| p.name.eq_ignore_ascii_case(&name)) {
                return ctx.err(
                    Some(r.name.span()),
                    format!("{key}.name"),
                    format!("policy \"{name}\" is defined twice; allowed: unique names"),
                );
            }
            let behavior = match r.behavior.get_ref().to_ascii_lowercase().as_str() {
                "accept" => Behavior::Accept,
                "relay" => Behavior::Relay,
                "reject" => Behavior::Reject,
                "tcprefuse" => Behavior::Tcprefuse,
                other => {
                    return ctx.err(Some(r.behavior.span()), format!("{key}.behavior"), format!("\"{other}\" is not a behavior; allowed: \"accept\", \"relay\", \"reject\", \"tcprefuse\""))
                }
            };
            let max_concurrency = ctx.int(
                &r.max_concurrency,
                &format!("{key}.max_concurrency"),
                1,
                100_000,
                1000,
            )?;
            // A relaying group is the operator's own hosts (one of them may well be
            // the whole group); any other group is shared by strangers, so by
            // default one address gets a quarter of the policy, at most 10.
            let per_ip_default = if behavior == Behavior::Relay {
                max_concurrency
            } else {
                (max_concurrency / 4).clamp(1, 10)
            };
            policies.push(Policy {
                name,
                behavior,
                max_message_size: ctx.int(
                    &r.max_message_size,
                    &format!("{key}.max_message_size"),
                    1024,
                    1 << 31,
                    10 * 1024 * 1024,
                )? as usize,
                max_recipients: ctx.int(
                    &r.max_recipients,
                    &format!("{key}.max_recipients"),
                    1,
                    100_000,
                    1000,
                )? as usize,
                max_concurrency: max_concurrency as usize,
                max_concurrency_per_ip: match &r.max_concurrency_per_ip {
                    Some(v) if !(1..=max_concurrency).contains(v.get_ref()) => {
                        return ctx.err(
                            Some(v.span()),
                            format!("{key}.max_concurrency_per_ip"),
                            format!(
                                "{} is out of range; allowed: an integer from 1 to the policy's max_concurrency ({max_concurrency})",
                                v.get_ref()
                            ),
                        )
                    }
                    Some(v) => *v.get_ref() as usize,
                    None => per_ip_default as usize,
                },
                max_connections_per_ip_per_minute: ctx.int(
                    &r.max_connections_per_ip_per_minute,
                    &format!("{key}.max_connections_per_ip_per_minute"),
                    0,
                    1_000_000,
                    if behavior == Behavior::Relay { 0 } else { 600 },
                )? as usize,
            });
        }
        Ok(policies)
    }
}

/// What listeners resolve their names against.
pub struct ListenerNeeds<'a> {
    pub interfaces: &'a [Interface],
    pub policies: &'a [Policy],
}

impl Section for Vec<Listener> {
    const KEY: &'static str = "listener";
    type Raw = Vec<RawListener>;
    type Needs<'a> = ListenerNeeds<'a>;

    fn validate(
        raw: Option<Vec<RawListener>>,
        ctx: &Ctx<'_>,
        needs: ListenerNeeds<'_>,
    ) -> Result<Vec<Listener>, ConfigError> {
        let ListenerNeeds {
            interfaces,
            policies,
        } = needs;
        let policy_names = || {
            policies
                .iter()
                .map(|p| format!("\"{}\"", p.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut listeners = Vec::new();
        let mut bound: HashSet<(IpAddr, u16)> = HashSet::new();
        for (i, r) in raw.unwrap_or_default().iter().enumerate() {
            let key = format!("listener[{i}]");
            let Some(interface) = interfaces::position(interfaces, r.interface.get_ref()) else {
                return ctx.err(
                    Some(r.interface.span()),
                    format!("{key}.interface"),
                    format!(
                        "unknown interface \"{}\"; allowed: the name of an [[interface]] ({})",
                        r.interface.get_ref(),
                        interfaces::names(interfaces)
                    ),
                );
            };
            let port = *r.port.get_ref();
            if !(0..=65535).contains(&port) {
                return ctx.err(
                    Some(r.port.span()),
                    format!("{key}.port"),
                    format!("{port} is not a port; allowed: 0 (any free port) to 65535"),
                );
            }
            if port != 0 && !bound.insert((interfaces[interface].address, port as u16)) {
                return ctx.err(
                    Some(r.port.span()),
                    format!("{key}.port"),
                    format!(
                        "another listener already uses {}:{port}; allowed: a free port",
                        interfaces[interface].address
                    ),
                );
            }
            let kind = match r.kind.as_ref().map(|k| k.get_ref().to_ascii_lowercase()) {
                None => ListenerType::Public,
                Some(k) if k == "public" => ListenerType::Public,
                Some(k) if k == "private" => ListenerType::Private,
                Some(other) => {
                    let span = r.kind.as_ref().map(|k| k.span());
                    return ctx.err(
                        span,
                        format!("{key}.type"),
                        format!(
                            "\"{other}\" is not a listener type; allowed: \"public\", \"private\""
                        ),
                    );
                }
            };
            let mut hat = Vec::new();
            for (j, h) in r.hat.iter().enumerate() {
                let hkey = format!("{key}.hat[{j}]");
                let pname = h.policy.get_ref().trim_start_matches('$');
                let Some(policy) = policies
                    .iter()
                    .position(|p| p.name.eq_ignore_ascii_case(pname))
                else {
                    return ctx.err(
                        Some(h.policy.span()),
                        format!("{hkey}.policy"),
                        format!(
                            "unknown policy \"{}\"; allowed: the name of a [[policy]] ({})",
                            h.policy.get_ref(),
                            policy_names()
                        ),
                    );
                };
                let mut senders = Vec::new();
                for s in &h.senders {
                    senders.push(sender_pattern(ctx, s, &format!("{hkey}.senders"))?);
                }
                hat.push(HatEntry {
                    group: h.group.clone(),
                    senders,
                    policy,
                });
            }
            let mut rat = Vec::new();
            for (j, t) in r.rat.iter().enumerate() {
                let tkey = format!("{key}.rat[{j}]");
                let action = match t.action.get_ref().to_ascii_lowercase().as_str() {
                    "accept" => RatAction::Accept,
                    "reject" => RatAction::Reject,
                    other => {
                        return ctx.err(
                            Some(t.action.span()),
                            format!("{tkey}.action"),
                            format!(
                                "\"{other}\" is not a RAT action; allowed: \"accept\", \"reject\""
                            ),
                        )
                    }
                };
                let mut recipients = Vec::new();
                for s in &t.recipients {
                    let v = s.get_ref().trim();
                    let ok = v == "ALL"
                        || pvo_proto::address::parse_mailbox(
                            if v.contains('@') {
                                v.to_string()
                            } else {
                                format!("x@{}", v.trim_start_matches('.'))
                            }
                            .as_str(),
                        )
                        .is_ok();
                    if !ok {
                        return ctx.err(Some(s.span()), format!("{tkey}.recipients"), format!("\"{v}\" is not a recipient pattern; allowed: \"example.com\", \".example.com\", \"user@example.com\" or \"ALL\""));
                    }
                    recipients.push(v.to_string());
                }
                rat.push(RatEntry { recipients, action });
            }
            if listeners
                .iter()
                .any(|l: &Listener| l.name.eq_ignore_ascii_case(r.name.get_ref()))
            {
                return ctx.err(
                    Some(r.name.span()),
                    format!("{key}.name"),
                    format!(
                        "listener \"{}\" is defined twice; allowed: unique names",
                        r.name.get_ref()
                    ),
                );
            }
            listeners.push(Listener {
                name: r.name.get_ref().clone(),
                interface,
                port: port as u16,
                kind,
                hat,
                rat,
            });
        }
        Ok(listeners)
    }
}

fn sender_pattern(
    ctx: &Ctx<'_>,
    s: &Spanned<String>,
    key: &str,
) -> Result<SenderPattern, ConfigError> {
    let v = s.get_ref().trim();
    if v == "ALL" {
        return Ok(SenderPattern::All);
    }
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(SenderPattern::Net(net.trunc()));
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(SenderPattern::Net(IpNet::from(ip)));
    }
    let lower = v.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix('.') {
        if pvo_proto::address::parse_mailbox(&format!("x@{rest}")).is_ok() {
            return Ok(SenderPattern::Suffix(lower));
        }
    } else if pvo_proto::address::parse_mailbox(&format!("x@{lower}")).is_ok()
        && lower.chars().any(|c| c.is_ascii_alphabetic())
    {
        return Ok(SenderPattern::Host(lower));
    }
    ctx.err(
        Some(s.span()),
        key,
        format!("\"{v}\" is not a sender; allowed: an IP address, a CIDR such as \"10.0.0.0/8\", a host name, \".domain\" or \"ALL\""),
    )
}

#[cfg(test)]
mod tests {
    use crate::core::config::tests::{parse, GOOD};

    #[test]
    fn per_address_limits_default_by_behavior_and_are_checked() {
        let accepted =
            "[[policy]]\nname = \"ACCEPTED\"\nbehavior = \"accept\"\nmax_concurrency = 200\n";
        let c = parse(&format!("{GOOD}{accepted}")).unwrap();
        let (relayed, accepted_p) = (&c.policies[0], &c.policies[1]);
        assert_eq!(relayed.max_concurrency_per_ip, relayed.max_concurrency);
        assert_eq!(relayed.max_connections_per_ip_per_minute, 0);
        assert_eq!(accepted_p.max_concurrency_per_ip, 10);
        assert_eq!(accepted_p.max_connections_per_ip_per_minute, 600);
        assert_eq!(c.limits.command_timeout_under_pressure, 10);
        assert_eq!(c.limits.pressure_percent, 80);
        let small = accepted.replace("200", "8");
        let c = parse(&format!("{GOOD}{small}")).unwrap();
        assert_eq!(c.policies[1].max_concurrency_per_ip, 2);

        let too_many = format!("{GOOD}{accepted}max_concurrency_per_ip = 201\n");
        let e = parse(&too_many).unwrap_err();
        assert_eq!(e.key, "policy[1].max_concurrency_per_ip");
        assert_eq!(e.line, Some(too_many.lines().count()));
        assert!(
            e.to_string()
                .contains("201 is out of range; allowed: an integer from 1 to the policy's max_concurrency (200)"),
            "{e}"
        );
        let e = parse(&format!(
            "{GOOD}{accepted}max_connections_per_ip_per_minute = -1\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "policy[1].max_connections_per_ip_per_minute");
        assert!(e.to_string().contains("from 0 to 1000000"), "{e}");
        let e = parse(&format!("{GOOD}[limits]\npressure_percent = 0\n")).unwrap_err();
        assert_eq!(e.key, "limits.pressure_percent");
    }
}
