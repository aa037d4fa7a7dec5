//! The manager's Centralized services page, its dashboard's gateways, and users and
//! custom roles, in headless Chromium (see `support::Browser`) against real nodes: a
//! manager (127.0.0.2) and a gateway (127.0.0.1) with its SSH on. From the browser an
//! Administrator adds the gateway (the manager logs into it over SSH), commits, tests it
//! and sees it on the dashboard with its state; an Operator's Add is refused on the page;
//! once the gateway is centralized, its dashboard shows where its quarantines are and the
//! migration, and the manager's counts the migrated message; removing asks first. On a
//! local gateway: its dashboard says its quarantines are local, its Services page points
//! to the manager, and a custom role with one quarantine, made on the Users page, gives a
//! user exactly that quarantine's messages.

use std::time::Duration;

use crate::support::*;

const DELIVERY: Duration = Duration::from_secs(60);
const POLICY_TAG: &str = "[policy-test]";
const LEGAL_TAG: &str = "[legal-test]";

fn manager_config(cpq_port: u16) -> String {
    format!(
        "{}\n[ssh]\nport = 0\n\n[web]\ninterface = \"Management\"\nport = 0\n",
        manager_toml("manager", cpq_port)
    )
}

/// A gateway in local mode on 127.0.0.1 that knows its manager but is not enrolled;
/// SSH and the web UI on; two content filters hold tagged mail in Policy and Legal.
fn gateway_config(cpq_port: u16, manager_port: u16, sink: &Sink) -> String {
    GatewayToml::new(sink)
        .hostname("gw1.cpq.test")
        .address(TRUSTED)
        .rat(&["example.com"])
        .default_interface("Loopback")
        .web()
        .cpq("gw1", cpq_port, "local", manager_port)
        .extra(&format!(
            r#"[ssh]
port = 0

[[content_filter]]
name = "policy_test"
conditions = {{ subject_contains = "{POLICY_TAG}" }}
actions = [{{ quarantine = "Policy" }}]

[[content_filter]]
name = "legal_test"
conditions = {{ subject_contains = "{LEGAL_TAG}" }}
actions = [{{ quarantine = "Legal" }}]
"#
        ))
        .extra(OUTGOING_POLICY)
        .build()
}

/// Sends a relayed message with `subject`; returns its MID once `quarantine` holds it.
fn send_quarantined(node: &Node, subject: &str, quarantine: &str) -> u64 {
    let mid = send_relayed(node, "x@example.com", subject, "hello");
    wait_quarantined_in(node, mid, quarantine);
    mid
}

async fn login(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
    b.text_with("main h1", "Dashboard").await;
}

async fn logout(b: &Browser) {
    b.click("header form button[type=submit]").await;
    b.find("#password").await;
}

