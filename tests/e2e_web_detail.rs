//! The message detail page and the delivery status pages in headless Chromium (see
//! `support::Browser`): an Administrator sees what a content filter and a DLP policy
//! matched, in `<mark>`; a Guest sees the filter and the conditions but a note instead
//! of the matched text, and no "Send copy"; the delivery status lists a destination
//! whose next hop refuses connections marked down (`*`), its page shows `hoststatus`,
//! and "Deliver now" reschedules its recipient.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const DELIVERY: Duration = Duration::from_secs(60);

/// Relayed mail from 127.0.0.1: `down.example` goes to `dead` (nothing listens there),
/// the rest to the sink; a body with `code-NNNN` or a card number is quarantined.
fn config(sink: &Sink, dead: SocketAddr) -> String {
    GatewayToml::new(sink)
        .rat(&["one.example", "down.example"])
        .route("down.example", dead)
        .web()
        .extra(MATCHED_CONTENT)
        .build()
}

async fn login(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
    b.find("header form button[type=submit]").await;
}

async fn logout(b: &Browser) {
    b.click("header form button[type=submit]").await;
    b.find("#password").await;
}

#[test]
fn web_detail_shows_matched_content_by_role_and_delivery_status_delivers_now() {
    let sink = Sink::accepting();
    // A port nothing listens on: connections to it are refused.
    let dead = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let node = Node::start(&config(&sink, dead));
    let base = format!("https://{}", web_addr(&node));
    let admin_pw = initial_password(&node);
    new_user(&node, "guest", "Guest", "guest-password-1");
    pvo_stdin(
        &node,
        &["quarantineconfig", "edit", "Policy", "--access", "Guest"],
        "",
    );

    let code = send_relayed(
        &node,
        "x@one.example",
        "codes <i>inside</i>",
        "Your code-4711 <b>is</b> inside.",
    );
    let card = send_relayed(
        &node,
        "x@one.example",
        "payment",
        "My card is 4111 1111 1111 1111.",
    );
    for mid in [code, card] {
        wait_quarantined_in(&node, mid, "Policy");
    }
    // A clean message to the host whose next hop refuses: deferred, the host down.
    send_relayed(&node, "y@down.example", "deferred", "Nothing to see.");
    wait_until(
        DELIVERY,
        || {
            let s = pvo_json(&node, &["hoststatus", "down.example"]);
            (s["data"]["status"]["down"] == true).then_some(())
        },
        || "down.example never marked down".to_string(),
    );

    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &admin_pw).await;

        // The Administrator: the filter, its condition and the matched text marked.
        b.goto(&format!("{base}/messages/{code}")).await;
        let mark = b.text("#why mark").await;
        assert_eq!(mark, "code-4711");
        let why = b.text("#why").await;
        assert!(
            why.contains("secret_codes") && why.contains("body_regex \"code-[0-9]+\""),
            "{why}"
        );
        assert!(b.all("#matched-hidden").await.is_empty());
        let exit = b.text("#memberships td.exit").await;
        assert!(exit.contains("(in "), "{exit}");
        let parts = b.text("#parts").await;
        assert!(parts.contains("text/plain"), "{parts}");
        let headers = b.text("#headers").await;
        assert!(headers.contains("codes <i>inside</i>"), "{headers}");
        assert!(b.all("main i").await.is_empty(), "the subject is escaped");
        b.find("#copy").await;
        // Move offers the other quarantines.
        let mut others = Vec::new();
        for o in b.all("#quarantine-names option").await {
            others.push(o.attr("value").await.unwrap().unwrap_or_default());
        }
        assert!(
            !others.is_empty() && !others.iter().any(|q| q == "Policy"),
            "{others:?}"
        );
        // The DLP message: the detector and its masked sample marked.
        b.goto(&format!("{base}/messages/{card}")).await;
        let mark = b.text("#why mark").await;
        assert!(
            mark.ends_with("1111") && !mark.contains("1111 1111"),
            "{mark}"
        );
        let why = b.text("#why").await;
        assert!(
            why.contains("cards") && why.contains("payment_card"),
            "{why}"
        );

        // A Guest: the filter and conditions, a note instead of what matched, no
        // "Send copy", and no delivery status (its role may not monitor).
        logout(&b).await;
        login(&b, &base, "guest", "guest-password-1").await;
        b.goto(&format!("{base}/messages/{code}")).await;
        let note = b.text("#matched-hidden").await;
        assert!(note.contains("hidden for your role"), "{note}");
        let why = b.text("#why").await;
        assert!(
            why.contains("secret_codes") && why.contains("body_regex \"code-[0-9]+\""),
            "{why}"
        );
        assert!(b.all("#why mark").await.is_empty());
        assert!(!b.source().await.contains("code-4711"));
        b.find("#release").await;
        assert!(b.all("#copy").await.is_empty());
        b.goto(&format!("{base}/messages/{card}")).await;
        b.find("#matched-hidden").await;
        assert!(b.all("#why mark").await.is_empty());
        assert!(!b.source().await.contains("**** 1111"));
        b.goto(&format!("{base}/delivery")).await;
        let refused = b.text_with("main .err", "Refused").await;
        assert!(refused.contains("Refused"), "{refused}");
        assert!(b.all("#tophosts").await.is_empty());
        logout(&b).await;

        // Delivery status: the refusing destination is marked down.
        login(&b, &base, "admin", &admin_pw).await;
        b.click("a[href='/delivery']").await;
        let table = b.text_with("#tophosts", "down.example").await;
        assert!(table.contains("*down.example"), "{table}");
        for col in [
            "Recipient Host",
            "Active Recip.",
            "Conn. Out",
            "Deliv. Recip.",
            "Soft Bounced",
            "Hard Bounced",
        ] {
            assert!(table.contains(col), "{table}");
        }
        // The sort selector keeps its choice.
        b.goto(&format!("{base}/delivery?sort=soft")).await;
        let chosen = b.find("#sort option[selected]").await.text().await.unwrap();
        assert_eq!(chosen, "Soft bounced");
        b.click("#tophosts a[href='/delivery/down.example']").await;
        let updown = b.text_with("#updown", "down").await;
        assert!(updown.starts_with("down"), "{updown}");
        let status = b.text("#hoststatus").await;
        assert!(
            status.contains("Host mail status for: 'down.example'")
                && status.contains(&dead.to_string()),
            "{status}"
        );
        let last = b.text("#last-error").await;
        assert!(!last.is_empty());
        b.click("#deliver-now").await;
        let result = b.text_with("#result", "rescheduled").await;
        assert!(
            result.contains("1 recipients of down.example rescheduled for immediate delivery"),
            "{result}"
        );
        b.click("#back").await;
        b.find("#hoststatus").await;
        b.close().await;
    });

    // The press was the admin's, from the web UI, and the queue retried at once.
    let audit = pvo_json(&node, &["auditlog"]);
    assert!(
        audit["data"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["command"] == "delivernow"
                && e["user"] == "admin"
                && e["from"].as_str().unwrap_or("").starts_with("web ")),
        "{audit:#}"
    );
}

