//! Why a node refused a CPQ connection or record: the reasons counted in
//! `pvo_cpq_refused_total{reason}` (on managers and gateways) and the [`Refusal`] a
//! certificate check gives. Handles by the TLS verifiers (`trust`), the CPQ listener's
//! sessions and the counters (`stats`), so none of them needs another for it.

/// The source address is not an added gateway's (the cpq_listener's HAT).
pub const ADDRESS: &str = "address";
/// The TLS handshake failed (no or an untrusted client certificate).
pub const TLS: &str = "tls";
/// A CPQ command before STARTTLS.
pub const CLEAR_TEXT: &str = "clear_text";
/// The record's gateway id is not the certificate's.
pub const ID_MISMATCH: &str = "id_mismatch";
/// The gateway is not added to this manager.
pub const NOT_ENROLLED: &str = "not_enrolled";
/// The record does not parse (`docs/cpq.md`).
pub const BAD_RECORD: &str = "bad_record";
/// The peer's certificate serial is on this node's revocation list (`cpqcert revoke`).
pub const REVOKED: &str = "revoked";
/// The certificate was issued for the other role: a manager's presented as a
/// gateway's, or a gateway's as the manager's.
pub const ROLE: &str = "role";
/// Gateway: the certificate is not the manager's this gateway was added to (another
/// gateway's, or one from a cleared enrollment) — it may not release or control.
pub const NOT_MANAGER: &str = "not_manager";
/// Manager: the gateway is added, but with another certificate (its enrollment was
/// cleared or replaced since this one was issued).
pub const SERIAL: &str = "serial";
/// The certificate cannot be read (no serial or common name).
pub const CERTIFICATE: &str = "certificate";

/// A certificate refused by the peer policy: the reason (one of the constants above)
/// and the text for mail_logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text}")]
pub struct Refusal {
    pub reason: &'static str,
    pub text: String,
    /// The peer's CN, when the certificate could be read.
    pub peer: Option<String>,
}
