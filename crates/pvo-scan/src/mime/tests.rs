use super::*;
use crate::testutil::{base64, message_with_attachment, text_message, zip};

fn ok(raw: &[u8]) -> ScannedMessage {
    scan(raw, &Limits::default()).expect("scannable")
}

fn unscannable(raw: &[u8]) -> String {
    match scan(raw, &Limits::default()) {
        Ok(view) => panic!(
            "expected unscannable, got a view with {} parts",
            view.parts.len()
        ),
        Err(e) => e.reason,
    }
}

fn pe() -> Vec<u8> {
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00".to_vec();
    exe.resize(300, 0);
    exe
}

#[test]
fn single_part_text() {
    let raw = b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\nTo: a@b.example, \"C D\" <c@d.example>\r\n\
        Subject: =?utf-8?b?R3LDvMOfZQ==?= and more\r\nX-Folded: one\r\n two\r\n\r\n\
        Visit https://Login.Example.COM:8443/path?q=1. Or www.other.example/x, thanks.\r\n";
    let view = ok(raw);
    assert_eq!(view.subject, "Grüße and more");
    assert_eq!(
        view.header_values("from").collect::<Vec<_>>(),
        ["Jürgen <j@example.de>"]
    );
    assert_eq!(
        view.header_values("TO").collect::<Vec<_>>(),
        ["a@b.example, C D <c@d.example>"]
    );
    assert_eq!(
        view.header_values("x-folded").collect::<Vec<_>>(),
        ["one two"]
    );
    assert_eq!(view.parts.len(), 1);
    let part = &view.parts[0];
    assert_eq!(part.content_type, "text/plain");
    assert!(!part.attachment);
    assert_eq!(part.depth, 0);
    assert_eq!(part.file_type, FileType::Text);
    assert!(part.text.as_deref().unwrap().contains("Visit https://"));
    assert_eq!(
        view.urls,
        [
            "https://Login.Example.COM:8443/path?q=1",
            "www.other.example/x"
        ]
    );
    assert_eq!(view.domains, ["login.example.com", "www.other.example"]);
    assert_eq!(view.size, raw.len());
}

#[test]
fn multipart_with_exe_renamed_txt() {
    let exe = pe();
    let raw = message_with_attachment("report", "see attached", "notes.txt", "text/plain", &exe);
    let view = ok(&raw);
    assert_eq!(view.parts.len(), 2);
    let body = &view.parts[0];
    assert_eq!(body.depth, 1);
    assert_eq!(body.text.as_deref(), Some("see attached"));
    let att = &view.parts[1];
    assert_eq!(att.filename.as_deref(), Some("notes.txt"));
    assert!(att.attachment);
    assert_eq!(att.size, exe.len());
    assert_eq!(att.file_type, FileType::Exe, "true type comes from content");
    assert_eq!(att.sha256, hex::encode(Sha256::digest(&exe)));
    assert!(!att.malformed);
    assert_eq!(view.attachments().count(), 1);
}

#[test]
fn html_part_is_searched_as_text_and_links_are_collected() {
    let raw = b"Subject: h\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
        Content-Type: text/html\r\n\r\n<html><body><p>Pay <b>now</b></p>\
        <a href=\"http://evil.example/pay\">here</a></body></html>\r\n--b--\r\n";
    let view = ok(raw);
    let text = view.parts[0].text.as_deref().unwrap();
    assert!(text.contains("Pay now"), "{text:?}");
    assert!(!text.contains("<b>"));
    assert_eq!(view.domains, ["evil.example"]);
}