#[test]
fn web_ui_services_add_test_and_remove_a_gateway_dashboard_state_operator_refused() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let cpq_port = free_port_on(TRUSTED);
    let manager = Node::start_manager(&manager_config(manager_port));
    let gw = NodeDir::new(&gateway_config(cpq_port, manager_port, &sink)).start_gateway();
    // Held locally before centralization: it migrates to the manager later.
    send_quarantined(&gw, &format!("{POLICY_TAG} before"), "Policy");
    let gw_base = format!("https://{}", web_addr(&gw));
    let gw_ssh = ssh_port(&gw);
    let gw_password = initial_password(&gw);
    let base = format!("https://{}", web_addr(&manager));
    let admin_pw = initial_password(&manager);
    new_user(&manager, "otto", "Operator", "otto-password-1");

    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &admin_pw).await;

        // The dashboard before: no gateway, and the manager's release backlog.
        let backlog = b
            .text_with("#release-backlog", "the.cpq.release.host")
            .await;
        assert!(backlog.contains(": 0"), "{backlog}");

        // Add the gateway from the Centralized services page (the manager logs into it
        // with its Administrator's password over SSH).
        b.click("a[href='/services']").await;
        b.find("#add-gateway").await;
        assert!(b.all("#wizard").await.len() == 1 && b.all("#changes").await.len() == 1);
        b.fill("#g-id", "gw1").await;
        b.fill("#g-address", "127.0.0.1").await;
        b.fill("#g-ssh-port", &gw_ssh.to_string()).await;
        b.fill("#g-user", "admin").await;
        b.fill("#g-password", &gw_password).await;
        b.click("#add").await;
        let result = b.text_with("#result", "Pending until commit").await;
        assert!(
            result.contains("installed on the gateway")
                && result.contains(&format!("delivers released mail to 127.0.0.1:{cpq_port}"))
                && result.contains("Pending until commit"),
            "{result}"
        );
        assert!(!b.source().await.contains(&gw_password), "password echoed");

        // Pending until commit: commit it on the Changes page.
        b.click("a[href='/changes']").await;
        b.fill("#comment", "add gw1 from the web UI").await;
        b.click("#commit").await;
        let result = b.text_with("#result", "committed").await;
        assert!(result.contains("committed"), "{result}");

        // Test it: the manager logs in with its own key now.
        b.goto(&format!("{base}/services")).await;
        b.click("button[aria-label='Test gw1']").await;
        let result = b.text_with("#result", "works").await;
        assert!(
            result.contains("SSH login with the manager's key works"),
            "{result}"
        );

        // The dashboard: the gateway, its state as a text badge and its explanation.
        b.goto(&format!("{base}/")).await;
        let row = b.text("#gateways tr[data-gateway='gw1']").await;
        assert!(row.contains("gw1") && row.contains("127.0.0.1"), "{row}");
        let badge = b.text("#gateways tr[data-gateway='gw1'] .badge").await;
        assert!(
            ["Online", "Backlog", "Unreachable", "Unknown"].contains(&badge.as_str()),
            "{badge}"
        );
        let state_text = b.text("#gateways tr[data-gateway='gw1'] .state-text").await;
        assert!(!state_text.trim().is_empty(), "{row}");
        assert!(
            b.all("main .err[role=alert]").await.is_empty(),
            "{}",
            b.source().await
        );

        // The PVO service: a new port is pending until commit.
        b.goto(&format!("{base}/services")).await;
        let moved = free_port_on(MANAGER_IP);
        b.fill("#s-port", &moved.to_string()).await;
        b.click("#save-service").await;
        let result = b.text_with("#result", "Pending").await;
        assert!(
            result.contains(&format!("port {moved}")) && result.contains("Pending until commit"),
            "{result}"
        );
        pvo_stdin(&manager, &["clearchanges"], "");

        // Edit: the form shows the SSH settings; saving is pending.
        b.goto(&format!("{base}/services/gateways/gw1")).await;
        let port = b.find("#e-ssh-port").await.prop("value").await.unwrap();
        assert_eq!(port.as_deref(), Some(gw_ssh.to_string().as_str()));
        b.fill("#e-user", "ops").await;
        b.click("#save-gateway").await;
        let result = b.text_with("#result", "Pending").await;
        assert!(result.contains("user ops"), "{result}");
        pvo_stdin(&manager, &["clearchanges"], "");

        // An Operator sees the page, but adding is refused on it.
        logout(&b).await;
        login(&b, &base, "otto", "otto-password-1").await;
        b.goto(&format!("{base}/services")).await;
        b.fill("#g-id", "gw2").await;
        b.fill("#g-address", "127.0.0.1").await;
        b.fill("#g-ssh-port", &gw_ssh.to_string()).await;
        b.fill("#g-password", "whatever-1").await;
        b.click("#add").await;
        let result = b.text_with("#result", "Refused").await;
        assert!(
            result.contains("Refused") && result.contains("Operator"),
            "{result}"
        );
        logout(&b).await;

        // Centralize the gateway (wizard on the manager, enable on the gateway): its
        // local message migrates. The gateway's dashboard says where its quarantines
        // are and shows the migration; the manager's counts the gateway's message.
        pvo_stdin(&manager, &["pvoconfig", "migration", "automatic"], "");
        pvo_stdin(&manager, &["commit", "-m", "wizard"], "");
        pvo_stdin(&gw, &["pvoconfig", "enable"], "");
        pvo_stdin(&gw, &["commit", "-m", "centralize"], "");
        wait_until(
            DELIVERY,
            || {
                let m = &pvo_json(&gw, &["pvoconfig", "status"])["data"]["migration"];
                (m["migrated"] == 1 && m["running"] == false).then_some(())
            },
            || "the gateway's migration did not finish".into(),
        );
        login(&b, &gw_base, "admin", &gw_password).await;
        let h = b.text("#hq").await;
        assert_eq!(h, "Quarantines still on this gateway");
        let note = b.text("#central-note").await;
        assert!(note.contains("held on the manager"), "{note}");
        let mode = b.text("#pvo-mode").await;
        assert!(
            mode.contains("Central") && mode.contains("on the manager"),
            "{mode}"
        );
        let progress = b.find("#migration").await;
        assert_eq!(progress.attr("value").await.unwrap().as_deref(), Some("1"));
        assert_eq!(progress.attr("max").await.unwrap().as_deref(), Some("1"));

        login(&b, &base, "admin", &admin_pw).await;
        let deadline = std::time::Instant::now() + DELIVERY;
        loop {
            b.goto(&format!("{base}/")).await;
            let held = b.text("#gateways tr[data-gateway='gw1'] td.held").await;
            if held == "1" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the dashboard never counted gw1's message: {}",
                b.text("#gateways").await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let row = b.text("#gateways tr[data-gateway='gw1']").await;
        assert!(row.contains("1 received"), "{row}");

        // Remove asks first, then is pending until commit.
        b.goto(&format!("{base}/services")).await;
        b.click("button[aria-label='Remove gw1']").await;
        b.click("#confirm-remove").await;
        let result = b.text_with("#result", "removed").await;
        assert!(result.contains("Gateway gw1 removed"), "{result}");
        b.close().await;
    });
    let list = pvo_json(&manager, &["applianceconfig", "list"]);
    assert_eq!(list["data"]["gateways"][0]["id"], "gw1", "{list:#}");
    assert_eq!(list["data"]["gateways"][0]["ssh_user"], "admin", "{list:#}");
    pvo_stdin(&manager, &["commit", "-m", "remove gw1"], "");
    let list = pvo_json(&manager, &["applianceconfig", "list"]);
    assert_eq!(list["data"]["gateways"], serde_json::json!([]), "{list:#}");
    // The audit trail names the web UI and the Operator's refusal.
    let audit = pvo_json(&manager, &["auditlog"]);
    let entries = audit["data"]["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["user"] == "otto"
            && e["outcome"] == "refused"
            && e["from"].as_str().unwrap_or("").starts_with("web ")),
        "{audit:#}"
    );
}

