//! The web UI in a real browser: headless Chromium (Debian `chromium` +
//! `chromium-driver`, see `support::Browser`) against nodes with `[web] port = 0`.
//! Log in, search, open a message, release it (the sink receives it), bulk-delete a
//! search result, a Guest's release refused on the page, a cross-site POST from a page
//! on 127.0.0.2 refused, wrong passwords rate limited, and the gateway's Enable button
//! disabled with the preflight's cause and remedy while the manager is suspended.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const DELIVERY: Duration = Duration::from_secs(60);
const TAG: &str = "[quarantine-test]";
const OTHER_SITE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn gateway_config(sink: &Sink) -> String {
    GatewayToml::new(sink)
        .web()
        .extra(QUARANTINE_TEST_FILTER)
        .extra(OUTGOING_POLICY)
        .build()
}

/// The MIDs held now.
fn held(node: &Node) -> Vec<u64> {
    let d = pvo_json(node, &["quarantine", "search"]);
    d["data"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{d:#}"))
        .iter()
        .map(|m| m["mid"].as_u64().unwrap())
        .collect()
}

/// Sends a relayed message (the outgoing policy's filter quarantines the tagged
/// subject); returns its MID once it is quarantined.
fn send_quarantined(node: &Node, subject: &str) -> u64 {
    let mid = send_relayed(node, "x@one.example", &format!("{TAG} {subject}"), "hello");
    wait_quarantined_in(node, mid, "Policy");
    mid
}

/// Serves `html` over plain HTTP on `ip` (any path) from a background thread: the
/// cross-site page of the CSRF test. Returns its address.
fn serve_page(ip: IpAddr, html: String) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind the other site");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    addr
}

/// Submits the login form (the answer is the next page: the dashboard or the form
/// with a message).
async fn login(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
}

async fn logout(b: &Browser) {
    b.click("header form button[type=submit]").await;
    b.find("#password").await;
}

#[test]
fn web_ui_login_search_release_bulk_delete_guest_csrf_and_rate_limit() {
    let sink = Sink::accepting();
    let node = Node::start(&gateway_config(&sink));
    let base = format!("https://{}", web_addr(&node));
    let admin_pw = initial_password(&node);
    new_user(&node, "guest", "Guest", "guest-password-1");
    pvo_stdin(
        &node,
        &[
            "quarantineconfig",
            "edit",
            "Policy",
            "--access",
            "Operator,Guest",
        ],
        "",
    );
    let one = send_quarantined(&node, "web one");
    let bulk_a = send_quarantined(&node, "bulk a");
    let bulk_b = send_quarantined(&node, "bulk b");
    let guarded = send_quarantined(&node, "guarded <b>&</b>");
    let sweep: Vec<u64> = (0..3)
        .map(|i| send_quarantined(&node, &format!("sweep {i}")))
        .collect();

    rt().block_on(async {
        let b = Browser::start().await;

        // Not logged in: every page leads to the login form.
        b.goto(&format!("{base}/messages")).await;
        b.find("#password").await;
        assert_eq!(b.path().await, "/login");

        // A wrong password: said so, no session.
        login(&b, &base, "admin", "not-the-password").await;
        let said = b.text_with("p.err", "Wrong user").await;
        assert!(said.contains("Wrong user name or password"), "{said}");

        // Log in: the dashboard counts the four held messages; the session cookie is
        // invisible to scripts (HttpOnly).
        login(&b, &base, "admin", &admin_pw).await;
        b.find("#quarantines").await;
        let src = b.source().await;
        assert!(
            src.contains("Policy</a></td><td class=\"num\">7</td>"),
            "{src}"
        );
        // The chart: today's bar for Policy counts them too.
        let chart = b.find("#per-day tbody tr:last-child").await.html(false).await.unwrap();
        assert!(chart.contains("aria-label=\"7 messages\""), "{chart}");
        // Quarantine settings: the form shows them; saving changes the retention and
        // keeps the rest (the Guest's access is used below).
        b.click("a[href='/quarantines/Policy']").await;
        let access = b.find("#access").await.prop("value").await.unwrap().unwrap_or_default();
        assert!(access.contains("Guest"), "{access}");
        b.fill("#retention_hours", "48").await;
        b.click("#save").await;
        let result = b.text_with("#result", "").await;
        assert!(!result.contains("Refused"), "{result}");
        let list = pvo_json(&node, &["quarantineconfig", "list"]);
        let policy = list["data"]["quarantines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == "Policy")
            .cloned()
            .unwrap();
        assert_eq!(policy["retention_secs"], 172_800, "{policy:#}");
        assert!(policy["access"].to_string().contains("Guest"), "{policy:#}");

        // Users: create an Operator, then disable them.
        b.click("a[href='/users']").await;
        b.fill("#u-name", "olga").await;
        b.fill("#u-password", "olga-password-1").await;
        // The second built-in role of the list: Operator.
        b.find("#u-role option:nth-child(2)")
            .await
            .click()
            .await
            .unwrap();
        b.click("#create-user").await;
        let result = b.text_with("#result", "olga").await;
        assert!(!result.contains("Refused"), "{result}");
        b.click("#back").await;
        b.click("button[aria-label='Disable olga']").await;
        let result = b.text_with("#result", "disabled").await;
        assert!(result.contains("disabled"), "{result}");
        let users = pvo_json(&node, &["userconfig", "list"]);
        let olga = users["data"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "olga")
            .cloned()
            .unwrap_or_else(|| panic!("{users:#}"));
        assert_eq!(olga["role"], "Operator", "{olga:#}");
        assert_eq!(olga["enabled"], false, "{olga:#}");
        b.goto(&format!("{base}/")).await;

        let cookies = b
            .client
            .execute("return document.cookie", vec![])
            .await
            .unwrap();
        assert_eq!(cookies, Value::String(String::new()));

        // Search by subject, open the message, release it.
        b.click("a[href='/messages']").await;
        b.fill("#f-subject", "web one").await;
        b.click("#search").await;
        let summary = b.text_with("#summary", "of 1 messages").await;
        assert!(summary.contains("of 1 messages"), "{summary}");
        assert_eq!(b.all("#messages tbody tr").await.len(), 1);
        b.click(&format!("#messages a[href='/messages/{one}']")).await;
        let subject = b.text_with("#subject", "web one").await;
        assert!(subject.contains("web one"), "{subject}");
        let why = b.text("#memberships").await;
        assert!(why.contains("quarantine_test"), "{why}");
        b.click("#release").await;
        let result = b.text_with("#result", "").await;
        assert!(!result.contains("Refused"), "{result}");
        let got = sink.wait_for_messages(1, DELIVERY);
        assert!(got[0].text().contains("web one"));

        // A value from the message is escaped, not markup.
        b.goto(&format!("{base}/messages?subject=guarded")).await;
        let src = b.source().await;
        assert!(src.contains("guarded &lt;b&gt;&amp;&lt;/b&gt;"), "{src}");
        assert!(b.all("#messages b").await.is_empty());

        // Bulk: select all the results of a search and delete them.
        b.goto(&format!("{base}/messages?subject=bulk")).await;
        assert_eq!(b.all("#messages tbody tr").await.len(), 2);
        b.click("#select-all").await;
        for c in b.all("input[name=mid]").await {
            assert!(c.is_selected().await.unwrap());
        }
        b.click("#delete-selected").await;
        let result = b.text("#result").await;
        assert!(!result.contains("Refused"), "{result}");
        b.goto(&format!("{base}/messages?subject=bulk")).await;
        let summary = b.text_with("#summary", "No quarantined").await;
        assert!(summary.contains("No quarantined messages match"), "{summary}");
        let now = held(&node);
        assert!(!now.contains(&bulk_a) && !now.contains(&bulk_b), "{now:?}");
        assert_eq!(now.len(), 4, "{now:?}");

        // Every result of a search, two per page: "Delete all results" takes the page
        // not shown too.
        b.goto(&format!("{base}/messages?subject=sweep&limit=2")).await;
        assert_eq!(b.all("#messages tbody tr").await.len(), 2);
        let summary = b.text("#summary").await;
        assert!(summary.contains("of 3 messages"), "{summary}");
        b.find("a[rel=next]").await;
        b.click("#delete-all").await;
        let result = b.text_with("#result", "").await;
        assert!(!result.contains("Refused"), "{result}");
        let now = held(&node);
        assert!(sweep.iter().all(|m| !now.contains(m)), "{now:?}");
        assert_eq!(now, vec![guarded]);

        // A page on another site (127.0.0.2) that posts a release to the node while the
        // admin is logged in: refused (SameSite cookie, Origin, CSRF token).
        let evil = serve_page(
            OTHER_SITE,
            format!(
                "<!DOCTYPE html><html><body><form method=\"post\" action=\"{base}/messages/action\">\
<input type=\"hidden\" name=\"op\" value=\"release\"><input type=\"hidden\" name=\"mid\" value=\"{guarded}\">\
<input type=\"hidden\" name=\"csrf\" value=\"guess\"></form><script>document.forms[0].submit()</script></body></html>"
            ),
        );
        b.goto(&format!("http://{evil}/")).await;
        let refused = b.text_with("p.err", "Request refused").await;
        assert!(refused.contains("Request refused"), "{refused}");
        assert_eq!(held(&node), vec![guarded]);

        // Send a copy (the message stays held).
        b.goto(&format!("{base}/messages/{guarded}")).await;
        b.fill("#copy-to", "copy@one.example").await;
        b.click("#copy").await;
        let result = b.text_with("#result", "").await;
        assert!(!result.contains("Refused"), "{result}");
        let got = sink.wait_for_messages(2, DELIVERY);
        assert!(got.iter().any(|m| m.text().contains("guarded")));
        assert_eq!(held(&node), vec![guarded]);

        // A Guest sees the message, but the release is refused on the page.
        b.goto(&format!("{base}/")).await;
        logout(&b).await;
        login(&b, &base, "guest", "guest-password-1").await;
        let h1 = b.text_with("main h1", "Dashboard").await;
        assert_eq!(h1, "Dashboard");
        b.goto(&format!("{base}/messages/{guarded}")).await;
        b.click("#release").await;
        let result = b.text_with("#result", "cannot").await;
        assert!(
            result.contains("Refused") && result.contains("cannot"),
            "{result}"
        );
        assert_eq!(held(&node), vec![guarded]);
        logout(&b).await;

        // Wrong passwords from one address: after five, the sixth attempt (even with
        // the right password) is told to wait.
        for _ in 0..5 {
            login(&b, &base, "admin", "still-not-it").await;
            let said = b.text_with("p.err", "Wrong").await;
            assert!(said.contains("Wrong user name or password"), "{said}");
        }
        login(&b, &base, "admin", &admin_pw).await;
        let said = b.text_with("p.err", "Too many").await;
        assert!(said.contains("Too many failed logins"), "{said}");
        b.close().await;
    });
    assert_eq!(sink.count(), 2);

    // The audit trail: logins and the release came from the web UI.
    let audit = pvo_json(&node, &["auditlog", "--mid", &one.to_string()]);
    let entries = audit["data"]["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "release"
            && e["outcome"] == "ok"
            && e["from"].as_str().unwrap().starts_with("web 127.0.0.1:")),
        "{audit:#}"
    );
    let audit = pvo_json(&node, &["auditlog"]);
    let entries = audit["data"]["entries"].as_array().unwrap();
    let failed = entries
        .iter()
        .filter(|e| {
            e["action"] == "login"
                && e["outcome"] == "failed"
                && e["from"].as_str().unwrap().starts_with("web ")
        })
        .count();
    // Six wrong passwords and the throttled attempt (audited without a password check).
    assert_eq!(failed, 7, "{audit:#}");
    assert!(
        entries.iter().any(|e| e["action"] == "login"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("throttled: Too many failed logins"))),
        "{audit:#}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "release" && e["outcome"] == "refused" && e["user"] == "guest"),
        "{audit:#}"
    );
}

