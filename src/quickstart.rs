//! `pvo quickstart`: a working node on loopback with one command.
//!
//! The first run writes `DIR/pvo.toml` from the flags; later runs on the same
//! directory reuse that file (and the spool beside it), so the node that comes
//! back is the same node with its queue intact. Edit the file to change it.
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
}

/// The subject text the demo content filter sends to the Policy quarantine.
const DEMO_SUBJECT: &str = "[quarantine-test]";

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let path = dir.join("pvo.toml");
    let fresh = !path.exists();
    if fresh {
        if let Some(r) = &args.relay_host {
            if crate::config::parse_host_port(r).is_none() {
                anyhow::bail!("--relay-host {r:?} is not HOST:PORT (for example 127.0.0.1:2526)");
            }
        }
        std::fs::write(&path, default_config(&args))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("Wrote a default configuration to {}", path.display());
    } else {
        println!(
            "Using the existing configuration {} (edit it to change the node; the spool is kept)",
            path.display()
        );
    }
    let domain = args.domain.clone();
    let maildir = dir.join("maildir");
    let logs = dir.join("logs").join("mail_logs");
    let relay = args.relay_host.clone();
    // An older pvo.toml may predate the demo; only promise what the file has.
    let demo = std::fs::read_to_string(&path)
        .map(|t| t.contains(DEMO_SUBJECT))
        .unwrap_or(false);
    let banner = move |node: &crate::node::Node| {
        let addr = node
            .listeners
            .first()
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        let port = node.listeners.first().map(|(_, a)| a.port()).unwrap_or(0);
        println!();
        println!("PVO gateway running.");
        println!("  SMTP:        {addr} (accepts mail for {domain} from anyone; relays anything for 127.0.0.1)");
        match &relay {
            Some(r) if fresh => println!("  Delivers to: {r}"),
            _ if fresh => println!("  Delivers to: {}/new (a local maildir)", maildir.display()),
            _ => println!("  Delivers as configured in the existing pvo.toml"),
        }
        println!("  Log:         {}", logs.display());
        println!();
        println!("Send a test message:");
        println!("  swaks --server 127.0.0.1:{port} --to user@{domain} --from you@example.org");
        println!("or");
        println!(
            "  python3 -c \"import smtplib; smtplib.SMTP('127.0.0.1', {port}).sendmail('you@example.org', ['user@{domain}'], 'Subject: hello\\r\\n\\r\\nhi\\r\\n')\""
        );
        if demo {
            let d = dir.display();
            let swaks = format!(
                "swaks --server 127.0.0.1:{port} --to user@{domain} --from you@example.org"
            );
            println!();
            println!("Try the scanning demo (the content filter and DLP policy in pvo.toml):");
            println!("  To the Policy quarantine by subject:  {swaks} --header \"Subject: [quarantine-test] hello\"");
            println!("  To the Policy quarantine by DLP:      {swaks} --body \"card 4111 1111 1111 1111\"");
            println!("  See what is held:    pvo --dir {d} quarantine search");
            println!("  One message:         pvo --dir {d} quarantine show MID");
            println!("  Release (delivers):  pvo --dir {d} quarantine release MID");
            println!("  Delete:              pvo --dir {d} quarantine delete MID --yes");
            println!("  The quarantines:     pvo --dir {d} quarantineconfig");
            println!("  (MID: the first column of the search, or the number in `MID 3 quarantined to \"Policy\"` in the log.)");
        }
        println!();
        println!("Stop with Ctrl-C; run the same command again to restart with the queue intact.");
    };
    crate::run_node(&path, Some(&banner))
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
    )
}
