//! The core: the domain of a node — the configuration model, envelopes, ids and the
//! clock, the queue and its schedule, the scanning pipeline, the quarantine service with
//! its access rules, the CPQ records, ledgers, inbox and migration, users, audit and the
//! `mail_logs` events, a machine's configuration composed from its cluster layers. It imports the engines (`crates/*`) and nothing above it: it
//! reaches the network, the disk layout of adapters and the other processes through the
//! small traits of [`state`] and its modules, which the composition root implements.

pub mod atomic_file;
pub mod audit;
pub mod bounce;
pub mod certificate;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_store;
pub mod cpq;
pub mod envelope;
pub mod events;
pub mod feature_keys;
pub mod histogram;
pub mod ids;
pub mod import;
pub mod login_throttle;
pub mod mail_log;
pub mod queue;
pub mod resolve;
pub mod scanning;
pub mod shutdown;
pub mod state;
pub mod users;
