//! CLI of the diagnostic commands (see `commands::diag_cmds`).

use anyhow::{bail, Result};
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum DiagCommand {
    /// Connect to HOST (port 25 unless PORT) from an interface of the node and show the
    /// banner, or the exact connect error.
    Telnet {
        /// The interface to connect from: a configured name, or Auto (the system picks
        /// the address). Default: the default delivery interface (`deliveryconfig`).
        #[arg(long)]
        interface: Option<String>,
        /// Seconds to wait for the connection and for the banner.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout: u64,
        /// Host name or address.
        host: String,
        /// TCP port.
        #[arg(default_value_t = 25, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
    /// Check STARTTLS to HOST and its certificate for DOMAIN, step by step, with the
    /// trust that delivery uses (public CAs and tls.outbound.ca_file).
    Tlsverify {
        /// The interface to connect from: a configured name, or Auto. Default: the
        /// default delivery interface.
        #[arg(long)]
        interface: Option<String>,
        /// Seconds to wait for the connection and for each answer.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout: u64,
        /// The domain the certificate must be valid for.
        domain: String,
        /// The mail server: HOST, HOST:PORT, [IPv6] or [IPv6]:PORT (port 25 by default).
        /// For `tlsverify the.cpq.host` it defaults to the manager ([cpq] manager), checked
        /// with the deployment CA and this gateway's CPQ certificate.
        #[arg(value_name = "HOST[:PORT]")]
        host: Option<String>,
    },
}

impl DiagCommand {
    /// The admin request for this command: (command name, JSON arguments). (It takes
    /// `self` because the caller in `main.rs` is done with the command; the name and
    /// signature are shared with the other command groups.)
    #[allow(clippy::wrong_self_convention)]
    pub fn to_request(self) -> Result<(&'static str, serde_json::Value)> {
        match self {
            DiagCommand::Telnet {
                interface,
                timeout,
                host,
                port,
            } => Ok((
                "telnet",
                json!({ "interface": interface, "timeout": timeout, "host": host, "port": port }),
            )),
            DiagCommand::Tlsverify {
                interface,
                timeout,
                domain,
                host,
            } => {
                let Some(host) = host else {
                    if domain != crate::core::config::CPQ_HOST {
                        bail!("tlsverify: give the mail server to connect to: tlsverify DOMAIN HOST[:PORT] (only `tlsverify the.cpq.host` finds its host itself)");
                    }
                    return Ok((
                        "tlsverify",
                        json!({ "interface": interface, "timeout": timeout, "domain": domain }),
                    ));
                };
                let Some((host, port)) = crate::core::config::parse_host_port(&host) else {
                    bail!("tlsverify: {host:?} is not HOST[:PORT] (for example mx.example.com, 192.0.2.1:2525 or [2001:db8::1]:25)");
                };
                if port == 0 {
                    bail!("tlsverify: port 0 is not a port; allowed: 1 to 65535");
                }
                Ok((
                    "tlsverify",
                    json!({ "interface": interface, "timeout": timeout, "domain": domain, "host": host, "port": port }),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: DiagCommand,
    }

    fn request(args: &[&str]) -> Result<(&'static str, serde_json::Value)> {
        let cli = Cli::try_parse_from(std::iter::once("pvo").chain(args.iter().copied()))?;
        cli.cmd.to_request()
    }

    #[test]
    fn diag_requests() {
        let cases: &[(&[&str], &str, serde_json::Value)] = &[
            (
                &["telnet", "mx.example.com"],
                "telnet",
                json!({ "interface": null, "timeout": 10, "host": "mx.example.com", "port": 25 }),
            ),
            (
                &[
                    "telnet",
                    "--interface",
                    "Data2",
                    "--timeout",
                    "2",
                    "10.0.0.1",
                    "7025",
                ],
                "telnet",
                json!({ "interface": "Data2", "timeout": 2, "host": "10.0.0.1", "port": 7025 }),
            ),
            (
                &["tlsverify", "example.com", "mx.example.com:7025"],
                "tlsverify",
                json!({ "interface": null, "timeout": 10, "domain": "example.com", "host": "mx.example.com", "port": 7025 }),
            ),
            (
                &[
                    "tlsverify",
                    "--interface",
                    "Auto",
                    "example.com",
                    "MX.Example.com",
                ],
                "tlsverify",
                json!({ "interface": "Auto", "timeout": 10, "domain": "example.com", "host": "mx.example.com", "port": 25 }),
            ),
            (
                &["tlsverify", "example.com", "[::1]:2525"],
                "tlsverify",
                json!({ "interface": null, "timeout": 10, "domain": "example.com", "host": "::1", "port": 2525 }),
            ),
        ];
        for (args, name, want) in cases {
            let (n, got) = request(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!((n, &got), (*name, want), "{args:?}");
        }
    }

    #[test]
    fn diag_rejects_bad_arguments() {
        for args in [
            &["telnet", "h", "0"][..],
            &["telnet", "h", "70000"],
            &["telnet", "--timeout", "0", "h"],
            &["tlsverify", "example.com", "mx:port"],
            &["tlsverify", "example.com", "a b"],
            &["tlsverify", "example.com"],
        ] {
            assert!(request(args).is_err(), "{args:?} was accepted");
        }
    }
}
