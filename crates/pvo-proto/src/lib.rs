//! The SMTP grammar pieces PVO needs beyond the `smtp-proto` crate.
//!
//! `smtp-proto` parses SMTP command lines and replies. This crate adds the parts of the
//! protocol where a gateway's security depends on getting every byte right, and keeps each of
//! them small enough to test exhaustively:
//!
//! - [`address`]: classifies an envelope address as `smtp-proto` hands it over, so that the
//!   relay decision sees the real domain and notices sender-specified routing (the percent
//!   hack, bang paths, quoted `@`).
//! - [`cpq`]: the CPQ extension commands (`XPVO-META`, `XPVO-CONTROL`) and their metadata
//!   records between gateway and manager, specified in `docs/cpq.md`.
//! - [`data`]: decodes the DATA phase. The end of data is recognised on the raw bytes only, so
//!   no SMTP smuggling sequence can end a message early, and the body that comes out has no
//!   bare CR or LF.
//! - [`dotstuff`]: encodes a stored body for transmission after DATA, so that what PVO
//!   forwards is unambiguous to every receiver.
//! - [`line`]: frames command lines with a hard length limit, skipping the rest of an
//!   over-long line across reads.
//! - [`reply`]: reads SMTP replies as a client, bounded, never taking the tail of a long
//!   line for a reply.
//! - [`path`]: parses `MAIL FROM` and `RCPT TO` from the raw bytes, keeping what a quoted
//!   local part means, refusing non-ASCII (no SMTPUTF8) and parameters PVO does not offer.
//!
//! # Invariant
//!
//! This crate does no IO: no sockets, no files, no async, no clocks. Every function takes bytes
//! or strings and returns values, which is what makes the table-driven tests and the
//! split-at-every-byte tests possible. Keep it that way; IO belongs in the `pvo` binary.

#![forbid(unsafe_code)]

pub mod address;
pub mod cpq;
pub mod data;
pub mod dotstuff;
pub mod line;
pub mod path;
pub mod reply;
