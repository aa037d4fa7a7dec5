//! `pvo quickstart`: a working gateway and manager on loopback with one command.
//!
//! The first run writes `DIR/gateway/pvo.toml` and `DIR/manager/pvo.toml` from
//! the flags, creates the deployment CA on the manager and enrolls the gateway
//! (its certificate in `DIR/gateway/cpq/`); later runs on the same directory
//! reuse all of it (and the spools beside them), so the nodes that come back
//! are the same nodes with their queues intact. Edit the files to change them.
//! The gateway is centralized: what it quarantines goes to the manager
//! (`the.cpq.host`, port 7025 on 127.0.0.2), and a release on the manager comes
//! back to the gateway's cpq_listener (127.0.0.1:7025) and is delivered.
//! Commands pick a node with `--dir DIR/gateway` or `--dir DIR/manager`.
//!
//! The default configuration includes a scanning demo — a content filter for subjects
//! containing `[quarantine-test]` and the DLP payment-card detector, both sending to the
//! Policy quarantine — and the banner says how to trigger, find and release them.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Data directory (configuration, spool, logs, maildir).
    #[arg(long, default_value = "./pvo-data")]
    dir: PathBuf,
    /// SMTP port on 127.0.0.1.
    #[arg(long, default_value_t = 2525)]
    smtp_port: u16,
    /// Deliver accepted mail to this next hop (HOST:PORT) instead of DIR/maildir.
    #[arg(long)]
    relay_host: Option<String>,
    /// The domain accepted from anyone.
    #[arg(long, default_value = "example.com")]
    domain: String,
    /// The CPQ port of both cpq_listeners (manager on 127.0.0.2, gateway on 127.0.0.1).
    #[arg(long, default_value_t = 7025)]
    cpq_port: u16,
    /// The SSH port of both nodes (manager on 127.0.0.2, gateway on 127.0.0.1); 0 lets the
    /// system choose.
    #[arg(long, default_value_t = 2222)]
    ssh_port: u16,
    /// The HTTPS port (REST API, metrics) of both nodes (manager on 127.0.0.2, gateway on
    /// 127.0.0.1); 0 lets the system choose.
    #[arg(long, default_value_t = 8443)]
    web_port: u16,
}

/// The manager's address on loopback.
const MANAGER_IP: &str = "127.0.0.2";
/// The gateway's id in the deployment.
const GATEWAY_ID: &str = "gw1";

