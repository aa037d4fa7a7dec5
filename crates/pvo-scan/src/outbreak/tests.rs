use super::*;
use crate::mime::{scan, Limits};
use crate::testutil::{message_with_attachment, text_message, zip};

const RULES: &str = r#"
version = "2025-06-10.1"

[[rule]]
id = "OUTB-ZIP-INVOICE"
description = "Invoice-themed zip"
threat_level = 3
attachment_type = ["zip"]
body_regex = ["(?i)overdue invoice"]

[[rule]]
id = "OUTB-HASH"
description = "Known dropper"
threat_level = 5
sha256 = ["@DROPPER_SHA256@"]

[[rule]]
id = "OUTB-PHISH"
description = "Phishing kit host"
threat_level = 2
url_domain = ["login-verify.example"]

[[rule]]
id = "OUTB-EXE-AS-PDF"
description = "Executable named like a PDF"
threat_level = 4
attachment_type = ["executable"]
attachment_name = ["*.pdf"]
"#;

fn pe() -> Vec<u8> {
    let mut exe = b"MZ\x90\x00".to_vec();
    exe.resize(1024, 7);
    exe
}

fn dropper() -> Vec<u8> {
    b"%PDF-1.4 dropper body".to_vec()
}

fn rules() -> OutbreakRules {
    let hash = {
        let v = scan(
            &message_with_attachment("s", "b", "d.pdf", "application/pdf", &dropper()),
            &Limits::default(),
        )
        .unwrap();
        v.parts[1].sha256.clone()
    };
    let file: OutbreakRulesFile =
        toml::from_str(&RULES.replace("@DROPPER_SHA256@", &hash.to_uppercase())).unwrap();
    OutbreakRules::compile(file).unwrap()
}

fn level(n: u8) -> ThreatLevel {
    ThreatLevel::try_from(n).unwrap()
}

#[test]
fn rules_table() {
    let rules = rules();
    assert_eq!(rules.version(), "2025-06-10.1");
    assert_eq!(rules.len(), 4);
    let zipped = zip(&[("invoice.exe", b"MZ")]);
    // (label, message, expected level, expected rule ids)
    type Case = (&'static str, Vec<u8>, Option<u8>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        ("nothing", text_message("hello", "see you"), None, vec![]),
        (
            "zip and body together",
            message_with_attachment(
                "s",
                "Your OVERDUE invoice",
                "inv.zip",
                "application/zip",
                &zipped,
            ),
            Some(3),
            vec!["OUTB-ZIP-INVOICE"],
        ),
        (
            "zip without the body text",
            message_with_attachment("s", "hello", "inv.zip", "application/zip", &zipped),
            None,
            vec![],
        ),
        (
            "body text without the zip",
            text_message("s", "overdue invoice"),
            None,
            vec![],
        ),
        (
            "zip detected by content, not name",
            message_with_attachment(
                "s",
                "overdue invoice",
                "inv.dat",
                "application/octet-stream",
                &zipped,
            ),
            Some(3),
            vec!["OUTB-ZIP-INVOICE"],
        ),
        (
            "hash",
            message_with_attachment(
                "s",
                "b",
                "renamed.bin",
                "application/octet-stream",
                &dropper(),
            ),
            Some(5),
            vec!["OUTB-HASH"],
        ),
        (
            "url subdomain",
            text_message("s", "go to https://secure.Login-Verify.example/x now"),
            Some(2),
            vec!["OUTB-PHISH"],
        ),
        (
            "url exact",
            text_message("s", "www.login-verify.example"),
            Some(2),
            vec!["OUTB-PHISH"],
        ),
        (
            "lookalike domain is not a subdomain",
            text_message("s", "https://evillogin-verify.example/"),
            None,
            vec![],
        ),
        (
            "exe named pdf",
            message_with_attachment("s", "b", "scan.PDF", "application/pdf", &pe()),
            Some(4),
            vec!["OUTB-EXE-AS-PDF"],
        ),
        (
            "exe named exe",
            message_with_attachment("s", "b", "setup.exe", "application/octet-stream", &pe()),
            None,
            vec![],
        ),
        (
            "several rules: highest level wins",
            message_with_attachment(
                "s",
                "overdue invoice at https://login-verify.example",
                "a.zip",
                "application/zip",
                &zipped,
            ),
            Some(3),
            vec!["OUTB-ZIP-INVOICE", "OUTB-PHISH"],
        ),
    ];
    for (label, raw, want_level, want_rules) in cases {
        let msg = scan(&raw, &Limits::default()).unwrap();
        let result = rules.evaluate(&msg);
        assert_eq!(result.level.map(ThreatLevel::get), want_level, "{label}");
        assert_eq!(result.rules, want_rules, "{label}");
        assert_eq!(result.version, "2025-06-10.1");
    }
}

