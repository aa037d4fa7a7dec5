//! What the manager's shell on a gateway deals in: how it logs in, what one command
//! printed there, and the gateway's answer to `pvoconfig status --json` (its id and
//! cpq_listener, where released mail goes).
//!
//! These are facts of the CPQ domain, not of the SSH client that carries them
//! (`ssh_client`): `applianceconfig new` and `test` in the commands read them through
//! `state::GatewayShell` without importing the client. The status parser is pure and
//! lives here with the answer it reads.

use std::net::IpAddr;

/// How the manager logs into a gateway.
#[derive(Debug, Clone)]
pub enum ShellLogin {
    /// The gateway Administrator's password, once, to install the manager's key.
    Password(String),
    /// The manager's own SSH key (its host key), installed on the gateway.
    ManagerKey,
}

/// What one command printed on the gateway.
pub struct Exec {
    pub status: u32,
    pub output: String,
    /// The gateway's SSH host key fingerprint (`SHA256:...`).
    pub host_key: String,
}

/// The gateway's answer to `pvoconfig status --json`: its id and cpq_listener.
#[derive(Debug)]
pub struct Endpoint {
    pub node_id: String,
    pub address: IpAddr,
    pub port: u16,
}

/// Why a `pvoconfig status --json` answer names no endpoint; the texts are what
/// `applianceconfig` prints.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("the gateway's `pvoconfig status --json` is not JSON: {output}: {error}")]
    NotJson { output: String, error: String },
    #[error("the gateway has no cpq_listener (no [cpq] section): {0}")]
    NoListener(String),
    #[error("cpq_listener address {address:?}: {error}")]
    Address { address: String, error: String },
}

/// Reads the gateway's `pvoconfig status --json` output.
pub fn parse_status(output: &str) -> Result<Endpoint, StatusError> {
    let output = output.trim();
    let v: serde_json::Value = serde_json::from_str(output).map_err(|e| StatusError::NotJson {
        output: output.to_string(),
        error: e.to_string(),
    })?;
    let d = &v["data"];
    let l = &d["cpq_listener"];
    let (Some(addr), Some(port)) = (l["address"].as_str(), l["port"].as_u64()) else {
        return Err(StatusError::NoListener(output.to_string()));
    };
    Ok(Endpoint {
        node_id: d["node_id"].as_str().unwrap_or_default().to_string(),
        address: addr
            .parse()
            .map_err(|e: std::net::AddrParseError| StatusError::Address {
                address: addr.to_string(),
                error: e.to_string(),
            })?,
        port: port as u16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_answers_are_parsed_or_explained() {
        let ep = parse_status(
            r#"{"ok":true,"text":"","data":{"node_id":"gw1","cpq_listener":{"address":"10.0.0.5","port":7025}}}"#,
        )
        .unwrap();
        assert_eq!((ep.node_id.as_str(), ep.port), ("gw1", 7025));
        assert_eq!(ep.address.to_string(), "10.0.0.5");
        let e = parse_status(r#"{"ok":true,"data":{"node_id":"gw1"}}"#).unwrap_err();
        assert!(format!("{e:#}").contains("no cpq_listener"), "{e:#}");
        assert!(parse_status("Unknown command").is_err());
    }

    #[test]
    fn the_errors_read_as_the_context_chain_did() {
        let e = parse_status("Unknown command\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the gateway's `pvoconfig status --json` is not JSON: Unknown command: expected value at line 1 column 1"
        );
        let e = parse_status(r#"{"data":{"cpq_listener":{"address":"x","port":1}}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cpq_listener address \"x\": invalid IP address syntax"
        );
        // Through anyhow (the shell's callers), `{:#}` adds nothing: no source chain.
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "cpq_listener address \"x\": invalid IP address syntax"
        );
    }
}
