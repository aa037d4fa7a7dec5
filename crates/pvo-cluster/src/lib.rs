//! The cluster model of PVO gateways, free of IO: the levels settings sit at, the layer
//! documents a machine's configuration is composed of and the edits between them, the
//! machines and groups, `clustercheck`, the commit rule between concurrent
//! administrators, feature keys with the cluster's reasons to refuse centralizing the
//! quarantines, and join tokens.
//!
//! The node keeps the revisions in PostgreSQL and applies them; this crate decides what
//! they mean. It knows no section of the configuration: the node says which sections are
//! machine-only and cluster-only ([`Schema`]) and validates the composed configuration
//! itself.
//!
//! - [`level`]: machine and group names, `cluster` / `group:NAME` / `machine:NAME`.
//! - [`document`]: one layer's TOML document; copy, move and delete sections between
//!   layers, flatten a machine's chain (`removemachine`), what a joining machine keeps.
//! - [`members`]: machines and groups and the changes to them.
//! - [`check`]: where each section of a machine comes from, and every difference.
//! - [`revision`]: the stale-base refusal and per-level rollback.
//! - [`features`]: feature keys, failure scenarios 5 and 6.
//! - [`token`]: the join token's text form.
#![forbid(unsafe_code)]

pub mod check;
pub mod document;
pub mod features;
pub mod level;
pub mod members;
pub mod revision;
pub mod token;

pub use check::{check, Finding, Layers, MemberState};
pub use document::{
    copy_section, flatten, move_section, take_over, EditError, LayerDoc, Schema, Scope,
};
pub use features::{Feature, FeatureKey};
pub use level::{Level, Name, NameError};
pub use members::{Member, Members, MembersError, MAIN_GROUP};
pub use revision::{check_base, rollback_source, Conflict, Revision};
pub use token::{JoinToken, TokenError};
