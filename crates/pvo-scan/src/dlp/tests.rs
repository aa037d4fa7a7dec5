use super::*;
use crate::mime::{scan, Limits};
use crate::testutil::{message_with_attachment, text_message};

/// A built-in scanner under test.
type Scanner = fn(&str, &mut dyn FnMut(&str));

fn found(detector: Scanner, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    detector(text, &mut |m| out.push(m.to_string()));
    out
}

fn cards(text: &str) -> Vec<String> {
    found(|t, f| find_cards(t, f), text)
}

fn ibans(text: &str) -> Vec<String> {
    found(|t, f| find_ibans(t, f), text)
}

fn ssns(text: &str) -> Vec<String> {
    found(|t, f| find_ssns(t, f), text)
}

#[test]
fn payment_cards_table() {
    let valid = [
        "4111 1111 1111 1111", // Visa
        "4111-1111-1111-1111", // Visa, dashes
        "4111111111111111",    // Visa, contiguous
        "4222222222222",       // Visa, 13 digits
        "4012888888881881",    // Visa
        "5555 5555 5555 4444", // Mastercard
        "5105105105105100",    // Mastercard
        "2221 0000 0000 0009", // Mastercard 2-series
        "3782 822463 10005",   // Amex 4-6-5
        "371449635398431",     // Amex
        "6011 1111 1111 1117", // Discover
        "6011000990139424",    // Discover
        "3530111333300000",    // JCB
        "30569309025904",      // Diners 14 digits
        "6200 0000 0000 0005", // UnionPay
    ];
    for card in valid {
        assert_eq!(cards(card), [card], "valid {card}");
        let in_text = format!("Card: {card}, exp 12/27.");
        assert_eq!(cards(&in_text), [card], "in text {card}");
    }
    let invalid = [
        ("Luhn fails", "4111 1111 1111 1112"),
        ("no issuer", "1234 5678 9012 3452"),
        ("unknown prefix", "9111 1111 1111 1111"),
        ("all same digit", "4444 4444 4444 4444"),
        ("all zero", "0000 0000 0000 0000"),
        ("glued to letters", "ID4111111111111111"),
        ("letters after", "4111111111111111abc"),
        ("mixed separators", "4111-1111 1111 1111"),
        ("Amex length wrong", "3782822463100051"),
        ("Mastercard too long", "55555555555544444"),
        ("too short", "4111 1111 1111"),
        ("phone number", "+1 555 123 4567"),
        ("long reference", "123456789012345678901234567890"),
        ("version string", "v1.4111111111111111"),
        ("double space", "4111  1111  1111  1111"),
    ];
    for (label, text) in invalid {
        assert!(
            cards(text).is_empty(),
            "{label}: {text} -> {:?}",
            cards(text)
        );
    }
    assert_eq!(
        cards("4111 1111 1111 1111 5555 5555 5555 4444"),
        ["4111 1111 1111 1111", "5555 5555 5555 4444"]
    );
    assert!(valid_card(&[
        4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
    ]));
}

#[test]
fn ibans_table() {
    let valid = [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "CH9300762011623852957",
        "NO9386011117947",
        "AT611904300234573201",
        "ES9121000418450200051332",
        "IT60X0542811101000000123456",
        "MT84MALT011000012345MTLCAST001S",
    ];
    for iban in valid {
        assert_eq!(ibans(iban), [iban], "valid {iban}");
        assert_eq!(ibans(&format!("IBAN: {iban}.")), [iban], "in text {iban}");
    }
    let invalid = [
        ("checksum", "DE89 3704 0044 0532 0130 01"),
        ("too short", "DE89 3704 0044 0532 0130"),
        ("too long", "DE8937040044053201300000"),
        ("unknown country", "XX89370400440532013000"),
        ("lowercase", "de89370400440532013000"),
        ("glued", "XDE89370400440532013000"),
    ];
    for (label, text) in invalid {
        assert!(ibans(text).is_empty(), "{label}: {text}");
    }
    assert!(iban_checksum(b"GB82WEST12345698765432"));
    assert!(!iban_checksum(b"GB82WEST12345698765433"));
}

#[test]
fn ssns_table() {
    let valid = ["078-05-1121", "123-45-6788", "555 12 3456", "899-99-9999"];
    for ssn in valid {
        assert_eq!(ssns(ssn), [ssn], "valid {ssn}");
        assert_eq!(ssns(&format!("SSN {ssn}.")), [ssn]);
    }
    let invalid = [
        ("area 000", "000-12-3456"),
        ("area 666", "666-12-3456"),
        ("area 9xx", "900-12-3456"),
        ("area 999", "999-12-3456"),
        ("group 00", "123-00-4567"),
        ("serial 0000", "123-45-0000"),
        ("Woolworth", "078-05-1120"),
        ("advertising", "219-09-9999"),
        ("example", "123-45-6789"),
        ("mixed separators", "123-45 6788"),
        ("no separators", "123456788"),
        ("digit before", "1123-45-6788"),
        ("digit after", "123-45-67881"),
        ("inside a phone number", "555-123-45-6788"),
        ("letters", "A123-45-6788"),
    ];
    for (label, text) in invalid {
        assert!(ssns(text).is_empty(), "{label}: {text}");
    }
}

