//! The manager's side of "centralized services": adding a gateway over SSH
//! (`applianceconfig`), and asking it where released mail goes.
//!
//! Adding logs into the gateway once with its Administrator's password,
//! installs the manager's SSH key for that user (`userconfig sshkey add`),
//! issues the gateway's CPQ certificate from the deployment CA and installs it
//! (`cpqcert install`), then asks the gateway for its cpq_listener
//! (`pvoconfig status --json`) and records all of it in the manager's pending
//! configuration (`[[cpq.gateway]]`: address, port, SSH port, user and host key
//! fingerprint). Afterwards the manager logs in with its key; when a release
//! cannot reach a gateway it asks again (at most once a minute per gateway)
//! and keeps the answer in `DATA_DIR/cpq/endpoints.json`, which overrides the
//! configured address.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use russh::{client, ChannelMsg};

use crate::core::cpq::shell::{parse_status, Endpoint, Exec, ShellLogin};
use crate::core::state::{BoxFuture, ConfigHandle, CpqHandle, MailHandle};

fn endpoints_path(config: &ConfigHandle) -> PathBuf {
    config.current().data_dir.join("cpq").join("endpoints.json")
}

/// How long an SSH exchange with a gateway may take.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(20);

/// How to log in.
pub enum Login {
    Password(String),
    Key(Arc<PrivateKey>),
}

struct Client {
    expected: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    /// The reason of the server's disconnect, when it sent one (a refused join token or
    /// a throttled login says why there: SSH has no message for a refused password).
    reason: Arc<(Mutex<Option<String>>, tokio::sync::Notify)>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fp = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.fingerprint(HashAlg::Sha256).to_string()
            }
            // A certificate is not a key the manager pinned.
            russh::keys::PublicKeyOrCertificate::Certificate(_) => return Ok(false),
        };
        *self.seen.lock().unwrap() = Some(fp.clone());
        Ok(self.expected.as_ref().is_none_or(|e| *e == fp))
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                *self.reason.0.lock().unwrap() = Some(info.message);
                self.reason.1.notify_one();
                Ok(())
            }
            client::DisconnectReason::Error(e) => {
                self.reason.1.notify_one();
                Err(e)
            }
        }
    }
}

/// How long a refused login waits for the server to say why (its disconnect).
const REASON_WAIT: Duration = Duration::from_secs(1);

/// Runs `command` on `host:port` as `user` (one exec channel).
pub async fn exec(
    host: IpAddr,
    port: u16,
    user: &str,
    login: &Login,
    expected_host_key: Option<&str>,
    command: &str,
) -> Result<Exec> {
    let seen = Arc::new(Mutex::new(None));
    let reason = Arc::new((Mutex::new(None), tokio::sync::Notify::new()));
    let handler = Client {
        expected: expected_host_key.map(str::to_string),
        seen: seen.clone(),
        reason: reason.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(SSH_TIMEOUT),
        ..Default::default()
    });
    let run = async {
        let mut session = match client::connect(config, (host, port), handler).await {
            Ok(s) => s,
            Err(russh::Error::UnknownKey) => {
                bail!(
                    "{host}:{port} presented the SSH host key {}, not the expected {}: refused before logging in, so no password or secret was sent (if the machine was reinstalled, delete and add it again, or make a new join token)",
                    seen.lock().unwrap().clone().unwrap_or_default(),
                    expected_host_key.unwrap_or("")
                )
            }
            Err(e) => return Err(anyhow::anyhow!("SSH to {host}:{port}: {e}")),
        };
        let ok = match login {
            Login::Password(p) => session
                .authenticate_password(user, p)
                .await
                .context("SSH password login")?
                .success(),
            Login::Key(k) => session
                .authenticate_publickey(
                    user,
                    PrivateKeyWithHashAlg::new(
                        k.clone(),
                        session.best_supported_rsa_hash().await?.flatten(),
                    ),
                )
                .await
                .context("SSH key login")?
                .success(),
        };
        if !ok {
            let _ = tokio::time::timeout(REASON_WAIT, reason.1.notified()).await;
            let why = reason.0.lock().unwrap().take();
            bail!(
                "SSH login as {user} on {host}:{port} was refused ({}){}",
                match login {
                    Login::Password(_) => "wrong user or password",
                    Login::Key(_) => "the manager's key is not installed for that user",
                },
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
        }
        let mut channel = session.channel_open_session().await?;
        channel.exec(true, command).await?;
        let mut output = Vec::new();
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { ref data } | ChannelMsg::ExtendedData { ref data, .. } => {
                    output.extend_from_slice(data)
                }
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                _ => {}
            }
        }
        let _ = session
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        Ok(Exec {
            status: status.unwrap_or(255),
            output: String::from_utf8_lossy(&output).into_owned(),
            host_key: seen.lock().unwrap().clone().unwrap_or_default(),
        })
    };
    tokio::time::timeout(SSH_TIMEOUT * 2, run)
        .await
        .map_err(|_| anyhow::anyhow!("SSH to {host}:{port} timed out"))?
}

/// The manager's SSH identity (its host key), as key and `authorized_keys` line.
pub fn manager_key(config: &ConfigHandle) -> Result<(Arc<PrivateKey>, String)> {
    let cfg = config.current();
    let key = crate::net::host_key::host_key(&cfg.data_dir.join("ssh"))?;
    let line = key
        .public_key()
        .to_openssh()
        .map_err(|e| anyhow::anyhow!("encoding the manager's public key: {e}"))?;
    let node = cfg
        .cpq
        .as_ref()
        .map(|c| c.node_id.clone())
        .unwrap_or_else(|| cfg.hostname.clone());
    Ok((Arc::new(key), format!("{line} pvo-manager@{node}")))
}

