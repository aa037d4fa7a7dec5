//! The node's configuration: TOML in, a validated [`Config`] out.
//!
//! Parsing happens in two steps. Serde turns each file into raw structs whose
//! interesting values keep their byte span (`toml::Spanned`); validation then
//! resolves names (listener -> interface, HAT -> policy) and ranges. Every error
//! names the file, the line, the key and what is allowed (`section::Ctx`).
//!
//! One module per section holds its typed model, its raw serde model and its
//! validation, all of the same shape (`section::Section`), so that a section can come
//! from any layer of a cluster: [`Config::from_layers`] takes each top-level section
//! from the most specific layer that sets it (machine over group over cluster),
//! refuses machine-only sections (`[node]`, `[[interface]]`) anywhere else, validates
//! it with errors naming that layer's file, and records where it came from
//! ([`Config::origin`]). A single file is one machine layer ([`Config::parse`]).
//!
//! The documented examples are `docs/gateway.example.toml` and
//! `docs/manager.example.toml`.

mod cluster;
mod cpq;
mod delivery;
mod interfaces;
mod limits;
mod listeners;
mod logs;
mod node;
pub mod outbreak_rules;
mod quarantine;
mod routes;
mod scanning;
mod section;
mod servers;
mod store;
mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pvo_scan::dlp::DlpPolicy;
use pvo_scan::filter::FilterRule;
use serde::Deserialize;

pub use crate::core::config::cluster::{default_machine_name, Membership};
pub use crate::core::config::cpq::{
    is_serial, Cpq, EnrolledGateway, Migration, CPQ_HOST, CPQ_LISTENER, CPQ_RELEASE_HOST,
};
pub use crate::core::config::delivery::{Delivery, Destination};
pub use crate::core::config::interfaces::Interface;
pub use crate::core::config::limits::Limits;
pub use crate::core::config::listeners::{
    Behavior, HatEntry, Listener, ListenerType, Policy, RatAction, SenderPattern,
};
pub use crate::core::config::logs::Logs;
pub use crate::core::config::node::Role;
pub use crate::core::config::routes::{parse_host_port, RouteTarget, SmtpRoute};
pub use crate::core::config::scanning::{Antivirus, ClamdAddr, Direction, MailPolicy, ScanConfig};
pub use crate::core::config::section::{ConfigError, Ctx, Layer, Level, Section};
pub use crate::core::config::servers::{Ssh, Web};
pub use crate::core::config::store::StoreConfig;
pub use crate::core::config::tls::{
    cipher_suite_names, effective_suites, suite_name, suite_version, why_unavailable, TlsInbound,
    TlsMode, TlsOutbound, TlsVersion,
};

use crate::core::config::cpq::CpqNeeds;
use crate::core::config::listeners::ListenerNeeds;
use crate::core::config::node::Node;
use crate::core::config::quarantine::Quarantines;
use crate::core::config::scanning::{Outbreak, PolicyNeeds};
use crate::core::config::servers::ServerNeeds;
use crate::core::config::tls::Tls;

/// A validated configuration. Everything that names something else has been resolved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub hostname: String,
    pub data_dir: PathBuf,
    pub interfaces: Vec<Interface>,
    pub policies: Vec<Policy>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<SmtpRoute>,
    pub delivery: Delivery,
    pub destinations: Vec<Destination>,
    pub tls_inbound: TlsInbound,
    pub tls_outbound: TlsOutbound,
    pub logs: Logs,
    pub limits: Limits,
    /// Mail policies and scanning engines (empty: no scanning).
    pub scanning: ScanConfig,
    pub role: Role,
    /// Centralized quarantines (`[cpq]`): the gateway <-> manager link.
    pub cpq: Option<Cpq>,
    /// The SSH server (`[ssh]`); `None`: no SSH.
    pub ssh: Option<Ssh>,
    /// The HTTPS server of the REST API and `/metrics` (`[web]`); `None`: none.
    pub web: Option<Web>,
    /// This machine's membership of a cluster (`[cluster]`); `None`: a machine alone.
    pub cluster: Option<Membership>,
    /// A manager's central store on PostgreSQL (`[store]`); `None`: the embedded one.
    pub store: Option<StoreConfig>,
    /// The layer each section set by some layer came from (see [`Config::origin`]).
    /// Not part of the configuration's JSON, which says what is in force.
    #[serde(skip)]
    origins: BTreeMap<&'static str, String>,
}

