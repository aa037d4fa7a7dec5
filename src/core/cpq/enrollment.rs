//! Whether a gateway is added on a manager, as the gateway itself can tell: the manager's
//! `applianceconfig new` leaves a CPQ certificate issued for the gateway's id by the
//! deployment CA and pins the manager's own certificate (`cpqcert install`). A cluster
//! member reports this to the cluster's store (`core::cluster::sync`), so that enabling
//! centralization at a level can name every machine of that level that is not added yet.
//!
//! The CA and the manager are compared by the SHA-256 of their certificate files as
//! installed (the manager installs the same files on every gateway it adds), never shown
//! as anything but a short fingerprint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::cpq::pki;

/// What a gateway holds of its enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Enrollment {
    /// The id its `[cpq]` gives it (`None`: no `[cpq]`).
    pub id: Option<String>,
    /// The subject CN of its CPQ certificate (`None`: none installed, or unreadable).
    pub certificate: Option<String>,
    /// The certificate's end of validity (Unix seconds).
    pub not_after: Option<u64>,
    /// SHA-256 (hex) of the deployment CA certificate installed.
    pub ca: Option<String>,
    /// SHA-256 (hex) of the pinned manager certificate.
    pub manager: Option<String>,
}

fn digest(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex::encode(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
    ))
}

impl Enrollment {
    /// Reads what `dir` (a node's CPQ directory) holds for the gateway `id`.
    pub fn read(id: Option<&str>, dir: &Path) -> Enrollment {
        let summary = pki::summarize(&dir.join(pki::NODE_CERT)).ok();
        Enrollment {
            id: id.map(str::to_string),
            certificate: summary.as_ref().map(|s| s.subject_cn.clone()),
            not_after: summary.map(|s| s.not_after),
            ca: digest(&dir.join(pki::CA_CERT)),
            manager: digest(&dir.join(pki::MANAGER_CERT)),
        }
    }

    /// Why the machine `name` is not added on the manager that `ours` is added on, or
    /// `None` when it is (a certificate for its name from the same CA, the same manager
    /// pinned).
    pub fn missing(&self, name: &str, ours: &Enrollment) -> Option<String> {
        if self.certificate.as_deref() != Some(name) {
            return Some(match &self.certificate {
                None => "no CPQ certificate: not added on the manager".to_string(),
                Some(cn) => format!("its CPQ certificate is issued for {cn}, not for {name}"),
            });
        }
        if self.ca.is_none() || self.ca != ours.ca {
            return Some("added on another manager's deployment (a different CA)".to_string());
        }
        if self.manager.is_none() || self.manager != ours.manager {
            return Some("its pinned manager is not this machine's".to_string());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(cert: Option<&str>, ca: &str, manager: &str) -> Enrollment {
        Enrollment {
            id: Some("x".into()),
            certificate: cert.map(str::to_string),
            not_after: Some(1),
            ca: Some(ca.into()).filter(|s: &String| !s.is_empty()),
            manager: Some(manager.into()).filter(|s: &String| !s.is_empty()),
        }
    }

    #[test]
    fn a_machine_is_added_only_with_its_own_certificate_from_the_same_deployment() {
        let ours = e(Some("gw1"), "ca", "m");
        assert_eq!(e(Some("gw2"), "ca", "m").missing("gw2", &ours), None);
        for (other, why) in [
            (e(None, "", ""), "not added on the manager"),
            (e(Some("gw1"), "ca", "m"), "issued for gw1, not for gw2"),
            (e(Some("gw2"), "other", "m"), "a different CA"),
            (e(Some("gw2"), "ca", ""), "pinned manager"),
            (e(Some("gw2"), "ca", "m2"), "pinned manager"),
        ] {
            let got = other.missing("gw2", &ours).expect("missing");
            assert!(got.contains(why), "{got}");
        }
        let nothing = Enrollment::read(Some("gw1"), Path::new("/nonexistent"));
        assert_eq!((nothing.certificate, nothing.ca), (None, None));
    }
}
