//! The error every rule loader returns: which rule, which field, and what is wrong.
//!
//! Rules come from an administrator's TOML file. A mistake there must be reported precisely
//! enough to fix without reading code, so [`RuleError`] always names the kind of rule, the
//! rule (its `name` or `id`), the field, and the problem, including what would be allowed.

/// A rule, policy or rules file that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {rule:?}: field {field}: {problem}")]
pub struct RuleError {
    /// `filter`, `dlp policy`, `outbreak rule`, `outbreak rules file` or `outbreak policy`.
    pub kind: &'static str,
    /// The rule's name or id.
    pub rule: String,
    /// The field that is wrong (`conditions.any[1].body_regex`, `threat_level` ...).
    pub field: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

impl RuleError {
    pub(crate) fn new(
        kind: &'static str,
        rule: &str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> RuleError {
        RuleError {
            kind,
            rule: rule.to_string(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Compiles a regex from a rule with a size limit, so a rule cannot make the process build an
/// enormous automaton.
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(4 << 20)
        .build()
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}
