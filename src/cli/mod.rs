//! Command-line definitions of the appliance commands that are grouped in
//! their own files, flattened into the top-level `pvo` command.

pub mod config;
pub mod diag;
pub mod quarantine;