/// The file as written: every top-level section, `None` when the file does not set it.
/// The order of the fields is the order serde lists them in an "unknown field" error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: Option<node::Raw>,
    interface: Option<Vec<interfaces::Raw>>,
    policy: Option<Vec<listeners::RawPolicy>>,
    listener: Option<Vec<listeners::RawListener>>,
    smtp_route: Option<Vec<routes::Raw>>,
    delivery: Option<delivery::Raw>,
    destination: Option<Vec<delivery::RawDestination>>,
    tls: Option<tls::Raw>,
    logs: Option<logs::Raw>,
    limits: Option<limits::Raw>,
    antivirus: Option<Antivirus>,
    mail_policy: Option<Vec<MailPolicy>>,
    content_filter: Option<Vec<FilterRule>>,
    dlp_policy: Option<Vec<DlpPolicy>>,
    outbreak: Option<scanning::RawOutbreak>,
    quarantines: Option<quarantine::Raw>,
    cpq: Option<cpq::Raw>,
    ssh: Option<servers::Raw>,
    web: Option<servers::Raw>,
    cluster: Option<cluster::Raw>,
    store: Option<store::Raw>,
}

/// The parsed files of a configuration, most specific (the machine's) first.
struct Layers<'a> {
    files: Vec<(&'a Layer<'a>, RawFile)>,
    origins: BTreeMap<&'static str, String>,
}

