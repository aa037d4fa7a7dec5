//! The exact `mail_logs` texts of quarantine events (`docs/appliance.md`, Log lines). The caller writes them; this
//! crate only formats them, so that the gateway and the manager print the same words and an
//! administrator's `grep` finds both.
//!
//! The MID is the caller's choice: the gateway logs its own MID, the manager its own.

use crate::model::{ActionReport, Change, Outcome, Reason};

/// `MID 482 quarantined to "Policy" (content filter:policy_violation)`
pub fn quarantined(mid: u64, quarantine: &str, reason: &Reason) -> String {
    format!("MID {mid} quarantined to \"{quarantine}\" ({reason})")
}

/// `MID 483 released from quarantine "Policy" (manual)`
pub fn released(mid: u64, quarantine: &str, cause: &str) -> String {
    format!("MID {mid} released from quarantine \"{quarantine}\" ({cause})")
}

/// `MID 484 deleted from quarantine "Virus" (expired)`
pub fn deleted(mid: u64, quarantine: &str, cause: &str) -> String {
    format!("MID {mid} deleted from quarantine \"{quarantine}\" ({cause})")
}

/// `MID 483 released from all quarantines`
pub fn released_from_all(mid: u64) -> String {
    format!("MID {mid} released from all quarantines")
}

/// `MID 483 rewritten to 513 by Policy Quarantine`: a released message re-injected under a
/// new MID (the appliance names the PVO quarantine component "Policy Quarantine" whichever
/// quarantine released the message).
pub fn rewritten(mid: u64, new_mid: u64) -> String {
    format!("MID {mid} rewritten to {new_mid} by Policy Quarantine")
}

/// `MID 483 quarantine "Policy" scheduled exit delayed to 1700000000` (not an appliance
/// line: the appliance does not log delays; PVO does, for the audit trail).
pub fn delayed(mid: u64, quarantine: &str, exit_at: u64) -> String {
    format!("MID {mid} quarantine \"{quarantine}\" scheduled exit delayed to {exit_at}")
}

/// `MID 483 moved from quarantine "Policy" to "Custom"` (not an appliance line either).
pub fn moved(mid: u64, from: &str, to: &str) -> String {
    format!("MID {mid} moved from quarantine \"{from}\" to \"{to}\"")
}

impl ActionReport {
    /// The log lines for this report, in order, with `mid` as the MID: one per changed
    /// membership, then `released from all quarantines` when the message is to be delivered.
    /// Empty for a repeat (nothing changed).
    pub fn log_lines(&self, mid: u64) -> Vec<String> {
        let mut out: Vec<String> = self
            .changes
            .iter()
            .map(|c| match c {
                Change::Released {
                    quarantine, cause, ..
                } => released(mid, quarantine, cause.as_str()),
                Change::Deleted { quarantine, cause } => deleted(mid, quarantine, cause.as_str()),
                Change::Delayed { quarantine, to, .. } => delayed(mid, quarantine, *to),
                Change::Moved { from, to } => moved(mid, from, to),
            })
            .collect();
        if matches!(self.outcome, Outcome::Deliver { .. }) {
            out.push(released_from_all(mid));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, ReasonKind};

    #[test]
    fn spec_lines() {
        let cases = [
            (
                quarantined(
                    482,
                    "Policy",
                    &Reason::new(ReasonKind::ContentFilter, "policy_violation"),
                ),
                "MID 482 quarantined to \"Policy\" (content filter:policy_violation)",
            ),
            (
                released(483, "Policy", Cause::Manual.as_str()),
                "MID 483 released from quarantine \"Policy\" (manual)",
            ),
            (
                deleted(484, "Virus", Cause::Expired.as_str()),
                "MID 484 deleted from quarantine \"Virus\" (expired)",
            ),
            (
                released_from_all(483),
                "MID 483 released from all quarantines",
            ),
            (
                rewritten(483, 513),
                "MID 483 rewritten to 513 by Policy Quarantine",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn report_lines() {
        let r = ActionReport {
            msg_id: 1,
            gateway_mid: 483,
            changes: vec![Change::Released {
                quarantine: "Policy".into(),
                cause: Cause::Manual,
                early: true,
            }],
            outcome: Outcome::Deliver {
                msg_id: 1,
                early_release_actions: vec![],
            },
        };
        assert_eq!(
            r.log_lines(483),
            vec![
                "MID 483 released from quarantine \"Policy\" (manual)".to_string(),
                "MID 483 released from all quarantines".to_string(),
            ]
        );
    }
}
