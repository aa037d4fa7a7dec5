//! The usual test gateway's `pvo.toml`, built instead of copied: one node on 127.0.0.1
//! (`Loopback`), mail relayed for 127.0.0.1 (HAT `RELAYLIST`, policy `RELAYED`) to the
//! domains of the RAT, every domain routed to the sink, outbound TLS off. What a test
//! adds (content filters, mail policies, `[cpq]`, ...) goes in [`GatewayToml::extra`].

use std::net::{IpAddr, Ipv4Addr};

use super::Sink;

/// The manager's address in the tests that run one (its `Management` interface).
pub const MANAGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A manager `NODE_ID.cpq.test` on [`MANAGER_IP`] whose cpq_listener is on `cpq_port`,
/// no gateway enrolled; append `[web]`, `[ssh]`, ... as the test needs.
pub fn manager_toml(node_id: &str, cpq_port: u16) -> String {
    format!(
        r#"[node]
role = "manager"
hostname = "{node_id}.cpq.test"
data_dir = "."

[[interface]]
name = "Management"
address = "{MANAGER_IP}"
hostname = "{node_id}.cpq.test"

[cpq]
node_id = "{node_id}"
interface = "Management"
port = {cpq_port}
"#
    )
}

/// The demo content filter: a subject containing `[quarantine-test]` goes to Policy.
pub const QUARANTINE_TEST_FILTER: &str = r#"
[[content_filter]]
name = "quarantine_test"
conditions = { subject_contains = "[quarantine-test]" }
actions = [{ quarantine = "Policy" }]
"#;

/// The outgoing mail policy (mail relayed from 127.0.0.1) with every content filter.
pub const OUTGOING_POLICY: &str = r#"
[[mail_policy]]
name = "DEFAULT_OUTGOING"
direction = "outgoing"
content_filters = ["ALL"]
"#;

/// The incoming mail policy with every content filter.
pub const INCOMING_POLICY: &str = r#"
[[mail_policy]]
name = "DEFAULT_INCOMING"
direction = "incoming"
content_filters = ["ALL"]
"#;

/// A body matching `code-NNNN` (content filter `secret_codes`) or carrying a payment
/// card number (DLP policy `cards`) goes to Policy; the outgoing mail policy applies
/// both.
pub const MATCHED_CONTENT: &str = r#"
[[content_filter]]
name = "secret_codes"
conditions = { body_regex = "code-[0-9]+" }
actions = [{ quarantine = "Policy" }]

[[dlp_policy]]
name = "cards"
detectors = ["payment_card"]
[dlp_policy.actions]
low = [{ quarantine = "Policy" }]

[[mail_policy]]
name = "DEFAULT_OUTGOING"
direction = "outgoing"
content_filters = ["ALL"]
dlp_policies = ["cards"]
"#;

/// A builder for the common gateway configuration; see the module documentation.
pub struct GatewayToml {
    sink: String,
    hostname: String,
    address: String,
    accept_all: bool,
    rat: Vec<String>,
    routes: Vec<(String, String)>,
    default_interface: String,
    quiet_bounces: bool,
    cpq: Option<String>,
    ssh: bool,
    web: bool,
    extra: String,
}

impl GatewayToml {
    /// `gw1.example.com` on 127.0.0.1, relaying for 127.0.0.1 to `one.example`, every
    /// domain to `sink`, delivery from `Auto`.
    pub fn new(sink: &Sink) -> GatewayToml {
        GatewayToml {
            sink: sink.host_port(),
            hostname: "gw1.example.com".to_string(),
            address: "127.0.0.1".to_string(),
            accept_all: false,
            rat: vec!["one.example".to_string()],
            routes: Vec::new(),
            default_interface: "Auto".to_string(),
            quiet_bounces: false,
            cpq: None,
            ssh: false,
            web: false,
            extra: String::new(),
        }
    }

    /// The node's and the interface's hostname.
    pub fn hostname(mut self, hostname: &str) -> GatewayToml {
        self.hostname = hostname.to_string();
        self
    }

    /// The address of the `Loopback` interface (the listener's).
    pub fn address(mut self, address: impl ToString) -> GatewayToml {
        self.address = address.to_string();
        self
    }

    /// Also accepts mail from anyone (HAT `ALL`, policy `ACCEPTED`) for the RAT's domains.
    pub fn accept_all(mut self) -> GatewayToml {
        self.accept_all = true;
        self
    }

