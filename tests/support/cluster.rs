//! Gateways in a cluster, shared by the cluster tests: a gateway named for its machine,
//! its `clusterconfig connstatus`, waiting for the revision it runs.

use std::time::Duration;

use serde_json::Value;

use super::{json, wait_until, GatewayToml, Node, Sink};

/// Long enough for a loaded two-core machine; the benchmark measures the real figure.
pub const APPLIED: Duration = Duration::from_secs(15);

/// A gateway whose host name is `NAME.example.com`.
pub fn cluster_gateway(sink: &Sink, name: &str) -> Node {
    Node::start(
        &GatewayToml::new(sink)
            .hostname(&format!("{name}.example.com"))
            .build(),
    )
}

/// `clusterconfig connstatus`'s status.
pub fn cluster_status(node: &Node) -> Value {
    json(node, &["clusterconfig", "connstatus"])["status"].clone()
}

/// Waits until `node` runs `revision` (or a later one).
pub fn wait_revision(node: &Node, revision: u64) {
    wait_until(
        APPLIED,
        || (cluster_status(node)["revision"].as_u64()? >= revision).then_some(()),
        || {
            format!(
                "{} did not apply revision {revision}: {}\n{}",
                node.dir().display(),
                cluster_status(node),
                node.mail_logs()
            )
        },
    );
}

/// Waits until `node` says it is connected to its store (`true`) or not, within `within`.
pub fn wait_connected(node: &Node, connected: bool, within: Duration) {
    wait_until(
        within,
        || (cluster_status(node)["connected"].as_bool()? == connected).then_some(()),
        || {
            format!(
                "{} is not {}: {}\n{}",
                node.dir().display(),
                if connected {
                    "connected"
                } else {
                    "disconnected"
                },
                cluster_status(node),
                node.mail_logs()
            )
        },
    );
}

/// A CA and a certificate for `ips` signed by it: (CA PEM, certificate PEM, key PEM).
pub fn certificates(ips: &[String]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cluster test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(ips.to_vec())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}