/// Asks `gateway` over SSH where released mail goes and caches the answer;
/// at most once a minute per gateway. Called when a release cannot reach it.
pub fn refresh_endpoint(
    config: &Arc<ConfigHandle>,
    mail: &Arc<MailHandle>,
    cpq: &Arc<CpqHandle>,
    gateway: &str,
) {
    {
        let mut asked = cpq.state.endpoints.asked.lock().unwrap();
        if asked
            .get(gateway)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        asked.insert(gateway.to_string(), std::time::Instant::now());
    }
    let (config, mail, cpq) = (config.clone(), mail.clone(), cpq.clone());
    let gateway = gateway.to_string();
    tokio::spawn(async move {
        match query_endpoint(&config, &gateway).await {
            Ok(ep) => {
                let old = cpq.state.endpoints.get(&gateway);
                if old != Some((ep.address, ep.port)) {
                    mail.log.emit(crate::core::events::Event::GatewayEndpoint {
                        gateway: &gateway,
                        address: &ep.address,
                        port: ep.port,
                    });
                    cpq.state.endpoints.set(
                        &endpoints_path(&config),
                        &gateway,
                        (ep.address, ep.port),
                    );
                    mail.queue.send(crate::core::queue::Event::DeliverNow(
                        Some(crate::core::config::CPQ_RELEASE_HOST.to_string()),
                        tokio::sync::oneshot::channel().0,
                    ));
                }
            }
            Err(e) => mail
                .log
                .emit(crate::core::events::Event::GatewayEndpointUnknown {
                    gateway: &gateway,
                    error: &e,
                }),
        }
    });
}

/// The manager's [`crate::core::state::GatewayShell`]: SSH with the manager's key. It
/// lives in the CPQ handle whose endpoints it refreshes, so it holds that one weakly
/// (`node` builds both together).
pub struct Ssh {
    pub config: Arc<ConfigHandle>,
    pub mail: Arc<MailHandle>,
    pub cpq: std::sync::Weak<CpqHandle>,
}

impl crate::core::state::GatewayShell for Ssh {
    fn query_status<'a>(&'a self, gateway: &'a str) -> BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(query_status(&self.config, gateway))
    }

    fn refresh_endpoint(&self, gateway: &str) {
        // Gone only while the node is being dropped: nothing to refresh then.
        if let Some(cpq) = self.cpq.upgrade() {
            refresh_endpoint(&self.config, &self.mail, &cpq, gateway)
        }
    }

    fn timeout(&self) -> Duration {
        SSH_TIMEOUT
    }

    fn query_endpoint<'a>(&'a self, gateway: &'a str) -> BoxFuture<'a, Result<Endpoint>> {
        Box::pin(query_endpoint(&self.config, gateway))
    }

    fn manager_key_line(&self) -> Result<String> {
        manager_key(&self.config).map(|(_, line)| line)
    }

    fn exec<'a>(
        &'a self,
        to: (IpAddr, u16),
        user: &'a str,
        login: &'a ShellLogin,
        expected_host_key: Option<&'a str>,
        command: &'a str,
    ) -> BoxFuture<'a, Result<Exec>> {
        Box::pin(async move {
            let login = match login {
                ShellLogin::Password(p) => Login::Password(p.clone()),
                ShellLogin::ManagerKey => Login::Key(manager_key(&self.config)?.0),
            };
            exec(to.0, to.1, user, &login, expected_host_key, command).await
        })
    }
}

/// `pvoconfig status --json` on an added gateway, with the manager's key: where
/// released mail goes.
pub async fn query_endpoint(config: &ConfigHandle, gateway: &str) -> Result<Endpoint> {
    Ok(parse_status(&status_output(config, gateway).await?)?)
}

/// The `data` of `pvoconfig status --json` on an added gateway (its mode, backlog
/// and migration: `cpq::gateways`).
pub async fn query_status(config: &ConfigHandle, gateway: &str) -> Result<serde_json::Value> {
    let out = status_output(config, gateway).await?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| {
        format!(
            "the gateway's `pvoconfig status --json` is not JSON: {}",
            out.trim()
        )
    })?;
    if v["ok"] != true {
        bail!(
            "the gateway refused `pvoconfig status`: {}",
            v["text"].as_str().unwrap_or(out.trim()).trim()
        );
    }
    Ok(v["data"].clone())
}

async fn status_output(config: &ConfigHandle, gateway: &str) -> Result<String> {
    let cfg = config.current();
    let g = cfg
        .cpq
        .as_ref()
        .and_then(|c| c.gateways.iter().find(|g| g.id == gateway))
        .cloned()
        .with_context(|| format!("gateway {gateway} is not added"))?;
    drop(cfg);
    let Some(ssh_port) = g.ssh_port else {
        bail!("gateway {gateway} was enrolled without SSH (no ssh_port): add it with `applianceconfig new`");
    };
    let (key, _) = manager_key(config)?;
    let out = exec(
        g.address,
        ssh_port,
        &g.ssh_user,
        &Login::Key(key),
        g.ssh_host_key.as_deref(),
        "pvoconfig status --json",
    )
    .await?;
    Ok(out.output)
}