impl<'a> Layers<'a> {
    /// Orders the layers (one machine layer, at most one group and one cluster layer)
    /// and parses each.
    fn parse(layers: &'a [Layer<'a>]) -> Result<Layers<'a>, ConfigError> {
        let mut ordered: Vec<&Layer> = layers.iter().collect();
        ordered.sort_by_key(|l| l.level.precedence());
        for pair in ordered.windows(2) {
            if pair[0].level.precedence() == pair[1].level.precedence() {
                return Ctx::new(pair[1]).err(
                    None,
                    "",
                    format!(
                        "a second {} layer (after {}); allowed: one machine layer, at most one group layer and one cluster layer",
                        pair[1].level,
                        pair[0].file.display()
                    ),
                );
            }
        }
        match ordered.first() {
            Some(l) if l.level == Level::Machine => {}
            first => {
                return Err(ConfigError {
                    file: first.map(|l| l.file.to_path_buf()).unwrap_or_default(),
                    line: None,
                    key: String::new(),
                    message: "no machine layer; allowed: the machine's own file, with a group and a cluster layer or without".into(),
                })
            }
        }
        let mut files = Vec::new();
        for layer in ordered {
            let raw: RawFile =
                toml::from_str(layer.text).map_err(|e| Ctx::new(layer).toml_error(&e))?;
            files.push((layer, raw));
        }
        Ok(Layers {
            files,
            origins: BTreeMap::new(),
        })
    }

    /// Validates section `S` from the most specific layer that sets it (`pick` takes
    /// it out of a file), or its defaults with the machine's file named in errors.
    /// `pick` is passed here rather than being part of `Section` so that the section
    /// modules never name `RawFile`, which names them all: their imports go one way.
    fn section<S: Section>(
        &mut self,
        pick: fn(&mut RawFile) -> Option<S::Raw>,
        needs: S::Needs<'_>,
    ) -> Result<S, ConfigError> {
        if S::MACHINE_ONLY {
            for (layer, raw) in self.files.iter_mut().skip(1) {
                if pick(raw).is_some() {
                    let ctx = Ctx::new(layer);
                    return Err(ConfigError {
                        file: layer.file.to_path_buf(),
                        line: ctx.key_line(S::KEY),
                        key: S::KEY.to_string(),
                        message: format!(
                            "\"{}\" is set for each machine, not at {} level; allowed: only in the machine's own file",
                            S::KEY,
                            layer.level
                        ),
                    });
                }
            }
        }
        let found = self
            .files
            .iter_mut()
            .enumerate()
            .find_map(|(i, (_, raw))| pick(raw).map(|r| (i, r)));
        let (index, raw) = match found {
            Some((i, r)) => (i, Some(r)),
            None => (0, None),
        };
        let layer = self.files[index].0;
        if raw.is_some() {
            self.origins.insert(S::KEY, layer.level.to_string());
        }
        S::validate(raw, &Ctx::new(layer), needs)
    }

    /// The layer `key` came from, or the machine's when no layer sets it.
    fn ctx(&self, key: &str) -> Ctx<'a> {
        let machine = self.files[0].0;
        let layer = self
            .files
            .iter()
            .map(|(l, _)| *l)
            .find(|l| self.origins.get(key) == Some(&l.level.to_string()))
            .unwrap_or(machine);
        Ctx::new(layer)
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        Config::parse(&text, path, &base)
    }

    /// Parses configuration text; `file` is only used in error messages and
    /// `base` resolves relative paths. The file is the machine's only layer.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        Config::from_layers(&[Layer::machine(text, file, base)])
    }

    /// Merges and validates the layers of a configuration: each section comes whole
    /// from the most specific layer that sets it (machine, then group, then cluster);
    /// `[node]` and `[[interface]]` only from the machine's.
    pub fn from_layers(layers: &[Layer<'_>]) -> Result<Config, ConfigError> {
        let mut set = Layers::parse(layers)?;
        let node = set.section::<Node>(|f| f.node.take(), ())?;
        let interfaces = set.section::<Vec<Interface>>(|f| f.interface.take(), &node.hostname)?;
        let cluster = set.section::<Option<Membership>>(|f| f.cluster.take(), &node.hostname)?;
        let store = set.section::<Option<StoreConfig>>(|f| f.store.take(), node.role)?;
        let mut policies = set.section::<Vec<Policy>>(|f| f.policy.take(), ())?;
        let mut listeners = set.section::<Vec<Listener>>(
            |f| f.listener.take(),
            ListenerNeeds {
                interfaces: &interfaces,
                policies: &policies,
            },
        )?;
        let routes = set.section::<Vec<SmtpRoute>>(|f| f.smtp_route.take(), ())?;
        let delivery = set.section::<Delivery>(|f| f.delivery.take(), &interfaces)?;
        let tls = set.section::<Tls>(|f| f.tls.take(), ())?;
        let destinations =
            set.section::<Vec<Destination>>(|f| f.destination.take(), tls.outbound.default)?;
        let logs = set.section::<Logs>(|f| f.logs.take(), ())?;
        let limits = set.section::<Limits>(|f| f.limits.take(), ())?;
        let quarantines = set.section::<Quarantines>(|f| f.quarantines.take(), ())?;
        let antivirus = set.section::<Option<Antivirus>>(|f| f.antivirus.take(), ())?;
        let filters = set.section::<Vec<FilterRule>>(|f| f.content_filter.take(), ())?;
        let dlp = set.section::<Vec<DlpPolicy>>(|f| f.dlp_policy.take(), ())?;
        let mail_policies = set.section::<Vec<MailPolicy>>(
            |f| f.mail_policy.take(),
            PolicyNeeds {
                antivirus: antivirus.as_ref(),
                filters: &filters,
                dlp: &dlp,
            },
        )?;
        let outbreak = set.section::<Outbreak>(|f| f.outbreak.take(), ())?;
        let scanning = ScanConfig {
            antivirus,
            policies: mail_policies,
            filters,
            dlp,
            outbreak_rules: outbreak.rules_file,
            quarantine_quota: quarantines.quota,
        };
        if node.role == Role::Manager && !scanning.policies.is_empty() {
            return set.ctx("mail_policy").err(None, "mail_policy", "a manager does not scan mail; allowed: mail policies on gateways only (remove [[mail_policy]] or set node.role = \"gateway\")");
        }
        let cpq = set.section::<Option<Cpq>>(
            |f| f.cpq.take(),
            CpqNeeds {
                role: node.role,
                hostname: &node.hostname,
                data_dir: &node.data_dir,
                interfaces: &interfaces,
                policies: &mut policies,
                listeners: &mut listeners,
            },
        )?;
        let servers = || ServerNeeds {
            interfaces: &interfaces,
            listeners: &listeners,
        };
        let ssh = set.section::<Option<Ssh>>(|f| f.ssh.take(), servers())?;
        let web = set.section::<Option<Web>>(|f| f.web.take(), servers())?;
        if let (Some(s), Some(w)) = (&ssh, &web) {
            if w.port != 0
                && w.port == s.port
                && interfaces[w.interface].address == interfaces[s.interface].address
            {
                return set.ctx("web").err(
                    None,
                    "web.port",
                    format!(
                        "the SSH server already uses port {}; allowed: a free port (default 8443)",
                        w.port
                    ),
                );
            }
        }
        if node.role == Role::Manager && cpq.is_none() {
            return set.ctx("node").err(None, "cpq", "a manager needs a [cpq] section (its cpq_listener and enrolled gateways); allowed: see docs/manager.example.toml");
        }

        Ok(Config {
            hostname: node.hostname,
            data_dir: node.data_dir,
            interfaces,
            policies,
            listeners,
            routes,
            delivery,
            destinations,
            tls_inbound: tls.inbound,
            tls_outbound: tls.outbound,
            logs,
            limits,
            scanning,
            role: node.role,
            cpq,
            ssh,
            web,
            cluster,
            store,
            origins: set.origins,
        })
    }

    /// The layer a top-level section (`"listener"`, `"tls"`...) came from:
    /// `"machine"`, `"group:NAME"` or `"cluster"`; `None` when no layer sets it and
    /// its defaults apply.
    pub fn origin(&self, section: &str) -> Option<&str> {
        self.origins.get(section).map(String::as_str)
    }

    pub fn interface_by_name(&self, name: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name.eq_ignore_ascii_case(name))
    }

    /// The destination controls for a domain: exact entry, else none.
    pub fn destination(&self, domain: &str) -> Option<&Destination> {
        self.destinations
            .iter()
            .find(|d| pvo_proto::address::domain_matches(&d.domain, domain))
    }

    /// The SMTP route for a domain: first matching entry.
    pub fn route(&self, domain: &str) -> Option<&SmtpRoute> {
        self.routes
            .iter()
            .find(|r| r.domain != "ALL" && pvo_proto::address::domain_matches(&r.domain, domain))
            .or_else(|| self.routes.iter().find(|r| r.domain == "ALL"))
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("/tmp"))
    }

    pub(crate) const GOOD: &str = r#"
