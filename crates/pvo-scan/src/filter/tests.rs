use super::*;
use crate::mime::{scan, Limits};
use crate::testutil::{message_with_attachment, text_message, zip};

fn pe() -> Vec<u8> {
    let mut exe = b"MZ\x90\x00".to_vec();
    exe.resize(2048, 0);
    exe
}

fn rule(name: &str, conditions: Condition, actions: Vec<Action>) -> FilterRule {
    FilterRule {
        name: name.into(),
        conditions,
        actions,
    }
}

fn quarantine() -> Vec<Action> {
    vec![Action::Quarantine("Policy".into())]
}

/// Expected snippet marking a match that records no evidence (`all = []`).
const NO_EVIDENCE: &str = "\u{0}no evidence";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

struct Case {
    label: &'static str,
    condition: Condition,
    message: Vec<u8>,
    sender: &'static str,
    recipients: &'static [&'static str],
    matched: Option<&'static str>,
}

fn case(
    label: &'static str,
    condition: Condition,
    message: Vec<u8>,
    matched: Option<&'static str>,
) -> Case {
    Case {
        label,
        condition,
        message,
        sender: "alice@example.com",
        recipients: &["bob@example.org"],
        matched,
    }
}

#[test]
fn conditions_table() {
    let plain = || text_message("Your Invoice 2024-17", "Please pay the amount.\r\nRegards");
    let exe_as_txt = || message_with_attachment("s", "b", "readme.txt", "text/plain", &pe());
    let real_txt =
        || message_with_attachment("s", "b", "readme.txt", "text/plain", b"just text\r\n");
    let zipped = || {
        message_with_attachment(
            "s",
            "b",
            "files.zip",
            "application/zip",
            &zip(&[("a.txt", b"x")]),
        )
    };
    let mut cases = vec![
        case(
            "sender glob",
            Condition::SenderGlob("*@EXAMPLE.com".into()),
            plain(),
            Some("alice@example.com"),
        ),
        case(
            "sender glob miss",
            Condition::SenderGlob("*@example.org".into()),
            plain(),
            None,
        ),
        case(
            "sender regex",
            Condition::SenderRegex("^alice@".into()),
            plain(),
            Some("alice@example.com"),
        ),
        case(
            "any recipient",
            Condition::AnyRecipientGlob("*@example.org".into()),
            plain(),
            Some("bob@example.org"),
        ),
        case(
            "subject contains is case-insensitive",
            Condition::SubjectContains("invoice".into()),
            plain(),
            Some("Invoice"),
        ),
        case(
            "subject regex",
            Condition::SubjectRegex(r"\d{4}-\d+".into()),
            plain(),
            Some("2024-17"),
        ),
        case(
            "subject regex is case-sensitive",
            Condition::SubjectRegex("invoice".into()),
            plain(),
            None,
        ),
        case(
            "subject regex (?i)",
            Condition::SubjectRegex("(?i)INVOICE".into()),
            plain(),
            Some("Invoice"),
        ),
        case(
            "body contains",
            Condition::BodyContains("PAY THE".into()),
            plain(),
            Some("pay the"),
        ),
        case(
            "body regex",
            Condition::BodyRegex(r"amount\.".into()),
            plain(),
            Some("amount."),
        ),
        case(
            "body miss",
            Condition::BodyContains("wire transfer".into()),
            plain(),
            None,
        ),
        case(
            "header regex",
            Condition::Header {
                name: "from".into(),
                regex: "alice@".into(),
            },
            plain(),
            Some("from: alice@"),
        ),
        case(
            "header absent",
            Condition::Header {
                name: "X-Spam".into(),
                regex: ".*".into(),
            },
            plain(),
            None,
        ),
        case(
            "attachment name",
            Condition::AttachmentName("*.TXT".into()),
            exe_as_txt(),
            Some("readme.txt"),
        ),
        case(
            "exe renamed .txt is exe by content",
            Condition::AttachmentType(vec!["exe".into()]),
            exe_as_txt(),
            Some("readme.txt (exe)"),
        ),
        case(
            "real text file is not exe",
            Condition::AttachmentType(vec!["exe".into()]),
            real_txt(),
            None,
        ),
        case(
            "type group",
            Condition::AttachmentType(vec!["executable".into()]),
            exe_as_txt(),
            Some("readme.txt (exe)"),
        ),
        case(
            "archive group",
            Condition::AttachmentType(vec!["archive".into()]),
            zipped(),
            Some("files.zip (zip)"),
        ),
        case(
            "attachment size over",
            Condition::AttachmentSizeOver(2000),
            exe_as_txt(),
            Some("readme.txt (2048 bytes)"),
        ),
        case(
            "attachment size not over",
            Condition::AttachmentSizeOver(2048),
            exe_as_txt(),
            None,
        ),
        case(
            "message size over",
            Condition::MessageSizeOver(100),
            plain(),
            Some(leak(format!("{} bytes", plain().len()))),
        ),
        case(
            "message size not over",
            Condition::MessageSizeOver(100_000),
            plain(),
            None,
        ),
        case(
            "all",
            Condition::All(vec![
                Condition::SubjectContains("invoice".into()),
                Condition::BodyContains("pay".into()),
            ]),
            plain(),
            Some("Invoice"),
        ),
        case(
            "all fails when one fails",
            Condition::All(vec![
                Condition::SubjectContains("invoice".into()),
                Condition::BodyContains("zzz".into()),
            ]),
            plain(),
            None,
        ),
        case(
            "any",
            Condition::Any(vec![
                Condition::BodyContains("zzz".into()),
                Condition::BodyContains("regards".into()),
            ]),
            plain(),
            Some("Regards"),
        ),
        case(
            "empty all is true",
            Condition::All(vec![]),
            plain(),
            Some(NO_EVIDENCE),
        ),
        case("empty any is false", Condition::Any(vec![]), plain(), None),
        case(
            "not",
            Condition::Not(Box::new(Condition::SenderGlob("*@example.com".into()))),
            plain(),
            None,
        ),
        case(
            "not holds",
            Condition::Not(Box::new(Condition::SenderGlob("*@example.org".into()))),
            plain(),
            Some(""),
        ),
        case(
            "nested",
            Condition::Any(vec![
                Condition::All(vec![
                    Condition::AttachmentName("*.txt".into()),
                    Condition::Not(Box::new(Condition::AttachmentType(vec!["txt".into()]))),
                ]),
                Condition::SubjectContains("never".into()),
            ]),
            exe_as_txt(),
            Some("readme.txt"),
        ),
    ];
    // Recipient cases with other envelopes.
    cases.push(Case {
        recipients: &["a@x.example", "b@x.example"],
        ..case(
            "all recipients",
            Condition::AllRecipientsGlob("*@x.example".into()),
            plain(),
            Some("a@x.example, b@x.example"),
        )
    });
    cases.push(Case {
        recipients: &["a@x.example", "b@y.example"],
        ..case(
            "all recipients miss",
            Condition::AllRecipientsRegex("@x\\.example$".into()),
            plain(),
            None,
        )
    });
    cases.push(Case {
        recipients: &[],
        ..case(
            "all recipients with none",
            Condition::AllRecipientsGlob("*".into()),
            plain(),
            None,
        )
    });
    cases.push(Case {
        recipients: &["x@a.example", "y@b.example"],
        ..case(
            "any recipient regex",
            Condition::AnyRecipientRegex("@b\\.".into()),
            plain(),
            Some("y@b.example"),
        )
    });

    for c in cases {
        let set = FilterSet::new(vec![rule("f", c.condition.clone(), quarantine())]).unwrap();
        let msg = scan(&c.message, &Limits::default()).unwrap();
        let recipients: Vec<String> = c.recipients.iter().map(|s| s.to_string()).collect();
        let env = Envelope {
            sender: c.sender,
            recipients: &recipients,
        };
        let outcome = set.evaluate(&env, &msg);
        match c.matched {
            Some(NO_EVIDENCE) => {
                assert_eq!(outcome.matches.len(), 1, "{}", c.label);
                assert!(outcome.matches[0].evidence.is_empty(), "{}", c.label);
            }
            Some(snippet) => {
                assert_eq!(outcome.matches.len(), 1, "{}: expected a match", c.label);
                let evidence = &outcome.matches[0].evidence;
                assert_eq!(evidence[0].matched, snippet, "{}: {evidence:?}", c.label);
            }
            None => assert!(
                outcome.matches.is_empty(),
                "{}: unexpected {outcome:?}",
                c.label
            ),
        }
    }
}

