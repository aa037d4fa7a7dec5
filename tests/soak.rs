//! The soak tier, a test binary of its own: the long runs that push thousands of messages
//! through real nodes (10,000 held messages migrating to a manager, with and without a
//! kill -9 of either node in the middle). A plain `cargo test` neither builds nor runs it
//! (`test = false` in Cargo.toml); `scripts/test` runs it after the fast tier
//! (`cargo test --test soak`). It shares the helpers of the fast tier (`support`).

mod e2e_migration;
mod support;