fn policy(detectors: Vec<DetectorSpec>) -> DlpPolicy {
    DlpPolicy {
        name: "p".into(),
        detectors,
        thresholds: Thresholds::default(),
        actions: SeverityActions {
            low: vec![Action::AddHeader {
                name: "X-DLP".into(),
                value: "low".into(),
            }],
            medium: vec![Action::Quarantine("Policy".into())],
            high: vec![
                Action::Quarantine("Policy".into()),
                Action::Notify("dpo@example.com".into()),
            ],
            critical: vec![Action::Drop],
        },
    }
}

#[test]
fn custom_detectors() {
    let engine = DlpEngine::new(policy(vec![
        DetectorSpec::Dictionary {
            name: "projects".into(),
            words: vec!["Project Falcon".into(), "C++".into(), "secret".into()],
        },
        DetectorSpec::Regex {
            name: "employee_id".into(),
            pattern: r"EMP-\d{6}".into(),
        },
    ]))
    .unwrap();
    let text = "The SECRET plan: project\r\n   falcon, written in c++; our secretary EMP-123456 knows. Secret!";
    let result = engine.scan_texts(std::iter::once(text));
    let by_name = |n: &str| result.detectors.iter().find(|d| d.detector == n).unwrap();
    let projects = by_name("projects");
    assert_eq!(projects.count, 4, "{projects:?}");
    assert_eq!(projects.samples, ["SECRET", "project\r\n   falcon", "c++"]);
    let emp = by_name("employee_id");
    assert_eq!(emp.count, 1);
    assert_eq!(emp.samples, ["EM******56"]);
}

#[test]
fn severity_and_actions_from_total() {
    let engine =
        DlpEngine::new(policy(vec![DetectorSpec::PaymentCard, DetectorSpec::UsSsn])).unwrap();
    let cases = [
        (0, None, 0),
        (1, Some(Severity::Low), 1),
        (4, Some(Severity::Low), 1),
        (5, Some(Severity::Medium), 1),
        (10, Some(Severity::High), 2),
        (19, Some(Severity::High), 2),
        (20, Some(Severity::Critical), 1),
        (50, Some(Severity::Critical), 1),
    ];
    for (n, severity, actions) in cases {
        let body = "card 4111 1111 1111 1111\r\n".repeat(n);
        let msg = scan(&text_message("s", &body), &Limits::default()).unwrap();
        let result = engine.scan(&msg);
        assert_eq!(result.total, n as u32);
        assert_eq!(result.severity, severity, "{n} matches");
        assert_eq!(result.actions.len(), actions, "{n} matches");
        if n > 0 {
            assert_eq!(result.detectors[0].samples, ["4111 **** **** 1111"]);
        }
    }
}

