//! The fast tier's integration-test binary (`autotests = false` in Cargo.toml): one module
//! per area, sharing the helpers in `support`. One binary links once, which matters on two
//! cores. The long runs are in the soak tier (`tests/soak.rs`), which shares `support`.

mod cluster_db;
mod e2e_api;
mod e2e_cluster;
mod e2e_cluster_faults;
mod e2e_cluster_pvo;
mod e2e_cluster_token;
mod e2e_cluster_users;
mod e2e_cluster_web;
mod e2e_cluster_web_settings;
mod e2e_commands;
mod e2e_config;
mod e2e_cpq;
mod e2e_cpq_auth;
mod e2e_diag;
mod e2e_durability;
mod e2e_durable;
mod e2e_featurekeys;
mod e2e_files;
mod e2e_filters;
mod e2e_framing;
mod e2e_gateway;
mod e2e_limits;
mod e2e_logins;
mod e2e_quickstart;
mod e2e_scanning;
mod e2e_smtp_input;
mod e2e_support;
mod e2e_users;
mod e2e_web;
mod e2e_web_admin;
mod e2e_web_bulk;
mod e2e_web_detail;
mod in_process;
mod quarantine_pg;
mod support;
