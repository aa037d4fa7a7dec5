//! Search filters that cannot be applied (no word to search for, white space only, NUL,
//! invalid UTF-8) over the REST API, bulk jobs and the CLI: each is refused by name (400
//! on the API) and acts on nothing, never searched as "every held message".

use crate::support::*;

fn config(sink: &Sink) -> String {
    GatewayToml::new(sink)
        .rat(&["one.example"])
        .web()
        .extra(QUARANTINE_TEST_FILTER)
        .extra(OUTGOING_POLICY)
        .build()
}

/// The held MIDs, sorted.
fn held(node: &Node) -> Vec<u64> {
    let d = pvo_json(node, &["quarantine", "search", "--limit", "100"]);
    let mut mids: Vec<u64> = d["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mid"].as_u64().unwrap())
        .collect();
    mids.sort();
    mids
}

fn error_of(body: &str) -> String {
    parse_json(body)["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

#[test]
fn search_filters_that_cannot_be_applied_are_refused_and_act_on_nothing() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    let admin = new_token(&node, "admin");
    let mids: Vec<u64> = (0..3)
        .map(|i| {
            send_relayed(
                &node,
                "x@one.example",
                &format!("[quarantine-test] held {i}"),
                "hello",
            )
        })
        .collect();
    for m in &mids {
        wait_quarantined_in(&node, *m, "Policy");
    }
    let all = held(&node);
    assert_eq!(all.len(), 3);

    // A search: 400 naming the filter and why, for each value that has no word.
    for raw in ["%28", "%22", "%25", "%0D%0A", "%00", "%FF", "(%20%22"] {
        let (code, body) = https(
            web,
            "GET",
            &format!("/api/v1/messages?subject={raw}"),
            Some(&admin),
            None,
        );
        assert_eq!(code, 400, "subject={raw}: {body}");
        let e = error_of(&body);
        assert!(
            e.contains("filter subject=") && e.contains("cannot be applied: "),
            "subject={raw}: {e}"
        );
        assert!(
            !e.contains("database") && !e.contains("mail_logs"),
            "subject={raw}: {e}"
        );
    }
    for (k, raw) in [
        ("attachment", "%28"),
        ("sender", "a%00%40b.test"),
        ("recipient", "%0A"),
        ("reason", "x%00"),
    ] {
        let (code, body) = https(
            web,
            "GET",
            &format!("/api/v1/messages?{k}={raw}"),
            Some(&admin),
            None,
        );
        assert_eq!(code, 400, "{k}={raw}: {body}");
        let e = error_of(&body);
        assert!(
            e.contains(&format!("filter {k}=")) && e.contains("cannot be applied"),
            "{k}={raw}: {e}"
        );
    }
    // A filter with a word still works, punctuation around it included.
    let (code, body) = https(
        web,
        "GET",
        "/api/v1/messages?subject=%28held%29",
        Some(&admin),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(parse_json(&body)["total"], 3, "{body}");

    // Bulk jobs on every result: refused before they start (400, no job), nothing changed.
    for (path, body) in [
        ("/api/v1/messages/delete", r#"{"query": {"subject": "("}}"#),
        (
            "/api/v1/messages/delete",
            r#"{"query": {"subject": "\r\n", "quarantine": "Policy"}}"#,
        ),
        (
            "/api/v1/messages/delete",
            r#"{"query": {"subject": "a\u0000"}}"#,
        ),
        (
            "/api/v1/messages/delay",
            r#"{"query": {"subject": "("}, "by": "8h"}"#,
        ),
        (
            "/api/v1/messages/release",
            r#"{"query": {"attachment": "%"}}"#,
        ),
    ] {
        let (code, answer) = https(web, "POST", path, Some(&admin), Some(body));
        assert_eq!(code, 400, "{path} {body}: {answer}");
        let e = error_of(&answer);
        assert!(e.contains("cannot be applied"), "{path} {body}: {e}");
        assert!(
            parse_json(&answer).get("job").is_none(),
            "no job may start: {answer}"
        );
    }
    let (code, jobs) = https(web, "GET", "/api/v1/jobs", Some(&admin), None);
    assert_eq!(code, 200, "{jobs}");
    assert_eq!(
        parse_json(&jobs)["jobs"].as_array().map(Vec::len),
        Some(0),
        "{jobs}"
    );

    // The CLI: a search and an action on every result, refused by name.
    let (ok, out) = pvo_try(&node, &["quarantine", "search", "--subject", "("]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("filter subject=\"(\" cannot be applied"),
        "{out}"
    );
    for args in [
        &[
            "quarantine",
            "delete",
            "--all-results",
            "--subject",
            "(",
            "--yes",
        ][..],
        &[
            "quarantine",
            "delete",
            "--all-results",
            "--subject",
            "\r\n",
            "--yes",
        ],
        &[
            "quarantine",
            "delete",
            "--all-results",
            "--subject",
            "",
            "--yes",
        ],
        &[
            "quarantine",
            "delay",
            "--all-results",
            "--subject",
            "\"",
            "--by",
            "8h",
            "--yes",
        ],
    ] {
        let (ok, out) = pvo_try(&node, args);
        assert!(!ok, "{args:?}: {out}");
        assert!(out.contains("cannot be applied"), "{args:?}: {out}");
    }

    // Nothing was deleted, released or delayed.
    assert_eq!(held(&node), all);
    let log = node.mail_logs();
    for m in &mids {
        for verb in ["deleted", "released", "delayed"] {
            assert!(
                !log_lines(&log, &format!("MID {m} "))
                    .iter()
                    .any(|l| l.contains(verb)),
                "MID {m} {verb}:\n{log}"
            );
        }
    }
}