[node]
hostname = "gw.example.com"
[[interface]]
name = "Management"
address = "127.0.0.1"
[[policy]]
name = "RELAYED"
behavior = "relay"
[[listener]]
name = "IncomingMail"
interface = "Management"
port = 0
  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1", "10.0.0.0/8", ".example.org"]
  policy = "$RELAYED"
  [[listener.rat]]
  recipients = ["example.com"]
  action = "accept"
[[smtp_route]]
domain = "ALL"
hosts = ["[127.0.0.1]:2526"]
"#;

    #[test]
    fn manager_example_file_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/manager.example.toml"
        ))
        .unwrap();
        let c = parse(&text).unwrap();
        assert_eq!(c.role, Role::Manager);
        let cpq = c.cpq.unwrap();
        assert_eq!(cpq.gateways[0].id, "gw1");
        assert_eq!(c.listeners[0].name, CPQ_LISTENER);
    }

    #[test]
    fn example_file_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/gateway.example.toml"
        ))
        .unwrap();
        let c = parse(&text).unwrap();
        assert_eq!(c.listeners[0].name, "IncomingMail");
        assert_eq!(c.delivery.bounce.initial_retry, 60);
    }

    #[test]
    fn good_config_resolves_names() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listeners[0].hat[0].policy, 0);
        assert_eq!(c.listeners[0].hat[0].senders.len(), 3);
        assert_eq!(
            c.routes[0].target,
            RouteTarget::Hosts(vec![("127.0.0.1".into(), 2526)])
        );
        assert_eq!(c.route("anything.org").unwrap().domain, "ALL");
    }

    #[test]
    fn errors_name_line_key_and_allowed_values() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "interface = \"Management\"",
                "interface = \"Nope\"",
                12,
                "allowed: the name of an [[interface]] (\"Management\")",
            ),
            (
                "policy = \"$RELAYED\"",
                "policy = \"NOPE\"",
                17,
                "unknown policy",
            ),
            (
                "behavior = \"relay\"",
                "behavior = \"relai\"",
                9,
                "allowed: \"accept\", \"relay\"",
            ),
            (
                "port = 0",
                "port = 70000",
                13,
                "allowed: 0 (any free port) to 65535",
            ),
            ("\"10.0.0.0/8\"", "\"10.0.0.0/99\"", 16, "is not a sender"),
            (
                "address = \"127.0.0.1\"",
                "address = \"127.0.0.300\"",
                6,
                "is not an IP address",
            ),
            (
                "[\"[127.0.0.1]:2526\"]",
                "[\"127.0.0.1:99999\"]",
                23,
                "is not a next hop",
            ),
        ];
        for (from, to, line, needle) in cases {
            let text = GOOD.replace(from, to);
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(*line), "{to}: {e}");
            assert!(e.to_string().contains(needle), "{to}: {e}");
            assert!(e.to_string().starts_with("test.toml line"), "{e}");
        }
    }

    #[test]
    fn syntax_and_unknown_keys_are_located() {
        let e = parse("[node]\nhostname = \"a.b\"\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse("[node\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    /// `GOOD` split the way a cluster would hold it: the machine's node and
    /// interface, everything else in the cluster file.
    const MACHINE: &str = "[node]\nhostname = \"gw.example.com\"\n[[interface]]\nname = \"Management\"\naddress = \"127.0.0.1\"\n";

    fn cluster() -> String {
        GOOD.split_once("[[policy]]")
            .map(|(_, rest)| format!("[[policy]]{rest}"))
            .unwrap()
    }

    fn merge(layers: &[(Level, &str, &str)]) -> Result<Config, ConfigError> {
        let layers: Vec<Layer> = layers
            .iter()
            .map(|(level, file, text)| Layer {
                level: level.clone(),
                file: Path::new(file),
                base: Path::new("/tmp"),
                text,
            })
            .collect();
        Config::from_layers(&layers)
    }

    #[test]
    fn a_section_comes_from_the_most_specific_layer_that_sets_it() {
        let cluster = cluster();
        let group = "[limits]\nmax_bad_commands = 5\n[logs]\nkeep = 3\n";
        let machine = format!("{MACHINE}[logs]\nkeep = 7\n");
        type Case<'a> = (&'a str, Vec<(Level, &'a str, &'a str)>, usize, usize);
        let cases: Vec<Case> = vec![
            (
                "machine only",
                vec![(Level::Machine, "m.toml", GOOD)],
                10,
                10,
            ),
            (
                "cluster and machine",
                vec![
                    (Level::Cluster, "c.toml", &cluster),
                    (Level::Machine, "m.toml", &machine),
                ],
                10,
                7,
            ),
            (
                "group over cluster, machine over group, in any order",
                vec![
                    (Level::Machine, "m.toml", &machine),
                    (Level::Cluster, "c.toml", &cluster),
                    (Level::Group("eu".into()), "g.toml", group),
                ],
                5,
                7,
            ),
        ];
        for (name, layers, bad_commands, keep) in cases {
            let c = merge(&layers).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.limits.max_bad_commands, bad_commands, "{name}");
            assert_eq!(c.logs.keep, keep, "{name}");
            assert_eq!(c.listeners[0].name, "IncomingMail", "{name}");
            assert_eq!(c.hostname, "gw.example.com", "{name}");
        }
        let c = merge(&[
            (Level::Cluster, "c.toml", &cluster),
            (Level::Group("eu".into()), "g.toml", group),
            (Level::Machine, "m.toml", &machine),
        ])
        .unwrap();
        for (section, origin) in [
            ("node", Some("machine")),
            ("interface", Some("machine")),
            ("logs", Some("machine")),
            ("limits", Some("group:eu")),
            ("listener", Some("cluster")),
            ("policy", Some("cluster")),
            ("tls", None),
        ] {
            assert_eq!(c.origin(section), origin, "{section}");
        }
        assert_eq!(parse(GOOD).unwrap().origin("listener"), Some("machine"));
    }

    #[test]
    fn machine_sections_are_refused_elsewhere_with_file_line_and_key() {
        let cases: &[(Level, &str, &str, usize)] = &[
            (
                Level::Cluster,
                "[logs]\nkeep = 2\n[node]\nhostname = \"x.example\"\n",
                "node",
                3,
            ),
            (
                Level::Group("eu".into()),
                "[limits]\n\n[[interface]]\nname = \"Data\"\naddress = \"10.0.0.1\"\n",
                "interface",
                3,
            ),
        ];
        for (level, text, key, line) in cases {
            let e = merge(&[
                (level.clone(), "upper.toml", text),
                (Level::Machine, "m.toml", GOOD),
            ])
            .unwrap_err();
            assert_eq!(
                (e.file.as_path(), e.line, e.key.as_str()),
                (Path::new("upper.toml"), Some(*line), *key),
                "{e}"
            );
            assert!(
                e.message.contains(&format!("not at {level} level"))
                    && e.message
                        .contains("allowed: only in the machine's own file"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_error_in_a_layer_names_that_layer_s_file() {
        let bad_cluster = cluster().replace("behavior = \"relay\"", "behavior = \"relai\"");
        let e = merge(&[
            (Level::Cluster, "cluster.toml", &bad_cluster),
            (Level::Machine, "m.toml", MACHINE),
        ])
        .unwrap_err();
        assert_eq!(
            (e.file.as_path(), e.line, e.key.as_str()),
            (Path::new("cluster.toml"), Some(3), "policy[0].behavior"),
            "{e}"
        );
        assert!(
            e.to_string().starts_with(
                "cluster.toml line 3, key policy[0].behavior: \"relai\" is not a behavior"
            ),
            "{e}"
        );
        // A name resolved across layers: the cluster's listener, the machine's interfaces.
        let e = merge(&[
            (
                Level::Cluster,
                "cluster.toml",
                &cluster().replace("interface = \"Management\"", "interface = \"Data\""),
            ),
            (Level::Machine, "m.toml", MACHINE),
        ])
        .unwrap_err();
        assert_eq!(
            (e.file.as_path(), e.key.as_str()),
            (Path::new("cluster.toml"), "listener[0].interface"),
            "{e}"
        );
        // Syntax errors too, and an overridden section is not read at all.
        let e = merge(&[
            (Level::Cluster, "cluster.toml", "[logs\n"),
            (Level::Machine, "m.toml", GOOD),
        ])
        .unwrap_err();
        assert_eq!(
            (e.file.as_path(), e.line),
            (Path::new("cluster.toml"), Some(1)),
            "{e}"
        );
        let overridden = "[logs]\nkeep = 0\n";
        let machine = format!("{GOOD}[logs]\nkeep = 4\n");
        let c = merge(&[
            (Level::Cluster, "cluster.toml", overridden),
            (Level::Machine, "m.toml", &machine),
        ])
        .unwrap();
        assert_eq!(c.logs.keep, 4);
    }

    #[test]
    fn layers_are_one_machine_and_at_most_one_group_and_cluster() {
        for (layers, file, needle) in [
            (
                vec![(Level::Cluster, "c.toml", GOOD)],
                "c.toml",
                "no machine layer",
            ),
            (vec![], "", "no machine layer"),
            (
                vec![
                    (Level::Machine, "m.toml", GOOD),
                    (Level::Group("a".into()), "a.toml", ""),
                    (Level::Group("b".into()), "b.toml", ""),
                ],
                "b.toml",
                "a second group:b layer (after a.toml)",
            ),
            (
                vec![
                    (Level::Machine, "m.toml", GOOD),
                    (Level::Machine, "n.toml", GOOD),
                ],
                "n.toml",
                "a second machine layer",
            ),
        ] {
            let e = merge(&layers).unwrap_err();
            assert_eq!(e.file, Path::new(file), "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
    }
}