// ---------------------------------------------------------------------------------------
// The gateway's PVO settings page (a deployment, as in e2e_cpq.rs)
// ---------------------------------------------------------------------------------------

fn manager_config(cpq_port: u16) -> String {
    manager_toml("manager", cpq_port)
}

/// A gateway in local mode that knows its manager, with the web UI.
fn pvo_gateway_config(cpq_port: u16, manager_port: u16, sink: &Sink) -> String {
    GatewayToml::new(sink)
        .default_interface("Loopback")
        .web()
        .extra(QUARANTINE_TEST_FILTER)
        .extra(OUTGOING_POLICY)
        .cpq("gw1", cpq_port, "local", manager_port)
        .build()
}

#[test]
fn web_ui_gateway_enable_is_disabled_with_the_reason_while_the_manager_is_suspended() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_config(manager_port));
    let cpq_port = free_port_on(TRUSTED);
    let gdir = NodeDir::new(&pvo_gateway_config(cpq_port, manager_port, &sink));
    enroll(&mdir, &gdir, "gw1", TRUSTED, cpq_port);
    let manager = mdir.start_manager();
    let gw = gdir.start_gateway();
    pvo_stdin(&manager, &["pvoconfig", "migration", "automatic"], "");
    pvo_stdin(&manager, &["commit", "-m", "migration wizard"], "");
    pvo_stdin(&manager, &["suspendlisteners", "all"], "");

    let base = format!("https://{}", web_addr(&gw));
    let admin_pw = initial_password(&gw);
    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &admin_pw).await;
        b.find("#quarantines").await;
        b.click("a[href='/pvo']").await;
        let enable = b.find("#enable").await;
        assert!(
            !enable.is_enabled().await.unwrap(),
            "Enable is not disabled"
        );
        let cause = b.text_with("#cause", "offline").await;
        let remedy = b.text("#remedy").await;
        assert!(cause.contains("offline"), "{cause}");
        assert!(remedy.contains("resume"), "{remedy}");

        // The manager back: the button is enabled, and enabling is pending until commit.
        pvo_stdin(&manager, &["resumelisteners", "all"], "");
        b.goto(&format!("{base}/pvo")).await;
        let enable = b.find("#enable").await;
        assert!(enable.is_enabled().await.unwrap(), "{}", b.source().await);
        assert!(b.all("#why").await.is_empty());
        b.click("#enable").await;
        let result = b.text_with("#result", "manager ready").await;
        assert!(result.contains("manager ready"), "{result}");
        let status = pvo_stdin(&gw, &["pvoconfig", "status"], "");
        assert!(status.contains(": local"), "pending until commit: {status}");

        // Commit the pending change from the Changes page: the gateway is central.
        b.click("a[href='/changes']").await;
        let pending = b.text_with("#pending", "pending:").await;
        assert!(pending.contains("Changes are pending"), "{pending}");
        b.fill("#comment", "centralize from the web UI").await;
        b.click("#commit").await;
        let result = b.text_with("#result", "committed").await;
        assert!(result.contains("committed"), "{result}");
        b.close().await;
    });
    let status = pvo_stdin(&gw, &["pvoconfig", "status"], "");
    assert!(status.contains("centralized on the manager"), "{status}");
}

