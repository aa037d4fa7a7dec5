//! The node's configuration file: TOML in, a validated [`Config`] out.
//!
//! Parsing happens in two steps. Serde turns the text into `raw` structs whose
//! interesting values keep their byte span (`toml::Spanned`); validation then
//! resolves names (listener -> interface, HAT -> policy) and ranges. Every error
//! names the file, the line, the key and what is allowed, because an
//! administrator fixing a config at 3 a.m. should not have to guess.
//!
//! The documented example is `docs/gateway.example.toml`.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// A configuration error that points at the place to fix.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ", key {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

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
    /// Index into [`Config::policies`].
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
    /// Index into [`Config::interfaces`].
    pub interface: usize,
    pub port: u16,
    pub kind: ListenerType,
    pub hat: Vec<HatEntry>,
    pub rat: Vec<RatEntry>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Interface {
    pub name: String,
    pub address: IpAddr,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum RouteTarget {
    /// Ordered next hops: (host, port).
    Hosts(Vec<(String, u16)>),
    /// Deliver into a local maildir (absolute path).
    Maildir(PathBuf),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SmtpRoute {
    pub domain: String,
    pub target: RouteTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TlsMode {
    Off,
    Preferred,
    Required,
    PreferredVerify,
    RequiredVerify,
}

impl TlsMode {
    fn parse(s: &str) -> Option<TlsMode> {
        Some(match s {
            "off" => TlsMode::Off,
            "preferred" => TlsMode::Preferred,
            "required" => TlsMode::Required,
            "preferred-verify" => TlsMode::PreferredVerify,
            "required-verify" => TlsMode::RequiredVerify,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::PreferredVerify => "preferred-verify",
            TlsMode::RequiredVerify => "required-verify",
        }
    }
    pub fn required(self) -> bool {
        matches!(self, TlsMode::Required | TlsMode::RequiredVerify)
    }
    pub fn verify(self) -> bool {
        matches!(self, TlsMode::PreferredVerify | TlsMode::RequiredVerify)
    }
}

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
    /// `None` = Auto; otherwise index into [`Config::interfaces`].
    pub default_interface: Option<usize>,
    pub max_concurrency: usize,
    pub max_messages_per_connection: usize,
    pub bounce: BounceProfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    /// "1.2" / "1.3", as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsInbound {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub versions: Vec<TlsVersion>,
    /// Cipher suites in order of preference (rustls names); `None` = every
    /// suite rustls offers.
    pub ciphers: Option<Vec<String>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsOutbound {
    pub default: TlsMode,
    pub versions: Vec<TlsVersion>,
    pub ca_file: Option<PathBuf>,
    /// As [`TlsInbound::ciphers`].
    pub ciphers: Option<Vec<String>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Logs {
    pub max_size: u64,
    pub keep: usize,
}

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
    pub scanning: crate::scanning::ScanConfig,
    pub role: Role,
    /// Centralized quarantines (`[cpq]`): the gateway <-> manager link.
    pub cpq: Option<Cpq>,
    /// The SSH server (`[ssh]`); `None`: no SSH.
    pub ssh: Option<Ssh>,
    /// The HTTPS server of the REST API and `/metrics` (`[web]`); `None`: none.
    pub web: Option<Web>,
}

/// `[web]`: the REST API and metrics over HTTPS (`crate::web`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Web {
    /// Index into `interfaces`.
    pub interface: usize,
    /// 0: a port chosen by the system (tests).
    pub port: u16,
}

/// `[ssh]`: the appliance command set over SSH (`crate::ssh`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ssh {
    /// Index into `interfaces`.
    pub interface: usize,
    /// 0: a port chosen by the system (tests).
    pub port: u16,
}

/// What a node is: a gateway (`pvo gateway run`) or a manager (`pvo manager run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Gateway,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Manager => "manager",
        }
    }
}

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
    /// manager accepts from it (`cpq::trust::PeerPolicy`). `None`: enrolled by an
    /// older version, any certificate with its id.
    pub serial: Option<String>,
}

/// `[cpq]`: this node's part in the centralized quarantines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cpq {
    /// This node's name in the deployment (the CN of its certificate): a gateway id.
    pub node_id: String,
    /// The cpq_listener's interface (index into [`Config::interfaces`]).
    pub interface: usize,
    pub port: u16,
    /// The deployment CA certificate, this node's certificate and key (`cpq::trust`).
    pub dir: PathBuf,
    /// Gateway: local or central quarantines.
    pub mode: CpqMode,
    /// Gateway: the manager's cpq_listener.
    pub manager: Option<(String, u16)>,
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
        self.mode == CpqMode::Central && self.manager.is_some()
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

pub use crate::envelope::{CPQ_HOST, CPQ_RELEASE_HOST};
/// The hidden listener of both roles.
pub const CPQ_LISTENER: &str = "cpq_listener";

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
    /// `base` resolves relative paths.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let v = Validator { text, file };
        let raw: raw::File = toml::from_str(text).map_err(|e| v.toml_error(&e))?;
        v.validate(raw, base)
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

