//! The text of `quarantineconfig` list: columns `#, name, space used, messages, retention,
//! action`, one row per quarantine, then the totals line and the quota.
//!
//! The total counts each message once even when it is held in several quarantines (it is
//! stored once), so it can be less than the sum of the rows; the table says so when it is.

use crate::model::{QuarantineUsage, Usage};

/// Renders the table.
pub fn render_quarantine_table(usage: &Usage) -> String {
    let name_w = usage
        .quarantines
        .iter()
        .map(|q| q.name.chars().count())
        .chain(["Name".len(), "Total".len()])
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    out.push_str(&format!(
        "{:>3}  {:<name_w$}  {:>10}  {:>8}  {:>10}  {}\n",
        "#", "Name", "Space used", "Messages", "Retention", "Action"
    ));
    for q in &usage.quarantines {
        out.push_str(&row(q, name_w));
    }
    out.push_str(&format!(
        "{:>3}  {:<name_w$}  {:>10}  {:>8}\n",
        "",
        "Total",
        format_bytes(usage.total_bytes),
        usage.total_messages
    ));
    let sum: u64 = usage.quarantines.iter().map(|q| q.messages).sum();
    if sum != usage.total_messages {
        out.push_str("(a message held in several quarantines is counted once in the total)\n");
    }
    match usage.quota_bytes {
        Some(quota) if quota > 0 => {
            let pct = usage.total_bytes as f64 * 100.0 / quota as f64;
            out.push_str(&format!(
                "Quota: {} of {} used ({pct:.1}%)\n",
                format_bytes(usage.total_bytes),
                format_bytes(quota)
            ));
        }
        _ => out.push_str("Quota: none\n"),
    }
    out
}

fn row(q: &QuarantineUsage, name_w: usize) -> String {
    format!(
        "{:>3}  {:<name_w$}  {:>10}  {:>8}  {:>10}  {}{}\n",
        q.id,
        q.name,
        format_bytes(q.bytes),
        q.messages,
        format_retention(q.retention_secs),
        q.default_action.as_str(),
        if q.exempt_from_free_up {
            " (exempt from free up space)"
        } else {
            ""
        }
    )
}

/// `0 B`, `512 B`, `1.5 KB`, `10.0 MB`, `2.0 GB` (powers of 1024).
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The largest unit that divides the retention exactly: `10 days`, `1 day`, `8 hours`,
/// `90 minutes`, `45 seconds`.
pub fn format_retention(secs: u64) -> String {
    let (n, unit) = if secs > 0 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs > 0 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs > 0 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DefaultAction;

    fn q(id: u64, name: &str, messages: u64, bytes: u64, exempt: bool) -> QuarantineUsage {
        QuarantineUsage {
            id,
            name: name.into(),
            builtin: id <= 4,
            retention_secs: 10 * 86_400,
            default_action: DefaultAction::Delete,
            exempt_from_free_up: exempt,
            messages,
            bytes,
        }
    }

    #[test]
    fn renders() {
        let usage = Usage {
            quarantines: vec![
                q(1, "Policy", 2, 3072, false),
                q(2, "Virus", 1, 1024, true),
                q(101, "Legal hold", 0, 0, false),
            ],
            total_messages: 2,
            total_bytes: 3072,
            quota_bytes: Some(1024 * 1024),
        };
        let want = concat!(
            "  #  Name        Space used  Messages   Retention  Action\n",
            "  1  Policy          3.0 KB         2     10 days  Delete\n",
            "  2  Virus           1.0 KB         1     10 days  Delete (exempt from free up space)\n",
            "101  Legal hold         0 B         0     10 days  Delete\n",
            "     Total           3.0 KB         2\n",
            "(a message held in several quarantines is counted once in the total)\n",
            "Quota: 3.0 KB of 1.0 MB used (0.3%)\n",
        );
        assert_eq!(render_quarantine_table(&usage), want);
    }

    #[test]
    fn units() {
        let cases = [
            (0, "0 seconds", "0 B"),
            (1, "1 second", "1 B"),
            (60, "1 minute", "60 B"),
            (5400, "90 minutes", "5.3 KB"),
            (8 * 3600, "8 hours", "28.1 KB"),
            (86_400, "1 day", "84.4 KB"),
            (3 * 1024 * 1024, "3145728 seconds", "3.0 MB"),
        ];
        for (n, ret, bytes) in cases {
            assert_eq!(format_retention(n), ret, "{n}");
            assert_eq!(format_bytes(n), bytes, "{n}");
        }
    }
}