#[test]
fn not_records_evidence() {
    let set = FilterSet::new(vec![rule(
        "not_internal",
        Condition::Not(Box::new(Condition::SenderGlob("*@corp.example".into()))),
        quarantine(),
    )])
    .unwrap();
    let msg = scan(&text_message("s", "b"), &Limits::default()).unwrap();
    let recipients = vec!["x@y.example".to_string()];
    let outcome = set.evaluate(
        &Envelope {
            sender: "a@outside.example",
            recipients: &recipients,
        },
        &msg,
    );
    assert_eq!(
        outcome.matches[0].evidence[0].condition,
        "not (sender_glob \"*@corp.example\")"
    );
}

#[test]
fn final_actions_stop_later_filters_and_actions_accumulate() {
    let set = FilterSet::new(vec![
        rule(
            "tag",
            Condition::All(vec![]),
            vec![
                Action::AddHeader {
                    name: "X-Tag".into(),
                    value: "1".into(),
                },
                Action::Quarantine("Policy".into()),
            ],
        ),
        rule(
            "copy",
            Condition::All(vec![]),
            vec![Action::Quarantine("Legal".into())],
        ),
        rule(
            "stop",
            Condition::SubjectContains("drop me".into()),
            vec![Action::Drop],
        ),
        rule("never", Condition::All(vec![]), vec![Action::Bounce]),
    ])
    .unwrap();
    let msg = scan(&text_message("please DROP ME", "b"), &Limits::default()).unwrap();
    let outcome = set.evaluate(
        &Envelope {
            sender: "",
            recipients: &[],
        },
        &msg,
    );
    let names: Vec<&str> = outcome.matches.iter().map(|m| m.filter.as_str()).collect();
    assert_eq!(names, ["tag", "copy", "stop"]);
    assert_eq!(outcome.final_action(), Some(&Action::Drop));
    let quarantines: Vec<&Action> = outcome
        .actions()
        .filter(|a| matches!(a, Action::Quarantine(_)))
        .collect();
    assert_eq!(quarantines.len(), 2);
}