#[test]
fn thresholds_and_verdicts() {
    let rules = rules();
    let msg = scan(
        &text_message("s", "https://login-verify.example"),
        &Limits::default(),
    );
    let result = rules.evaluate(msg.as_ref().unwrap());
    assert!(result.at_or_above(level(1)));
    assert!(result.at_or_above(level(2)));
    assert!(!result.at_or_above(level(3)));
    assert!(!OutbreakResult::default().at_or_above(level(1)));
    assert!(matches!(rules.verdict(&msg, level(2)), Verdict::Matched(_)));
    assert_eq!(rules.verdict(&msg, level(3)), Verdict::Clean);
    let bomb = Err(Unscannable {
        reason: "too deep".into(),
    });
    assert!(matches!(
        rules.verdict(&bomb, level(1)),
        Verdict::Unscannable { .. }
    ));
}

#[test]
fn retention_by_level() {
    let policy: OutbreakPolicy = toml::from_str("threshold = 3").unwrap();
    let hours: Vec<u64> = (1..=5)
        .map(|n| policy.retention.for_level(level(n)).as_secs() / 3600)
        .collect();
    assert_eq!(hours, [1, 3, 6, 12, 24]);
    let policy: OutbreakPolicy = toml::from_str(
        "threshold = 3\nretention = { level_4 = \"2d\", level_5 = \"1w\", level_1 = 600 }",
    )
    .unwrap();
    assert_eq!(
        policy.retention.for_level(level(1)),
        Duration::from_secs(600)
    );
    assert_eq!(
        policy.retention.for_level(level(4)),
        Duration::from_secs(2 * 86_400)
    );
    assert_eq!(
        policy.retention.for_level(level(5)),
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(
        policy.retention.for_level(level(3)),
        Duration::from_secs(6 * 3600)
    );
    let held = OutbreakResult {
        level: Some(level(4)),
        ..OutbreakResult::default()
    };
    assert_eq!(
        policy.hold_for(&held),
        Some(Duration::from_secs(2 * 86_400))
    );
    let low = OutbreakResult {
        level: Some(level(2)),
        ..OutbreakResult::default()
    };
    assert_eq!(policy.hold_for(&low), None);

    for (text, ok) in [
        ("90m", true),
        ("12h", true),
        ("3600", true),
        ("0h", false),
        ("5y", false),
        ("h", false),
    ] {
        assert_eq!(RetentionTime::parse(text).is_ok(), ok, "{text}");
    }
    let err = toml::from_str::<OutbreakPolicy>("threshold = 6")
        .unwrap_err()
        .to_string();
    assert!(err.contains("threat level must be 1 to 5, got 6"), "{err}");
    let err = toml::from_str::<OutbreakPolicy>(
        "threshold = 2\nretention = { level_2 = \"3 fortnights\" }",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown duration unit"), "{err}");
    let round = toml::to_string(&policy).unwrap();
    assert!(round.contains("level_4 = \"2d\""), "{round}");
}

#[test]
fn rule_file_errors_name_rule_and_field() {
    let base = |extra: &str| {
        format!("version = \"1\"\n[[rule]]\nid = \"R1\"\nthreat_level = 3\n{extra}\n")
    };
    let cases = [
        (base("attachment_type = [\"zip\", \"zap\"]"), "attachment_type", "unknown file type \"zap\""),
        (base("sha256 = [\"abc\"]"), "sha256[0]", "not 64 hexadecimal digits"),
        (base("url_domain = [\"https://x.example/\"]"), "url_domain[0]", "not a domain name"),
        (base("body_regex = [\"ok\", \"[\"]"), "body_regex[1]", "invalid regex"),
        (base("attachment_name = [\"[x\"]"), "attachment_name[0]", "unclosed"),
        (base(""), "(criteria)", "set at least one"),
        (
            "version = \"1\"\n[[rule]]\nid = \"R1\"\nthreat_level = 9\nurl_domain = [\"a.example\"]".to_string(),
            "threat_level",
            "9 is not allowed; use 1 to 5",
        ),
        (
            format!("{}[[rule]]\nid = \"R1\"\nthreat_level = 1\nurl_domain = [\"b.example\"]\n", base("url_domain = [\"a.example\"]")),
            "id",
            "same id",
        ),
    ];
    for (text, field, problem) in cases {
        let file: OutbreakRulesFile = toml::from_str(&text).unwrap();
        let err = OutbreakRules::compile(file).unwrap_err();
        assert_eq!(err.kind, "outbreak rule");
        assert_eq!(err.rule, "R1");
        assert_eq!(err.field, field, "{text}");
        assert!(err.problem.contains(problem), "{}", err.problem);
        assert!(
            err.to_string().starts_with("outbreak rule \"R1\": field "),
            "{err}"
        );
    }
    let err = OutbreakRules::compile(toml::from_str("version = \"\"").unwrap()).unwrap_err();
    assert_eq!(err.field, "version");
    let err = toml::from_str::<OutbreakRulesFile>(
        "version = \"1\"\n[[rule]]\nid = \"R\"\nthreat_level = 1\nurl_domian = []",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("url_domian") && err.contains("url_domain"),
        "{err}"
    );
}