#[test]
fn nested_messages_plain_and_encoded() {
    let inner = "Subject: inner\r\nContent-Type: text/plain\r\n\r\ninner secret text\r\n";
    let plain = format!(
        "Subject: outer\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\
         Content-Type: text/plain\r\n\r\nouter text\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n\
         {inner}--o--\r\n"
    );
    let view = ok(plain.as_bytes());
    assert_eq!(view.subject, "outer");
    let texts: Vec<&str> = view.texts().collect();
    assert_eq!(texts, ["outer text", "inner secret text"]);
    assert_eq!(view.parts[1].depth, 2);

    // Five levels of base64-encoded message/rfc822: mail-parser alone stops decoding after
    // three and hands back an opaque binary part; the walk here goes all the way down.
    let mut msg = format!("Subject: level0\r\n\r\n{}\r\n", "innermost payload");
    for level in 1..=5 {
        msg = format!(
            "Subject: level{level}\r\nContent-Type: message/rfc822\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(msg.as_bytes())
        );
    }
    let view = ok(msg.as_bytes());
    assert_eq!(view.subject, "level5");
    assert_eq!(view.texts().collect::<Vec<_>>(), ["innermost payload\r\n"]);
    assert_eq!(view.depth, 5);

    let parsed = mail_parser::MessageParser::new()
        .parse(msg.as_bytes())
        .unwrap();
    fn binary_leaf(m: &mail_parser::Message<'_>) -> bool {
        m.parts.iter().any(|p| match &p.body {
            mail_parser::PartType::Message(inner) => binary_leaf(inner),
            mail_parser::PartType::Binary(_) => p.is_encoding_problem,
            _ => false,
        })
    }
    assert!(
        binary_leaf(&parsed),
        "mail-parser's own depth cap changed; revisit the module documentation"
    );
}

#[test]
fn digest_children_default_to_messages() {
    let raw = b"Subject: d\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n\
        Subject: first\r\n\r\nfirst body\r\n--d\r\n\r\nSubject: second\r\n\r\nsecond body\r\n--d--\r\n";
    let view = ok(raw);
    assert_eq!(
        view.texts().collect::<Vec<_>>(),
        ["first body", "second body"]
    );
    assert!(view.parts.iter().all(|p| p.depth == 2));
}

#[test]
fn lf_only_line_endings() {
    let raw = b"Subject: lf\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\
        Content-Type: text/plain\n\nhello\n--z\nContent-Type: application/octet-stream\n\
        Content-Transfer-Encoding: base64\n\nTVqQAA==\n--z--\n";
    let view = ok(raw);
    assert_eq!(view.parts.len(), 2);
    assert_eq!(view.parts[1].file_type, FileType::Exe);
}

#[test]
fn missing_closing_boundary_still_decodes_the_attachment() {
    let exe = pe();
    let raw = format!(
        "Subject: cut\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\
         Content-Type: application/octet-stream; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        base64(&exe)
    );
    let view = ok(raw.as_bytes());
    let part = &view.parts[0];
    assert_eq!(part.file_type, FileType::Exe);
    assert!(part.malformed);
}

#[test]
fn broken_base64_is_decoded_leniently() {
    let mut body = base64(&pe());
    body.insert_str(8, "!!");
    let raw = format!(
        "Subject: b\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n--q--\r\n"
    );
    let view = ok(raw.as_bytes());
    assert_eq!(view.parts[0].file_type, FileType::Exe);
    assert!(view.parts[0].malformed);
}

#[test]
fn archive_flags_reach_the_view() {
    let nested = zip(&[("inner.zip", b"PK\x03\x04")]);
    let raw = message_with_attachment("z", "zip", "a.zip", "application/zip", &nested);
    let view = ok(&raw);
    assert_eq!(view.parts[1].file_type, FileType::Zip);
    assert!(view.parts[1].archive.as_ref().unwrap().nested_archive);
    assert_eq!(
        view.archive_problem().as_deref(),
        Some("attachment \"a.zip\": nested archive")
    );
    let clean = message_with_attachment(
        "z",
        "zip",
        "a.zip",
        "application/zip",
        &zip(&[("a.txt", b"x")]),
    );
    assert_eq!(ok(&clean).archive_problem(), None);
}

#[test]
fn declared_text_attachment_and_sniffed_csv_are_text() {
    let raw = message_with_attachment(
        "c",
        "b",
        "cards.csv",
        "application/octet-stream",
        b"name,card\r\nA,4111 1111 1111 1111\r\n",
    );
    let view = ok(&raw);
    assert_eq!(view.parts[1].file_type, FileType::Text);
    assert!(view.parts[1].text.as_deref().unwrap().contains("4111"));
}

#[test]
fn empty_and_headerless_input() {
    let view = ok(b"");
    assert_eq!(view.parts.len(), 1);
    assert_eq!(view.parts[0].size, 0);
    let view = ok(b"\r\njust a body\r\n");
    assert_eq!(view.texts().collect::<Vec<_>>(), ["just a body\r\n"]);
}