#[test]
fn scans_subject_body_and_text_attachments_with_masked_samples() {
    let engine = DlpEngine::new(policy(vec![
        DetectorSpec::PaymentCard,
        DetectorSpec::Iban,
        DetectorSpec::UsSsn,
    ]))
    .unwrap();
    let raw = message_with_attachment(
        "SSN 123-45-6788",
        "pay to DE89 3704 0044 0532 0130 00",
        "export.csv",
        "application/octet-stream",
        b"name,card\r\nA,5555555555554444\r\nB,3782 822463 10005\r\n",
    );
    let msg = scan(&raw, &Limits::default()).unwrap();
    let result = engine.scan(&msg);
    assert_eq!(result.total, 4);
    assert_eq!(result.severity, Some(Severity::Low));
    let samples: Vec<(&str, Vec<&str>)> = result
        .detectors
        .iter()
        .map(|d| {
            (
                d.detector.as_str(),
                d.samples.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        samples,
        [
            (
                "payment_card",
                vec!["5555********4444", "3782 ****** *0005"]
            ),
            ("iban", vec!["DE89 **** **** **** **30 00"]),
            ("us_ssn", vec!["***-**-6788"]),
        ]
    );
    let serialized = format!("{result:?}");
    for secret in ["5555555555554444", "0532 0130", "123-45-6788"] {
        assert!(!serialized.contains(secret), "{secret} leaked");
    }
    assert!(matches!(engine.verdict(&Ok(msg)), Verdict::Matched(_)));
    let clean = scan(
        &text_message("hello", "nothing here 2024-01-01"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(engine.verdict(&Ok(clean)), Verdict::Clean);
}

#[test]
fn loads_from_toml_and_reports_errors() {
    #[derive(Deserialize)]
    struct File {
        dlp: Vec<DlpPolicy>,
    }
    let text = r#"
        [[dlp]]
        name = "pci"
        detectors = ["payment_card", "iban", "us_ssn",
                     { dictionary = { name = "projects", words = ["Project Falcon"] } },
                     { regex = { name = "employee_id", pattern = "EMP-\\d{6}" } }]
        thresholds = { low = 1, medium = 2, high = 3, critical = 4 }
        actions = { high = [{ quarantine = "Policy" }], critical = ["drop"] }
    "#;
    let file: File = toml::from_str(text).unwrap();
    let engine = DlpEngine::new(file.dlp[0].clone()).unwrap();
    assert_eq!(engine.name(), "pci");
    let r = engine.scan_texts(["Project Falcon EMP-000001 4111111111111111"].into_iter());
    assert_eq!(r.severity, Some(Severity::High));
    assert_eq!(r.actions, [Action::Quarantine("Policy".into())]);

    let bad = |detectors: Vec<DetectorSpec>, thresholds: Thresholds| {
        DlpEngine::new(DlpPolicy {
            name: "bad".into(),
            detectors,
            thresholds,
            actions: SeverityActions::default(),
        })
        .unwrap_err()
    };
    let t = Thresholds::default();
    let cases = [
        (
            bad(
                vec![DetectorSpec::Regex {
                    name: "r".into(),
                    pattern: "(".into(),
                }],
                t,
            ),
            "detectors[0].regex.pattern",
            "invalid regex",
        ),
        (
            bad(
                vec![DetectorSpec::Regex {
                    name: "r".into(),
                    pattern: "a*".into(),
                }],
                t,
            ),
            "detectors[0].regex.pattern",
            "matches the empty string",
        ),
        (
            bad(
                vec![DetectorSpec::PaymentCard, DetectorSpec::PaymentCard],
                t,
            ),
            "detectors[1]",
            "listed twice",
        ),
        (bad(vec![], t), "detectors", "at least one"),
        (
            bad(vec![DetectorSpec::Iban], Thresholds { medium: 30, ..t }),
            "thresholds",
            "low <= medium <= high <= critical",
        ),
        (
            bad(
                vec![DetectorSpec::Dictionary {
                    name: "d".into(),
                    words: vec![" ".into()],
                }],
                t,
            ),
            "detectors[0].dictionary.words",
            "at least one word",
        ),
    ];
    for (err, field, problem) in cases {
        assert_eq!(err.kind, "dlp policy");
        assert_eq!(err.rule, "bad");
        assert_eq!(err.field, field);
        assert!(err.problem.contains(problem), "{}", err.problem);
    }
}

/// The built-in scanners as they were before they learnt to skip to the next digit: one
/// byte at a time. The randomized test below holds the fast ones to exactly these results.
mod reference {
    use super::super::{card_layout, is_word_byte, valid_card, IBAN_LENGTHS};
    use super::*;

    pub(super) fn find_cards(text: &str, mut hit: impl FnMut(&str)) {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            let mut j = i;
            let mut digits = 0;
            loop {
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                    digits += 1;
                }
                if j + 1 < b.len() && (b[j] == b' ' || b[j] == b'-') && b[j + 1].is_ascii_digit() {
                    j += 1;
                } else {
                    break;
                }
            }
            let end = j;
            i = end;
            if digits < 13 {
                continue;
            }
            let mut groups: Vec<(usize, usize)> = Vec::new();
            let mut seps: Vec<u8> = Vec::new();
            let mut k = start;
            while k < end {
                let g = k;
                while k < end && b[k].is_ascii_digit() {
                    k += 1;
                }
                groups.push((g, k));
                if k < end {
                    seps.push(b[k]);
                    k += 1;
                }
            }
            let before_ok = start == 0 || !(is_word_byte(b[start - 1]) || b[start - 1] == b'.');
            let after_ok = end >= b.len()
                || !(is_word_byte(b[end])
                    || (b[end] == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit)));
            if !before_ok || !after_ok {
                continue;
            }
            let mut g = 0;
            while g < groups.len() {
                let mut found = None;
                for k in (1..=groups.len() - g).rev() {
                    let window = &groups[g..g + k];
                    let window_seps = &seps[g..g + k - 1];
                    if card_layout(window, window_seps) {
                        let digits: Vec<u8> = text[window[0].0..window[k - 1].1]
                            .bytes()
                            .filter(u8::is_ascii_digit)
                            .map(|d| d - b'0')
                            .collect();
                        if valid_card(&digits) {
                            found = Some(k);
                            break;
                        }
                    }
                }
                match found {
                    Some(k) => {
                        hit(&text[groups[g].0..groups[g + k - 1].1]);
                        g += k;
                    }
                    None => g += 1,
                }
            }
        }
    }

    pub(super) fn find_ibans(text: &str, mut hit: impl FnMut(&str)) {
        let b = text.as_bytes();
        let mut i = 0;
        while i + 4 <= b.len() {
            let candidate = b[i].is_ascii_uppercase()
                && b[i + 1].is_ascii_uppercase()
                && b[i + 2].is_ascii_digit()
                && b[i + 3].is_ascii_digit()
                && (i == 0 || !is_word_byte(b[i - 1]));
            let want = if candidate {
                IBAN_LENGTHS
                    .iter()
                    .find(|(cc, _)| cc[..] == b[i..i + 2])
                    .map(|&(_, len)| len)
            } else {
                None
            };
            let Some(want) = want else {
                i += 1;
                continue;
            };
            let mut chars: Vec<u8> = Vec::with_capacity(want);
            let mut j = i;
            while j < b.len() && chars.len() < want {
                let c = b[j];
                if c.is_ascii_uppercase() || c.is_ascii_digit() {
                    chars.push(c);
                    j += 1;
                } else if c == b' '
                    && j + 1 < b.len()
                    && b[j + 1].is_ascii_alphanumeric()
                    && !chars.is_empty()
                {
                    j += 1;
                } else {
                    break;
                }
            }
            let complete = chars.len() == want && (j >= b.len() || !is_word_byte(b[j]));
            if complete && iban_checksum(&chars) {
                hit(&text[i..j]);
                i = j;
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn find_ssns(text: &str, mut hit: impl FnMut(&str)) {
        let b = text.as_bytes();
        let mut i = 0;
        while i + 11 <= b.len() {
            let w = &b[i..i + 11];
            let shape = w[..3].iter().all(u8::is_ascii_digit)
                && (w[3] == b'-' || w[3] == b' ')
                && w[4..6].iter().all(u8::is_ascii_digit)
                && w[6] == w[3]
                && w[7..].iter().all(u8::is_ascii_digit);
            let glued = |k: Option<&u8>, next: Option<&u8>| match k {
                Some(&c) if is_word_byte(c) => true,
                Some(&b'-') => next.is_some_and(u8::is_ascii_digit),
                _ => false,
            };
            let before = i.checked_sub(1).map(|p| &b[p]);
            let before2 = i.checked_sub(2).map(|p| &b[p]);
            if shape
                && !glued(before, before2)
                && !glued(b.get(i + 11), b.get(i + 12))
                && valid_ssn(w)
            {
                hit(&text[i..i + 11]);
                i += 11;
            } else {
                i += 1;
            }
        }
    }
}

#[test]
fn skipping_scanners_find_exactly_what_the_byte_at_a_time_ones_find() {
    use crate::testutil::Rng;
    // Digits and separators dominate, with letters, word characters, line ends and
    // multi-byte characters around them, and whole valid and almost-valid numbers, so that
    // runs start and end in every position of the 32-byte blocks the skip works in.
    let pieces = [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "0",
        "1",
        "4",
        "5",
        " ",
        " ",
        "-",
        "-",
        ".",
        "_",
        "X",
        "D",
        "E",
        "G",
        "B",
        "a",
        "z",
        "\r\n",
        "é",
        "€",
        "4111",
        "1111",
        "4111 1111 1111 1111",
        "4111111111111111",
        "4111-1111-1111-1111",
        "378282246310005",
        "3782 822463 10005",
        "5555555555554444",
        "6011111111111117",
        "30569309025904",
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "DE89",
        "078-05-1120",
        "536-22-8476",
        "536 22 8476",
        "123-45-6789",
        "900-12-3456",
        "536-22-",
    ];
    let mut rng = Rng::new(0x5eed_d1b5);
    let mut hits = [0usize; 3];
    for round in 0..20_000 {
        let text = rng.text(&pieces, if round % 10 == 0 { 400 } else { 40 });
        let pairs: [(Scanner, Scanner); 3] = [
            (|t, f| find_cards(t, f), |t, f| reference::find_cards(t, f)),
            (|t, f| find_ibans(t, f), |t, f| reference::find_ibans(t, f)),
            (|t, f| find_ssns(t, f), |t, f| reference::find_ssns(t, f)),
        ];
        for (n, (fast, slow)) in pairs.into_iter().enumerate() {
            let want = found(slow, &text);
            assert_eq!(found(fast, &text), want, "detector {n} on {text:?}");
            hits[n] += want.len();
        }
    }
    // The inputs do exercise every detector.
    assert!(hits.iter().all(|&h| h > 500), "{hits:?}");
}
