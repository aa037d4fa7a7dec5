//! The Cluster page's "Centralized Management" part and its join-token forms, in headless
//! Chromium, on a cluster of two gateways over a private PostgreSQL (`support::Postgres`).
//! On gw1's page: the table of sections by level, with the level in force on gw1 marked
//! and the machine-only sections said so; a section copied from the cluster to gw2's
//! group (pending, then committed on the Changes page) is what gw2's `showconfig` says
//! it runs, and moved back it comes from the cluster again; a section copied to gw1's own
//! level and deleted there again; a machine-only section copied to the cluster refused
//! with the command's words; gw2's own level is not offered. Join tokens: one made from
//! the page is shown once (the next load of the page has only its hash), listed, and
//! gone from the list once revoked.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const APPLIED: Duration = Duration::from_secs(15);

async fn login(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
    b.text_with("main h1", "Dashboard").await;
}

/// The level `section` comes from on `node`, by its `showconfig`, once it is `want`.
fn wait_origin(node: &Node, section: &str, want: &str) {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        APPLIED,
        || {
            let d = json(node, &["showconfig"]);
            let got = d["origins"][section] == want;
            *last.borrow_mut() = d;
            got.then_some(())
        },
        || {
            format!(
                "[{section}] never came from {want}: {}",
                last.borrow()["origins"]
            )
        },
    );
}

/// Chooses `value` in the `<select>` matching `css`.
async fn choose(b: &Browser, css: &str, value: &str) {
    b.find(css)
        .await
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("{css}: no option {value}: {e}"));
}

/// The text of the table cell of `section` at `level`.
async fn cell(b: &Browser, level: &str, section: &str) -> String {
    b.text(&format!(
        "#settings td[data-level='{level}'][data-section='{section}']"
    ))
    .await
}

/// Commits the pending changes on the Changes page.
async fn commit(b: &Browser, base: &str, comment: &str) {
    b.goto(&format!("{base}/changes")).await;
    b.text_with("#pending", "Changes are pending").await;
    b.fill("#comment", comment).await;
    b.click("#commit").await;
    let r = b.text_with("#result", "Changes committed").await;
    assert!(r.contains("Changes committed"), "{r}");
}