// ---- bombs: every one must come back unscannable, quickly, never as a partial view ----

fn nested_multiparts(levels: usize) -> Vec<u8> {
    let mut raw = String::from("Subject: nest\r\n");
    for i in 0..levels {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain\r\n\r\ndeep text\r\n");
    for i in (0..levels).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    raw.into_bytes()
}

#[test]
fn nesting_within_the_limit_is_scanned() {
    let view = ok(&nested_multiparts(20));
    assert_eq!(view.depth, 20);
    assert_eq!(view.texts().collect::<Vec<_>>(), ["deep text"]);
}

#[test]
fn bomb_30_and_200_nested_multiparts() {
    for levels in [21, 30, 200, 5_000] {
        let reason = unscannable(&nested_multiparts(levels));
        assert!(
            reason.contains("nesting deeper than 20"),
            "{levels}: {reason}"
        );
    }
}

#[test]
fn bomb_50000_parts() {
    let mut raw =
        String::from("Subject: parts\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n");
    for i in 0..50_000 {
        raw.push_str(&format!(
            "--p\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    raw.push_str("--p--\r\n");
    let reason = unscannable(raw.as_bytes());
    assert!(reason.contains("more than 500 MIME parts"), "{reason}");
}

#[test]
fn bomb_1mib_header_line() {
    let mut raw = b"Subject: ".to_vec();
    raw.extend(std::iter::repeat_n(b'A', 1 << 20));
    raw.extend_from_slice(b"\r\n\r\nbody\r\n");
    assert!(unscannable(&raw).contains("header block larger"));

    // The same line in a part's header block.
    let mut raw =
        b"Subject: x\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\nX-Long: ".to_vec();
    raw.extend(std::iter::repeat_n(b'A', 1 << 20));
    raw.extend_from_slice(b"\r\n\r\nbody\r\n--p--\r\n");
    assert!(unscannable(&raw).contains("header block larger"));

    // And one without any line end at all.
    let raw = vec![b'A'; 1 << 20];
    assert!(unscannable(&raw).contains("header block larger"));
}

#[test]
fn bomb_100000_header_lines() {
    let mut raw = String::new();
    for i in 0..100_000 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\nbody\r\n");
    assert!(unscannable(raw.as_bytes()).contains("header block larger"));
}

#[test]
fn bomb_deep_message_rfc822_chains() {
    // Plain chain: each level is a header block declaring message/rfc822.
    let mut raw = String::new();
    for _ in 0..100_000 {
        raw.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    raw.push_str("Subject: bottom\r\n\r\nbody\r\n");
    assert!(unscannable(raw.as_bytes()).contains("nesting deeper"));

    // The same chain inside a multipart, and wrapped in base64 so nothing shows on the
    // surface.
    let wrapped = format!(
        "Subject: w\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n--w\r\n\
         Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--w--\r\n",
        base64(raw.as_bytes())
    );
    assert!(unscannable(wrapped.as_bytes()).contains("nesting deeper"));

    // Encoded chain: every level base64-encodes the next.
    let mut msg = String::from("Subject: bottom\r\n\r\nbody\r\n");
    for _ in 0..25 {
        msg = format!(
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(msg.as_bytes())
        );
    }
    assert!(unscannable(msg.as_bytes()).contains("nesting deeper"));
}

#[test]
fn other_bounds() {
    let limits = Limits {
        max_decoded_bytes: 100,
        ..Limits::default()
    };
    let raw = text_message("big", &"x".repeat(200));
    assert!(scan(&raw, &limits)
        .unwrap_err()
        .reason
        .contains("decoded bytes"));

    let limits = Limits {
        max_message_bytes: 10,
        ..Limits::default()
    };
    assert!(scan(&raw, &limits).unwrap_err().reason.contains("exceeds"));

    let raw = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=missing\r\n\r\nno boundary here\r\n";
    assert!(unscannable(raw).contains("never appears"));
}

#[test]
fn truncated_and_mangled_inputs_never_panic() {
    let raw = message_with_attachment(
        "s",
        "body",
        "a.zip",
        "application/zip",
        &zip(&[("a", b"b")]),
    );
    for cut in 0..raw.len() {
        let _ = scan(&raw[..cut], &Limits::default());
    }
    let mut mangled = raw.clone();
    for i in (0..mangled.len()).step_by(7) {
        let saved = mangled[i];
        for b in [b'-', b'\n', b'\r', b'=', 0] {
            mangled[i] = b;
            let _ = scan(&mangled, &Limits::default());
        }
        mangled[i] = saved;
    }
}

#[test]
fn lenient_decoders() {
    assert_eq!(lenient_base64(b"TW\r\n Fu!"), b"Man");
    assert_eq!(lenient_base64(b"TWE="), b"Ma");
    assert_eq!(lenient_base64(b"TQ=="), b"M");
    // Unused bits set, padding inside, a character left over, nothing at all.
    assert_eq!(lenient_base64(b"TR"), b"M");
    assert_eq!(lenient_base64(b"TW=Fu"), b"Man");
    assert_eq!(lenient_base64(b"TWFuT"), b"Man");
    assert_eq!(lenient_base64(b"TWFuTWE"), b"ManMa");
    assert_eq!(lenient_base64(b"-_.,"), b"");
    assert_eq!(lenient_qp(b"a=3Db=\r\nc=ZZ"), b"a=bc=ZZ");
}

#[test]
fn url_hosts() {
    let cases = [
        ("https://user:pw@Host.Example:8080/p", Some("host.example")),
        ("http://[::1]:80/", Some("::1")),
        ("www.example.com.", Some("www.example.com")),
        ("ftp://files.example/x?y#z", Some("files.example")),
        ("http://", None),
    ];
    for (url, want) in cases {
        assert_eq!(url_host(url).as_deref(), want, "{url}");
    }
}

#[test]
fn raw_spans_and_strip_selectors() {
    use crate::verdict::AttachmentSelector;
    let exe = pe();
    let raw = message_with_attachment("s", "body text", "notes.txt", "text/plain", &exe);
    let view = ok(&raw);
    let (start, end) = view.parts[1].raw_span.unwrap();
    let span = std::str::from_utf8(&raw[start..end]).unwrap();
    assert!(
        span.starts_with("Content-Type: text/plain; name=\"notes.txt\""),
        "{span}"
    );
    assert!(
        span.ends_with(&base64(&exe).trim_end().to_string()),
        "{span}"
    );
    assert_eq!(&raw[end..end + 7], b"\r\n--XYZ");
    let (start, end) = view.parts[0].raw_span.unwrap();
    assert_eq!(
        &raw[start..end],
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nbody text"
    );

    let by_type = AttachmentSelector::FileType("executable".into());
    let by_name = AttachmentSelector::Glob("*.TXT".into());
    let picked =
        |s: &AttachmentSelector| view.parts.iter().map(|p| s.matches(p)).collect::<Vec<_>>();
    assert_eq!(picked(&by_type), [false, true]);
    assert_eq!(picked(&by_name), [false, true]);

    // Parts of an encoded nested message have no span in the outer message.
    let inner = "Subject: i\r\n\r\ninner\r\n";
    let raw = format!(
        "Subject: o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        base64(inner.as_bytes())
    );
    assert_eq!(ok(raw.as_bytes()).parts[0].raw_span, None);
}

#[test]
fn pathological_header_values_stay_within_the_block_limit() {
    let big = 200 << 10;
    let mut continuations = String::from("Content-Type: multipart/mixed;");
    let mut i = 0;
    while continuations.len() < big {
        continuations.push_str(&format!(" boundary*{i}=\"b{i}\";"));
        i += 1;
    }
    let values = [
        format!("From: {}a@b.example\r\n", "(".repeat(big)),
        format!("To: {}\r\n", "a@b.example, ".repeat(big / 13)),
        format!("Subject: {}\r\n", "=?utf-8?q?=C3=BC?= ".repeat(big / 19)),
        format!("Content-Type: text/plain;{}\r\n", " a=b;".repeat(big / 5)),
        format!(
            "Received: {}\r\n",
            "from x by y with z id ".repeat(big / 22)
        ),
        format!("{continuations}\r\n"),
        format!(
            "X-Folded: a{}\r\n",
            "\r\n b"
                .repeat(big / 5)
                .chars()
                .take(999 * 4)
                .collect::<String>()
        ),
    ];
    for header in values {
        let raw = format!("{header}\r\n--b0\r\n\r\nbody\r\n");
        // Any outcome is fine; it has to come back.
        let _ = scan(raw.as_bytes(), &Limits::default());
    }
}

/// URL extraction as it was before it learnt to skip to the next ':' or 'w', one byte at a
/// time; the randomized test below holds the fast one to exactly its results.
fn reference_extract_urls(text: &str, out: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let stop = |b: u8| {
        b.is_ascii_whitespace()
            || b.is_ascii_control()
            || matches!(
                b,
                b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\' | b'{' | b'}' | b'|' | b'^'
            )
    };
    let take = |start: usize| {
        let mut end = start;
        while end < bytes.len() && !stop(bytes[end]) {
            end += 1;
        }
        while end > start
            && matches!(
                bytes[end - 1],
                b'.' | b',' | b';' | b':' | b')' | b']' | b'!' | b'?'
            )
        {
            end -= 1;
        }
        end
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b':' && bytes.get(i + 1..i + 3) == Some(b"//") {
            let mut s = i;
            while s > 0 && bytes[s - 1].is_ascii_alphabetic() {
                s -= 1;
            }
            let scheme = &bytes[s..i];
            if scheme.eq_ignore_ascii_case(b"http")
                || scheme.eq_ignore_ascii_case(b"https")
                || scheme.eq_ignore_ascii_case(b"ftp")
            {
                let end = take(i + 3);
                if end > i + 3 {
                    out.push(text[s..end].to_string());
                }
                i = end.max(i + 3);
                continue;
            }
        } else if (b | 0x20) == b'w'
            && bytes
                .get(i..i + 4)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"www."))
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || matches!(bytes[i - 1], b'.' | b'/' | b'@' | b'-')))
        {
            let end = take(i);
            if end > i + 4 {
                out.push(text[i..end].to_string());
            }
            i = end.max(i + 4);
            continue;
        }
        i += 1;
    }
}

#[test]
fn skipping_url_extraction_finds_exactly_what_the_byte_at_a_time_one_finds() {
    use crate::testutil::Rng;
    let pieces = [
        "http://",
        "https://",
        "HTTPS://",
        "ftp://",
        "hxxp://",
        "ws://",
        "mailto:",
        "://",
        ":",
        ":/",
        "//",
        "/",
        "www.",
        "WWW.",
        "wWw.",
        "w",
        "W",
        "ww",
        "x",
        "a",
        "h",
        "t",
        "p",
        "s",
        ".",
        ",",
        ")",
        "]",
        "!",
        "?",
        " ",
        "\t",
        "\r\n",
        "\"",
        "<",
        ">",
        "@",
        "-",
        "é",
        "€",
        "example.com",
        "phish.example/login?x=1",
        "a.b",
        "0",
        "9",
    ];
    let mut rng = Rng::new(0x0a11_c0de);
    let mut total = 0;
    for round in 0..20_000 {
        let text = rng.text(&pieces, if round % 10 == 0 { 300 } else { 30 });
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        extract_urls(&text, &mut fast);
        reference_extract_urls(&text, &mut slow);
        assert_eq!(fast, slow, "on {text:?}");
        total += slow.len();
    }
    assert!(total > 1_000, "{total}");
}

/// Found by the mime fuzz target: a quoted-printable part whose last line is a soft line
/// break right before the boundary made mail-parser's boundary-aware decoder subtract past
/// the start of its buffer (a panic with overflow checks on, as in debug builds).
#[test]
fn a_soft_line_break_just_before_the_boundary_decodes() {
    let raw = include_bytes!("../../../../fuzz/corpus/mime/qp-soft-break-before-boundary.eml");
    let _ = scan(raw, &Limits::default());
    let m = scan(
        b"Subject: qp\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
          Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
          U=\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--b1--\r\n",
        &Limits::default(),
    )
    .unwrap();
    let texts: Vec<&str> = m.texts().collect();
    assert!(texts.iter().any(|t| t.trim() == "U"), "{texts:?}");
    assert!(texts.iter().any(|t| t.trim() == "second"), "{texts:?}");
}
