//! The adapters: everything that talks to the outside. Network: the SMTP server, the
//! SMTP/CPQ client (`delivery`), clamd, the manager's SSH client to gateways
//! (`ssh_client`), the cluster's PostgreSQL store (`cluster_db`). Management: the admin socket, the command line, the SSH shell, the web
//! UI with its REST API and metrics, the diagnostics. Each imports the core, the commands
//! and the net layer, never another adapter (`tests/layers.rs` checks it).

pub mod admin;
pub mod clamd;
pub mod cli;
pub mod cluster_db;
pub mod delivery;
pub mod diag;
pub mod smtp_server;
pub mod ssh;
pub mod ssh_client;
pub mod web;