#[test]
fn verdicts() {
    let set = FilterSet::new(vec![rule(
        "f",
        Condition::SubjectContains("x".into()),
        quarantine(),
    )])
    .unwrap();
    let env = Envelope {
        sender: "",
        recipients: &[],
    };
    let clean = scan(&text_message("nothing", "b"), &Limits::default());
    assert_eq!(set.verdict(&env, &clean), Verdict::Clean);
    let hit = scan(&text_message("xx", "b"), &Limits::default());
    assert!(matches!(set.verdict(&env, &hit), Verdict::Matched(_)));
    let bomb: Result<ScannedMessage, Unscannable> = Err(Unscannable {
        reason: "too deep".into(),
    });
    assert_eq!(
        set.verdict(&env, &bomb),
        Verdict::Unscannable {
            reason: "too deep".into()
        }
    );
    let json = serde_json_like(&set.verdict(&env, &hit));
    assert!(json.contains("matched"), "{json}");
}

/// Serializes through the TOML serializer (the crate has no JSON dependency) to prove the
/// verdict is serde-serializable as stored with a quarantined message.
fn serde_json_like<T: Serialize>(value: &T) -> String {
    #[derive(Serialize)]
    struct Wrap<'a, T> {
        verdict: &'a T,
    }
    toml::to_string(&Wrap { verdict: value }).unwrap()
}