#[test]
fn web_ui_cluster_page_copies_moves_and_deletes_settings_between_levels_and_makes_join_tokens() {
    let pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = Node::start(
        &GatewayToml::new(&sink)
            .hostname("gw1.example.com")
            .web()
            .ssh()
            .build(),
    );
    let gw2 = cluster_gateway(&sink, "gw2");
    text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "east",
            "--url",
            &url,
            "--machine",
            "gw1",
            "--address",
            "10.0.0.1",
        ],
    );
    let out = text(
        &gw2,
        &[
            "clusterconfig",
            "join",
            "--url",
            &url,
            "--machine",
            "gw2",
            "--address",
            "10.0.0.2",
        ],
    );
    assert!(out.contains("joined cluster east"), "{out}");
    text(&gw1, &["clusterconfig", "addgroup", "west"]);
    text(&gw1, &["clusterconfig", "setgroup", "gw2", "west"]);
    let rev = json(&gw1, &["clusterconfig", "list"])["revision"]
        .as_u64()
        .unwrap();
    wait_revision(&gw2, rev);
    wait_revision(&gw1, rev);
    wait_origin(&gw2, "tls", "cluster");
    let base = format!("https://{}", web_addr(&gw1));
    let pw = initial_password(&gw1);

    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &pw).await;
        b.goto(&format!("{base}/cluster")).await;

        // The table: every level a column, what each sets, what is in force on gw1.
        let t = b.text_with("#settings", "Machine gw2").await;
        for col in [
            "Cluster",
            "Group Main_Group",
            "Group west",
            "Machine gw1 (this machine)",
            "Machine gw2",
        ] {
            assert!(t.contains(col), "{col}: {t}");
        }
        let c = cell(&b, "cluster", "tls").await;
        assert!(c.contains("set") && c.contains("in force here"), "{c}");
        assert!(cell(&b, "group:west", "tls").await.contains('–'));
        let c = cell(&b, "machine:gw1", "interface").await;
        assert!(c.contains("set") && c.contains("in force here"), "{c}");
        assert_eq!(cell(&b, "machine:gw2", "interface").await, "set");
        assert!(t.contains("interface machine only"), "{t}");
        assert!(t.contains("ssh cluster only"), "{t}");
        // Another machine's own level is shown, not offered: it is changed there.
        let options = b.all("#cs-to option[value='machine:gw2']").await;
        assert!(options.is_empty());
        assert_eq!(b.all("#cs-to option[value='group:west']").await.len(), 1);

        // Copy [tls] from the cluster to gw2's group: pending, then committed.
        choose(&b, "#cs-section", "tls").await;
        choose(&b, "#cs-from", "cluster").await;
        choose(&b, "#cs-to", "group:west").await;
        b.click("#copy-settings").await;
        let r = b.text_with("#result", "copied").await;
        assert!(
            r.contains("[tls] copied from cluster to group:west") && r.contains("pending"),
            "{r}"
        );
        assert_eq!(b.all("#changes").await.len(), 1);
        b.goto(&format!("{base}/cluster")).await;
        let c = cell(&b, "group:west", "tls").await;
        assert!(c.contains("(pending: set)"), "{c}");
        assert!(b
            .text("#settings-pending")
            .await
            .contains("Changes are pending"));
        assert_eq!(json(&gw2, &["showconfig"])["origins"]["tls"], "cluster");
        commit(&b, &base, "tls for the west").await;
        wait_origin(&gw2, "tls", "group:west");
        b.goto(&format!("{base}/cluster")).await;
        let c = cell(&b, "group:west", "tls").await;
        assert!(c.starts_with("set") && !c.contains("pending"), "{c}");
        // On gw1 (Main_Group) the cluster's is still the one in force.
        assert!(cell(&b, "cluster", "tls").await.contains("in force here"));
        assert!(b.all("#settings-pending").await.is_empty());

        // Move it back: gw2 runs the cluster's again, the group sets nothing.
        choose(&b, "#ms-section", "tls").await;
        choose(&b, "#ms-from", "group:west").await;
        choose(&b, "#ms-to", "cluster").await;
        b.click("#move-settings").await;
        let r = b.text_with("#result", "moved").await;
        assert!(r.contains("[tls] moved from group:west to cluster"), "{r}");
        commit(&b, &base, "tls back to the cluster").await;
        wait_origin(&gw2, "tls", "cluster");
        b.goto(&format!("{base}/cluster")).await;
        assert!(cell(&b, "group:west", "tls").await.contains('–'));

        // This machine's own level: copied there, in force here; deleted, the cluster's again.
        choose(&b, "#cs-section", "delivery").await;
        choose(&b, "#cs-from", "cluster").await;
        choose(&b, "#cs-to", "machine:gw1").await;
        b.click("#copy-settings").await;
        b.text_with("#result", "copied").await;
        commit(&b, &base, "gw1 delivers its own way").await;
        wait_origin(&gw1, "delivery", "machine:gw1");
        b.goto(&format!("{base}/cluster")).await;
        let c = cell(&b, "machine:gw1", "delivery").await;
        assert!(c.contains("set") && c.contains("in force here"), "{c}");
        assert!(!cell(&b, "cluster", "delivery")
            .await
            .contains("in force here"));
        choose(&b, "#ds-section", "delivery").await;
        choose(&b, "#ds-level", "machine:gw1").await;
        b.click("#delete-settings").await;
        let r = b.text_with("#result", "deleted").await;
        assert!(r.contains("[delivery] deleted from machine:gw1"), "{r}");
        commit(&b, &base, "gw1 back to the cluster's delivery").await;
        wait_origin(&gw1, "delivery", "cluster");

        // A machine-only section to the cluster: the command's refusal, nothing pending.
        b.goto(&format!("{base}/cluster")).await;
        choose(&b, "#cs-section", "interface").await;
        choose(&b, "#cs-from", "machine:gw1").await;
        choose(&b, "#cs-to", "cluster").await;
        b.click("#copy-settings").await;
        let r = b.text_with("#result", "Refused").await;
        assert!(r.contains("Refused") && r.contains("interface"), "{r}");
        assert_eq!(b.text("main h1").await, "Not done");
        b.goto(&format!("{base}/cluster")).await;
        assert!(b.all("#settings-pending").await.is_empty());
        assert!(cell(&b, "cluster", "interface").await.contains('–'));

        // A join token: shown once, then only its hash; revoked, gone from the list.
        b.text_with("#no-tokens", "No join token").await;
        b.fill("#t-expires", "30").await;
        b.click("#make-token").await;
        let r = b.text_with("#result", "pvojoin1").await;
        let secret = r
            .split_whitespace()
            .find(|w| w.starts_with("pvojoin1"))
            .unwrap_or_else(|| panic!("no token shown: {r}"))
            .to_string();
        b.goto(&format!("{base}/cluster")).await;
        let listed = b.text_with("#tokens", "admin").await;
        let hash = json(&gw1, &["clusterconfig", "jointoken", "list"])["tokens"][0]["hash"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            listed.contains(&hash) && listed.contains("admin"),
            "{listed}"
        );
        let source = b.source().await;
        assert!(!source.contains(&secret), "the token shown again: {source}");
        b.click("#tokens button.danger").await;
        let r = b.text_with("#result", "revoked").await;
        assert!(r.contains(&format!("Join token {hash}")), "{r}");
        b.goto(&format!("{base}/cluster")).await;
        b.text_with("#no-tokens", "No join token").await;
        assert!(b.all("#tokens").await.is_empty());
        assert!(
            json(&gw1, &["clusterconfig", "jointoken", "list"])["tokens"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        b.close().await;
    });
    drop(pg);
}