/// The subject text the demo content filter sends to the Policy quarantine.
const DEMO_SUBJECT: &str = "[quarantine-test]";

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let top = std::fs::canonicalize(&args.dir)?;
    let dir = top.join("gateway");
    let mdir = top.join("manager");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&mdir)?;
    let path = dir.join("pvo.toml");
    let mpath = mdir.join("pvo.toml");
    let fresh = !path.exists();
    if fresh {
        if let Some(r) = &args.relay_host {
            if crate::core::config::parse_host_port(r).is_none() {
                anyhow::bail!("--relay-host {r:?} is not HOST:PORT (for example 127.0.0.1:2526)");
            }
        }
        std::fs::write(&path, default_config(&args))
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "Wrote a default gateway configuration to {}",
            path.display()
        );
    } else {
        println!(
            "Using the existing configuration {} (edit it to change the gateway; the spool is kept)",
            path.display()
        );
    }
    if !mpath.exists() {
        std::fs::write(&mpath, manager_config(&args))
            .with_context(|| format!("writing {}", mpath.display()))?;
        println!(
            "Wrote a default manager configuration to {}",
            mpath.display()
        );
    }
    // Deployment CA on the manager; the gateway enrolled with its certificate.
    let mcpq = mdir.join("cpq");
    let gcpq = dir.join("cpq");
    std::fs::create_dir_all(&mcpq)?;
    crate::core::cpq::pki::ensure_ca(&mcpq, "manager")?;
    if !gcpq.join(crate::core::cpq::pki::NODE_CERT).exists() {
        let serial = crate::core::cpq::pki::issue(
            &mcpq,
            GATEWAY_ID,
            crate::core::cpq::pki::CertRole::Gateway,
            &[GATEWAY_ID.to_string(), "127.0.0.1".to_string()],
            &gcpq,
        )?;
        // The manager accepts only this certificate from the gateway.
        let text = std::fs::read_to_string(&mpath)
            .with_context(|| format!("reading {}", mpath.display()))?;
        let mut doc =
            crate::core::config_store::Doc::parse(&text).map_err(|e| anyhow::anyhow!(e))?;
        if doc.cpq_gateway_serial(GATEWAY_ID, &serial).is_ok() {
            crate::core::atomic_file::write(&mpath, doc.text().as_bytes())?;
        }
        println!(
            "Enrolled gateway {GATEWAY_ID} on the manager (certificates in {})",
            gcpq.display()
        );
    }
    let domain = args.domain.clone();
    let maildir = dir.join("maildir");
    let logs = dir.join("logs").join("mail_logs");
    let mlogs = mdir.join("logs").join("mail_logs");
    let relay = args.relay_host.clone();
    // An older pvo.toml may predate the demo; only promise what the file has.
    let demo = std::fs::read_to_string(&path)
        .map(|t| t.contains(DEMO_SUBJECT))
        .unwrap_or(false);
    let gcfg = crate::core::config::Config::load(&path)
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let mcfg = crate::core::config::Config::load(&mpath)
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    // The gateway takes releases only from the manager's certificate, pinned here
    // (also for a directory made by an older version, whose manager certificate
    // carried no role and is replaced now).
    crate::net::cpq_certs::ensure_manager_cert(&mcfg)?;
    let pin = gcpq.join(crate::core::cpq::pki::MANAGER_CERT);
    let manager_cert = mcpq.join(crate::core::cpq::pki::NODE_CERT);
    if std::fs::read(&pin).ok() != std::fs::read(&manager_cert).ok() {
        let pem = std::fs::read(&manager_cert)
            .with_context(|| format!("reading {}", manager_cert.display()))?;
        crate::core::atomic_file::write(&pin, &pem)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let manager = crate::node::Node::start(mcfg, mpath.clone()).await?;
        let gateway = crate::node::Node::start(gcfg, path.clone()).await?;
        // The appliance's procedure on the manager: the migration wizard run and committed by
        // an Administrator (the gateway is added and enabled in the files written above).
        if let Err(e) = migration_wizard(&manager).await {
            println!("The migration wizard could not be run on the manager ({e:#}); run `pvo --dir {} pvoconfig migration automatic` and `commit` there.", mdir.display());
        }
        let manager_ssh = match ssh_access(&manager, &gateway).await {
            Ok(Some(how)) => how,
            Ok(None) => String::new(),
            Err(e) => format!("the manager has no SSH access to {GATEWAY_ID} ({e:#}); `applianceconfig new` on the manager gives it"),
        };
        for (name, addr) in &gateway.listeners {
            println!("Listener {name} listening on {addr}");
        }
        for (name, addr) in &manager.listeners {
            println!("Manager {name} listening on {addr}");
        }
        let addr = gateway
            .listeners
            .first()
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        let port = gateway.listeners.first().map(|(_, a)| a.port()).unwrap_or(0);
        let maddr = manager
            .listeners
            .first()
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        let (g, m) = (dir.display(), mdir.display());
        println!();
        println!("PVO gateway and manager running.");
        println!("  Gateway SMTP: {addr} (accepts mail for {domain} from anyone; relays anything for 127.0.0.1)");
        match &relay {
            Some(r) if fresh => println!("  Delivers to:  {r}"),
            _ if fresh => println!("  Delivers to:  {}/new (a local maildir)", maildir.display()),
            _ => println!("  Delivers as configured in the existing {}", path.display()),
        }
        println!("  Manager CPQ:  {maddr} (holds the gateway's Policy, Virus and Outbreak quarantines)");
        if !manager_ssh.is_empty() {
            println!("  Gateways:     {manager_ssh}");
        }
        println!("  Logs:         {} and {}", logs.display(), mlogs.display());
        println!("  Commands:     pvo --dir {g} status      pvo --dir {m} status");
        println!("  Users:        admin (Administrator); its first password: {g}/run/{pw} and {m}/run/{pw}", pw = crate::core::users::INITIAL_PASSWORD_FILE);
        // While the first password is unchanged, show it too (the files are 0600).
        for (what, d) in [("gateway", &dir), ("manager", &mdir)] {
            if let Ok(p) = std::fs::read_to_string(d.join("run").join(crate::core::users::INITIAL_PASSWORD_FILE)) {
                println!("  admin password on the {what}: {}", p.trim());
            }
        }
        for (what, node, d) in [("Gateway", &gateway, &g), ("Manager", &manager, &m)] {
            if let Some(a) = node.ssh {
                println!("  {what} SSH:  ssh -p {} admin@{} (the appliance commands; prompt `hostname> `)", a.port(), a.ip());
            }
            if let Some(a) = node.web {
                println!("  {what} web:  https://{a}/ (web UI, log in as admin; self-signed certificate), REST API https://{a}/api/v1 (a token: pvo --dir {d} userconfig token new admin), metrics https://{a}/metrics");
            }
        }
        println!();
        println!("Send a test message:");
        println!("  swaks --server 127.0.0.1:{port} --to user@{domain} --from you@example.org");
        println!("or");
        println!(
            "  python3 -c \"import smtplib; smtplib.SMTP('127.0.0.1', {port}).sendmail('you@example.org', ['user@{domain}'], 'Subject: hello\\r\\n\\r\\nhi\\r\\n')\""
        );
        if demo {
            let swaks = format!(
                "swaks --server 127.0.0.1:{port} --to user@{domain} --from you@example.org"
            );
            println!();
            println!("Try the scanning demo (the content filter and DLP policy in the gateway's pvo.toml);");
            println!("what the gateway quarantines goes to the manager:");
            println!("  To the Policy quarantine by subject:  {swaks} --header \"Subject: [quarantine-test] hello\"");
            println!("  To the Policy quarantine by DLP:      {swaks} --body \"card 4111 1111 1111 1111\"");
            println!("  See what is held:    pvo --dir {m} quarantine search");
            println!("  One message:         pvo --dir {m} quarantine show MID");
            println!("  Release (delivers):  pvo --dir {m} quarantine release MID");
            println!("  Delete:              pvo --dir {m} quarantine delete MID --yes");
            println!("  The quarantines:     pvo --dir {m} quarantineconfig");
            println!("  (MID: the manager's, the first column of the search; `grep \"CPQ ICID\" {}` shows each transfer.)", mlogs.display());
        }
        println!();
        println!("Stop with Ctrl-C; run the same command again to restart with the queues intact.");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        gateway.shutdown().await;
        manager.shutdown().await;
        Ok(())
    })
}