mod raw {
    //! The file as written, before names are resolved.
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub node: Option<Node>,
        #[serde(default)]
        pub interface: Vec<Interface>,
        #[serde(default)]
        pub policy: Vec<Policy>,
        #[serde(default)]
        pub listener: Vec<Listener>,
        #[serde(default)]
        pub smtp_route: Vec<Route>,
        pub delivery: Option<Delivery>,
        #[serde(default)]
        pub destination: Vec<Destination>,
        pub tls: Option<Tls>,
        pub logs: Option<Logs>,
        pub limits: Option<Limits>,
        pub antivirus: Option<crate::scanning::Antivirus>,
        #[serde(default)]
        pub mail_policy: Vec<crate::scanning::MailPolicy>,
        #[serde(default)]
        pub content_filter: Vec<pvo_scan::filter::FilterRule>,
        #[serde(default)]
        pub dlp_policy: Vec<pvo_scan::dlp::DlpPolicy>,
        pub outbreak: Option<Outbreak>,
        pub quarantines: Option<Quarantines>,
        pub cpq: Option<Cpq>,
        pub ssh: Option<Ssh>,
        pub web: Option<Ssh>,
    }

    /// `[ssh]` and `[web]` have the same keys.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Ssh {
        pub enabled: Option<bool>,
        pub interface: Option<Spanned<String>>,
        pub port: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Cpq {
        pub node_id: Option<Spanned<String>>,
        pub interface: Option<Spanned<String>>,
        pub port: Option<Spanned<i64>>,
        pub dir: Option<String>,
        pub mode: Option<Spanned<String>>,
        pub manager: Option<Spanned<String>>,
        pub quota: Option<Spanned<i64>>,
        #[serde(default)]
        pub gateway: Vec<CpqGateway>,
        pub migration: Option<CpqMigration>,
        #[serde(default)]
        pub notify: Vec<Spanned<String>>,
        /// Hidden: seconds between the manager's status checks of its gateways.
        pub status_poll: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CpqMigration {
        pub mode: Spanned<String>,
        pub set_by: Option<String>,
        #[serde(default)]
        pub map: Vec<CpqMap>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CpqMap {
        pub gateway: Spanned<String>,
        pub local: Spanned<String>,
        pub central: Spanned<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CpqGateway {
        pub id: Spanned<String>,
        pub address: Spanned<String>,
        pub port: Option<Spanned<i64>>,
        pub ssh_port: Option<Spanned<i64>>,
        pub ssh_user: Option<String>,
        pub ssh_host_key: Option<String>,
        pub serial: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Outbreak {
        pub rules_file: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Quarantines {
        pub quota: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Node {
        pub hostname: Option<Spanned<String>>,
        pub data_dir: Option<String>,
        pub role: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Interface {
        pub name: Spanned<String>,
        pub address: Spanned<String>,
        pub hostname: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Policy {
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
    pub struct Listener {
        pub name: Spanned<String>,
        pub interface: Spanned<String>,
        pub port: Spanned<i64>,
        #[serde(rename = "type")]
        pub kind: Option<Spanned<String>>,
        #[serde(default)]
        pub hat: Vec<Hat>,
        #[serde(default)]
        pub rat: Vec<Rat>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Hat {
        pub group: String,
        pub senders: Vec<Spanned<String>>,
        pub policy: Spanned<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rat {
        pub recipients: Vec<Spanned<String>>,
        pub action: Spanned<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub domain: Spanned<String>,
        pub hosts: Option<Vec<Spanned<String>>>,
        pub maildir: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Delivery {
        pub default_interface: Option<Spanned<String>>,
        pub max_concurrency: Option<Spanned<i64>>,
        pub max_messages_per_connection: Option<Spanned<i64>>,
        pub bounce: Option<Bounce>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Bounce {
        pub initial_retry: Option<Spanned<i64>>,
        pub max_retry: Option<Spanned<i64>>,
        pub max_queue_lifetime: Option<Spanned<i64>>,
        pub max_retries: Option<Spanned<i64>>,
        pub send_dsn: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Destination {
        pub domain: Spanned<String>,
        pub max_concurrency: Option<Spanned<i64>>,
        pub tls: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tls {
        pub inbound: Option<TlsInbound>,
        pub outbound: Option<TlsOutbound>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TlsInbound {
        pub cert: Option<String>,
        pub key: Option<String>,
        pub versions: Option<Vec<Spanned<String>>>,
        pub ciphers: Option<Spanned<Vec<Spanned<String>>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TlsOutbound {
        pub default: Option<Spanned<String>>,
        pub versions: Option<Vec<Spanned<String>>>,
        pub ca_file: Option<String>,
        pub ciphers: Option<Spanned<Vec<Spanned<String>>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Logs {
        pub max_size: Option<Spanned<i64>>,
        pub keep: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
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
}

struct Validator<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Validator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: e.span().map(|s| self.line_of(s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
        }
    }

    fn err<T>(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            key: key.into(),
            message: message.into(),
        })
    }

    fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let n = *s.get_ref();
                if n < min || n > max {
                    self.err(
                        Some(s.span()),
                        key,
                        format!("{n} is out of range; allowed: an integer from {min} to {max}"),
                    )
                } else {
                    Ok(n)
                }
            }
        }
    }

    fn versions(
        &self,
        v: &Option<Vec<Spanned<String>>>,
        key: &str,
    ) -> Result<Vec<TlsVersion>, ConfigError> {
        let Some(list) = v else {
            return Ok(vec![TlsVersion::V1_2, TlsVersion::V1_3]);
        };
        let mut out = Vec::new();
        for s in list {
            let ver = match s.get_ref().as_str() {
                "1.2" | "TLSv1.2" => TlsVersion::V1_2,
                "1.3" | "TLSv1.3" => TlsVersion::V1_3,
                other => {
                    return self.err(
                        Some(s.span()),
                        key,
                        format!("\"{other}\" is not offered; allowed: \"1.2\", \"1.3\" (TLS 1.0/1.1 and SSL are not supported)"),
                    )
                }
            };
            if !out.contains(&ver) {
                out.push(ver);
            }
        }
        if out.is_empty() {
            return self.err(
                None,
                key,
                "the list is empty; allowed: one or both of \"1.2\", \"1.3\"",
            );
        }
        Ok(out)
    }

    /// A cipher list: every name one the rustls ring provider offers, and
    /// for each enabled TLS version at least one suite of that version, so
    /// the list never silently switches a version off.
    fn ciphers(
        &self,
        v: &Option<Spanned<Vec<Spanned<String>>>>,
        versions: &[TlsVersion],
        section: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(list) = v else {
            return Ok(None);
        };
        let key = format!("{section}.ciphers");
        let names = crate::tls::cipher_suite_names();
        let quoted = |of: &dyn Fn(&str) -> bool| {
            names
                .iter()
                .filter(|n| of(n))
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out: Vec<String> = Vec::new();
        for s in list.get_ref() {
            let name = s.get_ref().trim();
            let Some(canonical) = names.iter().find(|n| n.eq_ignore_ascii_case(name)) else {
                let why = match crate::tls::why_unavailable(name) {
                    Some(w) => format!("\"{name}\" is not offered: {w}"),
                    None => format!("\"{name}\" is not a cipher suite rustls offers"),
                };
                return self.err(
                    Some(s.span()),
                    key,
                    format!("{why}; allowed: {}", quoted(&|_| true)),
                );
            };
            if !out.iter().any(|o| o == canonical) {
                out.push(canonical.to_string());
            }
        }
        if out.is_empty() {
            return self.err(
                Some(list.span()),
                key,
                format!(
                    "the list is empty; allowed: one or more of {} (or no key: all of them)",
                    quoted(&|_| true)
                ),
            );
        }
        for version in versions {
            let label = version.as_str();
            let of = |n: &str| crate::tls::cipher_suite_version(n) == Some(*version);
            if !out.iter().any(|n| of(n)) {
                return self.err(
                    Some(list.span()),
                    key,
                    format!("{section}.versions enables TLS {label} but no TLS {label} cipher suite is listed; allowed: add one of {}, or remove \"{label}\" from {section}.versions", quoted(&of)),
                );
            }
        }
        Ok(Some(out))
    }

    fn tls_mode(&self, v: &Spanned<String>, key: &str) -> Result<TlsMode, ConfigError> {
        TlsMode::parse(v.get_ref()).map_or_else(
            || {
                self.err(
                    Some(v.span()),
                    key,
                    format!(
                        "\"{}\" is not a TLS mode; allowed: \"off\", \"preferred\", \"required\", \"preferred-verify\", \"required-verify\"",
                        v.get_ref()
                    ),
                )
            },
            Ok,
        )
    }

    fn validate(&self, raw: raw::File, base: &Path) -> Result<Config, ConfigError> {
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let node = raw.node.unwrap_or(raw::Node {
            hostname: None,
            data_dir: None,
            role: None,
        });
        let role = match node.role.as_ref().map(|r| r.get_ref().to_ascii_lowercase()) {
            None => Role::Gateway,
            Some(r) if r == "gateway" => Role::Gateway,
            Some(r) if r == "manager" => Role::Manager,
            Some(other) => {
                return self.err(
                    node.role.as_ref().map(|r| r.span()),
                    "node.role",
                    format!("\"{other}\" is not a role; allowed: \"gateway\", \"manager\""),
                )
            }
        };
        let hostname = match &node.hostname {
            Some(h) => {
                if pvo_proto::address::parse_mailbox(&format!("x@{}", h.get_ref())).is_err() {
                    return self.err(Some(h.span()), "node.hostname", format!("\"{}\" is not a host name; allowed: a DNS name such as \"gw1.example.com\"", h.get_ref()));
                }
                h.get_ref().clone()
            }
            None => "localhost".to_string(),
        };
        let data_dir = resolve(node.data_dir.as_deref().unwrap_or("."));

        let mut interfaces: Vec<Interface> = Vec::new();
        for (i, r) in raw.interface.iter().enumerate() {
            let key = format!("interface[{i}]");
            let address: IpAddr = r.address.get_ref().parse().or_else(|_| {
                self.err(Some(r.address.span()), format!("{key}.address"), format!("\"{}\" is not an IP address; allowed: an IPv4 or IPv6 address such as \"127.0.0.1\"", r.address.get_ref()))
            })?;
            if interfaces
                .iter()
                .any(|x| x.name.eq_ignore_ascii_case(r.name.get_ref()))
            {
                return self.err(
                    Some(r.name.span()),
                    format!("{key}.name"),
                    format!(
                        "interface \"{}\" is defined twice; allowed: unique names",
                        r.name.get_ref()
                    ),
                );
            }
            if r.name.get_ref().eq_ignore_ascii_case("auto") || r.name.get_ref().is_empty() {
                return self.err(
                    Some(r.name.span()),
                    format!("{key}.name"),
                    "\"Auto\" and \"\" are reserved; allowed: any other name",
                );
            }
            interfaces.push(Interface {
                name: r.name.get_ref().clone(),
                address,
                hostname: r.hostname.clone().unwrap_or_else(|| hostname.clone()),
            });
        }

        let mut policies: Vec<Policy> = Vec::new();
        for (i, r) in raw.policy.iter().enumerate() {
            let key = format!("policy[{i}]");
            let name = r.name.get_ref().trim_start_matches('$').to_string();
            if policies.iter().any(|p| p.name.eq_ignore_ascii_case(&name)) {
                return self.err(
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
                    return self.err(Some(r.behavior.span()), format!("{key}.behavior"), format!("\"{other}\" is not a behavior; allowed: \"accept\", \"relay\", \"reject\", \"tcprefuse\""))
                }
            };
            let max_concurrency = self.int(
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
                max_message_size: self.int(
                    &r.max_message_size,
                    &format!("{key}.max_message_size"),
                    1024,
                    1 << 31,
                    10 * 1024 * 1024,
                )? as usize,
                max_recipients: self.int(
                    &r.max_recipients,
                    &format!("{key}.max_recipients"),
                    1,
                    100_000,
                    1000,
                )? as usize,
                max_concurrency: max_concurrency as usize,
                max_concurrency_per_ip: match &r.max_concurrency_per_ip {
                    Some(v) if !(1..=max_concurrency).contains(v.get_ref()) => {
                        return self.err(
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
                max_connections_per_ip_per_minute: self.int(
                    &r.max_connections_per_ip_per_minute,
                    &format!("{key}.max_connections_per_ip_per_minute"),
                    0,
                    1_000_000,
                    if behavior == Behavior::Relay { 0 } else { 600 },
                )? as usize,
            });
        }

        let policy_names = || {
            policies
                .iter()
                .map(|p| format!("\"{}\"", p.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let iface_names = || {
            interfaces
                .iter()
                .map(|p| format!("\"{}\"", p.name))
                .collect::<Vec<_>>()
                .join(", ")
        };

        let mut listeners = Vec::new();
        let mut bound: HashSet<(IpAddr, u16)> = HashSet::new();
        for (i, r) in raw.listener.iter().enumerate() {
            let key = format!("listener[{i}]");
            let Some(interface) = interfaces
                .iter()
                .position(|x| x.name.eq_ignore_ascii_case(r.interface.get_ref()))
            else {
                return self.err(
                    Some(r.interface.span()),
                    format!("{key}.interface"),
                    format!(
                        "unknown interface \"{}\"; allowed: the name of an [[interface]] ({})",
                        r.interface.get_ref(),
                        iface_names()
                    ),
                );
            };
            let port = *r.port.get_ref();
            if !(0..=65535).contains(&port) {
                return self.err(
                    Some(r.port.span()),
                    format!("{key}.port"),
                    format!("{port} is not a port; allowed: 0 (any free port) to 65535"),
                );
            }
            if port != 0 && !bound.insert((interfaces[interface].address, port as u16)) {
                return self.err(
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
                    return self.err(
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
                    return self.err(
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
                    senders.push(self.sender_pattern(s, &format!("{hkey}.senders"))?);
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
                        return self.err(
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
                        return self.err(Some(s.span()), format!("{tkey}.recipients"), format!("\"{v}\" is not a recipient pattern; allowed: \"example.com\", \".example.com\", \"user@example.com\" or \"ALL\""));
                    }
                    recipients.push(v.to_string());
                }
                rat.push(RatEntry { recipients, action });
            }
            if listeners
                .iter()
                .any(|l: &Listener| l.name.eq_ignore_ascii_case(r.name.get_ref()))
            {
                return self.err(
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

        let mut routes = Vec::new();
        for (i, r) in raw.smtp_route.iter().enumerate() {
            let key = format!("smtp_route[{i}]");
            let domain = r
                .domain
                .get_ref()
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let domain = if domain == "all" {
                "ALL".to_string()
            } else {
                domain
            };
            let target = match (&r.hosts, &r.maildir) {
                (Some(hosts), None) => {
                    if hosts.is_empty() {
                        return self.err(Some(r.domain.span()), format!("{key}.hosts"), "no hosts; allowed: one or more \"host\", \"host:port\" or \"[1.2.3.4]:port\"");
                    }
                    let mut list = Vec::new();
                    for h in hosts {
                        list.push(parse_host_port(h.get_ref()).map_or_else(
                            || self.err(Some(h.span()), format!("{key}.hosts"), format!("\"{}\" is not a next hop; allowed: \"host\", \"host:port\" or \"[1.2.3.4]:port\"", h.get_ref())),
                            Ok,
                        )?);
                    }
                    RouteTarget::Hosts(list)
                }
                (None, Some(dir)) => RouteTarget::Maildir(resolve(dir.get_ref())),
                _ => {
                    return self.err(
                        Some(r.domain.span()),
                        key,
                        "a route needs exactly one of hosts = [...] or maildir = \"dir\"",
                    )
                }
            };
            routes.push(SmtpRoute { domain, target });
        }

        let d = raw.delivery.unwrap_or(raw::Delivery {
            default_interface: None,
            max_concurrency: None,
            max_messages_per_connection: None,
            bounce: None,
        });
        let default_interface = match &d.default_interface {
            None => None,
            Some(s) if s.get_ref().eq_ignore_ascii_case("auto") => None,
            Some(s) => Some(interfaces.iter().position(|x| x.name.eq_ignore_ascii_case(s.get_ref())).map_or_else(
                || self.err(Some(s.span()), "delivery.default_interface", format!("unknown interface \"{}\"; allowed: \"Auto\" or the name of an [[interface]] ({})", s.get_ref(), iface_names())),
                Ok,
            )?),
        };
        let b = d.bounce.unwrap_or(raw::Bounce {
            initial_retry: None,
            max_retry: None,
            max_queue_lifetime: None,
            max_retries: None,
            send_dsn: None,
        });
        let delivery = Delivery {
            default_interface,
            max_concurrency: self.int(
                &d.max_concurrency,
                "delivery.max_concurrency",
                1,
                10_000,
                500,
            )? as usize,
            max_messages_per_connection: self.int(
                &d.max_messages_per_connection,
                "delivery.max_messages_per_connection",
                1,
                1000,
                50,
            )? as usize,
            bounce: BounceProfile {
                initial_retry: self.int(
                    &b.initial_retry,
                    "delivery.bounce.initial_retry",
                    1,
                    86_400,
                    60,
                )? as u64,
                max_retry: self.int(
                    &b.max_retry,
                    "delivery.bounce.max_retry",
                    1,
                    86_400 * 7,
                    3600,
                )? as u64,
                max_queue_lifetime: self.int(
                    &b.max_queue_lifetime,
                    "delivery.bounce.max_queue_lifetime",
                    1,
                    86_400 * 30,
                    259_200,
                )? as u64,
                max_retries: self.int(
                    &b.max_retries,
                    "delivery.bounce.max_retries",
                    0,
                    10_000,
                    100,
                )? as u32,
                send_dsn: b.send_dsn.unwrap_or(true),
            },
        };

        let tls = raw.tls.unwrap_or(raw::Tls {
            inbound: None,
            outbound: None,
        });
        let ti = tls.inbound.unwrap_or(raw::TlsInbound {
            cert: None,
            key: None,
            versions: None,
            ciphers: None,
        });
        if ti.cert.is_some() != ti.key.is_some() {
            return self.err(None, "tls.inbound", "cert and key must be given together; allowed: both, or neither (a self-signed certificate is generated)");
        }
        let versions = self.versions(&ti.versions, "tls.inbound.versions")?;
        let tls_inbound = TlsInbound {
            cert: ti.cert.as_deref().map(resolve),
            key: ti.key.as_deref().map(resolve),
            ciphers: self.ciphers(&ti.ciphers, &versions, "tls.inbound")?,
            versions,
        };
        let to = tls.outbound.unwrap_or(raw::TlsOutbound {
            default: None,
            versions: None,
            ca_file: None,
            ciphers: None,
        });
        let versions = self.versions(&to.versions, "tls.outbound.versions")?;
        let tls_outbound = TlsOutbound {
            default: match &to.default {
                None => TlsMode::Preferred,
                Some(s) => self.tls_mode(s, "tls.outbound.default")?,
            },
            ciphers: self.ciphers(&to.ciphers, &versions, "tls.outbound")?,
            versions,
            ca_file: to.ca_file.as_deref().map(resolve),
        };

        let mut destinations = Vec::new();
        for (i, r) in raw.destination.iter().enumerate() {
            let key = format!("destination[{i}]");
            destinations.push(Destination {
                domain: r
                    .domain
                    .get_ref()
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
                max_concurrency: self.int(
                    &r.max_concurrency,
                    &format!("{key}.max_concurrency"),
                    1,
                    10_000,
                    50,
                )? as usize,
                tls: match &r.tls {
                    None => tls_outbound.default,
                    Some(s) => self.tls_mode(s, &format!("{key}.tls"))?,
                },
            });
        }

        let l = raw.logs.unwrap_or(raw::Logs {
            max_size: None,
            keep: None,
        });
        let logs = Logs {
            max_size: self.int(
                &l.max_size,
                "logs.max_size",
                4096,
                1 << 40,
                10 * 1024 * 1024,
            )? as u64,
            keep: self.int(&l.keep, "logs.keep", 1, 1000, 10)? as usize,
        };
        let m = raw.limits.unwrap_or(raw::Limits {
            max_line_length: None,
            max_bad_commands: None,
            max_messages_per_session: None,
            max_commands_per_session: None,
            command_timeout: None,
            command_timeout_under_pressure: None,
            pressure_percent: None,
            data_timeout: None,
            session_timeout: None,
        });
        let limits = Limits {
            max_line_length: self.int(
                &m.max_line_length,
                "limits.max_line_length",
                512,
                65_536,
                2048,
            )? as usize,
            max_bad_commands: self.int(
                &m.max_bad_commands,
                "limits.max_bad_commands",
                1,
                1000,
                10,
            )? as usize,
            max_messages_per_session: self.int(
                &m.max_messages_per_session,
                "limits.max_messages_per_session",
                1,
                1_000_000,
                1000,
            )? as usize,
            max_commands_per_session: self.int(
                &m.max_commands_per_session,
                "limits.max_commands_per_session",
                10,
                10_000_000,
                100_000,
            )? as usize,
            command_timeout: self.int(&m.command_timeout, "limits.command_timeout", 1, 3600, 300)?
                as u64,
            command_timeout_under_pressure: self.int(
                &m.command_timeout_under_pressure,
                "limits.command_timeout_under_pressure",
                1,
                3600,
                10,
            )? as u64,
            pressure_percent: self.int(
                &m.pressure_percent,
                "limits.pressure_percent",
                1,
                100,
                80,
            )? as usize,
            data_timeout: self.int(&m.data_timeout, "limits.data_timeout", 1, 7200, 600)? as u64,
            session_timeout: self.int(
                &m.session_timeout,
                "limits.session_timeout",
                1,
                86_400,
                1800,
            )? as u64,
        };

        let quota = match raw.quarantines.as_ref().and_then(|q| q.quota.as_ref()) {
            Some(_) => Some(self.int(
                &raw.quarantines.as_ref().unwrap().quota,
                "quarantines.quota",
                1 << 20,
                1 << 50,
                1 << 30,
            )? as u64),
            None => None,
        };
        let scanning = crate::scanning::ScanConfig {
            antivirus: raw.antivirus,
            policies: raw.mail_policy,
            filters: raw.content_filter,
            dlp: raw.dlp_policy,
            outbreak_rules: raw.outbreak.and_then(|o| o.rules_file).map(|f| resolve(&f)),
            quarantine_quota: quota,
        };
        if let Err(e) = scanning.validate() {
            return self.err(None, "scanning", e);
        }
        if role == Role::Manager && !scanning.policies.is_empty() {
            return self.err(None, "mail_policy", "a manager does not scan mail; allowed: mail policies on gateways only (remove [[mail_policy]] or set node.role = \"gateway\")");
        }
        let cpq = match raw.cpq {
            None => None,
            Some(c) => Some(self.cpq(
                c,
                role,
                &hostname,
                &data_dir,
                &resolve,
                &interfaces,
                &mut policies,
                &mut listeners,
            )?),
        };
        let ssh = match raw.ssh {
            Some(s) if s.enabled != Some(false) => {
                Some(self.server("ssh", 2222, s, &interfaces, &listeners)?)
            }
            _ => None,
        };
        let ssh = ssh.map(|(interface, port)| Ssh { interface, port });
        let web = match raw.web {
            Some(s) if s.enabled != Some(false) => {
                Some(self.server("web", 8443, s, &interfaces, &listeners)?)
            }
            _ => None,
        };
        let web = web.map(|(interface, port)| Web { interface, port });
        if let (Some(s), Some(w)) = (&ssh, &web) {
            if w.port != 0
                && w.port == s.port
                && interfaces[w.interface].address == interfaces[s.interface].address
            {
                return self.err(
                    None,
                    "web.port",
                    format!(
                        "the SSH server already uses port {}; allowed: a free port (default 8443)",
                        w.port
                    ),
                );
            }
        }
        if role == Role::Manager && cpq.is_none() {
            return self.err(None, "cpq", "a manager needs a [cpq] section (its cpq_listener and enrolled gateways); allowed: see docs/manager.example.toml");
        }

        Ok(Config {
            hostname,
            data_dir,
            interfaces,
            policies,
            listeners,
            routes,
            delivery,
            destinations,
            tls_inbound,
            tls_outbound,
            logs,
            limits,
            scanning,
            role,
            cpq,
            ssh,
            web,
        })
    }

    /// Validates `[ssh]` or `[web]` (`section`): an interface (default the first) and a
    /// port (default `default_port`) that no listener on that address uses.
    fn server(
        &self,
        section: &str,
        default_port: i64,
        s: raw::Ssh,
        interfaces: &[Interface],
        listeners: &[Listener],
    ) -> Result<(usize, u16), ConfigError> {
        let interface = match &s.interface {
            Some(n) => interfaces
                .iter()
                .position(|x| x.name.eq_ignore_ascii_case(n.get_ref()))
                .map_or_else(
                    || {
                        self.err(
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
                return self.err(
                    None,
                    format!("{section}.interface"),
                    format!("no [[interface]] for the [{section}] server; allowed: define one"),
                )
            }
            None => 0,
        };
        let port = self.int(&s.port, &format!("{section}.port"), 0, 65535, default_port)? as u16;
        if port != 0
            && listeners.iter().any(|l| {
                l.port == port && interfaces[l.interface].address == interfaces[interface].address
            })
        {
            return self.err(
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

    /// Validates `[cpq]` and adds the hidden `cpq_listener` (HAT: RELAYLIST of
    /// the peers -> $RELAYED, ALL -> $BLOCKED; RAT: ALL -> ACCEPT).
    #[allow(clippy::too_many_arguments)]
    fn cpq(
        &self,
        c: raw::Cpq,
        role: Role,
        hostname: &str,
        data_dir: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
        interfaces: &[Interface],
        policies: &mut Vec<Policy>,
        listeners: &mut Vec<Listener>,
    ) -> Result<Cpq, ConfigError> {
        let node_id = match &c.node_id {
            Some(n) => {
                if !pvo_proto::cpq::is_identifier(n.get_ref()) {
                    return self.err(
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
            Some(s) => interfaces
                .iter()
                .position(|x| x.name.eq_ignore_ascii_case(s.get_ref()))
                .map_or_else(
                    || {
                        self.err(
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
                return self.err(
                    None,
                    "cpq.interface",
                    "no [[interface]] for the cpq_listener; allowed: define one",
                )
            }
            None => 0,
        };
        let port = self.int(&c.port, "cpq.port", 0, 65535, 7025)? as u16;
        if port != 0
            && listeners.iter().any(|l| {
                l.port == port && interfaces[l.interface].address == interfaces[interface].address
            })
        {
            return self.err(
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
                return self.err(
                    c.mode.as_ref().map(|m| m.span()),
                    "cpq.mode",
                    format!("\"{other}\" is not a mode; allowed: \"local\", \"central\""),
                )
            }
        };
        let manager = match &c.manager {
            None => None,
            Some(m) => Some(parse_host_port(m.get_ref()).map_or_else(
                || self.err(Some(m.span()), "cpq.manager", format!("\"{}\" is not HOST:PORT; allowed: the manager's cpq_listener such as \"10.10.10.1:7025\"", m.get_ref())),
                Ok,
            )?),
        };
        if role == Role::Gateway && mode == CpqMode::Central && manager.is_none() {
            return self.err(
                c.mode.as_ref().map(|m| m.span()),
                "cpq.manager",
                "central mode needs the manager's address; allowed: manager = \"HOST:PORT\"",
            );
        }
        if role == Role::Manager && (mode == CpqMode::Central || manager.is_some()) {
            return self.err(
                c.mode.as_ref().or(c.manager.as_ref()).map(|m| m.span()),
                "cpq.mode",
                "mode and manager are gateway settings; allowed: remove them on a manager",
            );
        }
        let mut gateways: Vec<EnrolledGateway> = Vec::new();
        for (i, g) in c.gateway.iter().enumerate() {
            let key = format!("cpq.gateway[{i}]");
            if role != Role::Manager {
                return self.err(Some(g.id.span()), key, "enrolled gateways belong in a manager's configuration; allowed: remove [[cpq.gateway]] on a gateway");
            }
            if !pvo_proto::cpq::is_identifier(g.id.get_ref()) {
                return self.err(
                    Some(g.id.span()),
                    format!("{key}.id"),
                    format!(
                        "\"{}\" is not a gateway id; allowed: 1-128 of A-Z a-z 0-9 . - _ :",
                        g.id.get_ref()
                    ),
                );
            }
            if gateways.iter().any(|x| x.id == *g.id.get_ref()) {
                return self.err(
                    Some(g.id.span()),
                    format!("{key}.id"),
                    format!(
                        "gateway \"{}\" is enrolled twice; allowed: unique ids",
                        g.id.get_ref()
                    ),
                );
            }
            let address: IpAddr = g.address.get_ref().parse().or_else(|_| {
                self.err(Some(g.address.span()), format!("{key}.address"), format!("\"{}\" is not an IP address; allowed: the gateway's cpq_listener address such as \"10.10.20.1\"", g.address.get_ref()))
            })?;
            let port = self.int(&g.port, &format!("{key}.port"), 1, 65535, 7025)? as u16;
            let ssh_port = match &g.ssh_port {
                Some(_) => {
                    Some(self.int(&g.ssh_port, &format!("{key}.ssh_port"), 1, 65535, 22)? as u16)
                }
                None => None,
            };
            let serial = match &g.serial {
                Some(s) if crate::cpq::trust::is_serial(s.get_ref()) => {
                    Some(s.get_ref().to_ascii_lowercase())
                }
                Some(s) => return self.err(Some(s.span()), format!("{key}.serial"), format!("\"{}\" is not a certificate serial number; allowed: the hex digits `pvo manager enroll` wrote (or remove the line to accept any certificate of this gateway)", s.get_ref())),
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
            Some(_) => Some(self.int(&c.quota, "cpq.quota", 1 << 20, 1 << 50, 1 << 30)? as u64),
            None => None,
        };
        let migration = match &c.migration {
            None => None,
            Some(m) => {
                if role != Role::Manager {
                    return self.err(Some(m.mode.span()), "cpq.migration", "the migration wizard is a manager setting; allowed: remove [cpq.migration] on a gateway");
                }
                let custom = match m.mode.get_ref().to_ascii_lowercase().as_str() {
                    "automatic" => false,
                    "custom" => true,
                    other => {
                        return self.err(Some(m.mode.span()), "cpq.migration.mode", format!("\"{other}\" is not a migration mode; allowed: \"automatic\" (local quarantines map to central ones by name), \"custom\""))
                    }
                };
                let mut map = Vec::new();
                for (i, x) in m.map.iter().enumerate() {
                    if !custom {
                        return self.err(Some(x.gateway.span()), format!("cpq.migration.map[{i}]"), "mappings apply to the custom mode; allowed: mode = \"custom\", or remove the [[cpq.migration.map]] tables");
                    }
                    if !gateways.iter().any(|g| g.id == *x.gateway.get_ref()) {
                        return self.err(Some(x.gateway.span()), format!("cpq.migration.map[{i}].gateway"), format!("gateway \"{}\" is not enrolled; allowed: the id of a [[cpq.gateway]]", x.gateway.get_ref()));
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
                return self.err(
                    Some(a.span()),
                    format!("cpq.notify[{i}]"),
                    format!("\"{}\" is not an email address; allowed: addresses such as \"admin@example.com\", mailed when the local quarantines have migrated to the manager", a.get_ref()),
                );
            }
            if notify.iter().any(|n: &String| n.eq_ignore_ascii_case(v)) {
                return self.err(
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
            .map(resolve)
            .unwrap_or_else(|| data_dir.join("cpq"));

        // The hidden listener and the two policies its HAT names.
        let mut policy = |name: &str, behavior: Behavior| -> Result<usize, ConfigError> {
            if let Some(i) = policies
                .iter()
                .position(|p| p.name.eq_ignore_ascii_case(name))
            {
                if policies[i].behavior != behavior {
                    return self.err(None, format!("policy {name}"), format!("the cpq_listener needs policy ${name} with behavior \"{}\"; allowed: rename your policy {name}", behavior.as_str()));
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
            return self.err(None, "listener", "\"cpq_listener\" is reserved for the hidden CPQ listener; allowed: any other name ([cpq] configures it)");
        }
        let peers: Vec<SenderPattern> = match role {
            Role::Manager => gateways
                .iter()
                .map(|g| SenderPattern::Net(IpNet::from(g.address)))
                .collect(),
            Role::Gateway => {
                // The manager by address, or by name once resolved at connect time.
                manager
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
            manager,
            gateways,
            quota,
            migration,
            notify,
            status_poll: self.int(&c.status_poll, "cpq.status_poll", 1, 3600, 30)? as u64,
        })
    }

    fn sender_pattern(&self, s: &Spanned<String>, key: &str) -> Result<SenderPattern, ConfigError> {
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
        self.err(
            Some(s.span()),
            key,
            format!("\"{v}\" is not a sender; allowed: an IP address, a CIDR such as \"10.0.0.0/8\", a host name, \".domain\" or \"ALL\""),
        )
    }
}

/// Parses "host", "host:port", "[1.2.3.4]" or "[1.2.3.4]:port" (default port 25).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip().to_string(), sa.port()));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        host.parse::<IpAddr>().ok()?;
        let port = match tail {
            "" => 25,
            t => t.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()?),
        Some(_) => return None,
        None => (s, 25),
    };
    if host.parse::<IpAddr>().is_err()
        && pvo_proto::address::parse_mailbox(&format!("x@{host}")).is_err()
    {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("/tmp"))
    }

    const GOOD: &str = r#"
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

    #[test]
    fn tls_cipher_lists_are_checked_against_rustls() {
        let with = |versions: &str, ciphers: &str| {
            parse(&format!(
                "{GOOD}[tls.inbound]\nversions = {versions}\nciphers = {ciphers}\n"
            ))
        };
        let c = with(
            "[\"1.3\"]",
            "[\"tls13_aes_256_gcm_sha384\", \"TLS13_AES_256_GCM_SHA384\"]",
        )
        .unwrap();
        assert_eq!(
            c.tls_inbound.ciphers,
            Some(vec!["TLS13_AES_256_GCM_SHA384".to_string()])
        );
        assert!(c.tls_outbound.ciphers.is_none());
        let e = with("[\"1.2\", \"1.3\"]", "[\"RC4-SHA\"]").unwrap_err();
        assert_eq!(e.key, "tls.inbound.ciphers");
        assert!(
            e.message.contains("RC4 suites do not exist in rustls")
                && e.message.contains("allowed: \"TLS13_AES_256_GCM_SHA384\""),
            "{e}"
        );
        let e = with("[\"1.2\"]", "[\"TLS_DH_anon_WITH_AES_128_GCM_SHA256\"]").unwrap_err();
        assert!(e.message.contains("anonymous"), "{e}");
        // A version without any of its suites would be switched off silently.
        let e = with("[\"1.2\", \"1.3\"]", "[\"TLS13_AES_128_GCM_SHA256\"]").unwrap_err();
        assert!(
            e.message
                .contains("enables TLS 1.2 but no TLS 1.2 cipher suite is listed"),
            "{e}"
        );
        assert!(
            !e.message.contains("TLS13_AES_256"),
            "only TLS 1.2 suites are suggested: {e}"
        );
        assert!(with("[\"1.2\"]", "[]")
            .unwrap_err()
            .message
            .contains("the list is empty"));
        let e = with("[\"1.1\"]", "[\"TLS13_AES_128_GCM_SHA256\"]").unwrap_err();
        assert!(
            e.message.contains("TLS 1.0/1.1 and SSL are not supported"),
            "{e}"
        );
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("mx.example.com"),
            Some(("mx.example.com".into(), 25))
        );
        assert_eq!(
            parse_host_port("mx.example.com:2525"),
            Some(("mx.example.com".into(), 2525))
        );
        assert_eq!(parse_host_port("[::1]:26"), Some(("::1".into(), 26)));
        assert_eq!(
            parse_host_port("127.0.0.1"),
            None.or(Some(("127.0.0.1".into(), 25)))
        );
        assert_eq!(parse_host_port("a b"), None);
    }

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
