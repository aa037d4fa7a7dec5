//! The result of one step of a readiness check (the enable preflight, `pvo diagnose`):
//! passed, or failed with its cause, its remedy and the failure scenario of the
//! centralization guide (docs/appliance.md) it is.
//!
//! It is a plain report, in the core, so that the adapter that runs the preflight
//! (`diag::preflight`) and the commands that print it (`pvoconfig enable`, `diagnose`)
//! share it without the commands importing the adapter.

use serde::Serialize;

/// One check, passed or failed with why and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
    /// The failure scenario of the centralization guide (docs/appliance.md) this check
    /// covers (1-6), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<u8>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed: true,
            detail: detail.into(),
            cause: None,
            remedy: None,
            scenario: None,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        cause: impl Into<String>,
        remedy: impl Into<String>,
        scenario: Option<u8>,
    ) -> Check {
        Check {
            name: name.into(),
            passed: false,
            detail: detail.into(),
            cause: Some(cause.into()),
            remedy: Some(remedy.into()),
            scenario,
        }
    }

    /// `PASS  name: detail` / `FAIL  name: detail` with the cause and remedy.
    pub fn text(&self) -> String {
        if self.passed {
            format!("PASS  {}: {}\n", self.name, self.detail)
        } else {
            let mut t = format!("FAIL  {}: {}\n", self.name, self.detail);
            if let Some(n) = self.scenario {
                t.push_str(&format!(
                    "      (scenario {n} of the centralization guide)\n"
                ));
            }
            if let Some(c) = &self.cause {
                t.push_str(&format!("      Cause:  {c}\n"));
            }
            if let Some(r) = &self.remedy {
                t.push_str(&format!("      Remedy: {r}\n"));
            }
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_says_its_scenario_cause_and_remedy() {
        assert_eq!(
            Check::pass("banner", "220 ready").text(),
            "PASS  banner: 220 ready\n"
        );
        let f = Check::fail(
            "tcp",
            "refused",
            "the manager is offline",
            "resume it",
            Some(1),
        );
        assert_eq!(
            f.text(),
            "FAIL  tcp: refused\n      (scenario 1 of the centralization guide)\n      Cause:  the manager is offline\n      Remedy: resume it\n"
        );
        let v = serde_json::to_value(Check::pass("a", "b")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "name": "a", "passed": true, "detail": "b" })
        );
    }
}
