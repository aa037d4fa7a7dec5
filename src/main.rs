//! `pvo`: the email security gateway and central quarantine manager.
//!
//! One binary with the node roles (`pvo gateway run`), the one-command
//! `pvo quickstart`, and (in later steps) the appliance commands that talk to
//! a running node.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pvo::adapters::cli::{confirm, prompt};
use pvo::adapters::{clamd, cli};
use pvo::core::config;
use pvo::{commands, node, quickstart};

#[derive(Parser)]
#[command(
    name = "pvo",
    version,
    about = "PVO email security gateway and central quarantine manager"
)]
struct Cli {
    /// Data directory of the node to talk to (appliance commands).
    #[arg(long, global = true, default_value = "./pvo-data")]
    dir: PathBuf,
    /// Print the answer as JSON (appliance commands).
    #[arg(long, global = true)]
    json: bool,
    /// Run the appliance command as this node user (with that user's role) instead of
    /// the local superuser `admin`; the password comes from PVO_PASSWORD,
    /// --password-file, or a prompt in a terminal. Goes before the command
    /// (`pvo --user op status`).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The cluster level a configuration command reads or changes: `cluster`,
    /// `group:NAME` or `machine` (default: the level each setting is at).
    #[arg(long, global = true, value_name = "LEVEL")]
    level: Option<String>,
    /// The password for --user: the first line of this file.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway node.
    Gateway {
        #[command(subcommand)]
        action: GatewayAction,
    },
    /// Run a manager node (central quarantines), or enroll a gateway on it.
    Manager {
        #[command(subcommand)]
        action: ManagerAction,
    },
    /// Write default configurations under --dir (once) and run a gateway and a manager on loopback.
    Quickstart(quickstart::Args),
    /// Scan files (or stdin) with a clamd, the way the gateway does: prints each verdict.
    Avscan {
        /// clamd address: IP:PORT or a unix socket path.
        #[arg(long, default_value = "/run/clamav/clamd.ctl")]
        clamd: String,
        /// Seconds to wait for clamd.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Files to scan; none = standard input.
        files: Vec<PathBuf>,
    },
    /// System status (Online/Offline), counters and gauges.
    Status {
        /// `status detail`: rates and listeners too.
        detail: Option<String>,
    },
    /// Suspend receiving and delivery; open connections close after --delay seconds.
    Suspend {
        #[arg(long, default_value_t = 30)]
        delay: u64,
    },
    /// Resume receiving and delivery.
    Resume,
    /// Suspend listeners: all (the default), or the named ones (NAME[,NAME...]).
    Suspendlisteners { listener: Option<String> },
    /// Resume listeners: all (the default), or the named ones (NAME[,NAME...]).
    Resumelisteners { listener: Option<String> },
    /// Suspend delivery (mail is still received and queued).
    Suspenddel,
    /// Resume delivery.
    Resumedel,
    /// Reset the counters of `status`.
    Resetcounters,
    /// Recipient hosts in the queue, busiest first.
    Tophosts {
        #[arg(long, default_value = "active", value_parser = ["active", "conn", "delivered", "hard", "soft"])]
        sort: String,
    },
    /// Delivery status of one recipient host.
    Hoststatus { host: String },
    /// Queued recipients: by recipient host, by envelope sender, or all.
    Showrecipients(Selection),
    /// Delete queued recipients: by recipient host, by envelope sender, or all.
    Deleterecipients {
        #[command(flatten)]
        sel: Selection,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Bounce queued recipients (a DSN goes to each sender).
    Bouncerecipients {
        #[command(flatten)]
        sel: Selection,
        #[arg(long)]
        yes: bool,
    },
    /// Send every queued message to another host (HOST[:PORT]).
    Redirectrecipients {
        host: String,
        #[arg(long)]
        yes: bool,
    },
    /// Retry deferred recipients now: of one host, or all.
    Delivernow { host: Option<String> },
    #[command(flatten)]
    Config(cli::config::ConfigCommand),
    #[command(flatten)]
    Diag(cli::diag::DiagCommand),
    #[command(flatten)]
    Quarantine(cli::quarantine::QuarantineCommand),
    #[command(flatten)]
    Users(cli::users::UserCommand),
    #[command(flatten)]
    Pvo(cli::pvo::PvoCommand),
    #[command(flatten)]
    Cluster(cli::cluster::ClusterCommand),
    #[command(flatten)]
    Feature(cli::features::FeatureCommand),
}

#[derive(clap::Args, Clone)]
struct Selection {
    /// Recipients of this recipient host.
    #[arg(long)]
    host: Option<String>,
    /// Recipients of messages from this envelope sender.
    #[arg(long)]
    sender: Option<String>,
    /// Every queued recipient.
    #[arg(long)]
    all: bool,
}

impl Selection {
    /// The selection as arguments, asking in a terminal when none was given.
    fn to_args(&self, command: &str) -> Result<serde_json::Value> {
        let mut s = self.clone();
        if s.host.is_none() && s.sender.is_none() && !s.all {
            let Some(answer) = prompt(&format!(
                "Please select how you would like to {command}:\n1. By recipient host.\n2. By Envelope From address.\n3. All.\n[3]> "
            ))?
            else {
                anyhow::bail!("{command}: select the recipients with --host HOST, --sender ADDRESS or --all");
            };
            match answer.trim() {
                "1" => s.host = prompt("Please enter the hostname for the messages you wish to select.\n[]> ")?,
                "2" => s.sender = prompt("Please enter the Envelope From address for the messages you wish to select.\n[]> ")?,
                "" | "3" => s.all = true,
                other => anyhow::bail!("{other:?} is not one of 1, 2, 3"),
            }
        }
        Ok(serde_json::json!({ "host": s.host, "sender": s.sender, "all": s.all }))
    }
}

#[derive(Subcommand)]
enum GatewayAction {
    /// Run a gateway from a configuration file.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ManagerAction {
    /// Run a manager from a configuration file (node.role = "manager").
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Enroll a gateway: issue its CPQ certificate (deployment CA of this manager) into
    /// --out, and add it to the manager's enrolled gateways (pending until `commit` when
    /// the manager runs).
    Enroll {
        /// The manager's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The gateway's id (its [cpq] node_id).
        gateway_id: String,
        /// The address of the gateway's cpq_listener (released messages go there).
        #[arg(long)]
        address: std::net::IpAddr,
        /// The port of the gateway's cpq_listener.
        #[arg(long, default_value_t = 7025)]
        port: u16,
        /// Where to write the gateway's certificate, key and the CA certificate (the
        /// gateway's [cpq] dir, by default DATA_DIR/cpq).
        #[arg(long)]
        out: PathBuf,
    },
    /// Move a stopped manager's embedded quarantine store into PostgreSQL (resumable:
    /// run it again after an interruption), verify the copy by counts and checksums, and
    /// set [store] url in the configuration. The embedded store is left as it was.
    MigrateStore {
        /// The manager's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The PostgreSQL database: postgresql://USER@HOST:PORT/DB or key=value form.
        #[arg(long)]
        to: String,
        /// The CA that signed the database server's certificate (TLS to another host).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

fn main() {
    pvo::set_command_line(pvo::CommandLine {
        parse: parse_remote,
        help: appliance_help,
    });
    let cli = Cli::parse();
    // Rust starts with SIGPIPE ignored, so printing to a pipe whose reader has gone
    // (`pvo tophosts | head -1`) fails and `println!` panics. A command that prints
    // takes the Unix default back: it ends quietly when nobody reads (status 141 in a
    // shell), like any filter. A running node keeps ignoring it (peers close sockets).
    let runs_a_node = matches!(
        cli.command,
        Command::Gateway {
            action: GatewayAction::Run { .. }
        } | Command::Manager {
            action: ManagerAction::Run { .. }
        } | Command::Quickstart(_)
    );
    if !runs_a_node {
        // SAFETY: called first thing on the main thread, before any other thread
        // exists; SIG_DFL is a valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PVO_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(level) = &cli.level {
        cli::client::set_level(level.clone());
    }
    let result = match cli.command {
        Command::Gateway {
            action: GatewayAction::Run { config },
        } => run_node(&config, config::Role::Gateway, None),
        Command::Gateway {
            action: GatewayAction::Check { config },
        } => config::Config::load(&config)
            .map(|_| println!("{}: configuration is valid", config.display()))
            .map_err(anyhow::Error::from),
        Command::Manager {
            action: ManagerAction::Run { config },
        } => run_node(&config, config::Role::Manager, None),
        Command::Manager {
            action: ManagerAction::Check { config },
        } => config::Config::load(&config)
            .map(|_| println!("{}: configuration is valid", config.display()))
            .map_err(anyhow::Error::from),
        Command::Manager {
            action:
                ManagerAction::Enroll {
                    config,
                    gateway_id,
                    address,
                    port,
                    out,
                },
        } => cli::enroll::run(
            &config,
            &cli.dir,
            &gateway_id,
            address,
            port,
            &out,
            cli.json,
        ),
        Command::Manager {
            action: ManagerAction::MigrateStore { config, to, ca },
        } => pvo::node::migrate_store(&config, &to, ca.as_deref(), cli.json),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Avscan {
            clamd,
            timeout,
            files,
        } => avscan(&clamd, timeout, &files, cli.json),
        other => match &cli.user {
            Some(user) => cli::client::read_password(user, cli.password_file.as_deref()).and_then(
                |password| {
                    cli::client::set_credentials(commands::protocol::Credentials {
                        user: user.clone(),
                        password,
                    });
                    admin_command(&cli.dir, cli.json, other)
                },
            ),
            None => admin_command(&cli.dir, cli.json, other),
        },
    };
    if let Err(e) = result {
        // With --json, a failure before the node answered (no node running,
        // confirmation refused) is JSON too, so scripts parse one format.
        if cli.json {
            println!(
                "{}",
                serde_json::json!({ "ok": false, "data": { "error": format!("{e:#}") }, "text": format!("{e:#}") })
            );
        }
        eprintln!("pvo: {e:#}");
        std::process::exit(1);
    }
}

/// Runs one appliance command against the node of `dir`.
fn admin_command(dir: &std::path::Path, json: bool, cmd: Command) -> Result<()> {
    cli::client::run(dir, admin_request(cmd)?, json)
}

/// An appliance command line that arrived over SSH (words after the program name),
/// parsed by the same definitions as the CLI: the command and whether `--json`
/// was given; or the text to print instead and the exit code the CLI would have:
/// 0 for help, 2 for a usage error, 1 for anything else.
pub fn parse_remote(words: Vec<String>) -> pvo::ParsedLine {
    cli::with_remote(|| {
        let argv = std::iter::once("pvo".to_string()).chain(words);
        let parsed = match Cli::try_parse_from(argv) {
            Ok(c) => c,
            Err(e) => {
                use clap::error::ErrorKind;
                let help = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
                return Err((e.render().to_string(), if help { 0 } else { 2 }));
            }
        };
        let json = parsed.json;
        let level = parsed.level;
        match parsed.command {
            Command::Gateway { .. }
            | Command::Manager { .. }
            | Command::Quickstart(_)
            | Command::Avscan { .. } => Err((
                "That is not an appliance command; `help` lists the commands of this shell.".into(),
                2,
            )),
            other => admin_request(other)
                .map(|command| (command, json, level))
                .map_err(|e| (format!("{e:#}"), 1)),
        }
    })
}

/// The appliance commands with their one-line descriptions (`help` in the SSH shell).
pub fn appliance_help() -> String {
    use clap::CommandFactory;
    const NOT_APPLIANCE: [&str; 5] = ["gateway", "manager", "quickstart", "avscan", "help"];
    let cmd = Cli::command();
    let subs: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|c| !NOT_APPLIANCE.contains(&c.get_name()))
        .map(|c| {
            let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
            let first = about.lines().next().unwrap_or("").to_string();
            (c.get_name().to_string(), first)
        })
        .collect();
    let width = subs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::from("Commands (COMMAND --help for details; --json for JSON):\n");
    for (name, about) in subs {
        out.push_str(&format!("  {name:<width$}  {about}\n"));
    }
    out.push_str(&format!(
        "  {:<width$}  End the session (also quit, Ctrl-D).\n",
        "exit"
    ));
    out
}

/// The typed command of an appliance command line: its name and JSON arguments, read
/// by the one parser of commands.
fn admin_request(cmd: Command) -> Result<commands::command::Command> {
    use serde_json::json;
    let (name, args) = match cmd {
        Command::Status { detail } => {
            if let Some(d) = &detail {
                if d != "detail" {
                    anyhow::bail!("unknown argument {d:?}; did you mean `status detail`?");
                }
            }
            ("status", json!({ "detail": detail.is_some() }))
        }
        Command::Suspend { delay } => ("suspend", json!({ "delay": delay })),
        Command::Resume => ("resume", json!({})),
        Command::Suspendlisteners { listener } => {
            ("suspendlisteners", json!({ "listener": listener }))
        }
        Command::Resumelisteners { listener } => {
            ("resumelisteners", json!({ "listener": listener }))
        }
        Command::Suspenddel => ("suspenddel", json!({})),
        Command::Resumedel => ("resumedel", json!({})),
        Command::Resetcounters => ("resetcounters", json!({})),
        Command::Tophosts { sort } => ("tophosts", json!({ "sort": sort })),
        Command::Hoststatus { host } => ("hoststatus", json!({ "host": host })),
        Command::Showrecipients(sel) => ("showrecipients", sel.to_args("show messages")?),
        Command::Deleterecipients { sel, yes } => {
            let args = sel.to_args("delete messages")?;
            confirm(
                "The selected recipients will be deleted from the queue.",
                yes,
            )?;
            ("deleterecipients", args)
        }
        Command::Bouncerecipients { sel, yes } => {
            let args = sel.to_args("bounce messages")?;
            confirm(
                "The selected recipients will be bounced to their senders.",
                yes,
            )?;
            ("bouncerecipients", args)
        }
        Command::Redirectrecipients { host, yes } => {
            confirm(
                &format!("Every queued message will be delivered to {host}."),
                yes,
            )?;
            ("redirectrecipients", json!({ "host": host }))
        }
        Command::Delivernow { host } => ("delivernow", json!({ "host": host })),
        Command::Config(c) => c.to_request()?,
        Command::Diag(c) => c.to_request()?,
        Command::Quarantine(c) => c.to_request()?,
        Command::Users(c) => c.to_request()?,
        Command::Pvo(c) => c.to_request()?,
        Command::Cluster(c) => c.to_request()?,
        Command::Feature(c) => c.to_request()?,
        Command::Gateway { .. }
        | Command::Manager { .. }
        | Command::Quickstart(_)
        | Command::Avscan { .. } => {
            unreachable!("handled in main")
        }
    };
    Ok(commands::command::Command::from_parts(name, args)?)
}

/// `pvo avscan`: scan files with clamd and print the verdicts; exit 1 if any
/// file is infected or unscannable, 2 if clamd cannot be used.
fn avscan(addr: &str, timeout: u64, files: &[PathBuf], json: bool) -> Result<()> {
    use std::io::Read;
    let addr: clamd::ClamdAddr = addr.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let client = clamd::Clamd::new(addr, std::time::Duration::from_secs(timeout), 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    if files.is_empty() {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data)?;
        inputs.push(("stdin".into(), data));
    }
    for f in files {
        inputs.push((
            f.display().to_string(),
            std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        ));
    }
    if let Err(e) = rt.block_on(client.ping()) {
        eprintln!("pvo avscan: {e}");
        std::process::exit(2);
    }
    let mut worst = 0;
    let mut out = Vec::new();
    for (name, data) in inputs {
        match rt.block_on(client.scan(&data)) {
            Ok(v) => {
                let text = match &v {
                    clamd::VirusVerdict::Clean => "clean".to_string(),
                    clamd::VirusVerdict::Infected(sig) => format!("infected: {sig}"),
                    clamd::VirusVerdict::Unscannable(u) => format!("unscannable: {u:?}"),
                };
                if v != clamd::VirusVerdict::Clean {
                    worst = worst.max(1);
                }
                if !json {
                    println!("{name}: {text}");
                }
                out.push(serde_json::json!({ "file": name, "verdict": v }));
            }
            Err(e) => {
                eprintln!("pvo avscan: {name}: {e}");
                std::process::exit(2);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if worst > 0 {
        std::process::exit(worst);
    }
    Ok(())
}

/// Loads the configuration, starts the node and runs until SIGTERM/SIGINT.
pub fn run_node(
    path: &std::path::Path,
    want: config::Role,
    banner: Option<&dyn Fn(&node::Node)>,
) -> Result<()> {
    let cfg =
        config::Config::load(path).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    if cfg.role != want {
        anyhow::bail!(
            "{} is a {} configuration (node.role); run it with `pvo {} run --config {}`",
            path.display(),
            cfg.role.as_str(),
            cfg.role.as_str(),
            path.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let node = node::Node::start(cfg, path).await?;
        if let Some(p) = &node.initial_admin_password {
            println!("Initial password for admin: {p}");
        }
        if let Some(addr) = node.web {
            println!("Web listening on https://{addr}");
        }
        if let Some(addr) = node.ssh {
            println!("SSH listening on {addr}");
        }
        for (name, addr) in &node.listeners {
            println!("Listener {name} listening on {addr}");
        }
        if let Some(b) = banner {
            b(&node);
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        node.shutdown().await;
        Ok(())
    })
}