/// Runs the manager's migration wizard (automatic: each local quarantine to the central one
/// of its name) as `admin`, an Administrator, and commits it, as the appliance's procedure
/// does before a gateway is enabled; without it the manager's `diagnose` (and a later
/// `pvoconfig enable`) reports the wizard as not run. Nothing to do once it is committed.
async fn migration_wizard(manager: &crate::node::Node) -> Result<()> {
    use crate::commands::protocol::Request;
    let shared = &manager.shared;
    if shared
        .config
        .current()
        .cpq
        .as_ref()
        .is_none_or(|c| c.migration.is_some())
    {
        return Ok(());
    }
    let admin = crate::core::users::Identity::local_admin();
    for (command, args) in [
        (
            "pvoconfig",
            serde_json::json!({ "action": "migration", "mode": "automatic" }),
        ),
        (
            "commit",
            serde_json::json!({ "comment": "quickstart: migration wizard (automatic)" }),
        ),
    ] {
        let req = Request::new(crate::commands::command::Command::from_parts(
            command, args,
        )?);
        let r = crate::commands::dispatch_as(shared, req, &admin).await;
        if !r.ok {
            anyhow::bail!("{command}: {}", r.text.trim());
        }
    }
    Ok(())
}

/// Gives the manager SSH access to the gateway, as `applianceconfig new` does over the
/// network with the gateway's Administrator password: the manager's key for the
/// gateway's `admin`, then the gateway's SSH port and host key (seen on a first login
/// with that key) in the manager's `[[cpq.gateway]]`, committed. The manager then shows
/// the gateway's live state (`applianceconfig status`, the dashboard). `None` when it
/// already has access or a node has no SSH.
async fn ssh_access(
    manager: &crate::node::Node,
    gateway: &crate::node::Node,
) -> Result<Option<String>> {
    use crate::adapters::ssh_client::{exec, manager_key, Login};
    use crate::commands::dispatch_as;
    use crate::commands::protocol::Request;
    use crate::core::users::Identity;
    let Some(ssh) = gateway.ssh else {
        return Ok(None);
    };
    let added = manager.shared.config.current().cpq.as_ref().and_then(|c| {
        c.gateways
            .iter()
            .find(|g| g.id == GATEWAY_ID)
            .map(|g| g.ssh_port.is_some())
    });
    if added != Some(false) {
        return Ok(None);
    }
    let admin = Identity::local_admin();
    let run = |shared: &std::sync::Arc<crate::core::state::Handles>, command: &str, args| {
        let req = crate::commands::command::Command::from_parts(command, args).map(Request::new);
        let shared = shared.clone();
        let admin = admin.clone();
        async move {
            let r = dispatch_as(&shared, req?, &admin).await;
            if r.ok {
                Ok(r)
            } else {
                Err(anyhow::anyhow!("{}", r.text.trim()))
            }
        }
    };
    let (key, line) = manager_key(&manager.shared.config)?;
    if let Err(e) = run(
        &gateway.shared,
        "userconfig",
        serde_json::json!({ "action": "sshkey", "sub": "add", "name": "admin", "key": line }),
    )
    .await
    {
        if !e.to_string().contains("already") {
            return Err(e.context("installing the manager's key on the gateway"));
        }
    }
    let first = exec(
        ssh.ip(),
        ssh.port(),
        "admin",
        &Login::Key(key),
        None,
        "pvoconfig status --json",
    )
    .await
    .context("logging into the gateway with the manager's key")?;
    run(
        &manager.shared,
        "applianceconfig",
        serde_json::json!({ "action": "edit", "id": GATEWAY_ID, "ssh_port": ssh.port(), "user": "admin", "host_key": first.host_key }),
    )
    .await?;
    run(
        &manager.shared,
        "commit",
        serde_json::json!({ "comment": "quickstart: SSH access to the gateway" }),
    )
    .await?;
    Ok(Some(format!(
        "{GATEWAY_ID}; the manager logs into it over SSH with its key (host key {}) and shows its live state",
        first.host_key
    )))
}