// ---------------------------------------------------------------------------------------
// The CPQ destinations on both roles
// ---------------------------------------------------------------------------------------

fn manager_config(cpq_port: u16) -> String {
    format!(
        "{}\n[web]\ninterface = \"Management\"\nport = 0\n",
        manager_toml("manager", cpq_port)
    )
}

/// A central gateway: what the filter quarantines goes to the manager (`the.cpq.host`).
fn central_gateway_config(cpq_port: u16, manager_port: u16, sink: &Sink) -> String {
    GatewayToml::new(sink)
        .default_interface("Loopback")
        .web()
        .extra(
            r#"
[[content_filter]]
name = "secret_codes"
conditions = { body_regex = "code-[0-9]+" }
actions = [{ quarantine = "Policy" }]
"#,
        )
        .extra(OUTGOING_POLICY)
        .cpq("gw1", cpq_port, "central", manager_port)
        .build()
}

/// The `hoststatus` figures of `host` on `node`.
fn host_status(node: &Node, host: &str) -> Value {
    pvo_json(node, &["hoststatus", host])["data"].clone()
}

#[test]
fn web_delivery_status_lists_the_cpq_hosts_on_gateway_and_manager() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_config(manager_port));
    let cpq_port = free_port_on(TRUSTED);
    let gdir = NodeDir::new(&central_gateway_config(cpq_port, manager_port, &sink));
    enroll(&mdir, &gdir, "gw1", TRUSTED, cpq_port);
    let manager = mdir.start_manager();
    let gw = gdir.start_gateway();
    // The manager refuses connections for now: the transfer waits, the host is down.
    pvo_stdin(&manager, &["suspendlisteners", "all"], "");
    send_relayed(&gw, "x@one.example", "central", "code-1234");
    wait_until(
        DELIVERY,
        || (host_status(&gw, "the.cpq.host")["status"]["down"] == true).then_some(()),
        || "the.cpq.host never marked down".to_string(),
    );

    let gw_base = format!("https://{}", web_addr(&gw));
    let m_base = format!("https://{}", web_addr(&manager));
    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &gw_base, "admin", &initial_password(&gw)).await;
        b.goto(&format!("{gw_base}/delivery")).await;
        let table = b.text_with("#tophosts", "the.cpq.host").await;
        assert!(table.contains("*the.cpq.host"), "{table}");
        b.click("#tophosts a[href='/delivery/the.cpq.host']").await;
        let updown = b.text_with("#updown", "down").await;
        assert!(updown.starts_with("down"), "{updown}");
        let status = b.text("#hoststatus").await;
        assert!(status.contains("the manager's cpq_listener"), "{status}");

        // The manager back, "Deliver now": the transfer goes at once.
        pvo_stdin(&manager, &["resumelisteners", "all"], "");
        b.click("#deliver-now").await;
        let result = b.text_with("#result", "rescheduled").await;
        assert!(
            result.contains("of the.cpq.host rescheduled for immediate delivery"),
            "{result}"
        );
        let mid = wait_until(
            DELIVERY,
            || {
                let found = pvo_json(&manager, &["quarantine", "search"]);
                found["data"]["messages"][0]["mid"].as_u64()
            },
            || "the manager holds nothing".into(),
        );
        wait_until(
            DELIVERY,
            || (host_status(&gw, "the.cpq.host")["status"]["down"] == false).then_some(()),
            || "the.cpq.host still down".to_string(),
        );
        b.click("#back").await;
        let updown = b.text_with("#updown", "up").await;
        assert_eq!(updown, "up");

        // On the manager, a release goes out through the.cpq.release.host.
        pvo_stdin(&manager, &["quarantine", "release", &mid.to_string()], "");
        sink.wait_for_messages(1, DELIVERY);
        wait_until(
            DELIVERY,
            || {
                let s = host_status(&manager, "the.cpq.release.host");
                (s["status"]["delivered_recipients"] == 1).then_some(())
            },
            || "the.cpq.release.host never delivered".to_string(),
        );
        login(&b, &m_base, "admin", &initial_password(&manager)).await;
        b.goto(&format!("{m_base}/delivery?sort=delivered")).await;
        let row = b
            .text_with("#tophosts tbody tr:first-child", "the.cpq.release.host")
            .await;
        assert!(row.contains("the.cpq.release.host"), "{row}");
        b.click("#tophosts a[href='/delivery/the.cpq.release.host']")
            .await;
        let status = b.text("#hoststatus").await;
        assert!(
            status.contains("the originating gateway's cpq_listener"),
            "{status}"
        );
        b.find("#deliver-now").await;
        b.close().await;
    });
}