#[test]
fn loads_from_toml() {
    #[derive(Deserialize)]
    struct File {
        filter: Vec<FilterRule>,
    }
    let text = r#"
        [[filter]]
        name = "quarantine_test"
        conditions = { subject_contains = "[quarantine-test]" }
        actions = [{ quarantine = "Policy" }]

        [[filter]]
        name = "exe_attachments"
        conditions = { any = [
            { attachment_type = ["exe", "msi"] },
            { all = [ { attachment_name = "*.scr" }, { not = { sender_glob = "*@partner.example" } } ] },
            { header = { name = "X-Mailer", regex = "(?i)evilmailer" } },
        ] }
        actions = [
            { quarantine = "Policy" },
            { quarantine = "Legal" },
            { add_header = { name = "X-PVO-Filter", value = "exe" } },
            { modify_header = { name = "Subject", value = "[SUSPECT]" } },
            { strip_attachment = { glob = "*.exe" } },
            { strip_attachment = { file_type = "executable" } },
            { notify = "security@example.com" },
            "bounce",
        ]
    "#;
    let file: File = toml::from_str(text).unwrap();
    let set = FilterSet::new(file.filter).unwrap();
    assert_eq!(set.len(), 2);
    let msg = scan(
        &message_with_attachment("[quarantine-test] hi", "b", "x.txt", "text/plain", &pe()),
        &Limits::default(),
    )
    .unwrap();
    let outcome = set.evaluate(
        &Envelope {
            sender: "a@b.example",
            recipients: &[],
        },
        &msg,
    );
    assert_eq!(outcome.matches.len(), 2);
    assert_eq!(outcome.matches[1].actions.len(), 8);
    assert_eq!(outcome.final_action(), Some(&Action::Bounce));

    let typo = r#"
        [[filter]]
        name = "t"
        conditions = { subjct_contains = "x" }
        actions = ["drop"]
    "#;
    let err = toml::from_str::<File>(typo).err().unwrap().to_string();
    assert!(
        err.contains("subjct_contains") && err.contains("subject_contains"),
        "{err}"
    );
}

#[test]
fn compile_errors_name_rule_and_field() {
    let cases: Vec<(FilterRule, &str, &str)> = vec![
        (
            rule(
                "bad_regex",
                Condition::Any(vec![
                    Condition::SubjectContains("ok".into()),
                    Condition::BodyRegex("(unclosed".into()),
                ]),
                quarantine(),
            ),
            "conditions.any[1].body_regex",
            "invalid regex \"(unclosed\"",
        ),
        (
            rule(
                "bad_type",
                Condition::AttachmentType(vec!["exx".into()]),
                quarantine(),
            ),
            "conditions.attachment_type",
            "unknown file type \"exx\"",
        ),
        (
            rule(
                "bad_glob",
                Condition::AttachmentName("[abc".into()),
                quarantine(),
            ),
            "conditions.attachment_name",
            "unclosed '['",
        ),
        (
            rule("no_actions", Condition::All(vec![]), vec![]),
            "actions",
            "at least one action",
        ),
        (
            rule(
                "injection",
                Condition::All(vec![]),
                vec![Action::AddHeader {
                    name: "X-A".into(),
                    value: "v\r\nBcc: victim@example.com".into(),
                }],
            ),
            "actions[0]",
            "must not contain CR, LF",
        ),
        (
            rule(
                "bad_notify",
                Condition::All(vec![]),
                vec![Action::Notify("nobody".into())],
            ),
            "actions[0]",
            "not an email address",
        ),
        (
            rule(
                "empty_contains",
                Condition::Not(Box::new(Condition::BodyContains(String::new()))),
                quarantine(),
            ),
            "conditions.not.body_contains",
            "must not be empty",
        ),
    ];
    for (r, field, problem) in cases {
        let name = r.name.clone();
        let err = FilterSet::new(vec![r]).unwrap_err();
        assert_eq!(err.rule, name);
        assert_eq!(err.field, field, "{name}");
        assert!(err.problem.contains(problem), "{name}: {}", err.problem);
        assert!(err
            .to_string()
            .starts_with(&format!("filter {name:?}: field {field}: ")));
    }
    let dup = FilterSet::new(vec![
        rule("same", Condition::All(vec![]), quarantine()),
        rule("same", Condition::All(vec![]), quarantine()),
    ])
    .unwrap_err();
    assert!(dup.problem.contains("same name"));
}