    /// The recipient domains the listener accepts.
    pub fn rat(mut self, domains: &[&str]) -> GatewayToml {
        self.rat = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Routes `domain` to `host` (before the `ALL` route to the sink).
    pub fn route(mut self, domain: &str, host: impl ToString) -> GatewayToml {
        self.routes.push((domain.to_string(), host.to_string()));
        self
    }

    /// `[delivery] default_interface`.
    pub fn default_interface(mut self, interface: &str) -> GatewayToml {
        self.default_interface = interface.to_string();
        self
    }

    /// Deferred mail is retried hourly and no DSN is sent (`[delivery.bounce]`).
    pub fn quiet_bounces(mut self) -> GatewayToml {
        self.quiet_bounces = true;
        self
    }

    /// `[cpq]`: node `node_id` in `mode` ("local" or "central"), its cpq_listener on
    /// `Loopback`:`cpq_port`, its manager on [`MANAGER_IP`]:`manager_port`.
    pub fn cpq(
        mut self,
        node_id: &str,
        cpq_port: u16,
        mode: &str,
        manager_port: u16,
    ) -> GatewayToml {
        self.cpq = Some(format!(
            r#"
[cpq]
node_id = "{node_id}"
interface = "Loopback"
port = {cpq_port}
mode = "{mode}"
manager = "{MANAGER_IP}:{manager_port}"
"#
        ));
        self
    }

    /// `[ssh]` on `Loopback`, port 0.
    pub fn ssh(mut self) -> GatewayToml {
        self.ssh = true;
        self
    }

    /// `[web]` on `Loopback`, port 0.
    pub fn web(mut self) -> GatewayToml {
        self.web = true;
        self
    }

    /// Appends `toml` to the configuration (calls add up, in order).
    pub fn extra(mut self, toml: &str) -> GatewayToml {
        self.extra.push('\n');
        self.extra.push_str(toml);
        self
    }

    pub fn build(&self) -> String {
        let hostname = &self.hostname;
        let address = &self.address;
        let mut t = format!(
            r#"[node]
hostname = "{hostname}"
data_dir = "."

[[interface]]
name = "Loopback"
address = "{address}"
hostname = "{hostname}"

[[policy]]
name = "RELAYED"
behavior = "relay"
max_message_size = 20971520
max_recipients = 1000
max_concurrency = 600
"#
        );
        if self.accept_all {
            t.push_str(
                r#"
[[policy]]
name = "ACCEPTED"
behavior = "accept"
max_message_size = 20971520
max_recipients = 100
max_concurrency = 200
"#,
            );
        }
        t.push_str(
            r#"
[[listener]]
name = "IncomingMail"
interface = "Loopback"
port = 0
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"
"#,
        );
        if self.accept_all {
            t.push_str(
                r#"
  [[listener.hat]]
  group = "ALL"
  senders = ["ALL"]
  policy = "ACCEPTED"
"#,
            );
        }
        let rat: Vec<String> = self.rat.iter().map(|d| format!("\"{d}\"")).collect();
        t.push_str(&format!(
            "\n  [[listener.rat]]\n  recipients = [{}]\n  action = \"accept\"\n",
            rat.join(", ")
        ));
        let all = ("ALL".to_string(), self.sink.clone());
        for (domain, host) in self.routes.iter().chain([&all]) {
            t.push_str(&format!(
                "\n[[smtp_route]]\ndomain = \"{domain}\"\nhosts = [\"{host}\"]\n"
            ));
        }
        t.push_str(&format!(
            "\n[delivery]\ndefault_interface = \"{}\"\n",
            self.default_interface
        ));
        if self.quiet_bounces {
            t.push_str(
                r#"
[delivery.bounce]
initial_retry = 3600
max_retry = 3600
max_queue_lifetime = 259200
max_retries = 100
send_dsn = false
"#,
            );
        }
        t.push_str("\n[tls.outbound]\ndefault = \"off\"\n");
        if let Some(cpq) = &self.cpq {
            t.push_str(cpq);
        }
        if self.ssh {
            t.push_str("\n[ssh]\ninterface = \"Loopback\"\nport = 0\n");
        }
        if self.web {
            t.push_str("\n[web]\ninterface = \"Loopback\"\nport = 0\n");
        }
        t.push_str(&self.extra);
        t
    }
}