/// The manager's web UI: a message a central gateway quarantined is found on the
/// manager, released from the browser, and delivered by the gateway it came from.
#[test]
fn web_ui_on_the_manager_releases_back_through_the_originating_gateway() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&format!(
        "{}\n[web]\ninterface = \"Management\"\nport = 0\n",
        manager_config(manager_port)
    ));
    let cpq_port = free_port_on(TRUSTED);
    let gdir = NodeDir::new(
        &pvo_gateway_config(cpq_port, manager_port, &sink)
            .replace("mode = \"local\"", "mode = \"central\""),
    );
    enroll(&mdir, &gdir, "gw1", TRUSTED, cpq_port);
    let manager = mdir.start_manager();
    let gw = gdir.start_gateway();

    let mut c = SmtpClient::open(gw.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "sender@example.org",
        &["x@one.example"],
        &format!("Subject: {TAG} central web\r\n\r\nhello\r\n"),
    );
    assert_eq!(r.code, 250, "end of data: {}", r.raw());
    c.quit();
    let mid = wait_until(
        DELIVERY,
        || held(&manager).first().copied(),
        || "the manager holds nothing".into(),
    );

    let base = format!("https://{}", web_addr(&manager));
    let admin_pw = initial_password(&manager);
    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &admin_pw).await;
        b.find("#quarantines").await;
        b.goto(&format!("{base}/messages?gateway=gw1&subject=central"))
            .await;
        let summary = b.text_with("#summary", "of 1 messages").await;
        assert!(summary.contains("of 1 messages"), "{summary}");
        b.click(&format!("#messages a[href='/messages/{mid}']"))
            .await;
        let subject = b.text_with("#subject", "central web").await;
        assert!(subject.contains("central web"), "{subject}");
        b.click("#release").await;
        let result = b.text_with("#result", "").await;
        assert!(!result.contains("Refused"), "{result}");

        // The migration wizard from the PVO page, committed from the Changes page.
        b.goto(&format!("{base}/pvo")).await;
        b.click("#wizard-automatic").await;
        let result = b.text_with("#result", "").await;
        assert!(!result.contains("Refused"), "{result}");
        b.goto(&format!("{base}/changes")).await;
        b.fill("#comment", "wizard from the web UI").await;
        b.click("#commit").await;
        let result = b.text_with("#result", "committed").await;
        assert!(result.contains("committed"), "{result}");

        // The Outbreak page answers (nothing held there).
        b.goto(&format!("{base}/outbreak")).await;
        let said = b.text("main").await;
        assert!(said.contains("No message is held in Outbreak"), "{said}");
        b.close().await;
    });
    let status = pvo_stdin(&manager, &["pvoconfig", "status"], "");
    assert!(
        status.contains("Migration wizard: automatic (by admin)"),
        "{status}"
    );
    let got = sink.wait_for_messages(1, DELIVERY);
    assert!(got[0].text().contains("central web"));
    assert!(held(&manager).is_empty());
}
