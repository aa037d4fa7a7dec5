//! The admin channel between `pvo <command>` and a running node.
//!
//! A node listens on the unix socket `DATA_DIR/run/admin.sock` (mode 0600:
//! only the node's owner may administer it). The CLI sends one JSON
//! request line and reads one JSON response line; the protocol itself (the types and
//! the socket's path) is the command set's, in `commands::protocol`, since every
//! channel speaks it.

pub mod server;