fn manager_config(args: &Args) -> String {
    format!(
        r#"# Written by `pvo quickstart`: the manager (central PVO quarantines).
[node]
role = "manager"
hostname = "manager.pvo.localhost"
data_dir = "."

[[interface]]
name = "Management"
address = "{MANAGER_IP}"
hostname = "manager.pvo.localhost"

[cpq]
node_id = "manager"
interface = "Management"
port = {cpq}

# The appliance commands over SSH (`ssh -p {ssh} admin@{MANAGER_IP}`).
[ssh]
port = {ssh}

# The REST API (`https://{MANAGER_IP}:{web}/api/v1`, tokens from `pvo userconfig token new`)
# and `/metrics` over HTTPS with the node's self-signed certificate.
[web]
port = {web}

# Enrolled gateways: released messages go back to their cpq_listener.
[[cpq.gateway]]
id = "{GATEWAY_ID}"
address = "127.0.0.1"
port = {cpq}
"#,
        cpq = args.cpq_port,
        ssh = args.ssh_port,
        web = args.web_port,
    )
}

fn default_config(args: &Args) -> String {
    let route = match &args.relay_host {
        Some(r) => format!("hosts = [\"{r}\"]"),
        None => "maildir = \"maildir\"".to_string(),
    };
    format!(
        r#"# Written by `pvo quickstart`. The full format: docs/gateway.example.toml.
[node]
hostname = "pvo.localhost"
data_dir = "."

[[interface]]
name = "Management"
address = "127.0.0.1"
hostname = "pvo.localhost"

[[policy]]
name = "RELAYED"
behavior = "relay"
max_message_size = 20971520
max_recipients = 1000
max_concurrency = 1000

[[policy]]
name = "ACCEPTED"
behavior = "accept"
max_message_size = 10485760
max_recipients = 100
max_concurrency = 200

[[listener]]
name = "IncomingMail"
interface = "Management"
port = {port}
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"

  [[listener.hat]]
  group = "ALL"
  senders = ["ALL"]
  policy = "ACCEPTED"

  [[listener.rat]]
  recipients = ["{domain}"]
  action = "accept"

[[smtp_route]]
domain = "ALL"
{route}

[delivery]
default_interface = "Auto"

# Centralized PVO quarantines: what a scan quarantines goes to the manager.
[cpq]
node_id = "{gw}"
interface = "Management"
port = {cpq}
mode = "central"
manager = "{mip}:{cpq}"

# The appliance commands over SSH (`ssh -p {ssh} admin@127.0.0.1`).
[ssh]
port = {ssh}

# The REST API (`https://127.0.0.1:{web}/api/v1`, tokens from `pvo userconfig token new`)
# and `/metrics` over HTTPS with the node's self-signed certificate.
[web]
port = {web}

# Scanning demo. A message whose subject contains "{demo}" goes to the Policy
# quarantine, and so does one with a payment card number (Luhn-checked); both
# mail policies run them, so it works from 127.0.0.1 (outgoing) and from
# anywhere else (incoming). `pvo quarantine search` lists what is held. To scan
# for viruses, add [antivirus] clamd = "IP:PORT" and antivirus = true below.
[[content_filter]]
name = "quarantine_test"
conditions = {{ subject_contains = "{demo}" }}
actions = [{{ quarantine = "Policy" }}]

[[dlp_policy]]
name = "payment_cards"
detectors = ["payment_card"]
[dlp_policy.actions]
low = [{{ quarantine = "Policy" }}]

[[mail_policy]]
name = "DEFAULT_INCOMING"
direction = "incoming"
content_filters = ["ALL"]
dlp_policies = ["payment_cards"]

[[mail_policy]]
name = "DEFAULT_OUTGOING"
direction = "outgoing"
content_filters = ["ALL"]
dlp_policies = ["payment_cards"]
"#,
        port = args.smtp_port,
        domain = args.domain,
        demo = DEMO_SUBJECT,
        gw = GATEWAY_ID,
        mip = MANAGER_IP,
        cpq = args.cpq_port,
        ssh = args.ssh_port,
        web = args.web_port,
    )
}