#[test]
fn web_ui_gateway_local_dashboard_and_a_custom_role_with_one_quarantine() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let cpq_port = free_port_on(TRUSTED);
    let gw = NodeDir::new(&gateway_config(cpq_port, manager_port, &sink)).start_gateway();
    pvo_stdin(&gw, &["quarantineconfig", "new", "--name", "Legal"], "");
    let policy = send_quarantined(&gw, &format!("{POLICY_TAG} for pat"), "Policy");
    let legal = send_quarantined(&gw, &format!("{LEGAL_TAG} not for pat"), "Legal");
    let base = format!("https://{}", web_addr(&gw));
    let admin_pw = initial_password(&gw);
    new_user(&gw, "vic", "Guest", "vic-password-1");

    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &admin_pw).await;

        // A local gateway: its quarantines are local; Services points to the manager.
        let h = b.text("#hq").await;
        assert_eq!(h, "Local quarantines");
        let mode = b.text("#pvo-mode").await;
        assert!(mode.contains("Local"), "{mode}");
        assert!(b.all("#central-note").await.is_empty());
        b.click("a[href='/services']").await;
        let said = b.text("#on-gateway").await;
        assert!(said.contains("live on the manager"), "{said}");
        b.find("#on-gateway a[href='/pvo']").await;

        // A custom role with one quarantine, from the Users page.
        b.click("a[href='/users']").await;
        b.fill("#r-name", "Policy desk").await;
        b.fill("#r-description", "Policy only").await;
        b.click("#new-role input[name=quarantine][value='Policy']")
            .await;
        b.click("#r-matched-content").await;
        b.click("#create-role").await;
        let result = b.text_with("#result", "created").await;
        assert!(
            result.contains("Custom role \"Policy desk\" created"),
            "{result}"
        );
        b.click("#back").await;
        let roles = b.text("#roles").await;
        assert!(
            roles.contains("Policy desk") && roles.contains("Policy only"),
            "{roles}"
        );

        // Its edit form shows what it has; it becomes view-only.
        b.click("a[aria-label='Edit role Policy desk']").await;
        let policy_box = b
            .find("#edit-role input[name=quarantine][value='Policy']")
            .await;
        assert!(policy_box.is_selected().await.unwrap());
        let legal_box = b
            .find("#edit-role input[name=quarantine][value='Legal']")
            .await;
        assert!(!legal_box.is_selected().await.unwrap());
        assert!(b
            .find("#e-matched-content")
            .await
            .is_selected()
            .await
            .unwrap());
        b.click("#e-view-only").await;
        b.click("#save-role").await;
        let result = b.text_with("#result", "changed").await;
        assert!(
            result.contains("Custom role \"Policy desk\" changed"),
            "{result}"
        );
        b.click("#back").await;

        // Another user's role changed from the list (Operator: the second built-in).
        b.click("#role-vic option:nth-child(2)").await;
        b.click("button[aria-label='Change the role of vic']").await;
        let result = b.text_with("#result", "changed").await;
        assert!(result.contains("role Operator"), "{result}");
        b.click("#back").await;

        // A user with that role (the role select offers the custom roles).
        b.fill("#u-name", "pat").await;
        b.fill("#u-password", "pat-password-1").await;
        b.click("#u-role optgroup[label='Custom roles'] option")
            .await;
        b.click("#create-user").await;
        let result = b.text_with("#result", "created").await;
        assert!(!result.contains("Refused"), "{result}");
        assert!(
            !b.source().await.contains("pat-password-1"),
            "password echoed"
        );
        b.click("#back").await;

        // Reset pat's password (never shown again).
        b.fill("#pw-pat", "pat-password-2").await;
        b.click("button[aria-label='Reset the password of pat']")
            .await;
        let result = b.text_with("#result", "password").await;
        assert!(result.contains("changed"), "{result}");
        assert!(
            !b.source().await.contains("pat-password-2"),
            "password echoed"
        );
        // The role cannot be deleted while pat has it: the refusal is on the page.
        b.click("#back").await;
        b.click("button[aria-label='Delete role Policy desk']")
            .await;
        let result = b.text_with("#result", "Refused").await;
        assert!(
            result.contains("Refused") && result.contains("is the role of pat"),
            "{result}"
        );

        // pat sees the Policy message and not the Legal one.
        b.goto(&format!("{base}/")).await;
        logout(&b).await;
        login(&b, &base, "pat", "pat-password-2").await;
        b.goto(&format!("{base}/messages")).await;
        let summary = b.text_with("#summary", "of 1 messages").await;
        assert!(summary.contains("of 1 messages"), "{summary}");
        b.find(&format!("#messages a[href='/messages/{policy}']"))
            .await;
        assert!(b
            .all(&format!("#messages a[href='/messages/{legal}']"))
            .await
            .is_empty());
        // Users and roles are the Administrators'.
        b.goto(&format!("{base}/users")).await;
        let said = b.text_with("main", "Refused").await;
        assert!(said.contains("Refused"), "{said}");
        b.close().await;
    });
    let roles = pvo_json(&gw, &["userconfig", "role", "list"]);
    let role = roles["data"]["custom"][0].clone();
    assert_eq!(role["name"], "Policy desk", "{roles:#}");
    assert_eq!(
        role["quarantines"],
        serde_json::json!(["Policy"]),
        "{roles:#}"
    );
    assert_eq!(role["view_only"], true, "{roles:#}");
    assert_eq!(role["matched_content"], true, "{roles:#}");
    let users = pvo_json(&gw, &["userconfig", "list"]);
    assert!(
        users["data"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "pat" && u["role"] == "Policy desk"),
        "{users:#}"
    );
    assert!(
        users["data"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "vic" && u["role"] == "Operator"),
        "{users:#}"
    );
}
